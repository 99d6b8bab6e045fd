"""Batching: normalize, zero-pad to a common (divisible) size, pad target masks with False."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["collate", "padded_size"]


def padded_size(sizes: list[tuple[int, int]], size_divisibility: int) -> tuple[int, int]:
    """Batch max ``(H, W)`` rounded up to a multiple of ``size_divisibility`` (<= 1: no rounding)."""
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    if size_divisibility > 1:
        h = int(math.ceil(h / size_divisibility) * size_divisibility)
        w = int(math.ceil(w / size_divisibility) * size_divisibility)
    return h, w


def collate(
    batch: list[dict[str, Any]],
    *,
    size_divisibility: int,
    pixel_mean: list[float],
    pixel_std: list[float],
    pad_to: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[dict[str, Any]]]:
    """Records -> ``(images, targets, records)``.

    ``images``: float32 ``[B, 3, H, W]``, ``(x - mean) / std`` on 0..255 RGB, then zero-padded bottom/right (padding
    after normalization, as detectron2's ImageList) to the batch max rounded up to ``size_divisibility``, or to
    ``pad_to`` when given (which must be at least the batch max). ``targets``: per image
    ``{"labels": int64 [N], "masks": bool [N, H, W]}`` with masks padded with False (test records, whose ground
    truth stays at the original size while the image is resized, keep their masks unpadded). ``records``: the
    input records (``sem_seg``, ``height``... kept for evaluation; ``image``, ``labels`` and ``masks`` removed
    to free memory); each gets ``image_size`` = (h, w) before padding.
    """
    sizes = [(int(r["image"].shape[-2]), int(r["image"].shape[-1])) for r in batch]
    h, w = padded_size(sizes, size_divisibility)
    if pad_to is not None:
        if pad_to[0] < h or pad_to[1] < w:
            raise ValueError(f"pad_to {tuple(pad_to)} is smaller than the batch's largest image ({h}, {w})")
        h, w = int(pad_to[0]), int(pad_to[1])
    mean = torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1)
    images = torch.zeros((len(batch), 3, h, w), dtype=torch.float32)
    targets: list[dict[str, torch.Tensor]] = []
    records: list[dict[str, Any]] = []
    for i, (rec, (ih, iw)) in enumerate(zip(batch, sizes)):
        images[i, :, :ih, :iw] = (rec["image"].to(torch.float32) - mean) / std
        masks = rec["masks"]
        if tuple(masks.shape[-2:]) == (ih, iw):
            padded = torch.zeros((masks.shape[0], h, w), dtype=torch.bool)
            padded[:, :ih, :iw] = masks
            masks = padded
        targets.append({"labels": rec["labels"], "masks": masks})
        meta = {k: v for k, v in rec.items() if k not in ("image", "labels", "masks")}
        meta["image_size"] = (ih, iw)
        records.append(meta)
    return images, targets, records
