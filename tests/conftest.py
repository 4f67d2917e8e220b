"""Shared fixtures. The suite runs once per backend: KERAS_BACKEND=tensorflow|jax|torch."""

import gzip
import json
import os
import tempfile

import keras
import numpy as np
import pytest

FIXTURES = os.environ.get(
    "ADAPTIVE_ZOO_FIXTURES",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures"),
)


def _full_float32_on_gpus():
    """Compute float32 in full float32 on NVIDIA GPUs too.

    From Ampere on, PyTorch's cuDNN convolutions, JAX's convolutions and
    matrix products and TensorFlow's run in TF32 (10-bit mantissa) by
    default. On an H200 that put our outputs 3.7e-4 (relative) from the
    authors' on RANet's first exit (torch), above the fixtures' 1e-4, and
    made the skipping path differ from the dense one by 1e-3. With TF32 off
    they passed there (torch: the parity and skipping tests; jax: MSDNet's
    and RANet's parity tests, the ones run there). No effect on a CPU.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    elif backend == "jax":
        import jax

        if jax.default_backend() != "cpu":  # a setting the CPU does not need
            jax.config.update("jax_default_matmul_precision", "highest")
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)


_full_float32_on_gpus()


def _jax_compilation_cache():
    """On JAX, XLA's compiled programs are kept on disk for the rest of the
    run (JAX's persistent compilation cache, in a directory of this run
    only), so the many tests that build the same tiny model and fit or
    predict with it compile it once: a fresh model traces its program again,
    and an identical program is then read back instead of compiled (about 8
    of the 10 s of a tiny MSDNet's first `fit`). What runs is the same
    program. Set before any test compiles (JAX reads it at its first
    compilation)."""
    if keras.backend.backend() != "jax":
        return
    import atexit
    import shutil

    import jax

    directory = tempfile.mkdtemp(prefix="adaptive_zoo_tests_jax_cache_")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


_jax_compilation_cache()


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_under_pytests_directory(tmp_path_factory):
    """Python's temporary files and directories of the suite go under pytest's
    own temporary directory (which keeps only its last few runs): tfds makes
    an empty directory in the system's temporary directory for every builder
    of data it does not find prepared (its `initialize_from_bucket`), 13 per
    run of the tfds tests, and never removes them."""
    before = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tempfile"))
    yield
    tempfile.tempdir = before


# A tiny RANet in the authors' flags: three sub-networks, 3 exits, fusion
# blocks with and without down-sampling, transitions.
RANET_TINY_FLAGS = {
    "data": "cifar10", "nBlocks": 1, "block_step": 1, "stepmode": "even", "step": 1,
    "scale_list": "1-2-2", "nChannels": 4, "growthRate": 4, "grFactor": "2-1-1",
    "bnFactor": "2-1-1", "compress_factor": 0.25, "reduction": 0.5,
}


def load_fixture(name):
    """(meta, state_dict, input_nhwc, [logits per exit]) of an authors' fixture."""
    path = os.path.join(FIXTURES, name)
    if not os.path.exists(path):
        pytest.skip(f"parity fixture {path} not present (set ADAPTIVE_ZOO_FIXTURES)")
    data = np.load(path)
    meta = json.loads(str(data["meta_json"]))
    state = {k[len("state_dict/"):]: data[k] for k in data.files if k.startswith("state_dict/")}
    x = np.transpose(data["input_nchw"], (0, 2, 3, 1))
    logits = [data[f"logits/exit_{k}"] for k in range(meta["num_exits"])]
    return meta, state, x, logits


def relative_error(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def write_fashion_mnist(directory, images, labels):
    """Fashion-MNIST's four IDX files in `directory`, the same `images`
    (uint8, `(N, 28, 28)`) and `labels` for the training and the test split."""
    for prefix, array in (("images-idx3", images), ("labels-idx1", labels)):
        array = np.asarray(array, np.uint8)
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        for split in ("train", "t10k"):
            with gzip.open(os.path.join(directory, f"{split}-{prefix}-ubyte.gz"), "wb") as f:
                f.write(header + array.tobytes())
