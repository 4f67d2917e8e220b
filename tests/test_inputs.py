"""Batching and input checks shared by the models (`models/inputs.py`)."""

import keras
import numpy as np
import pytest

from adaptive_zoo.models.inputs import (
    check_image_batch,
    checked_batches,
    checked_python_batches,
    held_out_arrays,
    held_out_batches,
    image_batches,
    positive_batch_size,
)


def test_an_array_is_split_into_batches_in_order():
    x = np.arange(10 * 2 * 2 * 1, dtype="float32").reshape(10, 2, 2, 1)
    batches = list(image_batches(x, 4))
    assert [len(b) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(batches), x)


def test_labels_are_dropped_from_an_iterable_of_pairs():
    x = np.ones((3, 2, 2, 1), "float32")
    pairs = [(x, np.zeros(3)), (2 * x, np.ones(3))]
    batches = list(image_batches(pairs, batch_size=64))
    assert len(batches) == 2
    np.testing.assert_array_equal(batches[1], 2 * x)


def test_a_wrong_rank_array_reaches_the_check_whole():
    x = np.zeros((16, 16, 1), "float32")  # one image without its batch axis
    (batch,) = image_batches(x, 4)
    with pytest.raises(ValueError, match="rank 3"):
        check_image_batch("Model", (16, 16, 1), batch)


def test_dict_batches_are_refused():
    with pytest.raises(ValueError, match="not dicts"):
        list(image_batches([{"images": np.zeros((1, 2, 2, 1))}], 4))


def test_held_out_data_in_every_form_gives_the_same_arrays():
    x, y = np.arange(24, dtype="float32").reshape(6, 2, 2, 1), np.arange(6)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    for data in ((x, y), batches):
        images, labels = held_out_arrays(data)
        np.testing.assert_array_equal(images, x)
        np.testing.assert_array_equal(labels, y)
    # Where labels are optional (DMNN), images alone come back without.
    for data in (x, [x[:2], x[2:4], x[4:]], (x, None)):
        images, labels = held_out_arrays(data, labels_required=False)
        np.testing.assert_array_equal(images, x)
        assert labels is None


def test_held_out_batches_split_arrays_and_pass_batches_through():
    x, y = np.arange(20, dtype="float32").reshape(5, 2, 2, 1), np.arange(5)
    chunks = list(held_out_batches((x, y), batch_size=2))
    assert [len(images) for images, _ in chunks] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([labels for _, labels in chunks]), y)
    # Batches of an iterable come as they are; empty ones are dropped.
    chunks = list(held_out_batches(iter([(x[:3], y[:3]), (x[:0], y[:0]), (x[3:], y[3:])])))
    assert [len(images) for images, _ in chunks] == [3, 2]
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        list(held_out_batches([(x[:3], y[:2])]))


def test_held_out_labels_are_checked_before_their_batch_is_read():
    x, y = np.zeros((5, 2, 2, 1), "float32"), np.array([0, 1, 2, 3, 7])

    def check(labels):
        if np.max(labels) > 3:
            raise ValueError("label too large")

    # Arrays: all labels at once, before any batch.
    with pytest.raises(ValueError, match="too large"):
        next(held_out_batches((x, y), batch_size=2, check_labels=check))
    # An iterable: each batch's labels as the batch comes, before it is handed on.
    batches = held_out_batches([(x[:3], y[:3]), (x[3:], y[3:])], check_labels=check)
    assert len(next(batches)[0]) == 3
    with pytest.raises(ValueError, match="too large"):
        next(batches)
    assert len(list(held_out_batches((x, y), check_labels=None))) == 1


@pytest.mark.parametrize("data, message", [
    ((np.ones((2, 2, 2, 1)), None), r"needs labels: pass \(images, labels\)\.$"),
    (np.ones((2, 2, 2, 1)), "not images alone"),
    ([np.ones((2, 2, 2, 1))], "each batch must be"),
    ([], "empty"),
    ((np.ones((0, 2, 2, 1)), np.zeros(0)), "empty"),
    ([(np.ones((0, 2, 2, 1)), np.zeros(0))], "empty"),
    ((np.ones((3, 2, 2, 1)), np.zeros(2)), "3 images but 2 labels"),
])
def test_held_out_data_without_labels_or_rows_is_named(data, message):
    with pytest.raises(ValueError, match=message):
        held_out_arrays(data)


@pytest.mark.parametrize("labels_required", [True, False])
def test_held_out_sample_weights_are_named(labels_required):
    # (images, labels, weights) arrays were read as three batches of images:
    # "needs labels" for MSDNet and RANet, "rank 1" for DMNN; a dataset's
    # weights were dropped without a word.
    x, y, w = np.ones((4, 2, 2, 1), "float32"), np.zeros(4), np.ones(4)
    for data in ((x, y, w), [(x, y, w)]):
        with pytest.raises(ValueError, match=r"weighs every held-out image alike: pass \(images, labels\)"):
            held_out_arrays(data, labels_required=labels_required)
    # A dataset's batches of (images, labels, None) are (images, labels).
    images, labels = held_out_arrays([(x, y, None)], labels_required=labels_required)
    assert images.shape == (4, 2, 2, 1) and labels.shape == (4,)


