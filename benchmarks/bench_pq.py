"""PQ evaluation speed: maskformer's evaluators vs a panopticapi-style implementation, side by side in one run.

Synthetic COCO-like data: N images of 640x480, ~20 segments each (Voronoi cells; about 60% things, 40% stuff, a
little crowd; VOID in 2 px bands between segments and one unlabelled box); predictions = the same cells from
jittered seeds with some wrong categories. Ground-truth and predicted maps use random RGB-colour ids, as COCO
panoptic PNGs do, and are written as RGB PNGs to a temp folder.

Measured (images/s, single process; the methods alternate in blocks so load changes affect all alike):
  (a) PanopticEvaluator.update on maps already in memory (how `maskformer eval` uses it),
  (b) panopticapi-style: PNG decode + rgb2id + np.unique over gt*256^3+pred + per-segment Python loops
      (panopticapi's pq_compute_single_core, transcribed below because panopticapi is not on the package index),
  (c) maskformer's folder evaluator on the same PNGs (decode included), for a like-for-like file-based figure.
All three must give the same PQ (checked). Run: .venv/bin/python benchmarks/bench_pq.py [--images N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from maskformer.evaluation import PanopticEvaluator, evaluate_panoptic_folder

H, W = 480, 640
CATEGORIES = [{"id": i + 1, "isthing": int(i < 80), "name": f"c{i + 1}"} for i in range(133)]
OFFSET = 256 * 256 * 256


def voronoi(seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell index per pixel [H, W] and a mask of the ~2 px bands along cell borders (where COCO leaves VOID)."""
    ys, xs = np.mgrid[0:H, 0:W]
    d = np.sqrt((ys[None] - seeds[:, 0, None, None]) ** 2 + (xs[None] - seeds[:, 1, None, None]) ** 2)
    two = np.partition(d, 1, axis=0)[:2]
    return d.argmin(axis=0), (two[1] - two[0]) < 2.0


def make_image(rng: np.random.Generator) -> tuple[np.ndarray, list, np.ndarray, list]:
    n = int(rng.integers(16, 25))
    seeds = rng.uniform((0, 0), (H, W), size=(n, 2))
    cats = [int(rng.integers(1, 81)) if rng.random() < 0.6 else int(rng.integers(81, 134)) for _ in range(n)]
    gt_cells, borders = voronoi(seeds)
    pred_cells, _ = voronoi(seeds + rng.normal(0, 12, size=seeds.shape))

    def colours(count: int) -> list[int]:
        return rng.permutation(np.unique(rng.integers(1, 256**3, size=count + 8)))[:count].tolist()

    gt_ids = colours(n)
    gt = np.asarray(gt_ids)[gt_cells]
    gt[borders] = 0  # VOID between segments
    y, x = int(rng.integers(0, H - 40)), int(rng.integers(0, W - 80))
    gt[y : y + 40, x : x + 80] = 0  # an unlabelled region
    areas = [int((gt == gt_ids[i]).sum()) for i in range(n)]
    gt_segments = [
        {
            "id": gt_ids[i],
            "category_id": cats[i],
            "iscrowd": int(cats[i] <= 80 and rng.random() < 0.05),
            "area": areas[i],
        }
        for i in range(n)
        if areas[i]
    ]
    pred_ids = colours(n)
    pred = np.asarray(pred_ids)[pred_cells]
    y, x = int(rng.integers(0, H - 60)), int(rng.integers(0, W - 60))
    pred[y : y + 60, x : x + 60] = 0  # an unlabelled patch
    pred_cats = [c if rng.random() < 0.85 else int(rng.integers(1, 134)) for c in cats]
    pred_segments = [{"id": pred_ids[i], "category_id": pred_cats[i]} for i in range(n) if (pred == pred_ids[i]).any()]
    return pred, pred_segments, gt, gt_segments


def to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


# --- (b) panopticapi-style, transcribed the way pq_compute_single_core + pq_average are written ------------------
def rgb2id(color: np.ndarray) -> np.ndarray:
    if color.dtype == np.uint8:
        color = color.astype(np.int32)
    return color[:, :, 0] + 256 * color[:, :, 1] + 256 * 256 * color[:, :, 2]


