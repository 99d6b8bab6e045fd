"""Self-describing checkpoints: config + weights (+ optimizer, scheduler, step, RNG states when training).

Written atomically (temporary file in the same folder, then ``os.replace``), so a crash mid-write leaves the previous
file intact; read with ``torch.load(weights_only=True)`` so a checkpoint cannot run code.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..build import build_model
from ..config import Config, config_from_dict, config_to_dict
from ..errors import CheckpointError, ConfigError

FORMAT = "maskformer-checkpoint"
VERSION = 1


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file (metrics.json, ...) via a temporary file and a rename: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(
    path: str | Path, *, cfg: Config, model: nn.Module, meta: dict | None = None, **training_state: Any
) -> None:
    """Write ``{"format", "version", "config", "model", "meta", **training_state}`` atomically.

    ``meta``: optional dataset metadata for inference (``classes``, ``colors``, ``isthing``).
    ``training_state``: e.g. ``optimizer``, ``scheduler``, ``iteration``, ``rng``, ``sampler``.
    """
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    obj = {"format": FORMAT, "version": VERSION, "config": config_to_dict(cfg), "model": state, "meta": meta or {}}
    obj.update(training_state)
    atomic_torch_save(obj, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by ``save_checkpoint``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable maskformer checkpoint ({msg[:200]})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a maskformer checkpoint (convert original or transformers weights with `maskformer convert`)"
        )
    return obj


def load_model_and_config(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, Config, dict]:
    """Build the checkpoint's model from its own config and load its weights (strict). Returns (model, cfg, meta)."""
    obj = load_checkpoint(path, map_location)
    try:
        cfg = config_from_dict(obj["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its config is invalid: {e}") from None
    model = build_model(cfg)
    try:
        model.load_state_dict(obj["model"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit its config ({str(e).splitlines()[0]})") from None
    return model.to(map_location).eval(), cfg, obj.get("meta") or {}


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The public loader: a ready-to-run model in eval mode, built from the checkpoint's own config."""
    return load_model_and_config(path, map_location)[0]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict:
    """RNG states of python, numpy and torch as plain types/tensors (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }  # fmt: skip


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x