def test_held_out_dict_batches_are_refused_where_labels_are_optional():
    with pytest.raises(ValueError, match="not dicts"):
        held_out_arrays([{"image": np.ones((1, 2, 2, 1))}], labels_required=False)


def test_images_with_no_rows_are_empty_data_where_labels_are_optional():
    with pytest.raises(ValueError, match="empty"):
        held_out_arrays(np.ones((0, 2, 2, 1)), labels_required=False)


@pytest.mark.parametrize("bad", [0, -4, 2.5, "8", True])
def test_batch_size_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        positive_batch_size(bad, 32)
    assert positive_batch_size(None, 32) == 32
    assert positive_batch_size(np.int64(5), 32) == 5


def test_an_images_and_labels_tuple_where_images_go_is_named():
    # predict((x, y), budget=b) gave x's logits, then failed on y as "an input of rank 1".
    x, y = np.ones((6, 2, 2, 1), "float32"), np.arange(6)
    with pytest.raises(ValueError, match=r"\(images, labels\) tuple of arrays where images go"):
        list(image_batches((x, y), 4))
    assert [b.shape[0] for b in image_batches((x[:4], x[4:]), 4)] == [4, 2]  # batches in a tuple


def test_checked_batches_skip_empty_batches_and_refuse_no_images():
    checked = []
    x = np.ones((3, 2, 2, 1), "float32")
    batches = list(checked_batches([x[:0], x, x[:0]], 4, checked.append))
    assert [int(b.shape[0]) for b in batches] == [3]
    assert len(checked) == 3  # every batch is checked, empty ones too
    with pytest.raises(ValueError, match="no images"):
        list(checked_batches(x[:0], 4, checked.append))


@pytest.mark.parametrize("family", ["msdnet", "dmnn"])
def test_float64_and_uint8_images_give_the_float32_results(family):
    # NumPy's default float64 (np.random.rand, scikit-learn's digits) and uint8
    # pixels: PyTorch's convolutions refused them with float32 weights on every
    # compiled inference path (predict with a budget, DMNN's predict and
    # calibrate); Keras' own predict casts them.
    import adaptive_zoo

    if family == "msdnet":
        model = adaptive_zoo.MSDNetTiny()
        budget = 0.5
    else:
        model = adaptive_zoo.DMNNResNet(depths=(2, 2), base_width=4, sub_blocks=2, cifar_stem=True,
                                        num_classes=10, input_shape=(8, 8, 1))
        budget = 0.8
    pixels = np.random.default_rng(0).integers(0, 16, (6,) + model.image_shape).astype("uint8")
    expected = model.predict(pixels.astype("float32"), budget=budget, verbose=0)
    for images in (pixels.astype("float64"), pixels):
        np.testing.assert_allclose(model.predict(images, budget=budget, verbose=0), expected,
                                   rtol=1e-5, atol=1e-5)
        # Called directly too, as a functional Keras model casts its inputs
        # (uint8 reached TensorFlow's convolution: "uint8 is not in the list
        # of allowed values").
        for kwargs in ({}, {"budget": budget}):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images, **kwargs)),
                                       expected if kwargs else keras.ops.convert_to_numpy(
                                           model(pixels.astype("float32"))), rtol=1e-5, atol=1e-5)
    # And evaluate (DMNN's loss runs its gates on the batch itself).
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    labels = np.arange(6) % 10
    assert model.evaluate(pixels, labels, verbose=0) == pytest.approx(
        model.evaluate(pixels.astype("float32"), labels, verbose=0), rel=1e-5)
    if family == "dmnn":
        model.calibrate(pixels.astype("float64"), budgets=[budget])


class _Labelled(keras.utils.PyDataset):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.ended = 0

    def __len__(self):
        return 3

    def __getitem__(self, index):
        return np.zeros((2, 4, 4, 1), "float32"), np.full(2, index)

    def on_epoch_end(self):
        self.ended += 1


def test_checked_python_batches_keeps_a_py_dataset_what_it_was_and_can_be_pickled():
    import pickle

    user = _Labelled(workers=3, use_multiprocessing=True, max_queue_size=5)
    checked = checked_python_batches(user, "net", 2)
    assert (checked.workers, checked.use_multiprocessing, checked.max_queue_size) == (3, True, 5)
    assert checked.num_batches == 3
    checked.on_epoch_end()
    assert user.ended == 1
    assert checked[1][1].tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"got 2 label\(s\) outside, from 2 to 2"):
        checked[2]
    # Worker processes receive it pickled.
    assert pickle.loads(pickle.dumps(checked))[0][1].tolist() == [0, 0]
    # A generator is checked batch by batch; other data passes as it is.
    labels = [batch[1].tolist() for batch in checked_python_batches((user[i] for i in range(2)), "net", 2)]
    assert labels == [[0, 0], [1, 1]]
    listed = [user[0]]
    assert checked_python_batches(listed, "net", 2) is listed
