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

Certified labels (``_certified_labels``, tried first; geometry and bounds in ``accelerate.cell_bounds``): the output
splits into 4 x 4 pixel blocks, one per cell of 2 x 2 (replicate-padded) mask logits. (1) A lower bound on (score of
the cell's candidate class - score of every other class) over its whole block settles most blocks of a confident model
at once. (2) The other blocks get approximate scores (their 16 pixels' logits from the four corners, sigmoid, a matmul
restricted to the classes the bound could not rule out), which agree with the exact ones to fp32 rounding; a pixel
whose best class leads by more than a generous rounding tolerance has that label in the exact path too. (3) Only the
remaining near-ties (exact ties, boundaries within ~1e-4 of a tie) are computed exactly: each 8 x 32 tile holding any
is upsampled from a window of logits and passed through the sigmoid as the unfused path does (PyTorch vectorises
elementwise ops in runs of 32 and finishes each run with scalar code that can round differently, so the runs must
be the same; ``_upsampled_window`` for the upsample), then only their columns enter the [K, Q] x [Q, n] matmul, whose
dot products do not depend on n (padded to 32 columns: narrower products switch kernels). The result is the exact
label map; when most pixels are near-ties (e.g. untrained weights whose classes tie everywhere) the plain strips are
used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

import maskformer.inference.accelerate.cell_bounds as cell_bounds
from maskformer.inference.postprocess.semantic import Size, _input_size, _resample_grid, semantic_labels

__all__ = ["semantic_labels_from_outputs"]

# Size of one strip's [K, rows, W] score block in floats (4 MB): with the contiguous-axis argmax, strips of a few
# thousand pixels were as fast as larger ones on 2 cores and keep the score block in cache.
_STRIP_FLOATS = 1 << 20
_MIN_COLUMNS = 32  # narrowest [K, Q] x [Q, n] product whose columns equal those of a wide one (see _scores)


def _strip_rows(num_classes: int, width: int, multiple: int) -> int:
    rows = max(1, _STRIP_FLOATS // max(1, num_classes * width))
    return max(multiple, rows // multiple * multiple)


def _exact_labels(mask_cls: Tensor, mask_pred: Tensor, image_size: Size) -> Tensor:
    """Labels [h, w] of the exact path for one image whose output size equals its valid size.

    mask_cls [Q, K+1], mask_pred [Q, hl, wl] for an input of (4 hl, 4 wl).
    """
    h, w = image_size
    probs_t = F.softmax(mask_cls, dim=-1)[:, :-1].t().contiguous()  # [K, Q]
    labels = torch.empty(h, w, dtype=torch.int64, device=mask_pred.device)
    step = _strip_rows(probs_t.shape[0], w, 4)
    for y0 in range(0, h, step):
        y1 = min(h, y0 + step)
        strip = _sigmoid_rows(mask_pred, y0, y1, w)  # [Q, rows * w]
        labels[y0:y1] = _argmax_scores(strip, probs_t).view(y1 - y0, w)
    return labels


def _sigmoid_rows(mask_pred: Tensor, y0: int, y1: int, w: int) -> Tensor:
    """sigmoid of output rows y0..y1 (first w columns) of the 4x bilinear upsample of mask_pred [Q, hl, wl], bit for
    bit as the full upsample gives them (one low-resolution row of margin on each side, ``_upsampled_window``).
    Returns [Q, (y1 - y0) * w]."""
    low_h, low_w = mask_pred.shape[-2:]
    up, lo, _ = _upsampled_window(mask_pred, max(0, y0 // 4 - 1), min(low_h, math.ceil(y1 / 4) + 1), 0, low_w)
    return up[:, y0 - 4 * lo : y1 - 4 * lo, :w].sigmoid().reshape(mask_pred.shape[0], -1)


def _upsampled_window(mask_pred: Tensor, lo: int, hi: int, c0: int, c1: int) -> tuple[Tensor, int, int]:
    """(up, lo', c0'): the 4x bilinear upsample [Q, 4 (hi' - lo'), 4 (c1' - c0')] of the logits rows lo'..hi', columns
    c0'..c1' of mask_pred [Q, hl, wl], a window holding lo..hi x c0..c1, whose output pixels away from the window's
    inner edges are bit-identical to the full upsample's.

    The 4x scale is exact in binary, so a pixel's weights do not depend on the window, but PyTorch's kernel (torch
    2.14, NCHW) rounds in another order for maps whose height + width is below ``_MIN_SPAN``: a smaller window is grown
    (columns, then rows) to that span, or to the whole map when the map itself is smaller (then both agree).
    Contiguous logits: the unfused path's kernel (``tests/test_fast_inference.py`` checks windows bit for bit)."""
    low_h, low_w = mask_pred.shape[-2:]
    deficit = _MIN_SPAN - (hi - lo) - (c1 - c0)
    if deficit > 0:
        c0, c1 = _grow(c0, c1, low_w, deficit)
        deficit = _MIN_SPAN - (hi - lo) - (c1 - c0)
    if deficit > 0:
        lo, hi = _grow(lo, hi, low_h, deficit)
    window = mask_pred[None, :, lo:hi, c0:c1].contiguous()
    return F.interpolate(window, size=(4 * (hi - lo), 4 * (c1 - c0)), mode="bilinear")[0], lo, c0


def _grow(lo: int, hi: int, n: int, more: int) -> tuple[int, int]:
    """The range lo..hi of 0..n grown by ``more`` (after first, then before; less at the ends of 0..n)."""
    hi2 = min(n, hi + more)
    return max(0, lo - (more - (hi2 - hi))), hi2


def _scores(sig: Tensor, probs_t: Tensor) -> Tensor:
    """probs_t @ sig for sig [Q, n], probs_t [K, Q] -> [K, n], every column bit-identical to the same column of a
    product over many pixels (the unfused path's einsum).

    [K, Q] x [Q, n] is the orientation whose dot products equal the unfused einsum's bit for bit (pixel-major
    [n, Q] x [Q, K] differs in the last bit for small K and Q). Fewer than 12 columns take another sgemm kernel (with
    another summation order) on this project's CPUs, so narrow products are padded to ``_MIN_COLUMNS`` columns.
    """
    n = sig.shape[1]
    if n < _MIN_COLUMNS:
        return (probs_t @ torch.cat([sig, sig[:, :1].expand(-1, _MIN_COLUMNS - n)], 1))[:, :n]
    return probs_t @ sig


def _argmax_scores(sig: Tensor, probs_t: Tensor) -> Tensor:
    """argmax over classes of ``_scores(sig, probs_t)`` (first index among equal maxima) -> int64 [n]."""
    return _first_argmax(_scores(sig, probs_t))


def _first_argmax(scores: Tensor) -> Tensor:
    """``scores.argmax(0)`` for [K, n] (first index among equal maxima) in 1/4 of its time on CPU: the max and the
    masked max of reversed indices are vectorised along the contiguous axis, argmax over a strided axis is not."""
    num = scores.shape[0]
    best = scores.amax(0)
    reversed_index = torch.arange(num, 0, -1, dtype=torch.int16 if num < 2**15 else torch.int32, device=scores.device)
    found = ((scores == best) * reversed_index[:, None]).amax(0)
    if bool((found == 0).any()):  # NaN scores: keep argmax's own convention
        return scores.argmax(0)
    return num - found.long()


_ALIGN = 32  # every CPU vector loop's run (2 x 16 floats) divides this; the width of a tile of exact pieces
_BAND = 8  # output rows per tile of exact pieces (2 low-resolution rows)
_MIN_SPAN = 33  # logit maps with height + width below this are upsampled in another rounding order (_upsampled_window)
_MAX_UNCERTAIN = 0.6  # above this fraction of uncertain pixels, plain strips are cheaper
_MIN_CLASS_QUERY_PAIRS = 2048  # below this K x Q the per-pixel matmul is cheap and the bounds do not pay for themselves


def _certified_labels(mask_cls: Tensor, mask_pred: Tensor, image_size: Size) -> Tensor | None:
    """Labels [h, w] identical to ``_exact_labels`` (same arguments), or None when the certificate does not apply.

    mask_cls [Q, K+1], mask_pred [Q, hl, wl] for an input of (4 hl, 4 wl). Blocks of certain cells take their
    candidate; the other blocks take the best class of approximate scores where it leads by the tolerance; the
    remaining near-ties are computed exactly in bands (module docstring).
    """
    h, w = image_size
    num_queries, low_h, low_w = mask_pred.shape
    num_classes = mask_cls.shape[-1] - 1
    if num_classes * num_queries < _MIN_CLASS_QUERY_PAIRS or num_classes < 2:
        return None
    tol = cell_bounds.relative_tolerance(mask_pred)
    if not math.isfinite(tol):  # (NaN or infinite logits)
        return None
    probs = F.softmax(mask_cls, dim=-1)[:, :-1].contiguous()  # [Q, K]
    cm = cell_bounds.padded_cell_major(mask_pred)
    candidate, groups = cell_bounds.certain_cells(probs, cm, tol)
    blocks, near_tie = cell_bounds.fill_blocks(cm, candidate, groups, probs, tol)
    labels = cell_bounds.blocks_to_image(blocks, (low_h, low_w), (h, w))
    uncertain = cell_bounds.blocks_to_image(near_tie, (low_h, low_w), (h, w))
    if not bool(uncertain.any()):
        return labels
    if uncertain.float().mean() > _MAX_UNCERTAIN or (w % _ALIGN and w == 4 * low_w):
        return None  # (a full-width row whose length is not aligned is vectorised differently by the unfused path)
    probs_t = probs.t().contiguous()
    flat = labels.view(-1)
    # only the near-tie pixels' columns through the matmul, their sigmoids computed per tile as the unfused path does
    where, columns = _near_tie_tiles(mask_pred, uncertain)
    flat[where] = _argmax_scores(columns, probs_t)
    return labels


def _near_tie_tiles(mask_pred: Tensor, uncertain: Tensor) -> tuple[Tensor, Tensor]:
    """(flat pixel indices int64 [n], their sigmoids [Q, n]) for the True pixels of uncertain [h, w], computed per
    ``_BAND`` x ``_ALIGN`` tile that holds any (``_sigmoid_tile``), bit for bit as the unfused path's."""
    h, w = uncertain.shape
    rows, cols = -(-h // _BAND), -(-w // _ALIGN)
    padded = F.pad(uncertain, (0, cols * _ALIGN - w, 0, rows * _BAND - h))
    occupied = padded.view(rows, _BAND, cols, _ALIGN).any(3).any(1).nonzero().tolist()
    where, columns = [], []
    for ty, tx in occupied:
        y0, x0 = ty * _BAND, tx * _ALIGN
        y1, x1 = min(h, y0 + _BAND), min(w, x0 + _ALIGN)
        dy, dx = uncertain[y0:y1, x0:x1].nonzero().unbind(1)
        columns.append(_sigmoid_tile(mask_pred, y0, y1, x0, x1)[:, dy, dx])
        where.append((y0 + dy) * w + x0 + dx)
    return torch.cat(where), torch.cat(columns, 1)


def _sigmoid_tile(mask_pred: Tensor, y0: int, y1: int, x0: int, x1: int) -> Tensor:
    """sigmoid of output rows y0..y1, columns x0..x1 of the 4x bilinear upsample of mask_pred [Q, hl, wl], bit for
    bit as the unfused path's (for x0 a multiple of ``_ALIGN``, x1 - x0 <= ``_ALIGN``). Returns [Q, y1 - y0, x1 - x0].

    The upsample of a window as in ``_upsampled_window``; the sigmoid's run is the tile's row, vectorised whole when it
    is ``_ALIGN`` long and by scalar code when it is a last, narrower piece, as the unfused path's rows end."""
    low_h, low_w = mask_pred.shape[-2:]
    lo, hi = max(0, y0 // 4 - 1), min(low_h, math.ceil(y1 / 4) + 1)
    up, lo, c0 = _upsampled_window(mask_pred, lo, hi, max(0, x0 // 4 - 1), min(low_w, math.ceil(x1 / 4) + 1))
    return up[:, y0 - 4 * lo : y1 - 4 * lo, x0 - 4 * c0 : x1 - 4 * c0].sigmoid()


def _corner_labels(mask_cls: Tensor, mask_pred: Tensor, image_size: Size) -> Tensor:
    """``fast`` labels [h, w] for an output at the input size: blocks whose four corner logits agree take that class,
    the others get block scores over the classes at their corners (``cell_bounds.corner_labels``)."""
    low_h, low_w = mask_pred.shape[-2:]
    probs = F.softmax(mask_cls, dim=-1)[:, :-1].contiguous()  # [Q, K]
    cm = cell_bounds.padded_cell_major(mask_pred)
    label, groups = cell_bounds.corner_labels(probs, cm)
    blocks, _ = cell_bounds.fill_blocks(cm, label, groups, probs, tol=0.0)
    return cell_bounds.blocks_to_image(blocks, (low_h, low_w), image_size)


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
        labels[y0 : y0 + step] = _first_argmax(scores.view(scores.shape[0], -1)).view(scores.shape[1:])
    return labels


def semantic_labels_from_outputs(
    outputs: Mapping[str, Tensor],
    image_sizes: Sequence[Size],
    output_sizes: Sequence[Size],
    *,
    input_size: Size | None = None,
    fast: bool = False,
    certify: bool = True,
    corner_labels: bool = False,
) -> list[Tensor]:
    """Label maps int64 [H_i, W_i] equal to ``semantic_from_outputs(...)[i].argmax(0)`` (same arguments; with ``fast``
    only for resized outputs).

    ``fast``: approximate labels - at the input size from the labels at the cell corners (``_corner_labels``; exact
    except inside 4 x 4 blocks whose corners agree), otherwise scores combined at 1/4 resolution and resampled.
    ``certify``: settle 4x4 pixel blocks from score bounds first (module docstring); False = strips only.
    ``corner_labels``: ``fast``'s corner labels for outputs at the input size only (resized outputs stay exact).

    outputs: {"pred_logits": [B, Q, K+1], "pred_masks": [B, Q, h, w]} or {"sem_logits": ...} (unfused).
    """
    if "sem_logits" in outputs:
        return semantic_labels(outputs, image_sizes, output_sizes, input_size=input_size)
    mask_cls, mask_pred = outputs["pred_logits"].float(), outputs["pred_masks"].float()
    low = (int(mask_pred.shape[-2]), int(mask_pred.shape[-1]))
    padded = _input_size(low, input_size)
    labels = []
    for i, (image_size, output_size) in enumerate(zip(image_sizes, output_sizes)):
        image_size, output_size = tuple(image_size), tuple(output_size)
        unresized = image_size == output_size and padded == (4 * low[0], 4 * low[1])
        if (fast or corner_labels) and unresized:
            labels.append(_corner_labels(mask_cls[i], mask_pred[i], image_size))
            continue
        certified = _certified_labels(mask_cls[i], mask_pred[i], image_size) if certify and unresized else None
        if certified is not None:
            labels.append(certified)
        elif fast:
            labels.append(_fast_labels(mask_cls[i], mask_pred[i], image_size, padded, output_size))
        elif unresized:
            labels.append(_exact_labels(mask_cls[i], mask_pred[i], image_size))
        else:
            one = {"pred_logits": mask_cls[i : i + 1], "pred_masks": mask_pred[i : i + 1]}
            labels.append(semantic_labels(one, [image_size], [output_size], input_size=padded)[0])
    return labels
