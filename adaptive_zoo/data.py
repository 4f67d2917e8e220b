"""Datasets: scikit-learn's bundled digits, Fashion-MNIST from the Debian
package, and tfds pipelines for CIFAR-10/100 and ImageNet from the user's copy
(and, for semantic segmentation, the Oxford-IIIT Pet masks).

Every loader returns NHWC float32 images and integer labels. Nothing is
downloaded at run time: a missing dataset is an error that says how to get it.

The MSDNet and RANet authors feed their networks images normalized per
channel (`AUTHORS_NORMALIZATION`; their checkpoints expect it):
`authors_normalization(name)` is that step as a Keras layer, and `load_tfds`
applies it, with the authors' evaluation geometry and training augmentation.
"""

import gzip
import os

import numpy as np

from adaptive_zoo.checks import is_whole_number, positive_integer

__all__ = [
    "AUTHORS_NORMALIZATION",
    "authors_normalization",
    "load_digits",
    "load_fashion_mnist",
    "load_tfds",
    "load_tfds_segmentation",
    "split_holdout",
]

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


def _resize_bilinear(images, size):
    """Bilinear resize of (N, H, W, C) float images with NumPy (small images)."""
    n, h, w, c = images.shape
    if (h, w) == (size, size):
        return images

    def weights(n_in, n_out):
        pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = pos - lo
        m = np.zeros((n_out, n_in), dtype=np.float32)
        m[np.arange(n_out), lo] += 1 - frac
        m[np.arange(n_out), hi] += frac
        return m

    rows, cols = weights(h, size), weights(w, size)
    return np.einsum("ih,nhwc,jw->nijc", rows, images, cols).astype(np.float32)


def load_digits(image_size=16, test_fraction=0.25, seed=0):
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes).

    Args:
        image_size: images are resized (bilinear) to this square size.
        test_fraction: fraction held out for testing (stratified, fixed seed).
        seed: shuffling seed.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, images `(N, S, S, 1)` in
        [0, 1], float32, labels int32.

    Example:
    ```python
    (x_train, y_train), (x_test, y_test) = load_digits()
    ```
    """
    image_size = positive_integer(image_size, "image_size")
    if isinstance(test_fraction, (bool, np.bool_, str)) or not 0 < float(test_fraction) < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}.")
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as error:
        raise ImportError("The digits data ships with scikit-learn: pip install scikit-learn") from error
    bunch = sk_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[..., None]
    images = _resize_bilinear(images, image_size)
    labels = bunch.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test_idx.extend(idx[: int(round(len(idx) * test_fraction))])
    test_mask = np.zeros(len(labels), bool)
    test_mask[test_idx] = True
    train = np.flatnonzero(~test_mask)
    rng.shuffle(train)
    test = np.flatnonzero(test_mask)
    return (images[train], labels[train]), (images[test], labels[test])


def _read_idx(path):
    """The uint8 array in an IDX file (gzipped or not), or a `ValueError`
    naming the file if it is not one (corrupted, truncated)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:  # gzip's BadGzipFile is an OSError
        raise ValueError(f"{path} is not a readable IDX file ({error}).") from error
    # Magic number: two zero bytes, 0x08 (unsigned bytes), the rank; then
    # one 4-byte size per dimension, then the values.
    ndim = data[3] if len(data) >= 4 else 0
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if data[:3] != b"\x00\x00\x08" or not ndim or len(data) < header:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (header {data[:4].hex()!r}).")
    if len(data) != header + int(np.prod(dims)):
        raise ValueError(
            f"{path} is truncated or corrupted: {len(data) - header} values for dimensions {dims}.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_fashion_file(stem, directories):
    for directory in directories:
        for root, _, files in os.walk(directory):
            for name in files:
                if name.startswith(stem):
                    return os.path.join(root, name)
    return None


def load_fashion_mnist(directory=None, image_size=28):
    """Fashion-MNIST (70,000 28x28 grayscale images, 10 classes).

    Args:
        directory: where the IDX files are; default: the Debian package
            `dataset-fashion-mnist` (`apt-get install dataset-fashion-mnist`).
        image_size: images are resized (bilinear, as `load_digits`) to this
            square size; 14 is exactly a 2x2 average pooling.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, images `(N, S, S, 1)` in
        [0, 1], float32, labels int32.
    """
    image_size = positive_integer(image_size, "image_size")
    directories = (directory,) if directory else FASHION_MNIST_DIRS
    stems = ("train-images", "train-labels", "t10k-images", "t10k-labels")
    paths = [_find_fashion_file(stem, directories) for stem in stems]
    if not all(paths):
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found in {list(directories)}. Install the Debian "
            "package (apt-get install dataset-fashion-mnist) or pass directory=."
        )
    x_train, y_train, x_test, y_test = (_read_idx(p) for p in paths)
    pairs = ((x_train, y_train, *paths[:2]), (x_test, y_test, *paths[2:]))
    for images, labels, image_path, label_path in pairs:
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"Fashion-MNIST files that do not pair: {image_path} holds an array of shape "
                f"{images.shape}, {label_path} one of shape {labels.shape} (want (N, 28, 28) and (N,))."
            )
    scale = lambda x: _resize_bilinear((x.astype(np.float32) / 255.0)[..., None], image_size)  # noqa: E731
    return (scale(x_train), y_train.astype(np.int32)), (scale(x_test), y_test.astype(np.int32))


