"""Side-by-side timing for `maskformer benchmark` and benchmarks/: interleaved calls, medians."""

from __future__ import annotations


def interleaved_medians(fns: dict, reps: int, pause: float = 0.0) -> dict[str, float]:
    """Median seconds per call of each zero-argument function: one warm-up call each (compilation happens there),
    then ``reps`` rounds that call every function once in turn, so load from other processes hits all alike.
    ``pause``: seconds of sleep before each timed call (not timed), so worker threads that one library leaves spinning
    after its call (onnxruntime's pool does by default, for milliseconds) do not run into the next variant's time."""
    import statistics
    import time

    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(reps):
        for k, fn in fns.items():
            time.sleep(pause)
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}
