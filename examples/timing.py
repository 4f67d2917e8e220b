"""Wall-clock timing shared by the benchmark scripts, and their common flag.

Timings on a shared or virtual machine drift by tens of percent over a
minute; timing each case in turn within every round, and taking each case's
median over the rounds, lets a slow spell touch all cases alike instead of
whichever happened to run during it.
"""

import time

import numpy as np

import adaptive_zoo


def interleaved_medians(fns, repeats):
    """Median seconds of each zero-argument callable, timed in rounds.

    Args:
        fns: callables; each is called once first (to compile), then once
            per round, in turn. Each must block until its result is ready
            (e.g. convert its output to NumPy).
        repeats: number of rounds.

    Returns:
        A list of median seconds, one per callable.

    Example:
    ```python
    dense, sparse = interleaved_medians([run_dense, run_sparse], repeats=7)
    ```
    """
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def parse_args(parser, argv=None):
    """`parser.parse_args(argv)` plus the benchmarks' `--tune-allocator` flag,
    applied: `adaptive_zoo.tune_cpu_allocator()` is called when it is set.

    Args:
        parser: the script's `argparse.ArgumentParser`.
        argv: arguments (default: the command line).

    Returns:
        The parsed arguments. Exits with a message if the flag is set where
        glibc's `mallopt` is not available.
    """
    parser.add_argument("--tune-allocator", action="store_true",
                        help="call adaptive_zoo.tune_cpu_allocator() first (glibc malloc: large "
                             "buffers kept in the heap)")
    args = parser.parse_args(argv)
    if args.tune_allocator and not adaptive_zoo.tune_cpu_allocator():
        raise SystemExit("--tune-allocator: no glibc mallopt here")
    return args
