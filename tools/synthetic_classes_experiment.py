"""Does the mask-classification gain grow with the number of classes (paper Table 2)? A generated many-class study.

The embedded synthetic set (maskformer.data.synthetic) has at most 16 classes, so this script writes its own
folder-format data set (``classes.json`` + ``train.txt``/``val.txt`` + PNGs, read by ``data.dataset: folder``) with
K = P x C classes: P texture patterns times C colours. Each 64x64 scene is a random Voronoi partition into 3-5
regions, each region filled with one class's pattern in its colour (plus pixel noise). The same four formulations
as the CamVid study (configs/synthetic-classes/*.yaml: same small backbone and decoder, same schedule) are trained
for K = 16 and K = 128 and evaluated on a generated val split, and docs/RESULTS_synthetic.md is written::

    .venv/bin/python tools/synthetic_classes_experiment.py --output-dir runs/camvid-synthetic
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiment_common import (  # noqa: E402
    REPO,
    RunResult,
    Variant,
    formulations,
    ordering_verdict,
    plot_curves,
    results_table,
    train_and_evaluate,
)

# Mirror-symmetric patterns only: training flips images horizontally, which must not change a region's class.
PATTERNS = ("solid", "stripes_h", "stripes_v", "wide_h", "wide_v", "checker", "dots", "grid")
CONFIG_DIR = REPO / "configs" / "synthetic-classes"


def variants() -> list[Variant]:
    """The four formulations; ``num_queries`` of the Q = K variants is set per class count by override."""
    return formulations(CONFIG_DIR)


def class_table(num_colors: int) -> list[dict]:
    """K = len(PATTERNS) x num_colors classes: id = colour * P + pattern; colour = evenly spaced hue."""
    classes = []
    for c in range(num_colors):
        r, g, b = colorsys.hsv_to_rgb(c / num_colors, 0.85, 0.95)
        for p, pattern in enumerate(PATTERNS):
            classes.append({"id": c * len(PATTERNS) + p, "name": f"{pattern}_hue{c}",
                            "color": [int(r * 255), int(g * 255), int(b * 255)]})  # fmt: skip
    return classes


def _pattern(kind: str, yy: np.ndarray, xx: np.ndarray, period: int) -> np.ndarray:
    """Boolean foreground mask ``[H,W]`` of one texture pattern."""
    half = period / 2
    if kind == "solid":
        return np.ones_like(yy, dtype=bool)
    if kind == "stripes_h":
        return (yy % period) < half
    if kind == "stripes_v":
        return (xx % period) < half
    if kind == "wide_h":
        return (yy % (2 * period)) < period
    if kind == "wide_v":
        return (xx % (2 * period)) < period
    if kind == "checker":
        return ((yy // half + xx // half) % 2) == 0
    if kind == "dots":
        return ((yy % period - half) ** 2 + (xx % period - half) ** 2) < (period / 3.5) ** 2
    if kind == "grid":
        return ((yy % period) < 1.5) | ((xx % period) < 1.5)
    raise ValueError(kind)


def generate_scene(rng: np.random.Generator, *, size: int, classes: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """``(image uint8 [H,W,3], label uint8/uint16 [H,W])``: Voronoi regions, one class each, noisy texture."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    n = int(rng.integers(3, 6))
    seeds = rng.uniform(0, size, size=(n, 2)).astype(np.float32)
    dist = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    region = dist.argmin(0)
    ids = rng.choice(len(classes), size=n, replace=False)
    image = np.zeros((size, size, 3), np.float32)
    label = np.zeros((size, size), np.uint16 if len(classes) > 250 else np.uint8)
    for r, k in enumerate(ids):
        cls = classes[int(k)]
        kind = PATTERNS[int(cls["id"]) % len(PATTERNS)]
        fg = np.array(cls["color"], np.float32)
        bg = fg * 0.35  # the same hue, darker: colour stays identifiable on both phases of the pattern
        period = 8
        oy, ox = rng.uniform(0, 2 * period, size=2)
        on = _pattern(kind, yy + oy, xx + ox, period)
        where = region == r
        image[where] = np.where(on[where][:, None], fg, bg)
        label[where] = int(cls["id"])
    image += rng.normal(0.0, 10.0, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_dataset(root: Path, *, num_colors: int, size: int, train: int, val: int, seed: int) -> Path:
    """Write the folder data set once (skipped when ``root/val.txt`` exists); returns ``root``."""
    from PIL import Image

    if (root / "val.txt").is_file():
        return root
    classes = class_table(num_colors)
    for split, count in (("train", train), ("val", val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, num_colors])
        lines = []
        for i in range(count):
            image, label = generate_scene(rng, size=size, classes=classes)
            Image.fromarray(image).save(root / split / f"{i:05d}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"{i:05d}.png")
            lines.append(f"{split}/{i:05d}.png {split}annot/{i:05d}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.json").write_text(
        json.dumps({"classes": classes, "ignore_label": 255 if len(classes) < 255 else 65535}, indent=1)
    )
    return root


def write_report(
    path: Path, sections: dict[int, list[RunResult]], *, command: str, iters: int, pending: list[str], threads: int = 1
):
    """docs/RESULTS_synthetic.md: one table per class count, the gap per K, and the curves plot per K."""
    parts = [
        "# Many classes: the four formulations on a generated data set",
        "",
        f"Reproduce (from the repository root):\n\n```\n{command}\n```",
        "",
        "Why: the paper (Table 2) finds the mask-classification gain grows with the number of classes (ADE20K-150 "
        "vs ADE20K-Full 847). The embedded synthetic set has at most 16 classes, so this study writes its own: "
        f"K = {len(PATTERNS)} patterns x C hues (K = 16: C = 2; K = 128: C = 16), 64x64 scenes of 3-5 Voronoi "
        "regions, one class each (2000 train / 200 val images per K). Fine-grained classes (neighbouring hues "
        "22.5 degrees apart at K = 128) make the many-class task harder, as in ADE20K-Full.",
        "",
        f"Models: as the CamVid study (ResNet [2,2,2,2] width 16 from scratch, FPN 96, decoder 6 x 128, deep "
        f"supervision), trained at 64x64 with batch 8 for {iters} iterations, AdamW 1e-3, poly, seed 0, one run per "
        "variant; Q = K queries for PerPixelBaseline+ and MaskFormer-fixed, N = 32 for MaskFormer. One difference "
        "from CamVid, meant for all four: the transformer decoder reads res3 (8x8 tokens at 64x64), not res5 "
        "(2x2 tokens) — except PerPixelBaseline+, which reads res5 whatever `model.transformer_in_feature` says (the "
        "model builder ignores that key for `per_pixel_plus`; its Q = K class queries need no region recognition, "
        "and its K = 16 result was identical with res5 and res3 settings). Runs are sequential with "
        f"{threads} intra-op thread(s) each (`--threads`); the recorded run had the 2-core machine to itself "
        "(2026-11-25, ~12:10-13:00 UTC), so `train s` compares the variants' cost.",
        "",
        "A first attempt with res5 (configs as here but `model.transformer_in_feature: res5`; run directory kept in "
        "runs/camvid-synthetic-res5, not reproduced by the command above) gave at K = 16 after 600 iterations: "
        "PerPixelBaseline 93.4, PerPixelBaseline+ 89.7, MaskFormer-fixed 91.5, MaskFormer (bipartite) **20.3** mIoU. "
        "Its class loss stayed near chance (weighted cross-entropy ~1.7, about what chance-level matched queries "
        "give) while its mask losses fell: with bipartite matching a query must recognise *which* class its region "
        "is, whereas with fixed matching (query i = class i) and with per-pixel classification the class comes "
        "with the query's index or from the stride-4 pixel embeddings. Suspecting the 2x2-token decoder memory, "
        "the study uses res3 (8x8 tokens); that helped only partly at 600 iterations (MaskFormer 40.3 mIoU at "
        "K = 16, the other three 89.7-93.4; K = 128: every decoder variant below 13): bipartite-matched MaskFormer "
        "learns class recognition far more slowly from scratch than the fixed-assignment formulations. Since "
        "MaskFormer reached 79.3 at K = 16 with 2400 iterations (same config, `--set train.max_iters=2400`), the "
        f"study now trains every variant for {iters} iterations.",
        "",
    ]
    gaps = []
    for k, results in sorted(sections.items()):
        parts += [f"## K = {k} classes (val)", "", results_table(results), "",
                  f"![val mIoU against training time](synthetic_K{k}_miou_vs_time.png)", "",
                  ordering_verdict(results), ""]  # fmt: skip
        by = {r.variant.key: r for r in results}
        if "maskformer" in by and "per_pixel_plus" in by:
            gaps.append((k, float(by["maskformer"].final["mIoU"]) - float(by["per_pixel_plus"].final["mIoU"]),
                         float(by["maskformer"].final["mIoU"]) - float(by.get("maskformer_fixed", by["maskformer"])
                                                                       .final["mIoU"])))  # fmt: skip
    if pending:
        parts += [f"Not finished (or not run): {', '.join(pending)}.", ""]
    parts += ["## Does the gap grow with K?", ""]
    if len(gaps) >= 2:
        parts += ["| K | MaskFormer - PerPixelBaseline+ (mIoU) | MaskFormer - MaskFormer-fixed (mIoU) |",
                  "|---:|---:|---:|"] + [f"| {k} | {g:+.1f} | {f:+.1f} |" for k, g, f in gaps]  # fmt: skip
        grew = gaps[-1][1] > gaps[0][1]
        weak = [k for k, rs in sections.items()
                if max(float(r.final["mIoU"]) for r in rs if r.variant.key != "per_pixel") < 20.0]  # fmt: skip
        parts += ["", f"The paper predicts the MaskFormer - per-pixel gap grows with K. In this run it "
                  f"{'grew numerically' if grew else 'did not grow'} ({gaps[0][1]:+.1f} at K = {gaps[0][0]} vs "
                  f"{gaps[-1][1]:+.1f} at K = {gaps[-1][0]}). One seed, minutes of training from scratch: read "
                  "differences of a few points as noise."]  # fmt: skip
        if weak:
            parts += [
                "",
                f"**Caveat:** at K = {', '.join(map(str, weak))} no variant with a transformer decoder exceeded 20 % "
                f"mIoU after {iters} iterations from scratch (PerPixelBaseline, without one, did): they have barely "
                "begun to learn these classes, so the "
                "numerical change of the gap is an artefact of every decoder variant failing; it says little about the "
                "formulations, and this experiment cannot confirm or refute "
                "the paper's trend. A longer schedule is needed (not affordable in this session).",
            ]
        fixed_gaps = []
        for k, results in sorted(sections.items()):
            by = {r.variant.key: r for r in results}
            if "maskformer_fixed" in by and "per_pixel_plus" in by:
                d = float(by["maskformer_fixed"].final["mIoU"]) - float(by["per_pixel_plus"].final["mIoU"])
                fixed_gaps.append(f"{d:+.1f} at K = {k}")
        if len(fixed_gaps) >= 2:
            parts += ["", "Mask classification with fixed matching (MaskFormer-fixed, the paper's Table 4a) against "
                      "PerPixelBaseline+ (same decoder, same Q = K queries): " + ", ".join(fixed_gaps)
                      + " mIoU."]  # fmt: skip
        failed = [k for k, g, _ in gaps if any(r.variant.key == "maskformer" and float(r.final["mIoU"]) < 10.0
                                                for r in sections[k])]  # fmt: skip
        if failed and not weak:
            parts += [
                "",
                f"**Bipartite MaskFormer did not learn at K = {', '.join(map(str, failed))}** (below 10 % mIoU after "
                f"{iters} iterations, while PerPixelBaseline+ with the same decoder learned): from scratch, a query "
                "matched by the Hungarian algorithm must learn to recognise its region's class among K, and with "
                "16 hues x 8 patterns that recognition had barely started within this schedule (in the recorded "
                "run its class loss fell only from 4.4 to 2.8, against 2.5 to 0.7 at K = 16, while its mask and "
                "dice losses fell nearly as far as at K = 16; see the runs' metrics.jsonl); fixed matching and "
                "per-pixel classification get the class from the query index or the per-pixel embedding instead. "
                "So at this scale the experiment contradicts the paper's many-class trend; the paper's models start "
                "from ImageNet-pretrained backbones and train for 160k iterations, where class recognition is "
                "available from the start.",
            ]
    else:
        parts += ["Not enough class counts finished to compare."]
    path.write_text("\n".join(parts) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output-dir", default="runs/camvid-synthetic", help="runs and generated data go here")
    ap.add_argument("--classes", nargs="*", type=int, default=[16, 128], help="class counts (multiples of 8)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, 4 iterations, report in output dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from finished runs' saved metrics")
    ap.add_argument(
        "--retrain",
        action="store_true",
        help="train again even where a finished run exists (default: re-evaluate finished runs, train the rest)",
    )
    args = ap.parse_args(argv)
    out = Path(args.output_dir)
    out = out if out.is_absolute() else (REPO / out)
    out.mkdir(parents=True, exist_ok=True)
    lock = out / "running.pid"  # a second invocation (e.g. camvid_experiment.py --synthetic) must not train alongside
    if lock.is_file() and _alive(int(lock.read_text().strip() or 0)):
        print(
            f"{out}: another synthetic run is in progress (pid {lock.read_text().strip()}); not starting a second one"
        )
        return 0
    lock.write_text(f"{os.getpid()}\n")
    try:
        return _run(args, out)
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _run(args: argparse.Namespace, out: Path) -> int:
    """Generate the data sets, train and evaluate every (K, variant), rewrite the report after each."""
    docs = out if args.quick else REPO / "docs"
    report = docs / "RESULTS_synthetic.md"
    n_train, n_val = (32, 8) if args.quick else (2000, 200)
    base_sets = ["train.max_iters=4", "train.eval_period=2", "solver.warmup_iters=1", "train.checkpoint_period=0"]
    from maskformer import load_config

    iters = 4 if args.quick else load_config(CONFIG_DIR / "maskformer.yaml").train.max_iters
    command = (f".venv/bin/python tools/synthetic_classes_experiment.py --output-dir {args.output_dir}"
               + (f" --threads {args.threads}" if args.threads != 1 else "")
               + (" --quick" if args.quick else ""))  # fmt: skip
    sections: dict[int, list[RunResult]] = {}
    # The paper's key pair first (PerPixelBaseline+ vs MaskFormer at every K), so a cut-short run still answers
    # "does the gap grow with K"; then MaskFormer-fixed, then PerPixelBaseline.
    order = {"per_pixel_plus": 0, "maskformer": 1, "maskformer_fixed": 2, "per_pixel": 3}
    todo = [(k, v) for v in sorted(variants(), key=lambda v: order[v.key]) for k in args.classes]
    canonical = [v.key for v in variants()]
    for k, v in todo:
        if k % len(PATTERNS):
            raise SystemExit(f"--classes: {k} is not a multiple of {len(PATTERNS)}")
        if args.report_only and not (out / f"K{k}" / v.key / "metrics.json").is_file():
            continue
        root = write_dataset(out / f"data-K{k}", num_colors=k // len(PATTERNS), size=64, train=n_train, val=n_val,
                             seed=0)  # fmt: skip
        sets = [f"model.num_classes={k}", f"data.root={root}"]
        if v.key in ("per_pixel_plus", "maskformer_fixed"):
            sets.append(f"model.num_queries={k}")
        if args.quick:
            sets += base_sets
        print(f"[{time.strftime('%H:%M:%S')}] K={k} training {v.name}", flush=True)
        r = train_and_evaluate(v, out=out / f"K{k}", data_root=str(root), overrides=sets, threads=args.threads,
                               size=(64, 64), reuse=not args.retrain, report_only=args.report_only)  # fmt: skip
        print(f"[{time.strftime('%H:%M:%S')}] K={k} {v.name}: mIoU {r.final['mIoU']:.2f} "
              f"PQ^St {r.final['PQ_St']['PQ']:.2f} train {r.train_seconds:.0f}s", flush=True)  # fmt: skip
        sections.setdefault(k, []).append(r)
        sections[k].sort(key=lambda r: canonical.index(r.variant.key))
        plot_curves(sections[k], docs / f"synthetic_K{k}_miou_vs_time.png", title=f"synthetic K = {k}, val mIoU")
        finished = {(kk, r.variant.key) for kk, rs in sections.items() for r in rs}
        pending = [f"K={kk} {vv.name}" for kk, vv in todo if (kk, vv.key) not in finished]
        write_report(report, sections, command=command, iters=iters, pending=pending, threads=args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
