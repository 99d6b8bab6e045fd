"""How well do CamVid val figures transfer to drives the model has never seen? A leave-one-drive-out estimate.

CamVid's SegNet split has three training drives (0001TP: 62 images, 0006R0: 101, 0016E5: 204); all 101 val images
come from 0016E5 (neighbouring frames of training images), while the test split is mostly another drive (Seq05VD)
plus more of 0001TP. This tool trains a configs/camvid variant on the training list *without* one drive and evaluates
the final model on val and on the left-out drive, so the gap between "seen drive" and "unseen drive" can be measured
on this machine (the test split is not here)::

    .venv/bin/python tools/camvid_sequence_holdout.py --output-dir runs/camvid-holdout
    .venv/bin/python tools/camvid_sequence_holdout.py --variant per_pixel --holdout 0006R0 --output-dir runs/holdout-pp

It writes OUTPUT_DIR/data/ (list files + symlinks to the dataset folders, no image is copied), OUTPUT_DIR/<variant>/
(the run), OUTPUT_DIR/result.json and prints a markdown table. Extra ``--set KEY=VALUE`` overrides go to training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiment_common import MASKFORMER, REPO, run_cmd  # noqa: E402


def make_root(source: Path, target: Path, holdout: str) -> dict[str, int]:
    """List files for a training split without ``holdout`` and a ``heldout`` split of it, sharing ``source``'s
    folders through symlinks. Returns the number of images per split."""
    lines = (source / "train.txt").read_text().splitlines()
    kept = [line for line in lines if line.strip() and not Path(line.split()[0]).name.startswith(holdout)]
    held = [line for line in lines if line.strip() and Path(line.split()[0]).name.startswith(holdout)]
    if not held:
        raise SystemExit(f"{source / 'train.txt'}: no training image of drive '{holdout}'")
    target.mkdir(parents=True, exist_ok=True)
    for name in ("train", "trainannot", "val", "valannot", "classes.json"):
        link = target / name
        if not link.exists() and (source / name).exists():
            link.symlink_to((source / name).resolve())
    (target / "train.txt").write_text("\n".join(kept) + "\n")
    (target / "heldout.txt").write_text("\n".join(held) + "\n")
    (target / "val.txt").write_text((source / "val.txt").read_text())
    return {"train": len(kept), "heldout": len(held), "val": len((source / "val.txt").read_text().split("\n")) - 1}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", default=str(REPO.parent / "shared/datasets/camvid"), help="CamVid (SegNet lists)"
    )
    parser.add_argument("--variant", default="maskformer", help="configs/camvid/<variant>.yaml (default maskformer)")
    parser.add_argument("--holdout", default="0006R0", help="training drive to leave out (0001TP, 0006R0 or 0016E5)")
    parser.add_argument("--output-dir", default="runs/camvid-holdout")
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads per subprocess (see camvid_experiment)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training override")
    args = parser.parse_args()
    source, out = Path(args.data_root), Path(args.output_dir)
    if not (source / "train.txt").is_file():
        raise SystemExit(f"{source}: no train.txt (CamVid SegNet layout expected)")
    config = REPO / "configs" / "camvid" / f"{args.variant}.yaml"
    if not config.is_file():
        raise SystemExit(f"{config}: no such variant")
    counts = make_root(source, out / "data", args.holdout)
    run_dir = out / args.variant
    sets = [x for o in args.set for x in ("--set", o)]
    tic = time.perf_counter()
    run_cmd([*MASKFORMER, "train", str(config), "--data-root", str(out / "data"), "--output-dir", str(run_dir),
         "--set", "train.eval_period=-1", "--quiet", *sets], threads=args.threads)  # fmt: skip
    train_seconds = time.perf_counter() - tic
    result: dict = {"variant": args.variant, "holdout": args.holdout, "images": counts, "overrides": args.set,
                    "train_seconds": round(train_seconds, 1)}  # fmt: skip
    for split in ("val", "heldout"):
        text = run_cmd([*MASKFORMER, "eval", str(run_dir / "model_final.pt"), "--split", split, "--json",
                    "--output-dir", str(run_dir / f"eval_{split}")], threads=args.threads)  # fmt: skip
        metrics = json.loads(text)
        result[split] = {"mIoU": metrics["mIoU"], "pACC": metrics["pACC"], "per_class": metrics.get("IoU", {})}
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    gap = result["val"]["mIoU"] - result["heldout"]["mIoU"]
    print(f"| variant | trained on | val (drive 0016E5, seen) mIoU | left-out drive {args.holdout} mIoU | gap |")
    print("|---|---|---|---|---|")
    print(f"| {args.variant} | {counts['train']} images (without {args.holdout}) | {result['val']['mIoU']:.1f} | "
          f"{result['heldout']['mIoU']:.1f} ({counts['heldout']} images) | {gap:.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
