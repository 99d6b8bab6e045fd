"""Semantic label maps without materialising full-resolution score maps (the speed path of ``Predictor``).

``inference.semantic_from_outputs`` builds, per image, a [Q, Hpad, Wpad] upsampled mask tensor and a [K, H, W] score
map (100 x 512 x 512 and 150 x 512 x 512 floats at ADE20K size: ~260 MB of memory traffic before the argmax).
When only labels are wanted, the same arithmetic can run on horizontal strips of a few output rows that stay in
cache: upsample the strip's mask rows, sigmoid, one [K, Q] x [Q, rows * W] matmul, argmax.

Exactness: output row y of a 4x bilinear upsample (align_corners=False) reads low-resolution rows floor((y + 0.5) / 4
- 0.5) and the next one with weights that depend only on y mod 4, so upsampling a strip of low-resolution rows with
one row of margin on each side gives bit-identical rows (the scale 1/4 is exact in binary). The crop-then-resize of
the exact path is an identity when the valid region already has the output size (F.interpolate to the same size
returns the same values), which is the case for images that need no test resize (e.g. 512x512 ADE20K validation
crops); other cases fall back to the unfused computation and take the argmax of its scores. tests/test_fast_inference.py
checks label maps against ``semantic_from_outputs``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from maskformer.inference import Size, _input_size, _resample_grid, semantic_from_outputs

__all__ = ["semantic_labels_from_outputs"]

# Size of one strip's [K, rows, W] score block in floats (32 MB): measured fastest on 2 cores; smaller strips lose
# more to per-op threading overhead than they gain in cache reuse.
_STRIP_FLOATS = 1 << 23


def _strip_rows(num_classes: int, width: int, multiple: int) -> int:
    rows = max(1, _STRIP_FLOATS // max(1, num_classes * width))
    return max(multiple, rows // multiple * multiple)


def _exact_labels(mask_cls: Tensor, mask_pred: Tensor, image_size: Size, padded: Size) -> Tensor:
    """Labels [h, w] of the exact path for one image whose output size equals its valid size.

    mask_cls [Q, K+1], mask_pred [Q, hl, wl] with padded == 4 * (hl, wl).
    """
    h, w = image_size
    low_h = mask_pred.shape[-2]
    probs_t = F.softmax(mask_cls, dim=-1)[:, :-1].t().contiguous()  # [K, Q]
    num_classes = probs_t.shape[0]
    labels = torch.empty(h, w, dtype=torch.int64, device=mask_pred.device)
    step = _strip_rows(num_classes, w, 4)
    for y0 in range(0, h, step):
        y1 = min(h, y0 + step)
        lo, hi = max(0, y0 // 4 - 1), min(low_h, math.ceil(y1 / 4) + 1)
        up = F.interpolate(mask_pred[None, :, lo:hi], size=(4 * (hi - lo), padded[1]), mode="bilinear")[0]
        strip = up[:, y0 - 4 * lo : y1 - 4 * lo, :w].sigmoid()  # [Q, rows, w]
        scores = probs_t @ strip.reshape(strip.shape[0], -1)  # [K, rows * w]
        labels[y0:y1] = scores.argmax(0).view(y1 - y0, w)
    return labels


def _fast_labels(mask_cls: Tensor, mask_pred: Tensor, image_size: Size, padded: Size, output_size: Size) -> Tensor:
    """Labels [H, W] of ``semantic_from_outputs(fast=True)``: scores at 1/4 resolution, resampled in strips."""
    low_h, low_w = mask_pred.shape[-2:]
    rows = min(low_h, math.ceil(image_size[0] * low_h / padded[0]))
    cols = min(low_w, math.ceil(image_size[1] * low_w / padded[1]))
    probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    low = torch.einsum("qc,qhw->chw", probs, mask_pred[:, :rows, :cols].sigmoid())
    out_h, out_w = output_size
    labels = torch.empty(out_h, out_w, dtype=torch.int64, device=mask_pred.device)
    step = _strip_rows(low.shape[0], out_w, 1)
    # grid_sample is per output pixel, so resampling at the rows of a strip equals slicing the full result
    full_grid = _resample_grid(image_size, padded, (low_h, low_w), output_size, (rows, cols), low)
    for y0 in range(0, out_h, step):
        grid = full_grid[:, y0 : y0 + step]
        scores = F.grid_sample(low[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        labels[y0 : y0 + step] = scores.argmax(0)
    return labels


def semantic_labels_from_outputs(
    outputs: Mapping[str, Tensor],
    image_sizes: Sequence[Size],
    output_sizes: Sequence[Size],
    *,
    input_size: Size | None = None,
    fast: bool = False,
) -> list[Tensor]:
    """Label maps int64 [H_i, W_i] equal to ``semantic_from_outputs(...)[i].argmax(0)`` (same arguments).

    outputs: {"pred_logits": [B, Q, K+1], "pred_masks": [B, Q, h, w]} or {"sem_logits": ...} (unfused).
    """
    if "sem_logits" in outputs:
        scores = semantic_from_outputs(outputs, image_sizes, output_sizes, input_size=input_size)
        return [s.argmax(0) for s in scores]
    mask_cls, mask_pred = outputs["pred_logits"].float(), outputs["pred_masks"].float()
    low = (int(mask_pred.shape[-2]), int(mask_pred.shape[-1]))
    padded = _input_size(low, input_size)
    labels = []
    for i, (image_size, output_size) in enumerate(zip(image_sizes, output_sizes)):
        image_size, output_size = tuple(image_size), tuple(output_size)
        if fast:
            labels.append(_fast_labels(mask_cls[i], mask_pred[i], image_size, padded, output_size))
        elif image_size == output_size and padded == (4 * low[0], 4 * low[1]):
            labels.append(_exact_labels(mask_cls[i], mask_pred[i], image_size, padded))
        else:
            one = {"pred_logits": mask_cls[i : i + 1], "pred_masks": mask_pred[i : i + 1]}
            scores = semantic_from_outputs(one, [image_size], [output_size], input_size=padded)[0]
            labels.append(scores.argmax(0))
    return labels
