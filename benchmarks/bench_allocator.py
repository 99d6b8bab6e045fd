"""Page faults and time per call with glibc's default malloc against ``maskformer.allocator.reuse_freed_memory``.

Each setting runs in a fresh process (the setting is process-wide): ``MASKFORMER_MALLOC=0`` keeps glibc's defaults,
the other process lets the optimised ``Predictor`` set it as it does by default. Per call: minor page faults and
system CPU seconds from ``getrusage`` and the median wall time, for the optimised forward at 512x512 and, with
``--train``, an R50 training step (batch 2, as ``compare_transformers.py --parts train`` times it).

Run: .venv/bin/python benchmarks/bench_allocator.py [--models r50,swin-t] [--calls 6] [--train]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _measure(call, calls: int) -> dict:
    call()  # warm-up: the first call maps everything once under either setting
    start = resource.getrusage(resource.RUSAGE_SELF)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    end = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "faults": (end.ru_minflt - start.ru_minflt) / calls,
        "system_s": (end.ru_stime - start.ru_stime) / calls,
        "median_s": statistics.median(times),
    }


def worker(what: str, calls: int) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if what == "train":
        import compare_transformers as ct

        from maskformer.allocator import reuse_freed_memory
        from maskformer.build import build_criterion

        reuse_freed_memory()  # as `maskformer train` does (a no-op with MASKFORMER_MALLOC=0)
        cfg, ours, _ = ct._models(aux_loss=True)
        g = torch.Generator().manual_seed(2)
        x = torch.randn(2, 3, 512, 512, generator=g).contiguous(memory_format=torch.channels_last)
        targets = ct._train_targets(cfg, 2, 512, g)
        model, criterion = ours.train().to(memory_format=torch.channels_last), build_criterion(cfg)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            criterion(model(x), targets)["loss"].backward()

        return _measure(step, calls)
    import suite

    from maskformer import Predictor

    _, ours, _, _ = suite._build(suite.MODELS[what][0], transformers=False)
    predictor = Predictor(ours)  # the default: optimised copy (and the allocator setting unless opted out)
    x = torch.randn(1, 3, 512, 512).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return _measure(lambda: predictor.model(x, with_aux=False), calls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="r50,swin-t", help="comma-separated subset of r50, swin-t (forward)")
    parser.add_argument("--calls", type=int, default=6, help="timed calls per process (after one warm-up)")
    parser.add_argument("--train", action="store_true", help="also the R50 training step")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.calls)))
        return 0
    parts = [m for m in args.models.split(",") if m] + (["train"] if args.train else [])
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.2f}, "
          f"{args.calls} calls per process, 512x512")  # fmt: skip
    print("| part | malloc | page faults / call | system s / call | median s / call |")
    print("|---|---|---:|---:|---:|")
    for part in parts:
        for label, env in (("glibc default", {"MASKFORMER_MALLOC": "0"}), ("reuse_freed_memory", {})):
            cmd = [sys.executable, __file__, "--worker", part, "--calls", str(args.calls)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT)
            if out.returncode:
                sys.exit(f"bench_allocator: the {part} worker failed:\n{out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            name = "training step" if part == "train" else f"{part} forward"
            print(f"| {name} | {label} | {r['faults']:,.0f} | {r['system_s']:.3f} | {r['median_s']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
