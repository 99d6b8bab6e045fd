"""The paper's central comparison (Tables 2 and 4a/4b) at CPU scale on CamVid: four formulations, one backbone.

One command trains PerPixelBaseline, PerPixelBaseline+, MaskFormer-fixed and MaskFormer sequentially from scratch
(configs/camvid/*.yaml, identical except the formulation), evaluates each *final* model on CamVid val (no
best-checkpoint picking), and writes docs/RESULTS.md plus docs/camvid_miou_vs_time.png after every variant, so
partial results survive an interrupted run::

    .venv/bin/python tools/camvid_experiment.py --output-dir runs/camvid
    .venv/bin/python tools/camvid_experiment.py --quick --output-dir runs/camvid-quick   # smoke run, few iterations

Training and evaluation run as ``maskformer`` subprocesses with one intra-op thread (``--threads``): on this shared
2-core machine two OpenMP threads stall badly whenever another process holds a core (measured: a forward pass went
from 0.02 s to 1.9 s), while one thread plus the data-loader worker process uses both cores steadily.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiment_common import (  # noqa: E402
    REPO,
    RunResult,
    formulations,
    ordering_verdict,
    per_class_table,
    plot_curves,
    results_table,
    train_and_evaluate,
)

CAMVID_VARIANTS = formulations(REPO / "configs" / "camvid")


def holdout_section(path: Path) -> str:
    """The leave-one-drive-out estimate (tools/camvid_sequence_holdout.py) as a report section."""
    head = "## Seen drive vs unseen drive (leave-one-drive-out)\n\n"
    if not path.is_file():
        return head + ("Not run yet: `.venv/bin/python tools/camvid_sequence_holdout.py --output-dir "
                       "runs/camvid-holdout` trains MaskFormer without drive 0006R0 and evaluates it on val and on "
                       "0006R0.")  # fmt: skip
    r = json.loads(path.read_text())
    names = _class_names("camvid")
    val, held = r["val"], r["heldout"]
    gap = val["mIoU"] - held["mIoU"]
    rows = [
        "| | images | mIoU | pACC |",
        "|---|---|---|---|",
        f"| val (drive 0016E5, whose neighbouring frames are in training) | {r['images']['val']} | "
        f"{val['mIoU']:.1f} | {val['pACC']:.1f} |",
        f"| left-out drive {r['holdout']} (never seen) | {r['images']['heldout']} | {held['mIoU']:.1f} | "
        f"{held['pACC']:.1f} |",
    ]
    per_class = " ".join(
        f"{n} {a:.0f}/{b:.0f}," for n, a, b in zip(names, val.get("per_class", []), held.get("per_class", []))
    ).rstrip(",")
    overrides = f" with `{' '.join('--set ' + o for o in r['overrides'])}`" if r.get("overrides") else ""
    return head + "\n".join([
        f"Command: `.venv/bin/python tools/camvid_sequence_holdout.py --variant {r['variant']} --holdout "
        f"{r['holdout']} --output-dir {path.parent.relative_to(REPO) if path.is_relative_to(REPO) else path.parent}`"
        f"{overrides}. The {r['variant']} config, trained exactly as above but on the {r['images']['train']} "
        f"training images of the other two drives ({r['train_seconds'] / 60:.0f} min), final model:",
        "",
        *rows,
        "",
        f"Per-class IoU, val/left-out: {per_class}.",
        "",
        f"The same model loses **{gap:.1f} mIoU points** on a drive it has not seen. The SegNet test split is mostly "
        "such a drive (Seq05VD), so the val figures of this page overstate test accuracy by a similar margin: a "
        "model trained by this page's command will very likely score far more than 3 points below its val figure on "
        "the test split. A wider scale jitter did not change this: with `--set \"data.min_size_train=[90,108,126,"
        "144,162,180,198,216,252,288,324,360]\"` (short side 90-360 instead of 144-216) the same steps gave val 54.2, "
        "left-out 32.2 (2026-11-25). From-scratch models at this scale "
        "learn the appearance of the training drives; the paper's models start from ImageNet-pretrained backbones, "
        "which is the usual remedy and is not available on this machine.",
    ])  # fmt: skip


def write_report(
    results: list[RunResult],
    *,
    path: Path,
    plot_name: str,
    class_names: list[str],
    command: str,
    setup: str,
    discussion: str,
    pending: list[str],
    extra_sections: str = "",
) -> None:
    """Write the whole RESULTS.md (called after every variant, so it is always consistent with what ran)."""
    parts = [
        "# MaskFormer vs per-pixel classification at CPU scale (CamVid, from scratch)",
        "",
        f"Reproduce every number on this page with one command (from the repository root):\n\n```\n{command}\n```",
        "",
        "## Setup",
        "",
        setup,
        "",
        "## CamVid val (101 images, 11 classes), final models",
        "",
        results_table(results) if results else "(no variant finished yet)",
        "",
    ]
    if pending:
        parts += [f"Not finished yet (or not run): {', '.join(pending)}.", ""]
    parts += [
        "mIoU, pACC, PQ^St, SQ^St, RQ^St in percent, from `maskformer eval <run>/model_final.pt --split val`. "
        "`train s` = summed optimisation-step time (evaluation excluded); `wall s` = wall clock of the whole "
        "`maskformer train` process including the periodic evaluations. GFLOPs at the test input size, counted "
        "as the paper does (`maskformer info`).",
        "",
        f"![val mIoU against training time]({plot_name})",
        "",
        "### Per-class IoU (val)",
        "",
        per_class_table(results, class_names) if results else "(none yet)",
        "",
        "### Pairwise differences (val, this run)",
        "",
        ordering_verdict(results),
        "",
        discussion,
        "",
    ]
    if extra_sections:
        parts += [extra_sections, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))


SETUP = """\
- Data: CamVid, SegNet 11-class version (`../shared/datasets/camvid`: 367 train, 101 val; ignore label 11).
  Training: shortest side resized to one of 144-216 (scale 0.8-1.2 of half resolution), random 160x224 crop,
  SSD colour jitter, horizontal flip. Test: shortest side 180 (240x180, half resolution), predictions upsampled
  to the full 480x360 label map.
