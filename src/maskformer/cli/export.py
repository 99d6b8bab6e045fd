"""``maskformer export onnx CHECKPOINT OUTPUT.onnx``: the lean inference model as ONNX, verified with onnxruntime."""

from __future__ import annotations

import argparse

from maskformer.cli.inference_options import MODEL_HELP


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export the lean inference model (ONNX)",
        description="Export the with_aux=False forward (images [1,3,H,W], normalised and padded -> pred_logits, "
        "pred_masks) with FrozenBN folded; H and W dynamic (multiples of 32) when the model allows it. The file is "
        "checked with onnxruntime against PyTorch on a random input of --size and written atomically.",
    )
    p.add_argument("format", choices=["onnx"], help="export format")
    p.add_argument(
        "checkpoint",
        metavar="MODEL",
        help=MODEL_HELP + "; or a YAML config with --random-weights",
    )
    p.add_argument("output", help="the .onnx file to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument(
        "--size", nargs=2, type=int, default=[512, 512], metavar=("H", "W"), help="example input size (default 512 512)"
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 18 or more (default 18)")
    p.add_argument("--static", action="store_true", help="fixed H and W: the --size (default 512 512)")
    p.add_argument(
        "--random-weights", action="store_true", help="MODEL is a YAML config: export its architecture, random weights"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="max |onnxruntime - PyTorch| allowed, over max(1, max |output|) per output; above it nothing is written "
        "(default 1e-3)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from maskformer.cli.outputs import check_new_file
    from maskformer.errors import UserError

    if Path(args.output).suffix != ".onnx":
        raise UserError(f"{args.output}: the output must end in .onnx")
    h, w = args.size
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise UserError(f"--size: H and W must be positive multiples of 32, got {h} {w}")
    import importlib.util
    import sys

    for module in ("onnx", "onnxscript", "onnxruntime"):  # (torch's exporter and the check need all three)
        if importlib.util.find_spec(module) is None:
            raise UserError(f"export onnx needs the onnx extra: pip install 'maskformer[onnx]' ({module} is missing)")
    from onnx.defs import onnx_opset_version

    newest = onnx_opset_version()
    if not args.tolerance > 0 or args.tolerance == float("inf"):  # (NaN passed every check; -1 failed every export)
        raise UserError(f"--tolerance must be a positive number, got {args.tolerance}")
    if not 18 <= args.opset <= newest:
        raise UserError(f"--opset: torch's ONNX exporter writes opsets 18 to {newest} here, got {args.opset}")
    from maskformer.zoo import config_file, resolve_model

    source = config_file(args.checkpoint) if args.random_weights else resolve_model(args.checkpoint)
    if not source.is_file():
        raise UserError(f"{source}: no such file")
    check_new_file(args.output, overwrite=args.overwrite, sources=(source,))
    import maskformer
    from maskformer.engine.checkpoint import load_model
    from maskformer.inference.export import export_onnx

    if args.random_weights:
        if source.suffix.lower() not in (".yaml", ".yml"):
            raise UserError(f"{source}: --random-weights takes a YAML config, not a checkpoint")
        import torch

        torch.manual_seed(0)  # (the same random weights each run: the same graph check)
        model = maskformer.build_model(maskformer.load_config(source))
    elif source.suffix.lower() in (".yaml", ".yml"):
        raise UserError(f"{source}: a config (YAML), not a checkpoint: add --random-weights to export its"
                        " architecture with random weights, or pass a trained model")  # fmt: skip
    else:
        model = load_model(source)
    from maskformer.modeling.maskformer import MaskFormer

    if not isinstance(model, MaskFormer):
        raise UserError(f"{source}: only MaskFormer models (pred_logits/pred_masks) can be exported")

    def say(step: str) -> None:  # (minutes without a word looked like a hang)
        print(f"maskformer export: {step}", file=sys.stderr, flush=True)

    report = export_onnx(model.eval(), args.output, height=h, width=w, opset=args.opset, dynamic=not args.static,
                         tolerance=args.tolerance, progress=say)  # fmt: skip
    shapes = "dynamic H/W (multiples of 32)" if report.dynamic else f"static {h}x{w}"
    print(
        f"wrote {report.path} (opset {report.opset}, {shapes}); onnxruntime vs PyTorch max |diff| "
        + ", ".join(f"{k} {v:.2e}" for k, v in report.max_abs_diff.items())
    )
    return 0
