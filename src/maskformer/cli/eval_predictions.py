"""``maskformer eval-predictions {panoptic,semantic}``: score prediction files already on disk.

panoptic: COCO-panoptic JSON + RGB PNGs, same numbers as panopticapi's ``pq_compute``.
semantic: label PNGs paired by file name, detectron2's SemSegEvaluator metrics (mIoU formula selectable).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval-predictions",
        help="score prediction files on disk (panoptic PQ or semantic mIoU)",
        description="Score prediction files already on disk against ground truth: panoptic (COCO-panoptic JSON + "
        "PNGs, PQ/SQ/RQ as panopticapi) or semantic (label PNGs, mIoU/fwIoU/mACC/pACC as detectron2).",
    )
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK")

    pan = tasks.add_parser(
        "panoptic",
        help="PQ/SQ/RQ of COCO-panoptic predictions",
        description="PQ/SQ/RQ of COCO-panoptic predictions (JSON + RGB PNGs with id = R + 256 G + 256^2 B). The"
        " predictions.json of `maskformer predict` works as it is: an image found by its file name when its image_id"
        " differs, categories matched by name when their ids differ.",
    )
    pan.add_argument("--gt-json", type=Path, required=True, help="ground-truth COCO panoptic JSON (with categories)")
    pan.add_argument("--gt-dir", type=Path, required=True, help="folder of ground-truth panoptic PNGs")
    pan.add_argument("--pred-json", type=Path, required=True, help="predictions in COCO panoptic JSON")
    pan.add_argument("--pred-dir", type=Path, required=True, help="folder of predicted panoptic PNGs")

    sem = tasks.add_parser(
        "semantic",
        help="mIoU/fwIoU/mACC/pACC of semantic label PNGs",
        description="mIoU/fwIoU/mACC/pACC of semantic label PNGs; GT_DIR/NAME.png is paired with PRED_DIR/NAME.png,"
        " else PRED_DIR/NAME_labels.png (what `maskformer predict` writes).",
    )
    sem.add_argument("--gt-dir", type=Path, required=True, help="folder of ground-truth label PNGs")
    sem.add_argument(
        "--pred-dir", type=Path, required=True, help="folder of predicted label PNGs (same names, or NAME_labels.png)"
    )
    sem.add_argument(
        "--recursive",
        action="store_true",
        help="also GT_DIR's subfolders: GT_DIR/SUB/NAME.png with PRED_DIR/SUB/NAME[_labels].png (as `maskformer"
        " predict --recursive` writes them)",
    )
    sem.add_argument("--num-classes", type=int, help="number of classes K (labels 0..K-1); or --classes")
    sem.add_argument("--ignore-label", type=int, help="ground-truth value to ignore (e.g. 255); or --classes")
    sem.add_argument(
        "--classes",
        type=Path,
        metavar="DATA_ROOT",
        help="a folder dataset's root (or its classes.json): labels and predictions hold its class ids, as"
        " `maskformer predict` writes them for such a model; gives K and the ignore value",
    )
    sem.add_argument(
        "--ade20k-raw",
        action="store_true",
        help="the ground truth is ADE20K's raw annotations/ (0 = other, 1..150 = the classes), as `maskformer eval`"
        " reads them: shifted to 0..149 with 0 ignored, for predictions of an ADE20K-150 model (gives K and the"
        " ignore value)",
    )
    sem.add_argument(
        "--miou-formula",
        choices=("d2_2021", "d2_current"),
        default="d2_2021",
        help="d2_2021 (the default, as the paper: predicted-but-absent classes count as 0) or d2_current "
        "(detectron2 >= 2022-07)",
    )

    for task in (pan, sem):
        task.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
        task.add_argument("--output", type=Path, help="also write the metrics to this JSON file (atomically)")
        task.add_argument("--workers", type=int, default=0, help="worker processes for reading files (default 0)")
        task.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..evaluation import (
        evaluate_panoptic_folder,
        evaluate_semantic_folder,
        format_panoptic_table,
        format_semantic_table,
    )
    from ..fileio import atomic_write_text, broken_link, json_text

    if args.output is not None and (link := broken_link(args.output)) == "a symbolic link loop":  # (else the loop's
        raise UserError(f"{args.output}: {link}")  # link was replaced by the file, after all the scoring)
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    if args.task == "panoptic":
        metrics = evaluate_panoptic_folder(
            args.gt_json, args.gt_dir, args.pred_json, args.pred_dir, workers=args.workers
        )
        table = format_panoptic_table(metrics)
    else:
        num_classes, ignore_label, to_positions, names = _semantic_classes(args)
        gt_map = None
        if args.ade20k_raw:
            from ..evaluation.offline import ade20k_raw_positions

            gt_map = ade20k_raw_positions
        metrics = evaluate_semantic_folder(
            args.gt_dir,
            args.pred_dir,
            num_classes=num_classes,
            ignore_label=ignore_label,
            miou_formula=args.miou_formula,
            workers=args.workers,
            to_positions=to_positions,
            gt_to_positions=gt_map,
            recursive=args.recursive,
        )
        table = format_semantic_table(metrics, names)
        if names:  # (the keys of eval's metrics.json)
            metrics.update(classes=list(names), IoU_by_class=dict(zip(names, metrics["IoU"])))
    if args.output is not None:
        atomic_write_text(args.output, json_text(metrics, indent=2) + "\n")
    print(json_text(metrics, indent=2) if args.json else table)
    return 0


def _semantic_classes(args: argparse.Namespace) -> tuple[int, int, Any, list[str] | None]:
    """(K, ignore label, id -> position map or None, class names or None) from --classes, or from --num-classes and
    --ignore-label."""
    from ..errors import UserError

    if args.ade20k_raw:
        if args.classes is not None or args.num_classes not in (None, 150) or args.ignore_label not in (None, 255):
            raise UserError("--ade20k-raw means 150 classes and ignore value 255: leave out --classes, --num-classes "
                            "and --ignore-label")  # fmt: skip
        from ..data import load_meta

        return 150, 255, None, list(load_meta("ade20k_150").classes)
    if args.classes is None:
        if args.num_classes is None or args.ignore_label is None:
            raise UserError("give --num-classes and --ignore-label, or --classes DATA_ROOT (a folder dataset)")
        if args.num_classes < 1:
            raise UserError(f"--num-classes must be >= 1, got {args.num_classes}")
        return args.num_classes, args.ignore_label, None, None
    from ..data.folder import folder_label_map

    if args.num_classes is not None or args.ignore_label is not None:
        raise UserError("--classes gives the classes and the ignore value: leave out --num-classes and --ignore-label")
    if not args.classes.exists():
        raise UserError(f"--classes {args.classes}: no such file or folder")
    if args.classes.is_file() and args.classes.name not in ("classes.json", "classes.yaml", "classes.yml"):
        raise UserError(f"--classes {args.classes}: give a folder dataset's root or its classes.json / classes.yaml")
    meta, to_positions = folder_label_map(args.classes if args.classes.is_dir() else args.classes.parent)
    return meta.num_classes, meta.ignore_label, to_positions, list(meta.classes)
