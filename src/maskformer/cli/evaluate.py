"""``maskformer eval CHECKPOINT``: evaluate a checkpoint on its dataset's validation split."""

from __future__ import annotations

import argparse

from maskformer.cli.inference_options import MODEL_HELP, add_inference_options, check_output_dir, predictor_options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model (mIoU, PQ^St; PQ for panoptic models)",
        description="Evaluate MODEL (a checkpoint, zoo name, Hub id or transformers folder) on the validation split"
        " of the dataset in its config. Prints a table and writes OUTPUT_DIR/metrics.json (also with --json, which"
        " prints the same JSON instead of the table). Semantic: mIoU, fwIoU, mACC, pACC in percent; IoU and ACC per"
        " class (null for a class without ground-truth pixels), IoU_by_class by name, classes, images, miou_formula;"
        " PQ_St (the paper's PQ^St). Panoptic: All/Things/Stuff with pq, sq, rq, n as fractions, per_class (name,"
        " pq, sq, rq, tp, fp, fn by the dataset's category id), plus PQ, SQ, RQ in percent.",
    )
    p.add_argument(
        "checkpoint",
        metavar="MODEL",
        help=MODEL_HELP,
    )
    p.add_argument("--data-root", help="dataset root (default: the checkpoint config's data.root)")
    p.add_argument("--split", help="split to evaluate (default: the config's data.val_split)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value of the checkpoint, e.g. --set test.min_size=640",
    )
    add_inference_options(p)
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.add_argument("--output-dir", default=".", help="where metrics.json goes (default: current directory)")
    p.add_argument("--json", action="store_true", help="print the metrics JSON on stdout instead of a table")
    p.set_defaults(func=run)


def _note_renamed_classes(model_classes, cfg) -> None:
    """A note when the data names the model's classes otherwise (the metrics are keyed by the data's names); a
    ConfigError when it lists them in another order."""
    import sys

    from maskformer.build import build_meta
    from maskformer.data.metadata import moved_class
    from maskformer.errors import ConfigError

    data_classes = build_meta(cfg).classes
    if len(data_classes) != len(model_classes):  # another class table, not another order: evaluate_model says it
        return
    moved = moved_class(list(model_classes), list(data_classes))
    if moved:  # the scores of one class would be printed under another's name
        raise ConfigError(f"the data lists the model's classes in another order ({moved}); evaluate on data with "
                          "the class table the model was trained with")  # fmt: skip
    pairs = [(m, d) for m, d in zip(model_classes, data_classes) if m != d]
    if pairs and len(data_classes) == len(model_classes):
        print(f"maskformer eval: note: the data names {len(pairs)} of the model's classes otherwise (e.g. the model's "
              f"{pairs[0][0]!r} is {pairs[0][1]!r}); the metrics use the data's names", file=sys.stderr)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from maskformer.build import check_dataset_name
    from maskformer.config import apply_overrides, config_from_dict, config_to_dict, parse_override
    from maskformer.engine import distributed as dist
    from maskformer.engine.checkpoint import load_model_and_config
    from maskformer.engine.evaluate import evaluate_model
    from maskformer.errors import ConfigError
    from maskformer.evaluation import format_panoptic_table, format_semantic_table
    from maskformer.fileio import atomic_write_text, json_text
    from maskformer.zoo import resolve_model

    if args.max_images is not None and args.max_images < 1:
        raise ConfigError(f"--max-images must be at least 1, got {args.max_images}")
    out = Path(args.output_dir)
    check_output_dir(args.output_dir)  # before the evaluation, not after it
    device = dist.init_from_env()
    model, cfg, meta = load_model_and_config(resolve_model(args.checkpoint))
    overrides = list(args.overrides)
    for override in overrides:  # the network and its training are the checkpoint's: such a key would change nothing
        path = parse_override(override)[0]
        key = ".".join(path)
        if path[0] in ("model", "solver", "train", "loss"):
            raise ConfigError(f"--set {key}: eval runs the checkpoint's network as it was trained; --set changes "
                              "only its data., test. and inference. settings")  # fmt: skip
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.split:
        overrides.append(f"data.val_split={args.split}")
    cfg = config_from_dict(apply_overrides(config_to_dict(cfg), overrides))
    check_dataset_name(cfg)
    if cfg.data.dataset == "synthetic" and args.data_root:  # (it scored the generated scenes, with no word)
        raise ConfigError(f"--data-root {args.data_root}: this model's data are generated scenes "
                          "(data.dataset=synthetic), which read no folder: leave --data-root out")  # fmt: skip
    if cfg.data.dataset != "synthetic" and not Path(cfg.data.root).exists():
        raise ConfigError(f"data.root: {cfg.data.root} does not exist (pass --data-root DIR)")
    options = predictor_options(args)
    panoptic = cfg.model.meta_arch == "maskformer" and cfg.inference.panoptic_on
    if cfg.model.meta_arch == "maskformer" and not (cfg.inference.semantic_on or panoptic):  # (exit 0 with no metric)
        raise ConfigError("inference.semantic_on and inference.panoptic_on are both false: nothing to evaluate (set "
                          "one true, e.g. --set inference.semantic_on=true for mIoU)")  # fmt: skip
    if args.tta and panoptic:  # the original has no panoptic TTA: refuse it, as predict does, or say where it applies
        if not cfg.inference.semantic_on:
            raise ConfigError("tta: test-time augmentation is for semantic labels only, as in the original (this "
                              "model evaluates panoptic only): drop --tta, or score semantic labels with --set "
                              "inference.panoptic_on=false --set inference.semantic_on=true")  # fmt: skip
        print("maskformer eval: note: --tta applies to the semantic metrics only; PQ is computed without it (as in"
              " the original)", file=sys.stderr)  # fmt: skip
    _note_renamed_classes(meta.classes, cfg)
    model.cfg = cfg  # with the --set overrides
    metrics = evaluate_model(cfg, model, device=device, max_images=args.max_images, progress=not args.json, **options)
    main_process = dist.is_main()  # (after cleanup every process would count as the main one)
    dist.cleanup()
    if not main_process:
        return 0
    text = json_text(metrics, indent=1)
    atomic_write_text(out / "metrics.json", text + "\n")
    if args.json:
        print(text)
        return 0
    names = list(metrics.get("IoU_by_class", {})) or meta.classes  # (the data's names, as in metrics.json)
    if "mIoU" in metrics:
        print(format_semantic_table(metrics, class_names=names))
    if "All" in metrics:
        print(format_panoptic_table(metrics))
    if "panoptic_note" in metrics:
        print(f"maskformer eval: note: {metrics['panoptic_note']}", file=sys.stderr)
    print(f"maskformer eval: wrote {(out / 'metrics.json').resolve()}", file=sys.stderr)
    return 0
