"""Data-parallel training on PyTorch: DistributedDataParallel (DDP) around a
zoo model, in a training loop of a dozen lines.

Keras' distribution API covers JAX, and `tf.distribute` TensorFlow (both in
`train_tfds.py --data-parallel`); Keras has nothing of the kind for PyTorch.
There a Keras model is a `torch.nn.Module` whose variables are its
parameters, so PyTorch's own DDP can wrap it. This script starts
`--processes` processes (NCCL, one GPU each, where there are that many GPUs;
else Gloo on the CPU, which is what we run and test), builds the same model in
each, and trains it on the digits (the main job's models and data, from
`eval.py`): every step, each process runs its own slice of the global batch
through the DDP wrapper, and DDP averages the gradients across the processes
during `backward`, so every process applies the same update with the model's
own Keras optimizer (`eval.py`'s, with its learning-rate schedule). The loss
is the model's own `compute_loss` (every exit of a multi-exit model; DMNN's
execution-rate and FLOPs terms; CNMM's), as `model.fit` would use it.

    KERAS_BACKEND=torch python examples/train_torch_ddp.py                  # MSDNet, 2 processes
    KERAS_BACKEND=torch python examples/train_torch_ddp.py --model dmnn --processes 2 \\
        --save results/dmnn_ddp.keras

After training, the processes compare their weights (they must be equal,
bit for bit: the script fails otherwise), and the first process calibrates
and measures the model as `eval.py` does and saves it (`--save`). Each
process keeps its own BatchNorm moving statistics, as DDP keeps each
process's buffers between its broadcasts: the first process's are the ones
measured and saved. Each process draws its own Gumbel and keep-mask noise
(`distinct_noise`); the same seeds everywhere would give the samples at one
position of every process's slice the same noise.

Needs the Gloo backend of `torch.distributed` (in PyTorch's CPU wheels) and
a free local TCP port. We have not run it on GPUs (NCCL).
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cli  # noqa: E402 (examples/cli.py)
import eval as job  # noqa: E402 (examples/eval.py: the digits models, data and measurements)

import adaptive_zoo  # noqa: E402


def distinct_noise(model, rank):
    """Give this process its own stream of the model's training noise.

    DDP starts every process from the first one's variables, seed generators
    included; each generator's seed then moves by `rank` times the number of
    generators, so that no two generators of any two processes share one.
    """
    states = [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]
    for state in states:
        value = keras.ops.convert_to_numpy(state.value)
        value[0] += rank * len(states)
        state.assign(value)


def rank_batches(n, global_batch, processes, rank, seed):
    """This process's row indices for each step of one epoch: a shuffle that
    every process draws alike, cut into global batches (the last partial one
    dropped, so that every process takes the same number of steps), of which
    this process takes slice `rank`."""
    order = np.random.default_rng(seed).permutation(n)
    per = global_batch // processes
    steps = n // global_batch
    return [order[s * global_batch + rank * per: s * global_batch + (rank + 1) * per] for s in range(steps)]


def train_step(ddp, model, x, y):
    """One data-parallel step: the forward pass through the DDP wrapper (so
    that DDP averages the gradients during `backward`), the model's own loss,
    and the model's Keras optimizer applied to the averaged gradients (so that
    a saved model carries its optimizer's state, as after `fit`). Returns the
    loss of this process's slice."""
    import torch

    y_pred = ddp(x, training=True)
    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
    model.zero_grad()
    loss.backward()
    variables = model.trainable_variables
    with torch.no_grad():
        model.optimizer.apply([v.value.grad for v in variables], variables)
    return float(loss.detach())


def _flat_weights(model):
    import torch

    return torch.cat([v.value.detach().reshape(-1).cpu() for v in model.trainable_variables])


