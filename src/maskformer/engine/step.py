"""Pieces of one training step: targets onto the device, the autocast context, checks and casts of the outputs."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["autocast", "finite_outputs", "targets_to", "to_float"]


def targets_to(targets: list[dict], records: list[dict], size: tuple[int, int], ignore: int, device) -> list[dict]:
    """Each image's targets (``labels`` [M], ``masks`` [M, H, W]) on ``device``; a per-pixel baseline's record also
    gives ``sem_seg`` [h, w], padded with ``ignore`` to the batch's ``size`` (H, W)."""
    out = []
    for t, r in zip(targets, records):
        t = {k: v.to(device, non_blocking=True) for k, v in t.items()}
        if "sem_seg" in r:  # per-pixel baselines: labels padded with the ignore value to the batch size
            sem = r["sem_seg"]
            sem = F.pad(sem, (0, size[1] - sem.shape[-1], 0, size[0] - sem.shape[-2]), value=ignore)
            t["sem_seg"] = sem.to(device)
        out.append(t)
    return out


def autocast(amp: str, device: torch.device):
    if amp == "none":
        return nullcontext()
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.amp=fp16 needs a GPU; use bf16 on CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    raise ConfigError(f"train.amp: unknown '{amp}' (expected none, bf16 or fp16)")


def finite_outputs(outputs: dict) -> bool:
    """Whether the model's main outputs (class and mask logits, or per-pixel logits) hold only finite values."""
    return all(bool(torch.isfinite(v).all()) for k, v in outputs.items() if isinstance(v, torch.Tensor))


def to_float(x):
    """Losses are computed in fp32 even under autocast: the outputs' tensors (in dicts and lists) as float32."""
    if isinstance(x, torch.Tensor):
        return x.float()
    if isinstance(x, list):
        return [to_float(v) for v in x]
    return {k: to_float(v) for k, v in x.items()} if isinstance(x, dict) else x