def split_holdout(x, y, size, seed=0):
    """Split `size` samples off `(x, y)` for calibration (the authors hold out
    5,000 CIFAR training images). Returns `((x_rest, y_rest), (x_held, y_held))`.
    """
    if len(x) != len(y):
        raise ValueError(f"split_holdout got {len(x)} images but {len(y)} labels.")
    if not is_whole_number(size) or not 0 < size < len(x):
        raise ValueError(f"Hold-out size must be a whole number of samples in (0, {len(x)}), got {size!r}.")
    idx = np.random.default_rng(seed).permutation(len(x))
    return (x[idx[size:]], y[idx[size:]]), (x[idx[:size]], y[idx[:size]])


# Per-channel (mean, standard deviation) of images in [0, 1], as the MSDNet and
# RANet authors' data loaders normalize them (the same constants in both).
AUTHORS_NORMALIZATION = {
    "cifar10": ((0.4914, 0.4824, 0.4467), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def authors_normalization(name):
    """The authors' input normalization for `name`, as a Keras layer.

    Args:
        name: "cifar10", "cifar100" or "imagenet".

    Returns:
        A `keras.layers.Normalization` mapping RGB images in [0, 1] to
        `(x - mean) / std` per channel, with the constants of the authors'
        data loaders (`AUTHORS_NORMALIZATION`). Their checkpoints expect
        it; `load_tfds` applies it already.

    Example:
    ```python
    normalize = authors_normalization("imagenet")
    model = MSDNetImageNet(step=4, weights="msdnet-step=4-block=5.pth.tar")
    logits = model(normalize(images))  # images: (N, 224, 224, 3) in [0, 1]
    ```
    """
    if name not in AUTHORS_NORMALIZATION:
        raise ValueError(f"Unknown dataset {name!r}; known: {sorted(AUTHORS_NORMALIZATION)}.")
    import keras

    mean, std = AUTHORS_NORMALIZATION[name]
    layer = keras.layers.Normalization(mean=mean, variance=np.square(std), name=f"{name}_normalization")
    layer.build((None, None, None, 3))
    return layer


_TFDS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet2012"}


def _tfds_modules():
    try:
        import keras
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError("tfds pipelines need: pip install 'adaptive-zoo[data,tensorflow]'") from error
    return keras, tf, tfds


# What tfds reads from `manual_dir` to prepare a dataset.
_MANUAL_FILES = {"imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")}


def _tfds_split(name, tfds_name, split, data_dir, training, seed, manual_dir=None):
    """The examples of `split` from the user's prepared copy (ImageNet:
    prepared from `manual_dir` first), or a `FileNotFoundError` that says
    how to prepare it. Nothing is downloaded."""
    _, tf, tfds = _tfds_modules()
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if manual_dir and not builder.is_prepared():
        missing = [f for f in _MANUAL_FILES.get(tfds_name, ())
                   if not tf.io.gfile.exists(os.path.join(manual_dir, f))]
        if missing:
            # tfds' own check comes after it has made its directories in data_dir.
            raise FileNotFoundError(
                f"{name} is prepared from the files in manual_dir, and {manual_dir!r} lacks "
                f"{', '.join(missing)} (ImageNet's tar files: register at https://image-net.org "
                "to download them). Nothing was written."
            )
        config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        builder.download_and_prepare(download_config=config)
    try:
        return builder.as_dataset(split=split, shuffle_files=training,
                                  read_config=tfds.ReadConfig(shuffle_seed=seed))
    except AssertionError as error:  # tfds' "could not find data"
        where = data_dir or "the default tfds data_dir (~/tensorflow_datasets)"
        raise FileNotFoundError(
            f"{name} is not prepared in {where}. Prepare it where you have internet "
            f"(tfds.builder('{tfds_name}').download_and_prepare()) and pass data_dir=; "
            "for ImageNet pass manual_dir= with the ILSVRC2012 tar files."
        ) from error


def _paired_with_seeds(ds, seed):
    """`ds`'s examples paired with a stateless-random seed each (shape (2,)),
    drawn from a stream that `seed` fixes and that is redrawn every epoch.

    A seeded pipeline then augments the same way on every run: Keras'
    random layers (and TensorFlow's stateful ops) inside a parallel
    `tf.data.map` draw in whatever order its threads run, so their `seed=`
    fixes nothing.
    """
    _, tf, _ = _tfds_modules()
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, seeds))


