"""Side-by-side timing for `maskformer benchmark` and benchmarks/: interleaved calls, medians."""

from __future__ import annotations


def interleaved_medians(fns: dict, reps: int) -> dict[str, float]:
    """Median seconds per call of each zero-argument function: one warm-up call each (compilation happens there),
    then ``reps`` rounds that call every function once in turn, so load from other processes hits all alike."""
    import statistics
    import time

    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(reps):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}
