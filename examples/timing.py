"""Wall-clock timing shared by the benchmark scripts.

Timings on a shared or virtual machine drift by tens of percent over a
minute; timing each case in turn within every round, and taking each case's
median over the rounds, lets a slow spell touch all cases alike instead of
whichever happened to run during it.
"""

import time

import numpy as np


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