def load_tfds(name, split, data_dir=None, manual_dir=None, batch_size=64, image_size=None,
              label_key="label", normalize=True, training=False, seed=None, shuffle_buffer=None):
    """A batched `tf.data` pipeline of `(images, labels)` from the user's copy.

    CIFAR-10/100 come from a tfds `data_dir` that already holds the prepared
    dataset; ImageNet from `manual_dir` with the ILSVRC2012 tar files (tfds
    prepares them once). Nothing is downloaded.

    The images are prepared as the MSDNet and RANet authors prepare theirs:
    ImageNet's shorter side scaled to 256 and the central 224x224 kept (for
    `image_size` s: scaled to round(s * 8 / 7), s x s kept); CIFAR as it is.
    With `training=True` the examples are shuffled and augmented: CIFAR a
    random 32x32 crop of the image zero-padded by 4 and a random horizontal
    flip (the authors'); ImageNet a random 224x224 crop of the scaled image
    and a flip (the MSDNet authors crop the unscaled image, RANet's a
    random-resized crop: Keras has no such layer). With a `seed`, every run
    shuffles and augments alike (each epoch differently).

    Args:
        name: "cifar10", "cifar100" or "imagenet".
        split: a tfds split ("train", "test", "validation", "train[5000:]").
        data_dir: tfds data directory.
        manual_dir: directory with ImageNet's tar files.
        batch_size: batch size.
        image_size: the square size of the images (ImageNet: 224 by
            default; CIFAR: their own 32, else resized).
        label_key: "label", or "coarse_label" for CIFAR-100's 20 superclasses.
        normalize: apply `authors_normalization(name)` (what the authors'
            checkpoints expect); `False`: RGB in [0, 1].
        training: shuffle and augment (for a training split).
        seed: seed of the shuffling and augmentation (`None`: a different
            order and augmentation each run).
        shuffle_buffer: with `training`, how many examples the shuffle
            draws from (default: 10 batches). A larger buffer mixes more and
            holds that many decoded images in memory (ImageNet's at full
            size).

    Returns:
        A `tf.data.Dataset` of float32 NHWC images and int labels.
    """
    if name not in _TFDS_NAMES:
        raise ValueError(f"Unknown dataset {name!r}; known: {sorted(_TFDS_NAMES)}.")
    batch_size = positive_integer(batch_size, "batch_size")
    shuffle_buffer = (10 * batch_size if shuffle_buffer is None
                      else positive_integer(shuffle_buffer, "shuffle_buffer"))
    keras, tf, _ = _tfds_modules()
    ds = _tfds_split(name, _TFDS_NAMES[name], split, data_dir, training, seed,
                     manual_dir=manual_dir if name == "imagenet" else None)
    size = image_size or (224 if name == "imagenet" else None)
    # Keras' preprocessing layers and TensorFlow's image ops run inside
    # tf.data, on any backend. The random crop and flip are stateless ops fed
    # one seed per example (`_paired_with_seeds`): reproducible for a seed.
    resize = center = None
    if name == "imagenet":
        scaled = int(round(size * 8 / 7))
        resize = keras.layers.Resizing(scaled, scaled, crop_to_aspect_ratio=True)
        center = keras.layers.CenterCrop(size, size)
    elif size:
        resize = keras.layers.Resizing(size, size)
    size = size or 32

    def prepare(example, op_seed=None):
        image = tf.cast(example["image"], tf.float32) / 255.0
        if resize is not None:
            image = resize(image)
        if not training:
            return (image if center is None else center(image)), example[label_key]
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(op_seed, 2))
        if name != "imagenet":  # the authors': a crop of the image zero-padded by 4
            image = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
        image = tf.image.stateless_random_crop(image, [size, size, 3], seed=crop_seed)
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        return image, example[label_key]

    if training:
        ds = _paired_with_seeds(ds.shuffle(shuffle_buffer, seed=seed), seed)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    if normalize:  # on batches: the layer's statistics broadcast over NHWC
        norm = authors_normalization(name)
        ds = ds.map(lambda images, labels: (norm(images), labels), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(2)


# name -> (tfds name, what to subtract from the stored mask)
_SEGMENTATION = {"oxford_iiit_pet": ("oxford_iiit_pet", 1)}


def load_tfds_segmentation(name, split, data_dir=None, batch_size=16, image_size=128,
                           training=False, seed=None, shuffle_buffer=None):
    """A batched `tf.data` pipeline of `(images, masks)` for semantic
    segmentation, from the user's prepared copy (nothing is downloaded).

    Oxford-IIIT Pet: tfds' `segmentation_mask` (1 pet, 2 background, 3
    border) becomes classes 0, 1, 2. Images are resized to `image_size`
    square (bilinear; aspect ratio not kept) and scaled to [0, 1]; masks
    with nearest neighbours. With `training=True` the examples are shuffled
    and image and mask are flipped together; with a `seed`, alike on every
    run (each epoch differently).

    Args:
        name: "oxford_iiit_pet".
        split: a tfds split ("train", "test", "train[:90%]").
        data_dir: tfds data directory with the prepared dataset.
        batch_size: batch size.
        image_size: the square size of images and masks.
        training: shuffle and flip (for a training split).
        seed: seed of the shuffling and flips (`None`: different each run).
        shuffle_buffer: with `training`, examples the shuffle draws from
            (default: 10 batches).

    Returns:
        A `tf.data.Dataset` of float32 images `(batch, s, s, 3)` and int32
        masks `(batch, s, s)`, for `CNMM(task="segmentation", num_classes=3)`
        and `keras.metrics.MeanIoU(num_classes=3, sparse_y_pred=False)`.

    Example:
    ```python
    train = adaptive_zoo.data.load_tfds_segmentation("oxford_iiit_pet", "train",
                                                     data_dir="~/tensorflow_datasets")
    ```
    """
    if name not in _SEGMENTATION:
        raise ValueError(f"Unknown segmentation dataset {name!r}; known: {sorted(_SEGMENTATION)}.")
    tfds_name, offset = _SEGMENTATION[name]
    batch_size = positive_integer(batch_size, "batch_size")
    size = positive_integer(image_size, "image_size")
    shuffle_buffer = (10 * batch_size if shuffle_buffer is None
                      else positive_integer(shuffle_buffer, "shuffle_buffer"))
    _, tf, _ = _tfds_modules()
    ds = _tfds_split(name, tfds_name, split, data_dir, training, seed)

    def prepare(example, op_seed=None):
        image = tf.image.resize(tf.cast(example["image"], tf.float32) / 255.0, (size, size))
        mask = tf.image.resize(example["segmentation_mask"], (size, size), method="nearest")
        mask = tf.cast(mask, tf.float32) - offset
        if training:  # one flip for both: stack, flip, split
            both = tf.image.stateless_random_flip_left_right(tf.concat([image, mask], axis=-1),
                                                             seed=op_seed)
            image, mask = both[..., :3], both[..., 3:]
        return image, tf.cast(mask[..., 0], tf.int32)

    if training:
        ds = _paired_with_seeds(ds.shuffle(shuffle_buffer, seed=seed), seed)
    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)