- Model (identical for all four except the formulation): ResNet with blocks [2,2,2,2], stem 32, bottleneck width 16,
  **BatchNorm, random initialisation — no pretrained weights exist on this machine, everything is trained from
  scratch**; FPN pixel decoder with 96 channels (GN), mask embedding 96; transformer decoder 6 layers, hidden 128,
  4 heads, FFN 512, no dropout, deep supervision (per-pixel baseline: none — it has no decoder).
- Variants (paper Table 2 / 4a-4b): PerPixelBaseline (`per_pixel`), PerPixelBaseline+ (`per_pixel_plus`, Q = K = 11
  queries, one per class, no class head, per-pixel cross-entropy), MaskFormer-fixed (`maskformer`, N = K = 11,
  `loss.matching=fixed`), MaskFormer (`maskformer`, N = 32 queries, Hungarian matching). Loss weights as the paper
  (class 1, focal 20, dice 1, no-object 0.1).
- Optimisation (identical): AdamW lr 1e-3 (backbone multiplier 1.0 because the backbone is not pretrained), weight
  decay 1e-4, 100 warm-up iterations then poly 0.9, batch 8, {iters} iterations (~{epochs:.0f} epochs), full-model
  gradient clipping at 1.0 (the original's 0.01 is too strict from scratch; changed for all four alike), fp32
  (bf16 autocast measured 3-20x *slower* per iteration on this CPU), seed 0, **one run per variant**.
- Machine: 2 CPU cores shared with other engineers' jobs; each run uses one intra-op thread + one data worker.
  Times are therefore noisy; iteration counts (not time limits) fix the amount of training so the numbers are
  reproducible up to floating-point non-determinism."""


CAMVID_DISCUSSION = """\
### What the paper predicts for 11 classes, and what happened

The paper (Table 2, Table 4; ResNet-50/101, ImageNet-pretrained, GPU schedules) finds that with everything else equal
(i) mask classification beats per-pixel classification, more so with more classes: MaskFormer minus PerPixelBaseline+
is +2.6 mIoU / +5.1 PQ^St on ADE20K (150 classes), +2.9 / +4.3 on COCO-Stuff (171), +3.5 / +2.9 on ADE20K-Full (847),
but **+0.0 mIoU / +2.9 PQ^St on Cityscapes (19)**; (ii) on ADE20K, MaskFormer-fixed (N = K) beats PerPixelBaseline+
by +1.8 mIoU / +2.0 PQ^St (Table 4a) and bipartite matching adds +0.5 mIoU / +3.1 PQ^St (Table 4b). CamVid has 11
classes, fewer than Cityscapes, so the paper's prediction here is: **no mIoU gain for MaskFormer over
PerPixelBaseline+, but a PQ^St gain (better recognition, RQ^St)**; the paper gives no few-class number for fixed vs
bipartite matching.

{verdict}

Caveats that may explain departures from the paper: all models are trained from scratch for minutes on one CPU
core (the paper fine-tunes ImageNet-pretrained backbones for 160k iterations with batch 16 on GPUs); the transformer
decoder and the set-prediction loss converge more slowly from scratch than a per-pixel softmax, so short schedules
favour the simpler formulations; one seed per variant, and differences of 1-2 points are within the seed-to-seed
spread one expects on a 101-image val set; half resolution hurts thin classes (Pole, SignSymbol, Pedestrian,
Bicyclist) for every variant; the decoder's memory is the stride-32 res5 map, only 5x7 tokens for a 160x224 training
crop, which makes recognising each mask's class (needed by bipartite matching, not by fixed matching or per-pixel
classification) harder than at the paper's 512x512 crops (in the synthetic study at 64x64, bipartite MaskFormer lagged
far behind for this kind of reason).
None of the curves has flattened at the end of the schedule, so the ordering at 1200 iterations need not be the
ordering at convergence.

