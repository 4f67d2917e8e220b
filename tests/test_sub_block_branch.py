"""SubBlockBranch: the skipping path equals the dense path; scatter-add; cost."""

import keras
import numpy as np
import pytest
from keras import ops

from adaptive_zoo import fast_path
from adaptive_zoo.layers import BottleneckSubBlock, SubBlockBranch


@pytest.mark.parametrize("kind,activation", [("bottleneck", "relu"), ("inverted_residual", None)])
def test_skipping_equals_dense_for_the_same_decisions(kind, activation):
    branch = SubBlockBranch(kind, widths=(6, 5, 4), filters=8, activation=activation)
    rng = np.random.RandomState(0)
    x = rng.randn(7, 5, 5, 8).astype("float32")
    decisions = rng.rand(7, 3) > 0.5
    decisions[:, 2] = False  # a sub-block nobody runs
    dense = branch(x, decisions.astype("float32"))
    sparse = branch.skip(ops.convert_to_tensor(x), ops.convert_to_tensor(decisions))
    np.testing.assert_allclose(ops.convert_to_numpy(sparse), ops.convert_to_numpy(dense),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("every_row", [False, True])
def test_compiled_skipping_onto_the_inputs_buffer_equals_dense(every_row):
    # What DMNN's predict runs: compiled sub-blocks, and inputs the caller no
    # longer needs (on JAX added onto in place, where every running
    # sub-block runs on some images only; else onto a copy).
    branch = SubBlockBranch("bottleneck", widths=(6, 5, 4), filters=8, activation="relu")
    rng = np.random.RandomState(3)
    x = rng.randn(9, 5, 5, 8).astype("float32")
    decisions = rng.rand(9, 3) > 0.5
    decisions[0] = True  # each sub-block runs somewhere
    decisions[:, 1] = every_row or decisions[:, 1]
    decisions[1, 1] = every_row  # one off unless every row
    dense = ops.convert_to_numpy(branch(x, decisions.astype("float32")))
    accs = [fast_path.compile_accumulating(lambda t, b=b: b(t, training=False), b.variables,
                                           then=branch._activate) for b in branch.sub_blocks]
    inputs = ops.convert_to_tensor(x.copy())
    out = branch.skip(inputs, ops.convert_to_tensor(decisions), accs, consume_inputs=True)
    np.testing.assert_allclose(ops.convert_to_numpy(out), dense, rtol=1e-5, atol=1e-5)
    if keras.backend.backend() == "jax":
        assert inputs.is_deleted() != every_row  # its buffer became the output


def test_all_off_is_the_identity():
    branch = SubBlockBranch("bottleneck", widths=(4, 4), filters=8, activation=None)
    x = np.random.RandomState(1).randn(3, 4, 4, 8).astype("float32")
    out = branch.skip(ops.convert_to_tensor(x), ops.convert_to_tensor(np.zeros((3, 2), bool)))
    np.testing.assert_allclose(ops.convert_to_numpy(out), x)


def test_scatter_add_rows_matches_numpy():
    target = np.arange(24, dtype="float32").reshape(4, 3, 2)
    updates = np.ones((2, 3, 2), "float32") * np.array([10.0, 20.0], "float32")[:, None, None]
    out = fast_path.scatter_add_rows(ops.convert_to_tensor(target),
                                     ops.convert_to_tensor(np.array([3, 1], "int32")),
                                     ops.convert_to_tensor(updates))
    expected = target.copy()
    expected[3] += 10.0
    expected[1] += 20.0
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected)
    # No rows to add: the target unchanged.
    out = fast_path.scatter_add_rows(ops.convert_to_tensor(target),
                                     ops.convert_to_tensor(np.zeros((0,), "int32")),
                                     ops.convert_to_tensor(np.zeros((0, 3, 2), "float32")))
    np.testing.assert_allclose(ops.convert_to_numpy(out), target)


def test_sub_block_flops_and_params_follow_the_convention():
    block = BottleneckSubBlock(width=4, filters=16)
    block.build((None, 8, 8, 16))
    # 1x1 16->4, 3x3 4->4, 1x1 4->16 (+ two ReLUs), BN affine pairs.
    assert block.flops((8, 8, 16)) == 64 * (16 * 4 + 9 * 16 + 4 * 16) + 2 * 64 * 4
    params = sum(int(np.prod(v.shape)) for v in block.trainable_variables)
    assert params == 16 * 4 + 9 * 16 + 4 * 16 + 2 * (4 + 4 + 16)


def test_config_round_trip_and_bad_arguments():
    branch = SubBlockBranch("inverted_residual", widths=(12, 12), filters=8, activation=None)
    clone = SubBlockBranch.from_config(branch.get_config())
    assert clone.get_config() == branch.get_config()
    with pytest.raises(ValueError, match="kind"):
        SubBlockBranch("dense", widths=(4,), filters=8)
    with pytest.raises(ValueError, match="widths"):
        SubBlockBranch("bottleneck", widths=(), filters=8)
    with pytest.raises(ValueError, match="identity"):
        SubBlockBranch("bottleneck", widths=(4,), filters=8).build((None, 4, 4, 6))
    with pytest.raises(ValueError, match="each of widths must be a positive integer, got 2.5"):
        SubBlockBranch("bottleneck", widths=(4, 2.5), filters=8)
    with pytest.raises(ValueError, match="filters must be a positive integer, got 0"):
        SubBlockBranch("bottleneck", widths=(4,), filters=0)
    with pytest.raises(ValueError, match="expected ndim=4, found ndim=3"):
        SubBlockBranch("bottleneck", widths=(4,), filters=8)(np.zeros((4, 4, 8), "float32"))


@pytest.mark.parametrize("shape", [(3, 3), (2, 2), (3,)])
def test_gates_and_decisions_must_be_one_column_per_sub_block(shape):
    # Three columns for two sub-blocks used to run on the first two silently.
    branch = SubBlockBranch("bottleneck", widths=(4, 4), filters=8)
    x = np.random.default_rng(0).random((3, 4, 4, 8), dtype=np.float32)
    message = r"has 2 sub-blocks: {} must have shape \(batch, 2\) for an input of shape \(3, 4, 4, 8\)"
    with pytest.raises(ValueError, match=message.format("gates")):
        branch(x, np.ones(shape, "float32"))
    with pytest.raises(ValueError, match=message.format("decisions")):
        branch.skip(x, np.ones(shape, bool))


def test_compiled_skipping_handles_every_row_some_rows_and_none():
    # TensorFlow runs the skipping path inside one graph
    # (`fast_path.compile_dynamic`), where the counts are known at run time
    # only; elsewhere `skip` runs eagerly. Sub-block 0 is on for every image,
    # 1 for some, 2 for none (skipped: an empty batch is not run).
    branch = SubBlockBranch("bottleneck", widths=(4, 5, 6), filters=8)
    rng = np.random.RandomState(2)
    x = rng.randn(6, 4, 4, 8).astype("float32")
    decisions = np.zeros((6, 3), bool)
    decisions[:, 0] = True
    decisions[[1, 4], 1] = True
    dense = ops.convert_to_numpy(branch(x, decisions.astype("float32")))
    run = fast_path.compile_dynamic(branch.skip, branch.variables) or branch.skip
    out = run(ops.convert_to_tensor(x), ops.convert_to_tensor(decisions))
    np.testing.assert_allclose(ops.convert_to_numpy(out), dense, rtol=1e-5, atol=1e-5)
