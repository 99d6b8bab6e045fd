"""Where the default Predictor spends its time: torch.profiler over one predict call, grouped by operator.

Builds the suite's model (benchmarks/suite.py: same configs and spread random weights), warms up, profiles one
``Predictor(model)(image, task=...)`` call on a 512x512 picture and prints the operators' share of the self time,
plus the forward alone and the post-processing alone (labels or panoptic segments from the outputs) for comparison.

Run: .venv/bin/python benchmarks/profile_predict.py [--model r50|swin-t] [--task semantic|panoptic] [--threads 1]
     [--bf16] [--rows 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    import suite
    from torch.profiler import ProfilerActivity, profile

    from maskformer import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="r50", choices=sorted(suite.MODELS))
    parser.add_argument("--task", default="semantic", choices=("semantic", "panoptic"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: least disturbed by other load)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--rows", type=int, default=15, help="operators to list")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    semantic, panoptic = suite.MODELS[args.model]
    _, ours, _, _ = suite._build(semantic if args.task == "semantic" else panoptic, transformers=False)
    predictor = Predictor(ours, bf16=args.bf16, min_size=suite.SIZE, max_size=4 * suite.SIZE)
    image = suite._image(0)
    x = torch.randn(1, 3, suite.SIZE, suite.SIZE)
    with torch.inference_mode():
        for _ in range(2):
            predictor(image, task=args.task)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            predictor(image, task=args.task)
        start = time.perf_counter()
        predictor.model(x)
        forward = time.perf_counter() - start
        post = _post_seconds(predictor, image, args.task)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    head = f"{args.model} {args.task} predict, {args.threads} thread(s), bf16={args.bf16}"
    print(f"{head}: {total / 1e6:.3f} s profiled; forward alone {forward:.3f} s; post-processing alone "
          f"{1e3 * post:.1f} ms (median of 10)")  # fmt: skip
    for e in events[: args.rows]:
        ms = e.self_cpu_time_total / 1e3
        print(f"{100 * e.self_cpu_time_total / total:6.1f} %  {ms:9.1f} ms  {e.count:6d}x  {e.key}")
    return 0


def _post_seconds(predictor, image, task: str) -> float:
    """Median time of the post-processing alone (labels or panoptic segments from the model's outputs)."""
    outputs, sizes, padded = predictor._forward([image], predictor._panoptic_keep if task == "panoptic" else None)
    if task == "panoptic":
        call = lambda: predictor._panoptic(  # noqa: E731
            outputs, sizes, sizes, thing_ids=predictor.thing_ids, input_size=padded,
            object_mask_threshold=predictor.object_mask_threshold, overlap_threshold=predictor.overlap_threshold,
        )  # fmt: skip
    else:
        call = lambda: predictor._semantic_labels(  # noqa: E731
            outputs, sizes, sizes, input_size=padded, fast=predictor.fast, corner_labels=predictor.corner_labels
        )
    times = []
    for _ in range(11):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[5]


if __name__ == "__main__":
    raise SystemExit(main())
