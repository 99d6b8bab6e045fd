"""Semantic post-processing (OFFICIAL_SPEC §4): mask-classification outputs -> [K, H, W] scores or label maps."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .row_resize import resize_rows, row_weights

__all__ = [
    "Size",
    "sem_seg_postprocess",
    "semantic_from_outputs",
    "semantic_from_sem_logits",
    "semantic_inference",
    "semantic_labels",
]

# Floats of a resized score map held at once by `semantic_labels` (256 MB; below that, one resize as before).
_RESIZE_FLOATS = 1 << 26
# Floats of resized mask logits + scores of one strip of output rows (postprocess_before_inference, large outputs).
_STRIP_FLOATS = 1 << 24

Size = tuple[int, int]


def semantic_inference(mask_cls: Tensor, mask_pred: Tensor) -> Tensor:
    """Class scores per pixel: [Q, K+1] class logits and [Q, H, W] mask logits -> [K, H, W] (not normalised)."""
    probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_pred.sigmoid())


def sem_seg_postprocess(x: Tensor, image_size: Size, output_size: Size) -> Tensor:
    """Crop the padding ([:, :h, :w]) of a [C, Hpad, Wpad] map, then bilinearly resize it to `output_size`.

    Returns [C, H, W]. d2 resizes even when the size is unchanged (an exact identity for bilinear, align_corners=False).
    """
    h, w = image_size
    cropped = x[:, :h, :w]
    return F.interpolate(cropped[None], size=tuple(output_size), mode="bilinear", align_corners=False)[0]


def _input_size(outputs_hw: Size, input_size: Size | None) -> Size:
    # Stride-4 outputs of an input padded to a multiple of 4 (size_divisibility 32) are exactly 1/4 of it.
    return input_size if input_size is not None else (4 * outputs_hw[0], 4 * outputs_hw[1])


def _resample_grid(
    image_size: Size, input_size: Size, low_size: Size, output_size: Size, have: Size, like: Tensor
) -> Tensor:
    """grid_sample grid [1, H, W, (x, y)] reading a stride-s map with `have` = (rows, cols) at output pixels.

    Output pixel y lies at input row (y + 0.5) * h / H - 0.5, i.e. at low-resolution row
    (y + 0.5) * (h / H) * (hl / Hpad) - 0.5: where the exact path's upsample -> crop -> resize chain reads it.
    """

    def axis(out_len: int, valid: int, low_len: int, padded: int, n: int) -> Tensor:
        pos = (torch.arange(out_len, dtype=torch.float64) + 0.5) * (valid / out_len) * (low_len / padded) - 0.5
        return ((2.0 * pos + 1.0) / n - 1.0).to(like.dtype)  # grid_sample's align_corners=False convention

    gy = axis(output_size[0], image_size[0], low_size[0], input_size[0], have[0]).to(like.device)
    gx = axis(output_size[1], image_size[1], low_size[1], input_size[1], have[1]).to(like.device)
    return torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)[None]


def _resample_valid_region(
    low: Tensor, image_size: Size, input_size: Size, low_size: Size, output_size: Size
) -> Tensor:
    """Bilinearly read a stride-s map [C, rows, cols] (the first rows/cols of a [C, hl, wl] map) at output pixels
    (see `_resample_grid`). Coordinates outside the map are clamped to its border, as F.interpolate does.
    Returns [C, H, W].
    """
    have = (int(low.shape[-2]), int(low.shape[-1]))
    grid = _resample_grid(image_size, input_size, low_size, output_size, have, low)
    return F.grid_sample(low[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def semantic_from_outputs(
    outputs: Mapping[str, Tensor],
    image_sizes: Sequence[Size],
    output_sizes: Sequence[Size],
    *,
    input_size: Size | None = None,
    fast: bool = False,
    postprocess_before_inference: bool = False,
) -> list[Tensor]:
    """Semantic score maps for a batch, each at its output size.

    Args:
        outputs: {"pred_logits": [B, Q, K+1], "pred_masks": [B, Q, h, w]} (or a per-pixel baseline's
            {"sem_logits": [B, K, h, w]}, handled as `semantic_from_sem_logits`).
        image_sizes: per image (h, w) of the valid (unpadded, test-resized) region of the input.
        output_sizes: per image (H, W) to produce (the original image size).
        input_size: (Hpad, Wpad) of the padded input batch; default 4x the mask size.
        fast: combine masks at 1/4 resolution on the valid region, then resample the K-channel scores once, at the
            exact path's coordinates, to the output size (HF's order). Sigmoid and bilinear resizing do not commute,
            so this approximates the exact path. Measured (tests/test_inference.py, Q=100, K=150, 512x683 valid in
            512x704, output 480x640): smooth mask logits - max |score diff| ~0.18, mean ~0.002, ~98% of labels equal
            (differences only along class boundaries); for near-linear logits the two agree to ~1e-4; the
            high-frequency logits of the random-weight parity fixtures differ by up to ~2.7 (of 5.8) with identical
            labels. ~3x faster on CPU (0.18 s vs 0.55 s for that case).
        postprocess_before_inference: crop and resize the mask logits to the output size before combining them (the
            original's order when PANOPTIC_ON or SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE); ignored when fast.

    Returns:
        B tensors [K, H_i, W_i] of un-normalised scores (argmax over dim 0 = label map).
    """
    parts = _semantic_parts(outputs, image_sizes, output_sizes, input_size, fast, postprocess_before_inference)
    return [resize(low) for low, resize in parts]


def semantic_labels(
    outputs: Mapping[str, Tensor],
    image_sizes: Sequence[Size],
    output_sizes: Sequence[Size],
    *,
    input_size: Size | None = None,
    fast: bool = False,
    postprocess_before_inference: bool = False,
) -> list[Tensor]:
    """``[s.argmax(0) for s in semantic_from_outputs(...)]`` (int64 [H_i, W_i]) with memory bounded for large outputs:
    the last resize to the output size works per class, so it runs a few classes at a time and keeps a running
    maximum (the first of equal scores wins, as in argmax). A 20-megapixel output of a 150-class model would
    otherwise hold 12 GB of scores. Outputs within ``_RESIZE_FLOATS`` take one resize, as before; over it, a resize
    of a few maps can round differently from one of all maps (1 ulp, depending on the number of maps and threads),
    so labels can differ only where two classes tie to that precision.

    With ``postprocess_before_inference`` (and not fast) the mask logits are resized to the output size before they
    are combined, as in ``semantic_from_outputs``; outputs over ``_RESIZE_FLOATS`` then run in strips of output rows
    (``_labels_in_strips``) instead of holding (Q + K) floats per output pixel."""
    if postprocess_before_inference and not fast and "pred_masks" in outputs:
        return _labels_before_inference(outputs, image_sizes, output_sizes, input_size)
    parts = _semantic_parts(outputs, image_sizes, output_sizes, input_size, fast, False)
    return [_argmax_resized(low, resize, tuple(size)) for (low, resize), size in zip(parts, output_sizes)]


def _labels_before_inference(
    outputs: Mapping[str, Tensor], image_sizes: Sequence[Size], output_sizes: Sequence[Size], input_size: Size | None
) -> list[Tensor]:
    """Label maps in the original's PANOPTIC_ON / SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE order (semantic_labels)."""
    mask_cls, mask_pred = outputs["pred_logits"], outputs["pred_masks"].contiguous()
    padded = _input_size(tuple(mask_pred.shape[-2:]), input_size)
    labels = []
    for i, (image_size, output_size) in enumerate(zip(image_sizes, output_sizes)):
        up = F.interpolate(mask_pred[i : i + 1], size=padded, mode="bilinear", align_corners=False)[0]
        num = up.shape[0] + mask_cls.shape[-1] - 1
        if num * output_size[0] * output_size[1] <= _RESIZE_FLOATS:
            labels.append(semantic_inference(mask_cls[i], sem_seg_postprocess(up, image_size, output_size)).argmax(0))
        else:
            labels.append(_labels_in_strips(mask_cls[i], up[:, : image_size[0], : image_size[1]], tuple(output_size)))
    return labels


def _labels_in_strips(mask_cls: Tensor, cropped: Tensor, output_size: Size) -> Tensor:
    """argmax of ``semantic_inference(mask_cls, resize(cropped))`` for mask logits cropped [Q, h, w] resized to
    output_size (H, W), a few output rows at a time (``row_resize``: the same values as the full resize). The
    [K, Q] x [Q, n] product is the orientation whose columns equal the einsum's. Returns int64 [H, W]."""
    height, width = output_size
    probs_t = F.softmax(mask_cls, dim=-1)[:, :-1].t().contiguous()  # [K, Q]
    queries = cropped.shape[0]
    weights = row_weights(cropped.shape[1], height, device=cropped.device)
    step = max(1, _STRIP_FLOATS // ((queries + probs_t.shape[0]) * width))
    labels = torch.empty(height, width, dtype=torch.int64, device=cropped.device)
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        masks = resize_rows(cropped, weights, width, y0, y1).sigmoid_()
        labels[y0:y1] = (probs_t @ masks.view(queries, -1)).argmax(0).view(y1 - y0, width)
    return labels


def _argmax_resized(low: Tensor, resize: Callable[[Tensor], Tensor], size: Size) -> Tensor:
    """argmax over dim 0 of ``resize(low)`` ([K, ...] -> [K, H, W]), ``_RESIZE_FLOATS`` floats of it at a time."""
    k = int(low.shape[0])
    chunk = max(1, _RESIZE_FLOATS // max(1, size[0] * size[1]))
    if chunk >= k:
        return resize(low).argmax(0)
    return first_argmax_of_chunks((k0, resize(low[k0 : k0 + chunk])) for k0 in range(0, k, chunk))


def first_argmax_of_chunks(chunks: Iterable[tuple[int, Tensor]]) -> Tensor:
    """argmax over dim 0 of the concatenation of ``chunks`` (pairs of the first row's index and its [n, H, W]
    values, in order) without holding it: a running maximum in which the first of equal values wins, as in argmax."""
    best = owner = None
    for first, values in chunks:
        value, index = values.max(0)  # (the first maximal index, as argmax)
        if best is None or owner is None:
            best, owner = value, index
            continue
        better = value > best
        torch.where(better, value, best, out=best)
        torch.where(better, index + first, owner, out=owner)
    if owner is None:
        raise ValueError("first_argmax_of_chunks: no chunks")
    return owner


def _semantic_parts(
    outputs: Mapping[str, Tensor],
    image_sizes: Sequence[Size],
    output_sizes: Sequence[Size],
    input_size: Size | None,
    fast: bool,
    postprocess_before_inference: bool,
) -> list[tuple[Tensor, Callable[[Tensor], Tensor]]]:
    """Per image, the map before its last resize and that resize (per channel): scores = resize(map)."""
    if "sem_logits" in outputs:
        return _sem_logits_parts(outputs["sem_logits"], image_sizes, output_sizes, input_size)
    # contiguous: one memory layout (hence one set of kernels and roundings) whatever the model returned
    mask_cls, mask_pred = outputs["pred_logits"], outputs["pred_masks"].contiguous()
    padded = _input_size(tuple(mask_pred.shape[-2:]), input_size)
    low_h, low_w = mask_pred.shape[-2:]
    parts: list[tuple[Tensor, Callable[[Tensor], Tensor]]] = []
    for i, (image_size, output_size) in enumerate(zip(image_sizes, output_sizes)):
        if fast:
            rows = min(low_h, math.ceil(image_size[0] * low_h / padded[0]))
            cols = min(low_w, math.ceil(image_size[1] * low_w / padded[1]))
            scores = semantic_inference(mask_cls[i], mask_pred[i, :, :rows, :cols])
            resample = functools.partial(
                _resample_valid_region, image_size=image_size, input_size=padded, low_size=(low_h, low_w),
                output_size=output_size,
            )  # fmt: skip
            parts.append((scores, resample))
            continue
        up = F.interpolate(mask_pred[i : i + 1], size=padded, mode="bilinear", align_corners=False)[0]
        if postprocess_before_inference:
            scores = semantic_inference(mask_cls[i], sem_seg_postprocess(up, image_size, output_size))
            parts.append((scores, _same))
            continue
        h, w = image_size
        # The einsum is per pixel, so cropping before it equals cropping its result (and skips the padding).
        scores = semantic_inference(mask_cls[i], up[:, :h, :w])
        parts.append((scores, functools.partial(sem_seg_postprocess, image_size=image_size, output_size=output_size)))
    return parts


def _same(x: Tensor) -> Tensor:
    return x


def semantic_from_sem_logits(
    sem_logits: Tensor, image_sizes: Sequence[Size], output_sizes: Sequence[Size], *, input_size: Size | None = None
) -> list[Tensor]:
    """Per-pixel baselines: [B, K, h, w] logits upsampled to the padded input size, cropped and resized per image.

    Returns B tensors [K, H_i, W_i] of logits (argmax = label map), as d2's SemanticSegmentor produces.
    """
    return [resize(up) for up, resize in _sem_logits_parts(sem_logits, image_sizes, output_sizes, input_size)]


def _sem_logits_parts(
    sem_logits: Tensor, image_sizes: Sequence[Size], output_sizes: Sequence[Size], input_size: Size | None
) -> list[tuple[Tensor, Callable[[Tensor], Tensor]]]:
    padded = _input_size(tuple(sem_logits.shape[-2:]), input_size)
    sem_logits = sem_logits.contiguous()  # (one memory layout, hence one set of kernels, for every caller)
    parts: list[tuple[Tensor, Callable[[Tensor], Tensor]]] = []
    for i, (image_size, output_size) in enumerate(zip(image_sizes, output_sizes)):
        up = F.interpolate(sem_logits[i : i + 1], size=padded, mode="bilinear", align_corners=False)[0]
        parts.append((up, functools.partial(sem_seg_postprocess, image_size=image_size, output_size=output_size)))
    return parts
