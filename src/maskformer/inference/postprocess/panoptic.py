"""Panoptic post-processing (OFFICIAL_SPEC §4): kept queries' mask logits, resized to the output size, assign pixels."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .semantic import Size, _input_size, first_argmax_of_chunks, sem_seg_postprocess

__all__ = [
    "SegmentInfo",
    "overlap_passes",
    "panoptic_from_outputs",
    "panoptic_inference",
    "panoptic_keep",
    "panoptic_segments",
]

SegmentInfo = dict[str, object]

# Floats of kept queries' output-size maps held at once by `panoptic_from_outputs` (256 MB; below that, all at once).
_CHUNK_FLOATS = 1 << 26


def overlap_passes(areas: Tensor, original_areas: Tensor, overlap_threshold: float) -> Tensor:
    """Which kept queries survive the overlap test: both areas > 0 and ``area / original_area`` not below the
    threshold. The original divides Python ints (``.item()``), i.e. in float64; so does this (a float32 ratio can
    round up to the threshold for areas of tens of millions of pixels)."""
    ratio = areas.double() / original_areas.clamp(min=1).double()
    return (areas > 0) & (original_areas > 0) & ~(ratio < overlap_threshold)


def panoptic_keep(mask_cls: Tensor, object_mask_threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """(scores, labels, keep) of one image's class logits [Q, K+1]: each query's top class over K+1 (the last is
    "no object") and its probability, and the queries panoptic inference keeps (a real class above the threshold)."""
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    return scores, labels, labels.ne(mask_cls.shape[-1] - 1) & (scores > object_mask_threshold)


def panoptic_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    *,
    thing_ids: Collection[int],
    object_mask_threshold: float,
    overlap_threshold: float,
) -> tuple[Tensor, list[SegmentInfo]]:
    """Panoptic segmentation of one image, MaskFormer's rule (OFFICIAL_SPEC §4.4).

    Queries whose top class (softmax over K+1) is a real class with probability > object_mask_threshold are kept;
    each pixel goes to the kept query maximising prob * sigmoid(mask) (first one on ties). In query order, a query
    becomes a segment if it owns pixels, has pixels with sigmoid >= 0.5, and owns at least overlap_threshold of
    those; a stuff class seen before adds its pixels to its first segment (no new entry). Unassigned pixels are 0.

    Args:
        mask_cls: [Q, K+1] class logits. mask_pred: [Q, H, W] mask logits, already at the output size.
        thing_ids: contiguous class ids that are things (all others are stuff).

    Returns:
        (panoptic map int32 [H, W] with ids 0 (VOID), 1..n, segments_info: n dicts {"id", "isthing", "category_id"}).
    """
    scores, labels, keep = panoptic_keep(mask_cls, object_mask_threshold)
    masks = mask_pred.sigmoid()
    panoptic = torch.zeros(mask_pred.shape[-2:], dtype=torch.int32, device=mask_pred.device)
    segments: list[SegmentInfo] = []
    if not bool(keep.any()):
        return panoptic, segments
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], masks[keep]
    owner = (cur_scores[:, None, None] * cur_masks).argmax(0)  # torch returns the first maximal index
    # The per-query tests of the original loop, for all kept queries at once (a handful of tensor ops instead of
    # several per query); the area ratio in float64, as the original's division of Python ints.
    areas = torch.bincount(owner.flatten(), minlength=cur_classes.shape[0])
    original_areas = (cur_masks >= 0.5).flatten(1).sum(1)
    segment_of_query, segments = panoptic_segments(
        cur_classes, areas, original_areas, thing_ids=thing_ids, overlap_threshold=overlap_threshold
    )
    # Every pixel has exactly one owner, so mapping owners to segment ids equals the original's per-segment writes.
    return segment_of_query.to(owner.device)[owner], segments


def panoptic_segments(
    classes: Tensor, areas: Tensor, original_areas: Tensor, *, thing_ids: Collection[int], overlap_threshold: float
) -> tuple[Tensor, list[SegmentInfo]]:
    """The segment rule of `panoptic_inference` for the kept queries, in query order.

    Args:
        classes: [n] top class of each kept query. areas: [n] pixels each query owns (argmax of prob * sigmoid).
        original_areas: [n] pixels with sigmoid >= 0.5 of each query.

    Returns:
        (segment id of each kept query, int32 [n], 0 = VOID; segments_info).
    """
    passes = overlap_passes(areas, original_areas, overlap_threshold)
    things = {int(c) for c in thing_ids}
    stuff_segment: dict[int, int] = {}
    segment_of_query = [0] * classes.shape[0]  # 0 = VOID for rejected queries
    next_id = 0
    segments: list[SegmentInfo] = []
    for k, (category, ok) in enumerate(zip(classes.tolist(), passes.tolist())):
        if not ok:
            continue
        is_thing = category in things
        if not is_thing and category in stuff_segment:
            segment_of_query[k] = stuff_segment[category]  # merged into the first segment of this stuff class
            continue
        next_id += 1  # a counter of its own: merged stuff never rewinds it, so ids never collide
        if not is_thing:
            stuff_segment[category] = next_id
        segment_of_query[k] = next_id
        segments.append({"id": next_id, "isthing": is_thing, "category_id": category})
    return torch.tensor(segment_of_query, dtype=torch.int32), segments


def panoptic_from_outputs(
    outputs: Mapping[str, Tensor],
    image_sizes: Sequence[Size],
    output_sizes: Sequence[Size],
    *,
    thing_ids: Collection[int],
    object_mask_threshold: float,
    overlap_threshold: float,
    input_size: Size | None = None,
) -> list[tuple[Tensor, list[SegmentInfo]]]:
    """Panoptic results for a batch: mask logits upsampled to the padded input size, cropped and resized to the
    output size (logits first, "postprocess before inference"), then `panoptic_inference` per image.

    Only the queries that `panoptic_inference` keeps (a real top class with probability > object_mask_threshold) are
    resized: resizing works per query, so the kept maps are the same numbers, and the dropped ones were never read.
    Large outputs (a phone photo's 12 megapixels x 30 kept queries held 1.4 GB per map, several maps at once) take
    the kept queries a few at a time (`_panoptic_in_chunks`).
    """
    mask_cls, mask_pred = outputs["pred_logits"], outputs["pred_masks"].contiguous()  # (see semantic_from_outputs)
    padded = _input_size(tuple(mask_pred.shape[-2:]), input_size)
    results = []
    for i, (image_size, output_size) in enumerate(zip(image_sizes, output_sizes)):
        keep = panoptic_keep(mask_cls[i], object_mask_threshold)[2]
        if not bool(keep.any()):
            empty = torch.zeros(tuple(output_size), dtype=torch.int32, device=mask_pred.device)
            results.append((empty, []))
            continue
        up = F.interpolate(mask_pred[i : i + 1, keep], size=padded, mode="bilinear", align_corners=False)[0]
        if up.shape[0] * output_size[0] * output_size[1] > _CHUNK_FLOATS:
            results.append(_panoptic_in_chunks(mask_cls[i], up, image_size, output_size, thing_ids=thing_ids,
                                               object_mask_threshold=object_mask_threshold,
                                               overlap_threshold=overlap_threshold))  # fmt: skip
            continue
        logits = sem_seg_postprocess(up, image_size, output_size)
        results.append(
            panoptic_inference(
                mask_cls[i, keep],  # the same rows pass the same test again inside
                logits,
                thing_ids=thing_ids,
                object_mask_threshold=object_mask_threshold,
                overlap_threshold=overlap_threshold,
            )
        )
    return results


def _panoptic_in_chunks(
    mask_cls: Tensor,
    up: Tensor,
    image_size: Size,
    output_size: Size,
    *,
    thing_ids: Collection[int],
    object_mask_threshold: float,
    overlap_threshold: float,
) -> tuple[Tensor, list[SegmentInfo]]:
    """`panoptic_inference` of the kept queries' maps ``up`` [n, Hpad, Wpad] (at the input size), resized a few
    queries at a time: per chunk the sigmoid, the pixels >= 0.5 of each query and the best score x sigmoid so far
    (the first of equal values wins, as in argmax). The same rule on the same numbers, up to float-rounding ties."""
    scores, classes, keep = panoptic_keep(mask_cls, object_mask_threshold)
    scores, classes = scores[keep], classes[keep]
    n, (height, width) = int(classes.shape[0]), output_size
    chunk = max(1, _CHUNK_FLOATS // (height * width))
    original_areas = torch.empty(n, dtype=torch.int64, device=up.device)

    def chunks():  # (first query, score x sigmoid of the chunk's queries), counting their pixels >= 0.5 on the way
        for j in range(0, n, chunk):
            masks = sem_seg_postprocess(up[j : j + chunk], image_size, output_size).sigmoid_()
            original_areas[j : j + chunk] = (masks >= 0.5).flatten(1).sum(1)
            yield j, masks.mul_(scores[j : j + chunk, None, None])

    owner = first_argmax_of_chunks(chunks())
    areas = torch.bincount(owner.flatten(), minlength=n)
    segment_of_query, segments = panoptic_segments(
        classes, areas, original_areas, thing_ids=thing_ids, overlap_threshold=overlap_threshold
    )
    return segment_of_query.to(owner.device)[owner], segments
