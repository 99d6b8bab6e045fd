"""Peak memory and time of one prediction on a large photo (default 6000 x 3400, 20 megapixels).

The model is the demo config with 150 classes and thresholds 0 (random weights keep every query), so the
post-processing at the photo's size is what is measured: semantic labels resize 150 score maps, panoptic resizes
each kept query's mask, and the semantic labels of a panoptic model (``panoptic-model-semantic``: the original's
resize-before-combine order) resize the 100 mask logits and combine them. Run each in a fresh process (peak RSS is
per process):

    .venv/bin/python benchmarks/bench_large_image.py --task semantic
    .venv/bin/python benchmarks/bench_large_image.py --task panoptic
    .venv/bin/python benchmarks/bench_large_image.py --task panoptic-model-semantic
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from PIL import Image

from maskformer.build import build_model
from maskformer.cli.demo import demo_config_path
from maskformer.config import load_config
from maskformer.inference.predictor import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["semantic", "panoptic", "panoptic-model-semantic"], default="semantic")
    parser.add_argument("--size", type=int, nargs=2, default=[3400, 6000], metavar=("H", "W"))
    args = parser.parse_args()
    sets = ["model.num_classes=150", "inference.object_mask_threshold=0.0", "inference.overlap_threshold=0.0",
            f"inference.panoptic_on={str(args.task != 'semantic').lower()}"]  # fmt: skip
    torch.manual_seed(0)
    model = build_model(load_config(demo_config_path(), sets)).eval()
    task = "semantic" if args.task == "panoptic-model-semantic" else args.task
    predictor = Predictor(model, min_size=512, max_size=2048, task_default=task)
    h, w = args.size
    small = np.random.default_rng(0).integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(small).resize((w, h)))  # smooth enough to give several classes

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

    before = peak()
    start = time.perf_counter()
    predictor(image)
    print(f"{args.task} {h}x{w}: peak RSS {peak():.2f} GB (before predicting {before:.2f} GB), "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
