"""Train a small DMNN on Fashion-MNIST and compare it with every gate on.

Needs the Debian package `dataset-fashion-mnist` (`apt-get install
dataset-fashion-mnist`) or `--data-dir` pointing at the four IDX files.

    KERAS_BACKEND=jax python examples/train_dmnn.py                    # t = 0.5
    KERAS_BACKEND=jax python examples/train_dmnn.py --target-rate 1.0  # static

The images are resized to 14x14 (bilinear, which at this size is the mean of
each 2x2 block), so that a run takes minutes on 2 CPU cores: 8 epochs on the
60,000 training images, Adam with its rate decayed to zero on a cosine. The
network is a CIFAR-style DMNN-ResNet with two stages of three blocks, base
width 8, two sub-blocks per block, trained with the resource-constrained loss
built into the model (execution rate and FLOPs toward `t`, plus the category
loss on the controllers' states, here with the five categories of
`category_map="fashion_mnist"`: tops, trousers, dresses, footwear, bags).

Prints, on the 10,000 test images: accuracy with the gates as trained (at
`t`), the same trained network with every gate on, the mean executed FLOPs as
a fraction of the full network, the spread of the per-image cost, and the
cost of the parts that always run (stem, first block of each stage, head).
`main` returns the trained model and those accuracies and mean cost.
"""

import argparse
import time

import keras
import numpy as np

import adaptive_zoo as az
from adaptive_zoo.data import load_fashion_mnist

import cli  # examples/cli.py, beside this script


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target-rate", type=float, default=0.5)
    parser.add_argument("--epochs", type=cli.positive_int, default=8)
    parser.add_argument("--train-images", type=cli.positive_int, default=60000)
    parser.add_argument("--batch-size", type=cli.positive_int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3,
                        help="Adam's initial rate, decayed to zero on a cosine over the run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data_dir, image_size=14)
    x_train, y_train = x_train[: args.train_images], y_train[: args.train_images]

    keras.utils.set_random_seed(args.seed)
    model = az.DMNNResNet(depths=(3, 3), base_width=8, sub_blocks=2, cifar_stem=True,
                          num_classes=10, input_shape=x_train.shape[1:],
                          target_rate=args.target_rate, category_map="fashion_mnist",
                          resource_weight=2.0, seed=args.seed)
    steps = args.epochs * -(-len(x_train) // args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        verbose=2)
    seconds = time.perf_counter() - start

    logits, flops = model.predict(x_test, return_cost=True, verbose=0)
    at_t = float(np.mean(logits.argmax(-1) == y_test))
    all_on = float(np.mean(model.predict(x_test, budget=1.0, verbose=0).argmax(-1) == y_test))
    full = model.full_flops()
    print(f"\nbackend {keras.backend.backend()}, t = {args.target_rate}, {args.epochs} epochs on "
          f"{len(x_train)} images ({seconds:.0f} s)")
    print(f"execution rate, last epoch: {history.history['execution_rate'][-1]:.3f}")
    print(f"test accuracy, gates as trained: {100 * at_t:.2f}%  "
          f"(mean cost {flops.mean() / full:.3f} of the full network, "
          f"per image {flops.min() / full:.3f}-{flops.max() / full:.3f})")
    print(f"test accuracy, same network with every gate on: {100 * all_on:.2f}%")
    print(f"the parts that always run cost {model.cheapest_budget():.3f} of the full network")
    return {"model": model, "accuracy_at_t": at_t, "accuracy_all_on": all_on,
            "mean_cost": float(flops.mean() / full)}


if __name__ == "__main__":
    main()
