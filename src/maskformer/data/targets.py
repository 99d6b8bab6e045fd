"""Training targets from ground truth: one binary mask per class (semantic) or per segment (panoptic)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["semantic_targets", "panoptic_targets"]


def semantic_targets(sem_seg: np.ndarray, ignore_label: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One target per class present, ascending (OFFICIAL_SPEC §5.1); ignore pixels belong to no mask.

    ``sem_seg``: ``[H, W]`` integer map -> ``labels`` int64 ``[N]``, ``masks`` bool ``[N, H, W]``.
    """
    if sem_seg.dtype in (np.uint8, np.uint16):  # counting is much faster than sorting for small label types
        classes = np.flatnonzero(np.bincount(sem_seg.ravel(), minlength=1)).astype(sem_seg.dtype)
    else:
        classes = np.unique(sem_seg)
    classes = classes[classes != ignore_label]
    labels = torch.from_numpy(classes.astype(np.int64))
    if classes.size == 0:
        return labels, torch.zeros((0, *sem_seg.shape), dtype=torch.bool)
    masks = torch.from_numpy(sem_seg[None] == classes[:, None, None])
    return labels, masks


def panoptic_targets(pan_seg: np.ndarray, segments_info: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One target per non-crowd segment, in ``segments_info`` order (OFFICIAL_SPEC §5.2-5.3).

    Segments that a crop removed keep an empty mask, as in the original. ``pan_seg``: ``[H, W]`` segment ids;
    ``segments_info[i]["category_id"]`` is already contiguous. Returns ``labels`` int64 ``[N]``, ``masks``
    bool ``[N, H, W]``.
    """
    keep = [s for s in segments_info if not s.get("iscrowd", 0)]
    labels = torch.tensor([int(s["category_id"]) for s in keep], dtype=torch.int64)
    if not keep:
        return labels, torch.zeros((0, *pan_seg.shape), dtype=torch.bool)
    ids = np.array([int(s["id"]) for s in keep], dtype=np.int64)
    return labels, torch.from_numpy(pan_seg[None] == ids[:, None, None])
