"""The inference switches shared by ``maskformer eval`` and ``maskformer predict``."""

from __future__ import annotations

import argparse

# What every command that takes a MODEL accepts (maskformer.zoo.resolve_model).
MODEL_HELP = "a checkpoint (.pt), a model name (`maskformer models`), a Hub id or a transformers folder"


def add_inference_options(p: argparse.ArgumentParser) -> None:
    """--tta, --fast, --bf16, --compile, --reference."""
    p.add_argument(
        "--tta",
        action="store_true",
        help="multi-scale + flip test-time augmentation of the semantic labels (as the original: panoptic has none)",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="approximate semantic labels: per 4x4 block from its corner labels (masks combined at 1/4 resolution "
        "when the output is resized)",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 autocast forward; semantic labels at the input size from block corner labels "
        "(in the benchmark 99.8%% of the fp32 labels for R50, 98%% for Swin-T; about 4x faster than fp32 on CPUs "
        "with AMX; refused on CPUs without bf16 instructions, e.g. AVX2 only)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (~15 s per new input size; no faster than the default on a 2-core CPU)",
    )
    p.add_argument(
        "--reference",
        action="store_true",
        help="run the model exactly as trained (no FrozenBN/mask_features folding, NCHW); default: the optimised "
        "copy, equal to float rounding",
    )


def predictor_options(args: argparse.Namespace) -> dict:
    """The Predictor keywords these switches set (unset ones keep the checkpoint config's value)."""
    from maskformer.errors import ConfigError

    if args.reference and (args.bf16 or args.compile):
        raise ConfigError("--reference runs the unmodified fp32 model: drop --bf16/--compile")
    return {
        "tta": True if args.tta else None,
        "fast": True if args.fast else None,
        "bf16": args.bf16,
        "compile": args.compile,
        "optimize": not args.reference,
    }


def check_output_dir(name: str) -> None:
    """One ``DataError`` line, before any work, when files cannot be made in the output folder ``name`` (made only
    when the first result is written): empty, not a folder, a broken link, or no write permission on it or on the
    nearest folder above it that exists. For ``predict`` and ``eval``."""
    import os
    from pathlib import Path

    from maskformer.errors import DataError
    from maskformer.fileio import broken_link

    if not name.strip():
        raise DataError("--output-dir is empty: name a folder (. for the current one)")
    out = Path(name)
    if link := broken_link(out):
        raise DataError(f"{out}: {link}")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise DataError(f"{out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"{out}: cannot write there (no write permission on {existing})")
