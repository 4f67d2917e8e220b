"""Datasets: scikit-learn's bundled digits, Fashion-MNIST from the Debian
package, and tfds pipelines for CIFAR-10/100 and ImageNet from the user's copy.

Every loader returns NHWC float32 images and integer labels. Nothing is
downloaded at run time: a missing dataset is an error that says how to get it.
"""

import gzip
import os

import numpy as np

__all__ = ["load_digits", "load_fashion_mnist", "load_tfds", "split_holdout"]

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
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


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
    directories = (directory,) if directory else FASHION_MNIST_DIRS
    stems = ("train-images", "train-labels", "t10k-images", "t10k-labels")
    paths = [_find_fashion_file(stem, directories) for stem in stems]
    if not all(paths):
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found in {list(directories)}. Install the Debian "
            "package (apt-get install dataset-fashion-mnist) or pass directory=."
        )
    x_train, y_train, x_test, y_test = (_read_idx(p) for p in paths)
    scale = lambda x: _resize_bilinear((x.astype(np.float32) / 255.0)[..., None], image_size)  # noqa: E731
    return (scale(x_train), y_train.astype(np.int32)), (scale(x_test), y_test.astype(np.int32))


def split_holdout(x, y, size, seed=0):
    """Split `size` samples off `(x, y)` for calibration (the authors hold out
    5,000 CIFAR training images). Returns `((x_rest, y_rest), (x_held, y_held))`.
    """
    if not 0 < size < len(x):
        raise ValueError(f"Hold-out size must be in (0, {len(x)}), got {size}.")
    idx = np.random.default_rng(seed).permutation(len(x))
    return (x[idx[size:]], y[idx[size:]]), (x[idx[:size]], y[idx[:size]])


_TFDS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet2012"}


def load_tfds(name, split, data_dir=None, manual_dir=None, batch_size=64, image_size=None,
              label_key="label"):
    """A batched `tf.data` pipeline of `(images, labels)` from the user's copy.

    CIFAR-10/100 come from a tfds `data_dir` that already holds the prepared
    dataset; ImageNet from `manual_dir` with the ILSVRC2012 tar files (tfds
    prepares them once). Nothing is downloaded.

    Args:
        name: "cifar10", "cifar100" or "imagenet".
        split: a tfds split ("train", "test", "validation", "train[:5000]").
        data_dir: tfds data directory.
        manual_dir: directory with ImageNet's tar files.
        batch_size: batch size.
        image_size: resize to this square size (ImageNet: 224 by default).
        label_key: "label", or "coarse_label" for CIFAR-100's 20 superclasses.

    Returns:
        A `tf.data.Dataset` of float32 images in [0, 1] and int labels.
    """
    if name not in _TFDS_NAMES:
        raise ValueError(f"Unknown dataset {name!r}; known: {sorted(_TFDS_NAMES)}.")
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError("tfds pipelines need: pip install 'adaptive-zoo[data,tensorflow]'") from error
    builder = tfds.builder(_TFDS_NAMES[name], data_dir=data_dir)
    if name == "imagenet" and manual_dir and not builder.is_prepared():
        config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        builder.download_and_prepare(download_config=config)
    try:
        ds = builder.as_dataset(split=split)
    except AssertionError as error:  # tfds' "could not find data"
        where = data_dir or "the default tfds data_dir (~/tensorflow_datasets)"
        raise FileNotFoundError(
            f"{name} is not prepared in {where}. Prepare it where you have internet "
            f"(tfds.builder('{_TFDS_NAMES[name]}').download_and_prepare()) and pass data_dir=; "
            "for ImageNet pass manual_dir= with the ILSVRC2012 tar files."
        ) from error
    size = image_size or (224 if name == "imagenet" else None)

    def prepare(example):
        image = tf.cast(example["image"], tf.float32) / 255.0
        if size:
            image = tf.image.resize(image, (size, size))
        return image, example[label_key]

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)
