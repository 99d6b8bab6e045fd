"""``maskformer convert``: original model-zoo ``.pkl`` files and transformers folders -> checkpoints, and back.

    maskformer convert detectron2 model_final_d8dbeb.pkl r50.pt \\
        --config configs/ade20k-150/maskformer_R50_bs16_160k.yaml
    maskformer convert hf ./maskformer-swin-tiny-ade swin_t.pt
    maskformer convert to-hf run/model_final.pt ./my-maskformer-hf
    maskformer convert to-detectron2 run/model_final.pt model_final.pkl

The work is done by ``maskformer.engine.conversion``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from maskformer.cli.inference_options import MODEL_HELP
from maskformer.cli.outputs import OVERWRITE_HELP, check_new_file, check_not_input


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert original (detectron2) or transformers weights into a checkpoint, and a checkpoint back to either",
        description="Convert weights between formats. Every source key must be used (or dropped on purpose) and every"
        " model key filled with the right shape; anything else is an error listing the keys.",
    )
    sub = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    d2 = sub.add_parser(
        "detectron2",
        help="an original model-zoo .pkl (or a .pth from the original code) -> checkpoint",
        description="Load an original MaskFormer checkpoint (old or new key layout; .pkl read without running code)"
        " into the model of CONFIG and write a self-describing checkpoint. The .pkl holds no config: pass the one the"
        " model was trained with; for the model zoo's file names it is known (model_final_d8dbeb.pkl ->"
        " configs/ade20k-150/maskformer_R50_bs16_160k.yaml) and --config may be left out.",
    )
    d2.add_argument("source", help="model_final_*.pkl (or .pth)")
    d2.add_argument("output", help="checkpoint to write (.pt)")
    d2.add_argument("--config", help="YAML config of the model (default: the zoo's config for a zoo file name)")
    d2.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    d2.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    hf = sub.add_parser(
        "hf",
        help="a transformers MaskFormerForInstanceSegmentation folder -> checkpoint",
        description="Read a save_pretrained folder (config.json + model.safetensors or pytorch_model.bin), derive the"
        " model config from config.json, convert the weights and write a checkpoint with the class names as metadata."
        " --config supplies what config.json does not describe (dataset, test sizes, inference); without it the"
        " dataset is recognised from the class names when possible.",
    )
    hf.add_argument("source", help="folder written by save_pretrained")
    hf.add_argument("output", help="checkpoint to write (.pt)")
    hf.add_argument("--config", help="YAML config for everything but the model section (optional)")
    hf.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    to_hf = sub.add_parser(
        "to-hf",
        help="a checkpoint -> a transformers save_pretrained folder",
        description="Write config.json, model.safetensors and preprocessor_config.json for transformers'"
        " MaskFormerForInstanceSegmentation. Only ResNet/Swin models with the FPN pixel decoder have a transformers"
        ' equivalent (not R101c, "+6 Enc" or the per-pixel baselines). Needs `pip install "maskformer[hf]"`.',
    )
    to_hf.add_argument(
        "checkpoint",
        metavar="MODEL",
        help=MODEL_HELP,
    )
    to_hf.add_argument("output_dir", help="folder to write (new or empty)")
    to_hf.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT_DIR if it holds files (all of them go; never a folder holding MODEL)",
    )
    to_d2 = sub.add_parser(
        "to-detectron2",
        help="a checkpoint -> an original MaskFormer (detectron2) .pkl",
        description="Write the weights as the original's model-zoo files hold them ({'model': {name: ndarray}},"
        " old key layout, no criterion.empty_weight), for the original code's MODEL.WEIGHTS with the original config"
        " of the same model. `maskformer convert detectron2` reads the file back to the same weights.",
    )
    to_d2.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    to_d2.add_argument("output", help="the .pkl file to write")
    to_d2.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from maskformer.engine.conversion import convert_detectron2, convert_hf, convert_to_detectron2, convert_to_hf
    from maskformer.zoo import resolve_model

    if args.format in ("detectron2", "hf"):
        _check_checkpoint_output(args.output)
        check_new_file(args.output, overwrite=args.overwrite, sources=(args.source,))
    if args.format == "detectron2":
        config = args.config or _zoo_config(args.source)
        summary = convert_detectron2(args.source, args.output, config=config, overrides=args.overrides)
    elif args.format == "hf":
        summary = convert_hf(args.source, args.output, config=args.config)
    elif args.format == "to-hf":
        source = resolve_model(args.checkpoint)
        check_not_input(args.output_dir, (source, *_given_path(args.checkpoint)))
        with _named_as_given(source, args.checkpoint):
            summary = convert_to_hf(source, args.output_dir, overwrite=args.overwrite)
    else:
        source = resolve_model(args.checkpoint)
        check_new_file(args.output, overwrite=args.overwrite, sources=(source, *_given_path(args.checkpoint)))
        with _named_as_given(source, args.checkpoint):
            summary = convert_to_detectron2(source, args.output)
    if args.format in ("to-hf", "to-detectron2") and str(source) != args.checkpoint:
        summary = summary.replace(f"{source} -> ", f"{args.checkpoint} -> ", 1)  # (the model, not its cache file)
    print(summary)
    return 0


@contextlib.contextmanager
def _named_as_given(source, model: str) -> Iterator[None]:
    """A refusal about a zoo name's or Hub id's cached copy names the model as the user gave it, not the cache file."""
    from maskformer.errors import UserError

    try:
        yield
    except UserError as e:
        text = str(e)
        if _given_path(model) or not text.startswith(f"{source}: "):
            raise
        raise type(e)(f"{model}: {text[len(str(source)) + 2 :]}") from None


def _given_path(model: str) -> tuple[str, ...]:
    """MODEL as the user named it, when it is a file or folder (a transformers folder resolves to a cache entry)."""
    from pathlib import Path

    return (model,) if Path(model).exists() else ()


def _check_checkpoint_output(output: str) -> None:
    """The converted checkpoint must be a ``.pt``/``.pth``: every command reads a ``.pkl`` MODEL as an original zoo
    file, so a checkpoint written as ``out.pkl`` could not be used anywhere."""
    from pathlib import Path

    from maskformer.errors import UserError

    if Path(output).suffix not in (".pt", ".pth"):
        raise UserError(f"{output}: the output must end in .pt (a checkpoint; .pkl names original files)")


def _zoo_config(source: str) -> str | None:
    """The config of a released file name (``model_final_d8dbeb.pkl``), when ``configs/`` is at hand."""
    from pathlib import Path

    from maskformer.errors import CheckpointError
    from maskformer.zoo import zoo_config, zoo_table

    names = {e.file_name: e.name for e in zoo_table().values() if not e.hub}
    name = names.get(Path(source).name)
    if name is None:
        return None
    try:
        return str(zoo_config(name))
    except CheckpointError:
        return None  # no configs/ here: convert_detectron2 names the config to pass
