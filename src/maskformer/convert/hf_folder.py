"""transformers' ``save_pretrained`` folders: reading one (config.json, safetensors or .bin weights, sharded or not,
preprocessor_config.json) and writing one from our weights, plus the image preprocessor's settings both ways.
The key and config translations themselves are in ``huggingface.py`` and ``hf_config.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..errors import CheckpointError, UserError
from ..fileio import atomic_folder, weight_file_problem
from .huggingface import dropped_hf_keys, ours_state_to_hf

__all__ = ["apply_preprocessor", "hf_preprocessor_from_ours", "read_hf_folder", "write_hf_folder"]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f"{path}: reading .safetensors needs `pip install 'maskformer[hf]'`") from None
        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise CheckpointError(f"{path}: unreadable safetensors file ({type(e).__name__}: {msg[:200]})") from None
    why = weight_file_problem(path)
    if why is not None:
        raise CheckpointError(f"{path}: {why}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in str(e):  # (torch's advice to load it unsafely is not for this file)
            msg = "it holds objects other than tensors: not unpickled, as that could run code"
        raise CheckpointError(f"{path}: unreadable weight file ({msg[:200]})") from None
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    return data


def read_hf_folder(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict | None]:
    """A ``save_pretrained`` folder -> (config.json dict, state dict, preprocessor_config.json dict or None).

    Weights: ``model.safetensors``, ``pytorch_model.bin`` or their sharded ``*.index.json`` forms.
    """
    folder = Path(folder)
    if not folder.is_dir():
        hint = "expected what save_pretrained writes: config.json + weights"
        if len(folder.parts) == 2 and not folder.exists():  # looks like a Hub id such as facebook/maskformer-...
            hint += f"; for a Hub model, download it first: huggingface-cli download {folder} --local-dir DIR"
        raise CheckpointError(f"{folder}: not a folder ({hint})")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{config_file}: not found (is {folder} a save_pretrained folder?)")
    config = _read_json(config_file)
    state: dict[str, torch.Tensor] = {}
    for name in ("model.safetensors", "pytorch_model.bin"):
        index = folder / f"{name}.index.json"
        if (folder / name).is_file():
            state = _read_weight_file(folder / name)
            break
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index}: no weight_map")
            for shard in sorted(set(weight_map.values())):
                state.update(_read_weight_file(folder / str(shard)))
            break
    else:
        raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin")
    if not state:
        raise CheckpointError(f"{folder}: the weight file holds no tensors")
    pre = folder / "preprocessor_config.json"
    return config, state, (_read_json(pre) if pre.is_file() else None)


def write_hf_folder(
    folder: str | Path,
    hf_kwargs: dict[str, Any],
    state: dict[str, torch.Tensor],
    *,
    source_name: str,
    preprocessor: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> int:
    """Build transformers' ``MaskFormerForInstanceSegmentation`` from ``hf_kwargs`` (see
    ``hf_config.hf_config_from_ours``), load our ``state`` into it and ``save_pretrained`` it (plus
    ``preprocessor_config.json`` when ``preprocessor`` kwargs are given). The files are written into a temporary
    sibling folder that then takes the place of ``folder`` (``fileio.atomic_folder``); a ``folder`` that holds files
    is an error unless ``overwrite``, which replaces it whole. Returns the number of tensors written."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise UserError(f"{folder}: the folder exists and is not empty (write to a new folder, or pass --overwrite)")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder")
    try:
        from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation
    except ImportError:
        raise CheckpointError("writing a transformers folder needs `pip install 'maskformer[hf]'`") from None
    model = MaskFormerForInstanceSegmentation(MaskFormerConfig(**hf_kwargs)).eval()
    target = model.state_dict()
    hf_state = ours_state_to_hf(state, target, source_name=source_name)
    missing, unexpected = model.load_state_dict(hf_state, strict=False)
    # (BatchNorm does not report a missing num_batches_tracked: it keeps its own)
    assert not unexpected and set(missing) <= set(dropped_hf_keys(list(target))), (missing, unexpected)
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # ("Writing model shards: 100%" after our one-line summary)
    try:
        with atomic_folder(folder) as tmp:
            model.save_pretrained(tmp)
            if preprocessor is not None:
                from transformers import MaskFormerImageProcessor

                MaskFormerImageProcessor(**preprocessor).save_pretrained(tmp)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return len(hf_state)


def apply_preprocessor(cfg: Config, pre: dict, *, source: str) -> None:
    """Take the normalisation of a ``preprocessor_config.json`` (0..1 mean/std and rescale factor) as
    ``model.pixel_mean/pixel_std`` in 0..255. Resize settings are not taken: transformers stretches to a multiple of
    ``size_divisor`` where the original pads (HF_NOTES §8.8), and its sizes are not the original test sizes."""
    if pre.get("do_normalize", True) is False:
        raise CheckpointError(f"{source}: do_normalize=false: this model always normalises its input")
    mean, std = pre.get("image_mean"), pre.get("image_std")
    if mean is None and std is None:
        return
    scale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == 3 and len(std) == 3):
        raise CheckpointError(f"{source}: image_mean/image_std must be lists of 3 numbers")
    # rounded so that 0.485 / (1 / 255) gives back 123.675 exactly (a round trip keeps the config)
    cfg.model.pixel_mean = [round(float(m) / scale, 6) for m in mean]
    cfg.model.pixel_std = [round(float(s) / scale, 6) for s in std]


def hf_preprocessor_from_ours(cfg: Config, *, ignore_label: int = 255) -> dict[str, Any]:
    """Keyword arguments of transformers' ``MaskFormerImageProcessor`` matching our test-time input."""
    return {
        "image_mean": [m / 255.0 for m in cfg.model.pixel_mean],
        "image_std": [s / 255.0 for s in cfg.model.pixel_std],
        "size": {"shortest_edge": cfg.test.min_size, "longest_edge": cfg.test.max_size},
        "size_divisor": cfg.model.size_divisibility,
        "ignore_index": ignore_label,
        "do_reduce_labels": False,
    }