### Val and the held-out test split

The reported numbers are those of the final model of each run (no checkpoint selection on val). The SegNet test
split (233 images) is not on this machine; evaluate it with
`maskformer eval runs/camvid/<variant>/model_final.pt --data-root <CamVid root with test.txt> --split test`.
Expect test to be *much lower* than val: all 101 val images come from the drive 0016E5, from which 204 of the 367
training images also come (neighbouring frames), while most test images are from a drive no training image shows
(Seq05VD), the rest from 0001TP. How much lower is measured below by leaving one training drive out; **the val
figures above should not be read as what these from-scratch models score on unseen drives.**

### How the runs were executed

Each `maskformer train`/`eval` subprocess runs with `OMP_NUM_THREADS=1`: on this shared 2-core machine, two OpenMP
threads stalled whenever another process held a core (one forward pass measured 1.9 s with 2 threads vs 0.02 s with
1 thread while another job ran). Other engineers' jobs (tests, benchmarks, demos; load average 5-11) and, for part
of the time, this repository's synthetic study ran at the same time, so `train s` differs between variants partly
for reasons unrelated to the model: per iteration, PerPixelBaseline measured 0.34 s and MaskFormer 0.72 s on an
otherwise quiet core (~7 and ~15 minutes for 1200 iterations); under the load of the recorded run the two
decoder-based MaskFormer variants took 21-24 minutes of wall clock each, above the 20-minute target. The four runs
were sequential, one seed (0) each; there was no time for repeats."""


def _class_names(meta_name: str) -> list[str]:
    from maskformer.data import load_meta

    return list(load_meta(meta_name).classes)


def _parity(gap: float, tol: float = 1.0) -> str:
    if abs(gap) <= tol:
        return "parity (within 1 point)"
    return "a gain" if gap > 0 else "a loss"


def camvid_verdict(results: list[RunResult]) -> str:
    """Whether the paper's few-class predictions held in this run (PerPixelBaseline+ is the paper's reference)."""
    by = {r.variant.key: r for r in results}
    if not all(k in by for k in ("per_pixel", "per_pixel_plus", "maskformer_fixed", "maskformer")):
        return "**Verdict:** not all four variants have finished, so no verdict yet."
    m = {k: float(r.final["mIoU"]) for k, r in by.items()}
    p = {k: float(r.final["PQ_St"]["PQ"]) for k, r in by.items()}
    gap_m, gap_p = m["maskformer"] - m["per_pixel_plus"], p["maskformer"] - p["per_pixel_plus"]
    fix_m, fix_p = m["maskformer_fixed"] - m["per_pixel_plus"], p["maskformer_fixed"] - p["per_pixel_plus"]
    bip_m, bip_p = m["maskformer"] - m["maskformer_fixed"], p["maskformer"] - p["maskformer_fixed"]
    held_m = abs(gap_m) <= 1.0
    return (
        f"**Verdict (this run).** MaskFormer minus PerPixelBaseline+: mIoU {gap_m:+.1f}, PQ^St {gap_p:+.1f}. "
        f"Prediction 'no mIoU gain with few classes' (paper, Cityscapes: +0.0): "
        f"{'held' if held_m else 'did not hold'} — this run shows {_parity(gap_m)} in mIoU. "
        f"Prediction 'PQ^St still improves' (paper: +2.9): {'held' if gap_p > 0 else 'did not hold'} "
        f"({gap_p:+.1f}). "
        f"MaskFormer-fixed minus PerPixelBaseline+ (Table 4a, ADE20K: +1.8 / +2.0): {fix_m:+.1f} mIoU, "
        f"{fix_p:+.1f} PQ^St. MaskFormer (bipartite) minus MaskFormer-fixed (Table 4b, ADE20K: +0.5 / +3.1): "
        f"{bip_m:+.1f} mIoU, {bip_p:+.1f} PQ^St." + _ranking(m, p, {k: r.variant.name for k, r in by.items()})
    )


def _ranking(m: dict[str, float], p: dict[str, float], names: dict[str, str]) -> str:
    """Ranking sentence, and the departure the paper would not predict: the plain per-pixel baseline on top."""
    order_m = sorted(m, key=m.get, reverse=True)
    order_p = sorted(p, key=p.get, reverse=True)
    text = (
        f"\n\nRanking by mIoU: {' > '.join(names[k] for k in order_m)}; by PQ^St: "
        f"{' > '.join(names[k] for k in order_p)}. In the paper PerPixelBaseline is the weakest of all (Table 2; "
        "Cityscapes: 1.1 mIoU and 1.3 PQ^St below PerPixelBaseline+)."
    )
    if order_m[0] == "per_pixel" or order_p[0] == "per_pixel":
        text += (
            " **That part of the paper's ordering did not hold here:** the plainest model, with no transformer "
            "decoder and half the parameters, is the best of the four in this run. Plausible reasons (not tested "
            "here): trained from scratch for only ~26 epochs, the extra 1.7 M decoder parameters of the other "
            "three have had too few updates to pay off (most curves in the plot were still rising at the end), "
            "whereas in the paper all variants start from the same ImageNet-pretrained backbone and train for "
            "127 epochs (ADE20K, 160k x 16 images); and one seed per variant cannot separate differences of a "
            "few points from run-to-run noise."
        )
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output-dir", default="runs/camvid", help="run directories go here (default: runs/camvid)")
    ap.add_argument("--data-root", default=None, help="CamVid root (default: ../shared/datasets/camvid)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 6 iterations per variant; report and plot go into the output dir",
    )
    ap.add_argument("--variants", nargs="*", default=None, help="subset of variant keys (default: all four)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per process (default 1)")
    ap.add_argument("--reuse", action="store_true", help="skip training variants whose final model exists")
    ap.add_argument("--report", default="docs/RESULTS.md", help="report path (relative to the repo root)")
    ap.add_argument("--plot", default="docs/camvid_miou_vs_time.png", help="plot path (relative to the repo root)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from finished runs' saved metrics")
    ap.add_argument("--synthetic", action="store_true", help="afterwards also run the many-class synthetic study")
    ap.add_argument("--holdout-result", default="runs/camvid-holdout/result.json",
                    help="result.json of tools/camvid_sequence_holdout.py to include (skipped if absent)")  # fmt: skip
    args = ap.parse_args(argv)

    data_root = args.data_root or str((REPO.parent / "shared" / "datasets" / "camvid").resolve())
    if not Path(data_root).is_dir():
        print(f"error: CamVid not found at {data_root} (pass --data-root DIR)", file=sys.stderr)
        return 2
    out = (REPO / args.output_dir).resolve() if not Path(args.output_dir).is_absolute() else Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = out / "RESULTS.md" if args.quick else REPO / args.report
    plot = out / "camvid_miou_vs_time.png" if args.quick else REPO / args.plot
    variants = [v for v in CAMVID_VARIANTS if args.variants is None or v.key in args.variants]
    overrides: list[str] = []
    if args.quick:
        overrides = ["train.max_iters=6", "train.eval_period=3", "solver.warmup_iters=2", "train.log_period=1",
                     "train.checkpoint_period=0"]  # fmt: skip
    from maskformer import load_config

    cfg = load_config(variants[0].config, overrides)
    iters, batch = cfg.train.max_iters, cfg.train.batch_size
    size = (cfg.test.min_size, round(cfg.test.min_size * 480 / 360))
    command = "\n".join(filter(None, [
        f".venv/bin/python tools/camvid_experiment.py --output-dir {args.output_dir}"
        + (" --quick" if args.quick else "") + (" --synthetic" if args.synthetic else ""),
    ]))  # fmt: skip
    setup = SETUP.format(iters=iters, epochs=iters * batch / 367)
    names = _class_names("camvid")
    results: list[RunResult] = []

    def extra() -> str:
        return holdout_section(REPO / args.holdout_result) + "\n\n" + synthetic_section()

    def synthetic_section() -> str:
        syn = REPO / "docs" / "RESULTS_synthetic.md"
        if syn.is_file():
            return ("## Many classes (synthetic)\n\nThe same four formulations on a generated many-class data set: "
                    "see [RESULTS_synthetic.md](RESULTS_synthetic.md).")  # fmt: skip
        return ("## Many classes (synthetic)\n\nNot run yet: `.venv/bin/python tools/synthetic_classes_experiment.py` "
                "writes docs/RESULTS_synthetic.md.")  # fmt: skip

    def write(pending: list[str]) -> None:
        plot_curves(results, plot, title=f"CamVid val mIoU, from scratch, {iters} iterations")
        discussion = CAMVID_DISCUSSION.format(verdict=camvid_verdict(results))
        rel_plot = os.path.relpath(plot, report.parent)
        write_report(results, path=report, plot_name=rel_plot, class_names=names, command=command, setup=setup,
                     discussion=discussion, pending=pending, extra_sections=extra())  # fmt: skip

    for v in variants:
        if args.report_only and not (out / v.key / "metrics.json").is_file():
            continue  # not finished: listed as pending
        verb = "collecting" if args.report_only else "training"
        print(f"[{time.strftime('%H:%M:%S')}] {verb} {v.name} ({v.config.name})", flush=True)
        r = train_and_evaluate(v, out=out, data_root=data_root, overrides=overrides, threads=args.threads,
                               size=size, reuse=args.reuse, report_only=args.report_only)  # fmt: skip
        results.append(r)
        print(f"[{time.strftime('%H:%M:%S')}] {v.name}: mIoU {r.final['mIoU']:.2f} PQ^St {r.final['PQ_St']['PQ']:.2f} "
              f"train {r.train_seconds:.0f}s wall {r.wall_seconds:.0f}s", flush=True)  # fmt: skip
        done = {r.variant.key for r in results}
        write([w.name for w in variants if w.key not in done])
    if args.synthetic:
        tool = Path(__file__).resolve().parent / "synthetic_classes_experiment.py"
        subprocess.run([sys.executable, str(tool), "--output-dir", str(out.parent / (out.name + "-synthetic"))]
                       + (["--quick"] if args.quick else []), check=True)  # fmt: skip
        write([])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
