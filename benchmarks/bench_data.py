"""Data-loading throughput on real CamVid at a training crop, and where the time goes.

    .venv/bin/python benchmarks/bench_data.py [--crop 360 480] [--workers 0 1 2] [--seconds 10] [--repeats 3] [--write]

Measures, side by side in one run: images/s of the full training pipeline (decode WebP + PNG label, checks,
resize by choice, crop, SSD colour augmentation, flip, pad, targets, collate) through ``build_train_loader`` for each
``--workers`` value, plus a per-stage breakdown in the main process. ``--write`` records the results in
``benchmarks/results_data.md``. Needs ../shared/datasets/camvid (skips with a message otherwise).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import PIL
import torch

from maskformer.data import DATASETS, InfiniteSampler, SemanticTrainMapper, build_train_loader, collate
from maskformer.data.color import ColorAugSSD
from maskformer.data.io import read_image, read_label
from maskformer.data.targets import semantic_targets
from maskformer.data.transforms import category_area_crop, pad_to, resize_image, resize_label, resize_shortest_edge_size

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "datasets" / "camvid"
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def loader_throughput(args: argparse.Namespace, workers: int, mapper: SemanticTrainMapper) -> tuple[float, int]:
    ds = DATASETS["camvid"](root=str(CAMVID), split="train", mapper=mapper)
    loader = build_train_loader(
        ds,
        batch_size_per_process=args.batch_size,
        sampler=InfiniteSampler(len(ds), seed=0, tag_with_seed=True),
        num_workers=workers,
        collate_fn=functools.partial(collate, size_divisibility=32, pixel_mean=MEAN, pixel_std=STD),
        seed=0,
    )
    it = iter(loader)
    for _ in range(args.warmup):  # worker start-up and first decodes are not steady state
        next(it)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        next(it)
        n += args.batch_size
    elapsed = time.perf_counter() - start
    del it
    return n / elapsed, n


def stage_breakdown(args: argparse.Namespace, mapper: SemanticTrainMapper, n: int = 40) -> dict[str, float]:
    """Milliseconds per image for each step of the pipeline, single process."""
    ds = DATASETS["camvid"](root=str(CAMVID), split="train")
    color = ColorAugSSD()
    t = dict.fromkeys(["decode image", "decode label", "resize", "crop", "colour aug", "flip+pad", "targets"], 0.0)
    rng = np.random.default_rng(0)
    for i in range(n):
        e = ds.entries[i]
        s = time.perf_counter()
        img = read_image(e["file_name"])
        t["decode image"] += time.perf_counter() - s
        s = time.perf_counter()
        sem = read_label(e["sem_seg_file_name"])
        t["decode label"] += time.perf_counter() - s
        s = time.perf_counter()
        size = resize_shortest_edge_size(*img.shape[:2], int(rng.choice(mapper.min_sizes)), mapper.max_size)
        img, sem = resize_image(img, size), resize_label(sem, size)
        t["resize"] += time.perf_counter() - s
        s = time.perf_counter()
        y0, x0, ch, cw = category_area_crop(sem, size, mapper.crop_size, 1.0, 11, rng)
        img, sem = img[y0 : y0 + ch, x0 : x0 + cw], sem[y0 : y0 + ch, x0 : x0 + cw]
        t["crop"] += time.perf_counter() - s
        s = time.perf_counter()
        img = color(img, rng)
        t["colour aug"] += time.perf_counter() - s
        s = time.perf_counter()
        img, sem = pad_to(img[:, ::-1], mapper.crop_size, 128), pad_to(sem[:, ::-1], mapper.crop_size, 11)
        t["flip+pad"] += time.perf_counter() - s
        s = time.perf_counter()
        semantic_targets(sem, 11)
        t["targets"] += time.perf_counter() - s
    return {k: v / n * 1000 for k, v in t.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crop", type=int, nargs=2, default=[360, 480], metavar=("H", "W"))
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per run")
    p.add_argument("--repeats", type=int, default=3, help="runs per setting, interleaved across settings")
    p.add_argument("--warmup", type=int, default=3, help="batches discarded before timing")
    p.add_argument("--write", action="store_true", help="write benchmarks/results_data.md")
    args = p.parse_args()
    if not CAMVID.is_dir():
        print(f"skipped: {CAMVID} not found (the benchmark needs the shared CamVid data)")
        return 0
    torch.set_num_threads(1)  # workers are processes; one thread each avoids oversubscribing 2 cores
    ch, cw = args.crop
    # The ADE20K recipe scaled to CamVid: short side int(x * 0.1 * H) for x in 5..20 (0.5x..2x), long side <= 4W.
    min_sizes = [int(x * 0.1 * ch) for x in range(5, 21)]
    mapper = SemanticTrainMapper(
        min_sizes=min_sizes, max_size=4 * cw, crop_size=(ch, cw), ignore_label=11, color_aug_ssd=True
    )
    load_before = os.getloadavg()[0]
    stages = stage_breakdown(args, mapper)
    runs: dict[int, list[tuple[float, int]]] = {w: [] for w in args.workers}
    for _ in range(args.repeats):  # interleaved, so load from other jobs hits every setting alike
        for w in args.workers:
            runs[w].append(loader_throughput(args, w, mapper))
    load_after = os.getloadavg()[0]
    lines = [
        "# Data loading throughput (CamVid, training pipeline)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_data.py {' '.join(sys.argv[1:])}`".replace(" --write", ""),
        f"Date: {datetime.date.today().isoformat()}; machine: {_cpu()}, {len(os.sched_getaffinity(0))} cores, "
        f"{torch.get_num_threads()} torch thread per process; Python {platform.python_version()}, "
        f"torch {torch.__version__}, numpy {np.__version__}, Pillow {PIL.__version__}. 1-minute load average "
        f"{load_before:.1f} before, {load_after:.1f} after (other processes on the machine share the 2 cores).",
        "",
        f"Pipeline: CamVid train (367 images 360x480, WebP + 8-bit PNG), resize short side by choice of "
        f"{min_sizes[0]}..{min_sizes[-1]} ({len(min_sizes)} sizes, max {4 * cw}), crop {ch}x{cw}, "
        "SSD colour augmentation, flip, pad to the crop, per-class targets, collate (normalize + pad to 32); "
        f"batch {args.batch_size}; each run {args.seconds:.0f} s timed after {args.warmup} warm-up batches, "
        f"{args.repeats} runs per setting, interleaved.",
        "",
        f"| DataLoader workers | images/s (median of {args.repeats}) | min..max | ms/image (median) | images timed |",
        "|---|---|---|---|---|",
    ]
    for w, rs in runs.items():
        rates = sorted(r for r, _ in rs)
        med = float(np.median(rates))
        n = sum(k for _, k in rs)
        lines.append(f"| {w} | {med:.1f} | {rates[0]:.1f}..{rates[-1]:.1f} | {1000 / med:.1f} | {n} |")
    lines += ["", "Per-stage cost in one process (ms/image, mean over 40 images):", "", "| stage | ms |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in stages.items()]
    lines += [f"| total | {sum(stages.values()):.2f} |", ""]
    best = max(float(np.median([r for r, _ in rs])) for rs in runs.values())
    lines += [
        "Reading: these are data-pipeline numbers alone (no model). With workers the pipeline runs in other processes,",
        "in parallel with the training step of the main process; the timed loop here leaves the main process idle, and",
        "the worker numbers include moving each collated batch (float32 images, bool masks, int64 label maps) through",
        "shared memory. On 2 cores shared with other jobs, workers add that transfer cost without adding a free core,",
        f"so compare medians and ranges with care. A batch of {args.batch_size} costs "
        f"{args.batch_size / best:.2f} s of pipeline time at the best median rate.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        (ROOT / "benchmarks" / "results_data.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
