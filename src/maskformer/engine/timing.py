"""Side-by-side timing for `maskformer benchmark` and benchmarks/: interleaved calls, medians."""

from __future__ import annotations


def interleaved_medians(fns: dict, reps: int, pause: float = 0.0, progress: str = "") -> dict[str, float]:
    """Median seconds per call of each zero-argument function: one warm-up call each (compilation happens there),
    then ``reps`` rounds that call every function once in turn, so load from other processes hits all alike.
    ``pause``: seconds of sleep before each timed call (not timed), so worker threads that one library leaves spinning
    after its call (onnxruntime's pool does by default, for milliseconds) do not run into the next variant's time.
    ``progress``: a bar with this label on stderr (when it is a terminal) over the warm-up and the rounds."""
    import statistics
    import time

    from tqdm import tqdm

    times: dict[str, list[float]] = {k: [] for k in fns}
    bar = tqdm(total=(reps + 1) * len(fns), desc=progress, unit="call", disable=None if progress else True)
    with bar:
        for fn in fns.values():
            fn()
            bar.update()
        for _ in range(reps):
            for k, fn in fns.items():
                time.sleep(pause)
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
                bar.update()
    return {k: statistics.median(v) for k, v in times.items()}


def machine() -> dict:
    """What a timing was measured on, for its record: the CPU's name and the vector instructions that decide speed
    here (AVX2, AVX-512, AVX-512 BF16, AMX), cores, torch's threads and version, the UTC date, the load average,
    and the project's commit when it runs from a git checkout (else None)."""
    import os
    import platform
    import subprocess
    import time
    from pathlib import Path

    import torch

    name, first = platform.processor() or platform.machine(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():  # (the first processor's block)
            key, _, value = line.partition(":")
            first.setdefault(key.strip(), value.strip())
            if key.strip() == "flags":
                break
    except OSError:  # (not Linux)
        pass
    if "model name" in first:  # (e.g. "AMD EPYC" alone is Zen 3 or Zen 4: the family and model tell)
        name = first["model name"] + (f" (family {first['cpu family']}, model {first['model']})"
                                      if "cpu family" in first and "model" in first else "")  # fmt: skip
    flags = set(first.get("flags", "").split())
    isa = [label for flag, label in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"),
                                     ("amx_tile", "AMX")) if flag in flags]  # fmt: skip
    commit = None
    try:  # (only this project's own checkout: an installed copy may sit inside some other repository)
        here = Path(__file__).resolve().parent
        found = subprocess.run(["git", "rev-parse", "--show-toplevel", "--short", "HEAD"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.split()  # fmt: skip
        if len(found) == 2 and (Path(found[0]) / "src" / "maskformer").resolve() == here.parent:
            commit = found[1]
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": name,
        "isa": isa,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "commit": commit,
    }


def machine_line(info: dict, *, load: bool = True) -> str:
    """``machine()`` in one line of a report (``load``: with its load average)."""
    isa = ", ".join(info["isa"]) or "no AVX2"
    commit = f"; commit {info['commit']}" if info["commit"] else ""
    average = f"load average {info['load_average'][0]:.2f}; " if load else ""
    return (f"{info['date']}; {info['cpu']}, {isa}, {info['cpus']} CPUs, {info['torch_threads']} torch threads; "
            f"{average}torch {info['torch']}{commit}")  # fmt: skip
