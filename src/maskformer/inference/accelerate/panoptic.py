"""Panoptic results without full-resolution mask maps (the speed path of ``Predictor(task="panoptic")``).

``inference.panoptic_from_outputs`` upsamples the kept queries' mask logits to the input size, crops and resizes
them, takes the sigmoid, multiplies by the class scores and takes the argmax over queries: several passes over
[n, H, W] floats (at 512x512 with 60 kept queries, 63 MB each) and an argmax along a strided axis. Here the same
arithmetic runs on horizontal strips of output rows that stay in cache, as ``accelerate.labels`` does for semantic
labels: the strip's rows of the 4x bilinear upsample are bit-identical to the full upsample's
(``labels._sigmoid_rows``), and so are their sigmoid, the products with the scores and the first-maximum owner
(``labels._first_argmax`` on the [n, pixels] block, contiguous along pixels). Per strip the owners and the pixels
with sigmoid >= 0.5 are counted, then the segment rule (``postprocess.panoptic_segments``) runs once. The result is
the exact path's panoptic map and segments (tests/test_fast_panoptic.py); outputs resized to another size than the
valid input region take the exact path.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch
from torch import Tensor

from maskformer.inference.accelerate.labels import _first_argmax, _sigmoid_rows, _strip_rows
from maskformer.inference.postprocess import SegmentInfo, Size, panoptic_from_outputs, panoptic_keep, panoptic_segments
from maskformer.inference.postprocess.semantic import _input_size

__all__ = ["panoptic_from_outputs_in_strips"]


def _owners_in_strips(scores: Tensor, masks: Tensor, size: Size) -> tuple[Tensor, Tensor, Tensor]:
    """(owner int64 [h, w], owned pixels [n], pixels with sigmoid >= 0.5 [n]) for kept queries' scores [n] and mask
    logits [n, hl, wl] of an input of (4 hl, 4 wl) whose valid region ``size`` is the output size."""
    h, w = size
    n = scores.shape[0]
    owner = torch.empty(h, w, dtype=torch.int64, device=masks.device)
    original_areas = torch.zeros(n, dtype=torch.int64, device=masks.device)
    step = _strip_rows(n, w, 4)
    for y0 in range(0, h, step):
        y1 = min(h, y0 + step)
        sig = _sigmoid_rows(masks, y0, y1, w)  # [n, rows * w]
        # (a bool's bytes summed as int32: one vectorised pass, where bool.sum(1) widens every element to int64)
        original_areas += torch.ge(sig, 0.5).view(torch.uint8).sum(1, dtype=torch.int32)
        owner[y0:y1] = _first_argmax(sig.mul_(scores[:, None])).view(y1 - y0, w)
    return owner, torch.bincount(owner.flatten(), minlength=n), original_areas


def panoptic_from_outputs_in_strips(
    outputs: Mapping[str, Tensor],
    image_sizes: Sequence[Size],
    output_sizes: Sequence[Size],
    *,
    thing_ids: Collection[int],
    object_mask_threshold: float,
    overlap_threshold: float,
    input_size: Size | None = None,
) -> list[tuple[Tensor, list[SegmentInfo]]]:
    """``postprocess.panoptic_from_outputs`` (same arguments, same results) computed in row strips (module
    docstring) for images whose output size is their valid size; the others go through the exact function."""
    mask_cls, mask_pred = outputs["pred_logits"].float(), outputs["pred_masks"].float()
    low = (int(mask_pred.shape[-2]), int(mask_pred.shape[-1]))
    padded = _input_size(low, input_size)
    rule = {"thing_ids": thing_ids, "object_mask_threshold": object_mask_threshold}
    results = []
    for i, (image_size, output_size) in enumerate(zip(image_sizes, output_sizes)):
        image_size, output_size = tuple(image_size), tuple(output_size)
        if image_size != output_size or padded != (4 * low[0], 4 * low[1]):
            one = {"pred_logits": mask_cls[i : i + 1], "pred_masks": mask_pred[i : i + 1]}
            results += panoptic_from_outputs(
                one, [image_size], [output_size], input_size=padded, overlap_threshold=overlap_threshold, **rule
            )
            continue
        scores, labels, keep = panoptic_keep(mask_cls[i], object_mask_threshold)
        if not bool(keep.any()):
            results.append((torch.zeros(output_size, dtype=torch.int32, device=mask_pred.device), []))
            continue
        owner, areas, original_areas = _owners_in_strips(scores[keep], mask_pred[i, keep], output_size)
        segment_of_query, segments = panoptic_segments(
            labels[keep], areas, original_areas, thing_ids=thing_ids, overlap_threshold=overlap_threshold
        )
        results.append((segment_of_query.to(owner.device)[owner], segments))
    return results
