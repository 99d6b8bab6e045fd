"""Batched prediction: images/s of `Predictor` on 4 images one at a time vs as one batch (same run, interleaved).

    .venv/bin/python benchmarks/bench_batch.py [--config configs/ade20k-150/maskformer_R50_bs16_160k.yaml] [--reps 5]

Random weights (seeded), 512x512 images (no test resize), 2 threads; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import maskformer
from maskformer.engine.timing import interleaved_medians

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs/ade20k-150/maskformer_R50_bs16_160k.yaml"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = maskformer.build_model(maskformer.load_config(args.config)).eval()
    predictor = maskformer.Predictor(model, min_size=args.size, max_size=4 * args.size, task_default="semantic")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.batch)]
    load = os.getloadavg()[0]
    med = interleaved_medians(
        {"one_at_a_time": lambda: [predictor(i) for i in images], "one_batch": lambda: predictor(images)}, args.reps
    )
    same = all(torch.equal(a, b) for a, b in zip([predictor(i) for i in images], predictor(images)))
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "config": args.config, "size": args.size,
        "images": args.batch, "load_average_before": load,
        "images_per_second": {k: args.batch / v for k, v in med.items()},
        "batch_over_single_time": med["one_batch"] / med["one_at_a_time"], "identical_labels": same,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