def panopticapi_image(stat: dict, gt_ann: dict, pred_ann: dict, gt_folder: Path, pred_folder: Path, categories: dict):
    pan_gt = rgb2id(np.array(Image.open(gt_folder / gt_ann["file_name"]), dtype=np.uint32))
    pan_pred = rgb2id(np.array(Image.open(pred_folder / pred_ann["file_name"]), dtype=np.uint32))
    gt_segms = {el["id"]: el for el in gt_ann["segments_info"]}
    pred_segms = {el["id"]: dict(el) for el in pred_ann["segments_info"]}
    pred_labels_set = {el["id"] for el in pred_ann["segments_info"]}
    labels, labels_cnt = np.unique(pan_pred, return_counts=True)
    for label, label_cnt in zip(labels, labels_cnt):
        if label not in pred_segms:
            if label == 0:
                continue
            raise KeyError(f"segment {label} in PNG, not in JSON")
        pred_segms[label]["area"] = label_cnt
        pred_labels_set.remove(label)
        if pred_segms[label]["category_id"] not in categories:
            raise KeyError("unknown category")
    if pred_labels_set:
        raise KeyError("segments in JSON, not in PNG")
    pan_gt_pred = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
    gt_pred_map = {}
    labels, labels_cnt = np.unique(pan_gt_pred, return_counts=True)
    for label, intersection in zip(labels, labels_cnt):
        gt_pred_map[(int(label // OFFSET), int(label % OFFSET))] = intersection
    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), intersection in gt_pred_map.items():
        if gt_label not in gt_segms or pred_label not in pred_segms:
            continue
        if gt_segms[gt_label]["iscrowd"] == 1:
            continue
        if gt_segms[gt_label]["category_id"] != pred_segms[pred_label]["category_id"]:
            continue
        union = (
            pred_segms[pred_label]["area"]
            + gt_segms[gt_label]["area"]
            - intersection
            - gt_pred_map.get((0, pred_label), 0)
        )
        iou = intersection / union
        if iou > 0.5:
            stat[gt_segms[gt_label]["category_id"]]["tp"] += 1
            stat[gt_segms[gt_label]["category_id"]]["iou"] += iou
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)
    crowd_labels_dict = {}
    for gt_label, gt_info in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if gt_info["iscrowd"] == 1:
            crowd_labels_dict[gt_info["category_id"]] = gt_label
            continue
        stat[gt_info["category_id"]]["fn"] += 1
    for pred_label, pred_info in pred_segms.items():
        if pred_label in pred_matched:
            continue
        intersection = gt_pred_map.get((0, pred_label), 0)
        if pred_info["category_id"] in crowd_labels_dict:
            intersection += gt_pred_map.get((crowd_labels_dict[pred_info["category_id"]], pred_label), 0)
        if intersection / pred_info["area"] > 0.5:
            continue
        stat[pred_info["category_id"]]["fp"] += 1


def panopticapi_pq(stat: dict, categories: dict) -> float:
    pq, n = 0.0, 0
    for label in categories:
        iou, tp, fp, fn = (stat[label][k] for k in ("iou", "tp", "fp", "fn"))
        if tp + fp + fn == 0:
            continue
        n += 1
        pq += iou / (tp + 0.5 * fp + 0.5 * fn)
    return pq / n


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}, numpy {np.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="number of synthetic 640x480 images (default 500)")
    parser.add_argument("--block", type=int, default=25, help="images per alternating block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, help="also write the results as markdown to this file")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    cases = [make_image(rng) for _ in range(args.images)]
    categories = {c["id"]: c for c in CATEGORIES}
    with tempfile.TemporaryDirectory() as tmp:
        gt_dir, pred_dir = Path(tmp) / "gt", Path(tmp) / "pred"
        gt_dir.mkdir()
        pred_dir.mkdir()
        gt_anns, pred_anns = [], []
        for i, (pred, pred_segments, gt, gt_segments) in enumerate(cases):
            name = f"{i:06d}.png"
            Image.fromarray(to_rgb(gt)).save(gt_dir / name)
            Image.fromarray(to_rgb(pred)).save(pred_dir / name)
            gt_anns.append({"image_id": i, "file_name": name, "segments_info": gt_segments})
            pred_anns.append({"image_id": i, "file_name": name, "segments_info": pred_segments})

        times = {"a": 0.0, "b": 0.0, "c": 0.0}
        ours = PanopticEvaluator(categories=CATEGORIES)
        stat: dict = defaultdict(lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
        folder_pq: list[float] = []
        for start in range(0, args.images, args.block):
            block = range(start, min(start + args.block, args.images))
            t0 = time.perf_counter()
            for i in block:
                ours.update(*cases[i])
            t1 = time.perf_counter()
            for i in block:
                panopticapi_image(stat, gt_anns[i], pred_anns[i], gt_dir, pred_dir, categories)
            t2 = time.perf_counter()
            gt_json, pred_json = Path(tmp) / "gt.json", Path(tmp) / "pred.json"
            gt_json.write_text(json.dumps({"annotations": [gt_anns[i] for i in block], "categories": CATEGORIES}))
            pred_json.write_text(json.dumps({"annotations": [pred_anns[i] for i in block]}))
            t3 = time.perf_counter()
            folder_pq.append(evaluate_panoptic_folder(gt_json, gt_dir, pred_json, pred_dir)["All"]["pq"])
            t4 = time.perf_counter()
            times["a"] += t1 - t0
            times["b"] += t2 - t1
            times["c"] += t4 - t3

    pq_ours, pq_ref = ours.compute()["All"]["pq"], panopticapi_pq(stat, categories)
    assert abs(pq_ours - pq_ref) < 1e-9, (pq_ours, pq_ref)
    for b, start in enumerate(range(0, args.images, args.block)):  # (c) scored each block on its own
        check = PanopticEvaluator(categories=CATEGORIES)
        for i in range(start, min(start + args.block, args.images)):
            check.update(*cases[i])
        assert abs(check.compute()["All"]["pq"] - folder_pq[b]) < 1e-9
    n = args.images
    rate = {k: n / v for k, v in times.items()}
    lines = [
        f"PQ of {n} synthetic {W}x{H} images (~20 segments each): {100 * pq_ours:.4f} (both implementations agree)",
        "",
        "| method | images/s | vs panopticapi-style |",
        "|---|---:|---:|",
        f"| (a) PanopticEvaluator, maps in memory | {rate['a']:.1f} | {rate['a'] / rate['b']:.1f}x |",
        f"| (b) panopticapi-style (PNG decode + rgb2id + np.unique + loops) | {rate['b']:.1f} | 1.0x |",
        f"| (c) evaluate_panoptic_folder, same PNGs, 1 process | {rate['c']:.1f} | {rate['c'] / rate['b']:.1f}x |",
        "",
        f"Machine: {machine()}",
        f"Date: {datetime.date.today().isoformat()}",
        f"Command: .venv/bin/python benchmarks/bench_pq.py --images {n}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text("# PQ evaluation speed\n\n" + text + "\n")


if __name__ == "__main__":
    main()
