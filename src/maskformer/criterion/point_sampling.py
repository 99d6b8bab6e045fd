"""Memory-light mask losses on sampled points (Mask2Former-style importance sampling; optional, off by default).

The original MaskFormer computes the focal and dice losses on the matched masks upsampled to the full padded input
size: M x H x W floats per decoder layer, six layers deep, the root of its out-of-memory reports. Mask2Former instead
evaluates the losses on `num_points` points per mask: `oversample_ratio * num_points` uniformly random candidates are
scored by their uncertainty (-|logit|, i.e. how close the prediction is to its decision boundary), the
`importance_sample_ratio` most uncertain ones are kept and the rest of the budget is filled with fresh uniform points.
Predictions (1/4-resolution logits) and targets (full-resolution binary masks) are both read at those points with
bilinear `grid_sample` (align_corners=False), so a target value at a mask edge can be fractional.

This module keeps MaskFormer's loss *formulas* (sigmoid focal + dice) and only changes where they are evaluated; it is
an approximation of the full-resolution loss, not a parity path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["point_sample", "sample_mask_points", "sample_uncertain_points"]


def point_sample(inputs: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly read `inputs` at normalised point coordinates.

    Args:
        inputs: [N, C, H, W].
        coords: [N, P, 2] in [0, 1], last dim (x, y) with 0/1 at the outer edges of the image (align_corners=False).

    Returns:
        [N, C, P].
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2)  # [N, P, 1, 2] in grid_sample's [-1, 1] convention
    return F.grid_sample(inputs, grid, mode="bilinear", align_corners=False).squeeze(3)


@torch.no_grad()
def sample_uncertain_points(
    logits: Tensor, *, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> Tensor:
    """Point coordinates concentrated where the mask logits are closest to 0.

    Args:
        logits: [N, 1, h, w] mask logits.
        num_points: points per mask (P).
        oversample_ratio: candidates drawn = int(P * oversample_ratio) (>= 1).
        importance_sample_ratio: fraction of P taken from the most uncertain candidates, in [0, 1].

    Returns:
        [N, P, 2] coordinates in [0, 1] (x, y), drawn with torch's global RNG.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError("need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1")
    n = logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    candidates = torch.rand(n, num_candidates, 2, device=logits.device, dtype=logits.dtype)
    uncertainty = -point_sample(logits, candidates)[:, 0].abs()  # [N, num_candidates]
    top = uncertainty.topk(num_uncertain, dim=1).indices  # [N, num_uncertain]
    chosen = candidates.gather(1, top[:, :, None].expand(n, num_uncertain, 2))
    fresh = torch.rand(n, num_points - num_uncertain, 2, device=logits.device, dtype=logits.dtype)
    return torch.cat([chosen, fresh], dim=1)


def sample_mask_points(
    src_masks: Tensor,
    tgt_masks: Tensor,
    *,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> tuple[Tensor, Tensor]:
    """Read matched predictions and targets at importance-sampled points (the loss formulas are applied by the caller).

    Args:
        src_masks: [M, h, w] matched mask logits (1/4 resolution, with grad).
        tgt_masks: [M, H, W] matched targets (bool or 0/1 float, full resolution).

    Returns:
        (point_logits [M, P] with grad, point_labels [M, P] in [0, 1] without grad).
    """
    src = src_masks[:, None]
    coords = sample_uncertain_points(
        src.detach(),
        num_points=num_points,
        oversample_ratio=oversample_ratio,
        importance_sample_ratio=importance_sample_ratio,
    )
    with torch.no_grad():
        labels = point_sample(tgt_masks[:, None].to(src.dtype), coords)[:, 0]
    return point_sample(src, coords)[:, 0], labels
