"""``maskformer info CONFIG_OR_MODEL``: parameter counts and FLOPs (fvcore convention) of a config's model, or of a
trained model's (its checkpoint carries its config), with what a trained model is: architecture, classes, default
task, training iterations and data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maskformer.cli.inference_options import MODEL_HELP


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="what a model is (classes, task, training), its parameter count and FLOPs",
        description="For a trained model: its architecture, backbone, classes, default task and the iterations and"
        " data it was trained on. Parameters (total and per top-level module) and FLOPs with fvcore's convention"
        " (one multiply-add = one flop) over the whole semantic inference graph, like the original's"
        " tools/analyze_model.py with --use-fixed-input-size. 'original' counts what the original computes (every"
        " decoder layer's mask head); 'lean' is this project's inference path (last layer only).",
    )
    p.add_argument(
        "config",
        metavar="CONFIG_OR_MODEL",
        help="a YAML config file, or a model: " + MODEL_HELP + " (its saved config is used)",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--data-root", help="shortcut for --set data.root=DIR (a folder config counts its classes.json)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="input size (default: the training crop)")
    p.add_argument(
        "--no-flops", action="store_true", help="parameters only (FLOP tracing takes a while for big models)"
    )
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.set_defaults(func=run)


def _model_and_config(name: str, overrides: list[str]):
    """The network (random weights) and config of a YAML file, else the model ``name`` resolves to, with its weights
    checked against its config as every command that runs it does; ``--set model.*`` on a model counts the network
    of its changed config instead (a note says so)."""
    import maskformer
    from maskformer.build.datasets import check_dataset_name
    from maskformer.config import apply_overrides, config_from_dict, config_to_dict
    from maskformer.engine.checkpoint import config_of, load_checkpoint, load_model_and_config, meta_of
    from maskformer.errors import ConfigError
    from maskformer.zoo import config_file, resolve_model

    if Path(name).suffix.lower() in (".yaml", ".yml"):
        cfg = maskformer.load_config(config_file(name), overrides)
        check_dataset_name(cfg)  # (as train and eval read it)
        if cfg.data.dataset == "folder" and Path(cfg.data.root).exists():
            from maskformer.build.datasets import fit_classes, sets_num_classes

            # the class count training takes from classes.json (else run() says which count it shows)
            cfg = fit_classes(cfg, explicit=sets_num_classes(overrides))
        return maskformer.build_model(cfg), cfg, None
    path = resolve_model(name)
    network = [o.split("=", 1)[0].strip() for o in overrides if o.split("=", 1)[0].strip().startswith("model.")]
    obj = load_checkpoint(path)
    cfg = config_of(obj, path)
    about = describe(cfg, meta_of(obj, cfg, path), obj.get("iteration"), path)
    if network:  # a what-if on the checkpoint's config: its weights are not what is counted
        model = None
    else:
        model, cfg, _ = load_model_and_config(path)
    if overrides:
        try:
            cfg = config_from_dict(apply_overrides(config_to_dict(cfg), overrides))
        except ConfigError as e:
            raise ConfigError(f"--set on the config of {path}: {e}") from None
        check_dataset_name(cfg)
    if model is None:
        print(f"maskformer info: note: --set {network[0]}: the network of the changed config is counted, not the one "
              f"in {path}", file=sys.stderr)  # fmt: skip
        model = maskformer.build_model(cfg)
    return model, cfg, about


def backbone_name(cfg) -> str:
    """R50 / R101 / R-[1, 1, 1, 1], Swin-T/S/B/L (by embedding width and depths), or the timm model's name."""
    b = cfg.model.backbone
    if b.type == "resnet":
        return f"R-{list(b.blocks)}" if b.blocks else f"R{b.depth}{'c' if b.stem == 'deeplab' else ''}"
    if b.type == "swin":
        sizes = {
            (96, (2, 2, 6, 2)): "T",
            (96, (2, 2, 18, 2)): "S",
            (128, (2, 2, 18, 2)): "B",
            (192, (2, 2, 18, 2)): "L",
        }
        size = sizes.get((b.embed_dim, tuple(b.depths)))
        return f"Swin-{size}" if size else f"Swin (width {b.embed_dim}, depths {list(b.depths)})"
    return f"timm {b.timm_name}"