def worker(rank, args, port, out_dir):
    """Process `rank` of `args.processes`: joins the process group on `port`,
    trains its slice of every batch through DDP, writes what `main` compares
    to `out_dir`; the first process then measures and saves the model and
    writes `result.json` there."""
    import torch
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= args.processes
    if use_cuda:
        torch.cuda.set_device(rank)  # before Keras creates a tensor: "cuda" is then this GPU
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.processes))
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=args.processes)
    build, label, default_epochs, evaluate = job.MODELS[args.model]
    keras.utils.set_random_seed(args.seed)
    model, optimizer = build()  # eval.py's model and optimizer (learning rate and schedule)
    fit, held, test = job.digits(model, args.seed)
    epochs = args.epochs or default_epochs
    model.compile(optimizer=optimizer(epochs * (len(fit[0]) // args.batch_size)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    distinct_noise(model, rank)
    initial = _flat_weights(model)
    start, losses, seen = time.time(), [], []
    for epoch in range(epochs):
        epoch_losses = []
        for rows in rank_batches(len(fit[0]), args.batch_size, args.processes, rank, args.seed + epoch):
            x, y = (keras.ops.convert_to_tensor(a[rows]) for a in fit)
            epoch_losses.append(train_step(ddp, model, x, y))
            if epoch == 0:
                seen.append(rows)
        losses.append(float(np.mean(epoch_losses)))
        if rank == 0:
            print(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f} (first process)", flush=True)
    seconds = time.time() - start
    # What every process trained on and ends with, for `main` to compare.
    # (Files, not collectives of our own: torch 2.13's Gloo process group can
    # deadlock when it is destroyed right after a collective on tensors that
    # Python holds.)
    np.savez(os.path.join(out_dir, f"process{rank}.npz"), weights=_flat_weights(model).numpy(),
             initial=initial.numpy(), rows=np.concatenate(seen), losses=np.array(losses))
    del ddp
    dist.destroy_process_group()
    if rank != 0:
        return

    profile = adaptive_zoo.profile(model)
    print(f"\n{label} on digits, {args.processes} processes ({'NCCL' if use_cuda else 'Gloo, CPU'}), "
          f"global batch {args.batch_size}, {epochs} epochs in {seconds:.0f} s: {profile}\n")
    evaluation = evaluate(model, held, test, profile)
    if args.save:
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        model.save(args.save)
        print(f"wrote {args.save}")
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump({"devices": "cuda" if use_cuda else "cpu", "epochs": epochs, "training_seconds": seconds,
                   "evaluation": [list(row) for row in evaluation]}, f)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    """Trains in `--processes` processes and returns the first process's
    results (losses per epoch, the weights' agreement, the evaluation rows of
    `eval.py`)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="msdnet", choices=sorted(job.MODELS))
    parser.add_argument("--processes", type=cli.positive_int, default=2)
    parser.add_argument("--epochs", type=cli.positive_int, default=None,
                        help="training epochs (default: eval.py's, 12 for msdnet, 16 for dmnn and cnmm)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64,
                        help="the global batch, split evenly between the processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="save the trained model here (.keras)")
    args = parser.parse_args(argv)
    if keras.backend.backend() != "torch":
        raise SystemExit("DistributedDataParallel is PyTorch's: run with KERAS_BACKEND=torch "
                         "(on jax or tensorflow, see train_tfds.py --data-parallel).")
    if args.batch_size % args.processes:  # both positive (cli.positive_int)
        raise SystemExit(f"--batch-size ({args.batch_size}) must split evenly between the "
                         f"--processes ({args.processes}).")
    if args.save and not args.save.endswith(".keras"):
        raise SystemExit(f"--save: a .keras path, got {args.save!r}.")

    import torch.multiprocessing

    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(worker, args=(args, _free_port(), tmp), nprocs=args.processes)
        with open(os.path.join(tmp, "result.json")) as f:
            result = json.load(f)
        processes = [np.load(os.path.join(tmp, f"process{r}.npz")) for r in range(args.processes)]
    return dict(result, **compare(processes))


def compare(processes):
    """What the processes' files say: the largest difference between their
    final weights (zero, or the script fails), how far training moved them,
    how many images two processes shared in the first epoch (none: each
    trains on its own slice) and the loss per epoch averaged over them."""
    weights = [p["weights"] for p in processes]
    difference = max(float(np.max(np.abs(w - weights[0]))) for w in weights)
    if difference != 0.0:
        raise SystemExit(f"The processes ended with different weights (by up to {difference}): "
                         "their gradients were not averaged.")
    rows = [set(p["rows"].tolist()) for p in processes]
    shared = sum(len(a & b) for i, a in enumerate(rows) for b in rows[i + 1:])
    return {
        "processes": len(processes),
        "max_weight_difference_between_processes": difference,
        "max_weight_change": float(np.max(np.abs(weights[0] - processes[0]["initial"]))),
        "images_shared_by_two_processes_first_epoch": shared,
        "losses": np.mean([p["losses"] for p in processes], axis=0).tolist(),
    }


if __name__ == "__main__":
    main()