def describe(cfg, meta, iteration: object, path) -> dict:
    """What a trained model is: its architecture, classes, default task and training (for ``info MODEL``)."""
    mask_model = cfg.model.meta_arch == "maskformer"
    return {
        "path": str(path),
        "architecture": {
            "maskformer": "MaskFormer",
            "per_pixel": "per-pixel baseline",
            "per_pixel_plus": "per-pixel baseline+",
        }.get(cfg.model.meta_arch, cfg.model.meta_arch),
        "backbone": backbone_name(cfg),
        "queries": cfg.model.num_queries if mask_model else None,
        "classes": list(meta.classes),
        "things": [name for name, thing in zip(meta.classes, meta.isthing) if thing],
        "ignore_label": meta.ignore_label,
        "default_task": "panoptic" if mask_model and cfg.inference.panoptic_on else "semantic",
        "dataset": cfg.data.dataset,
        "data_root": cfg.data.root,
        "iteration": iteration if isinstance(iteration, int) and not isinstance(iteration, bool) else None,
        "max_iters": cfg.train.max_iters,
    }


def run(args: argparse.Namespace) -> int:
    from maskformer.engine.analysis import count_flops, count_parameters
    from maskformer.errors import UserError

    if args.size and min(args.size) < 32:
        raise UserError(f"--size must be at least 32x32, got {args.size[0]}x{args.size[1]}")
    if args.data_root and not Path(args.data_root).is_dir():
        raise UserError(f"--data-root {args.data_root}: no such folder")
    root = [f"data.root={Path(args.data_root).absolute()}"] if args.data_root else []
    model, cfg, about = _model_and_config(args.config, [*args.overrides, *root])
    model.eval()
    yaml = Path(args.config).suffix.lower() in (".yaml", ".yml")
    if yaml and cfg.data.dataset == "folder" and not Path(cfg.data.root).exists():
        note = f"{cfg.model.num_classes} classes, as the config says ({cfg.data.root} not found: --data-root DIR"
        print(f"maskformer info: note: {note} counts its classes.json, as training does)", file=sys.stderr)
    h, w = args.size or cfg.data.crop_size
    result: dict = {"config": args.config, "parameters": count_parameters(model)}
    if about is not None:
        result["model"] = about
    if not args.no_flops:
        total, by_op = count_flops(model, height=h, width=w)
        lean, _ = count_flops(model, height=h, width=w, lean=True)
        result["flops"] = {"size": [h, w], "original": total, "lean": lean, "original_by_operator": by_op}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    params = result["parameters"]
    print(f"{args.config}")
    if about is not None:
        _print_about(about)
    print(f"  parameters  {params['total']:>14,}")
    for name, n in params.items():
        if name != "total":
            print(f"    {name:<18}{n:>12,}")
    if "flops" in result:
        f = result["flops"]
        print(f"  FLOPs at {h}x{w} (fvcore, 1 multiply-add = 1 flop)")
        mask_model = cfg.model.meta_arch == "maskformer"  # (a per-pixel baseline has no decoder layers)
        heads = f"all {cfg.model.dec_layers} decoder layers' mask heads, " if mask_model else ""
        what = f"{heads}as the original"
        print(f"    original graph  {f['original'] / 1e9:>9.2f} G   ({what})")
        for op, n in sorted(f["original_by_operator"].items(), key=lambda kv: -kv[1]):  # (they add up to it)
            print(f"      {op:<26}{n / 1e9:>9.3f} G")
        what = "last decoder layer only, this project's inference" if mask_model else "this project's inference"
        print(f"    lean graph      {f['lean'] / 1e9:>9.2f} G   ({what})")
    return 0


def _print_about(about: dict) -> None:
    names = about["classes"]
    shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8} more)" if len(names) > 8 else "")
    queries = f", {about['queries']} queries" if about["queries"] else ""
    print(f"  model       {about['architecture']}, {about['backbone']} backbone{queries}; default task "
          f"{about['default_task']}")  # fmt: skip
    print(f"  classes     {len(names)} ({len(about['things'])} things; ignore label {about['ignore_label']}): {shown}")
    if about["iteration"] is not None:
        where = f" at {about['data_root']}" if about["data_root"] and about["dataset"] != "synthetic" else ""
        print(f"  trained     {about['iteration']:,} iterations (train.max_iters {about['max_iters']:,}) on "
              f"{about['dataset']}{where}")  # fmt: skip
