"""Per-cell score bounds and approximate scores for the semantic labels of a 4x bilinear mask upsample.

Geometry. Replicate-pad the mask logits [Q, hl, wl] by one on every side ([Q, hl + 2, wl + 2]). Output row y of a 4x
bilinear upsample (align_corners=False; source coordinates below 0 clamp to 0, above hl - 1 to hl - 1) then reads
padded rows c = floor((y + 2) / 4) and c + 1 with weight ((y + 2) mod 4 + 0.5) / 4 on row c + 1 (the clamped edge rows
read two copies of the same row). So the output splits into blocks of 4 x 4 pixels, one per *cell* of 2 x 2 padded
logits, (hl + 1) x (wl + 1) cells, block (c, d) covering output rows 4c - 2 .. 4c + 1 and columns 4d - 2 .. 4d + 1,
and inside every block the bilinear weights are the same: 1/8, 3/8, 5/8, 7/8 along each axis (exact in binary).

Bounds (``certain_cells``). Every pixel of a block is a convex combination of its cell's four logits, so the sigmoid
of query q there lies between the sigmoids of their minimum and maximum. For the candidate label u and any other
class k, with d_q = p_qu - p_qk (class probabilities are fixed per image), the score difference at every pixel of
the block is at least sum_q max(d_q, 0) sigmoid(min_q) + min(d_q, 0) sigmoid(max_q). When that beats every k by
a rounding tolerance (relative to the largest score the cell allows) the whole block has label u.

Approximate scores (``block_top2``). For the other cells the 16 pixels' logits are one [16, 4] x [4, n Q] product
with the fixed weights, then sigmoid and [16 n, Q] x [Q, K]: the same arithmetic as the exact path in another order,
so within fp32 rounding (~1e-6 of the scores) of it. A pixel whose best class beats the second by more than
``relative_tolerance`` of its score has that label in the exact path too; the caller computes the remaining near-ties
exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from maskformer.inference.accelerate.onednn import linear

__all__ = [
    "ABSOLUTE_TOLERANCE",
    "block_top2",
    "blocks_to_image",
    "certain_cells",
    "corner_labels",
    "fill_blocks",
    "padded_cell_major",
    "relative_tolerance",
]

_PRESENT = 16  # classes kept for cells whose candidate clears every other class's image-wide bound
_FEW_RIVALS = 8  # uncertain cells with at most this many rival classes are scored apart from the others
_CHUNK_BOUNDS = 1 << 15  # cells per chunk of certain_cells ([cells, 2Q] bounds: 26 MB at Q = 100; a 512 x 512 picture
# is one chunk: fewer, larger products were faster than cache-sized chunks of 32 rows, benchmarks/profile_predict.py)
_MERGED_CLASSES = 32  # classes of one batch of groups in fill_blocks (more: the product outgrows what merging saves)
_CHUNK_CELLS = 2048  # cells per chunk of block_top2 (32768 pixels): larger chunks were no faster, smaller ones slower


def _block_weights(device: torch.device) -> Tensor:
    """[16, 4]: row a * 4 + b (pixel offset a down, b right inside a block) weighs corners (00, 01, 10, 11)."""
    lam = torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=torch.float32, device=device)
    rows = torch.stack([1 - lam, lam], 1)  # [4, 2]
    return torch.einsum("ai,bj->abij", rows, rows).reshape(16, 4)


def padded_cell_major(mask_pred: Tensor) -> Tensor:
    """Replicate-padded, pixel-major logits [hl + 2, wl + 2, Q] of mask_pred [Q, hl, wl]."""
    return F.pad(mask_pred[None], (1, 1, 1, 1), mode="replicate")[0].permute(1, 2, 0).contiguous()


def relative_tolerance(mask_pred: Tensor) -> float:
    """Bound on |computed - exact| / scale for scores and score differences of one image, mask_pred [Q, hl, wl].

    Every score is a sum of Q positive terms p_qk sigmoid(m_q) <= scale (the cell's or pixel's largest possible
    score). In fp32 (unit roundoff u = 2^-24): summation order changes a score by Q u scale at most; an interpolated
    logit within a few ulps of m moves sigmoid(m) by a relative (1 - sigmoid) |m| 2^-22; sigmoid itself by a few u.
    Two computations (approximate and exact) each err that much, so |difference| <= (Q / 8 + |m| / 2 + 2) 2^-20 scale;
    (Q + max |m| + 10) 2^-20 covers it with room (1.2e-4 for Q = 100 and logits within +-15)."""
    low, high = torch.aminmax(mask_pred)  # (one pass, no |m| copy)
    return (mask_pred.shape[0] + max(-float(low), float(high)) + 10.0) * 2.0**-20


# below this an fp32 sigmoid is subnormal and its relative error unbounded: leads under it are near-ties anyway
ABSOLUTE_TOLERANCE = 1e-30


def certain_cells(probs: Tensor, cm: Tensor, tol: float) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """Bounds for every cell (module docstring): (candidate int64 [C], groups) with C = (hl + 1) * (wl + 1) cells in
    row-major order. A cell's block certainly has the candidate label unless the cell is listed in ``groups``: pairs
    (cells int64 [n], classes int64 [m >= 2]) of uncertain cells sharing a candidate and the only classes that can
    win anywhere in their blocks (the candidate and every class its bound does not beat). probs [Q, K], cm from
    ``padded_cell_major``; a bound counts when it beats ``tol`` (``relative_tolerance``) times the cell's largest
    possible score. Works through whole rows of at most ``_CHUNK_BOUNDS`` cells at a time.

    Classes that are nowhere likely: a class's score never exceeds sum_q p_qk sigmoid(max of m_q over the image).
    Beyond the ``_PRESENT`` classes with the largest such bound, every class stays below ``tau``; candidates come from
    the present classes, and a "bright" cell, whose candidate provably scores above ``tau`` plus the margin, needs its
    bounds against the present classes only."""
    present, tau = _present_classes(probs, cm)
    # one product per chunk gives, per cell and present class, the score's lower (s_min) and upper (s_max) bound,
    # and the cell's largest possible score (no score in a cell exceeds sum_q sigmoid(max_q) max_k p_qk)
    num_queries, p = probs.shape[0], len(present)
    weight = torch.zeros(2 * p + 1, 2 * num_queries, dtype=probs.dtype, device=probs.device)  # [out, in]
    weight[:p, :num_queries] = probs[:, present].t()
    weight[p : 2 * p, num_queries:] = probs[:, present].t()
    weight[2 * p, num_queries:] = probs.amax(1)
    cols = cm.shape[1] - 1
    candidates, groups = [], []
    step = max(1, _CHUNK_BOUNDS // cols)
    for r0 in range(0, cm.shape[0] - 1, step):
        r1 = min(cm.shape[0] - 1, r0 + step)
        candidate, chunk_groups = _certain_chunk(probs, cm[r0 : r1 + 1], tol, present, tau, weight)
        candidates.append(candidate)
        groups += [(cells + r0 * cols, classes) for cells, classes in chunk_groups]
    return torch.cat(candidates), groups


def _certain_chunk(
    probs: Tensor, cm: Tensor, tol: float, present: Tensor, tau: float, weight: Tensor
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """``certain_cells`` for the cells of the rows of ``cm`` (cell indices local to the chunk); ``weight``
    [2P + 1, 2Q] maps the [s_min | s_max] bounds to (lower bounds, upper bounds, scale)."""
    num_queries, num_classes = probs.shape
    rows_max = torch.maximum(cm[:-1], cm[1:])
    rows_min = torch.minimum(cm[:-1], cm[1:])
    cells = (rows_max.shape[0], rows_max.shape[1] - 1, num_queries)
    bounds = torch.empty(cells[0], cells[1], 2 * num_queries, dtype=cm.dtype, device=cm.device)  # [.., s_min | s_max]
    torch.minimum(rows_min[:, :-1], rows_min[:, 1:], out=bounds[..., :num_queries])
    torch.maximum(rows_max[:, :-1], rows_max[:, 1:], out=bounds[..., num_queries:])
    bounds = bounds.view(-1, 2 * num_queries).sigmoid_()  # [C, 2Q]
    p = len(present)
    sums = linear(bounds, weight)  # [C, 2P + 1]
    margin = sums[:, 2 * p] * tol + ABSOLUTE_TOLERANCE  # [C]
    guess = (sums[:, :p] + sums[:, p : 2 * p]).argmax(1)  # [C] index into present (a guess; the bounds check it)
    candidate = present[guess]
    lower = sums[:, :p].gather(1, guess[:, None])[:, 0]
    dim = lower <= tau * (1 + 2.0**-10) + 2 * margin  # (rounding of lower and tau covered by the 2 margins)
    key = candidate * 2 + dim.long()
    values, counts = torch.unique(key, return_counts=True)
    largest = int(counts.argmax())
    groups = []
    for i, (k, n) in enumerate(zip(values.tolist(), counts.tolist())):
        u, is_dim = divmod(k, 2)
        classes = torch.arange(num_classes, device=probs.device) if is_dim else present
        d = (probs[:, u : u + 1] - probs[:, classes]).t()  # [m, Q]
        signed = torch.cat([d.clamp(min=0), d.clamp(max=0)], 1)  # [m, 2Q]
        if i == largest:  # the dominant group: all rows (no copy of the bounds), the others' rows ignored
            members = None if n == len(key) else (key == k).nonzero()[:, 0]
            gap = linear(bounds, signed)
            if members is not None:
                gap = gap.index_select(0, members)
        else:
            members = (key == k).nonzero()[:, 0]
            gap = linear(bounds.index_select(0, members), signed)  # [n, m]
        gap[:, classes == u] = math.inf
        group_margin = margin if members is None else margin.index_select(0, members)
        beaten = gap > group_margin[:, None]
        uncertain = (~beaten.all(1)).nonzero()[:, 0]
        if uncertain.numel():
            rivals = ~beaten[uncertain]  # [m', m]: classes the bound does not rule out
            cells_of = uncertain if members is None else members[uncertain]
            few = rivals.sum(1, dtype=torch.int32) <= _FEW_RIVALS
            for subset in few, ~few:  # few-rival cells stay cheap
                if bool(subset.any()):
                    contenders = rivals[subset].any(0) | (classes == u)
                    groups.append((cells_of[subset], classes[contenders]))
    return candidate, groups


def _present_classes(probs: Tensor, cm: Tensor) -> tuple[Tensor, float]:
    """(present int64 [P], tau): the ``_PRESENT`` classes with the largest image-wide score bound (all classes when
    there are few), and the largest bound among the others (-inf when none)."""
    num_queries, num_classes = probs.shape
    if num_classes <= 2 * _PRESENT:
        return torch.arange(num_classes, device=probs.device), -math.inf
    upper = cm.reshape(-1, num_queries).amax(0).sigmoid() @ probs  # [K]
    top = upper.topk(_PRESENT + 1)
    return top.indices[:_PRESENT].sort().values, float(top.values[-1])


def block_top2(cm: Tensor, cells: Tensor, probs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(best int64 [n, 16], top [n, 16], lead [n, 16]) for the 4 x 4 pixel blocks of the given cells (flat indices
    [n]): the index of the best column of probs [Q, m >= 2] in each pixel's approximate scores, that score, and its
    lead over the second best."""
    wide = cm.shape[1]
    flat = cm.view(-1, cm.shape[-1])
    weights = _block_weights(cm.device)
    probs_t = probs.t().contiguous()
    labels, tops, gaps = [], [], []
    for chunk in cells.split(_CHUNK_CELLS):
        base = chunk // (wide - 1) * wide + chunk % (wide - 1)  # top-left corner of each cell in the padded grid
        corners = flat.index_select(0, torch.stack([base, base + 1, base + wide, base + wide + 1]).view(-1))  # [4n, Q]
        logits = weights @ corners.view(4, -1)  # [16, n Q]
        scores = linear(logits.sigmoid_().view(-1, flat.shape[1]), probs_t)  # [16 n, m]
        top = scores.topk(2, dim=1)
        labels.append(top.indices[:, 0].view(16, -1).t())
        tops.append(top.values[:, 0].view(16, -1).t())
        gaps.append((top.values[:, 0] - top.values[:, 1]).view(16, -1).t())
    return torch.cat(labels), torch.cat(tops), torch.cat(gaps)


def corner_labels(probs: Tensor, cm: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """An approximation of ``certain_cells`` (for ``fast`` post-processing): (label int64 [C], groups) where a cell
    whose four corner logits all give the same class takes it for its whole block, and the other cells are listed
    with the classes found at their corners (``groups`` as in ``certain_cells``). Misses only what starts and ends
    inside one cell (structures under 4 output pixels wide). probs [Q, K], cm from ``padded_cell_major``."""
    rows, cols, num_queries = cm.shape
    points = linear(cm.view(-1, num_queries).sigmoid(), probs.t().contiguous()).argmax(1).view(rows, cols)
    corners = torch.stack([points[:-1, :-1], points[:-1, 1:], points[1:, :-1], points[1:, 1:]], -1).view(-1, 4)
    label = corners[:, 0]
    mixed = (corners != label[:, None]).any(1).nonzero()[:, 0]
    if mixed.numel() == 0:
        return label, []
    return label, [(mixed, torch.unique(corners[mixed]))]


def fill_blocks(
    cm: Tensor, label: Tensor, groups: list[tuple[Tensor, Tensor]], probs: Tensor, tol: float
) -> tuple[Tensor, Tensor]:
    """Per-cell labels [C] and the (cells, classes) groups of ``certain_cells`` / ``corner_labels`` -> (blocks int64
    [C, 16], near_tie bool [C, 16]): every block filled with its cell's label, the listed cells' blocks with the best
    of their classes by ``block_top2``; near_tie marks pixels whose lead is within ``tol`` of their score.

    Groups are scored together, a few large products instead of a small one per group, each batch against the union
    of its groups' classes (at most ``_MERGED_CLASSES``; a group with more stays alone). A class that a cell's bounds
    ruled out trails its candidate by more than the tolerance everywhere in its block, so it never wins there; as the
    runner-up it can only shorten a lead, that is mark a near-tie the exact path then settles."""
    blocks = label[:, None].expand(-1, 16).contiguous()
    near_tie = torch.zeros(blocks.shape, dtype=torch.bool, device=blocks.device)
    for cells, classes in _merged(groups):
        best, top, lead = block_top2(cm, cells, probs[:, classes])
        blocks.index_copy_(0, cells, classes[best])
        near_tie.index_copy_(0, cells, lead <= tol * top + ABSOLUTE_TOLERANCE)
    return blocks, near_tie


def _merged(groups: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    """The (cells, classes) groups joined, fewest classes first, into batches (cells, the union of their classes)
    of at most ``_MERGED_CLASSES`` classes."""
    batches: list[tuple[list[Tensor], set[int]]] = []
    for cells, classes in sorted(groups, key=lambda group: len(group[1])):
        keys = set(classes.tolist())
        if batches and len(batches[-1][1] | keys) <= _MERGED_CLASSES:
            batches[-1][0].append(cells)
            batches[-1][1].update(keys)
        else:
            batches.append(([cells], keys))
    device = groups[0][1].device if groups else None
    return [(torch.cat(cells), torch.tensor(sorted(keys), device=device)) for cells, keys in batches]


def blocks_to_image(blocks: Tensor, low: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Per-cell 4 x 4 blocks [C, 16] -> the top-left ``size`` (h, w) of the output image (h <= 4 hl, w <= 4 wl)."""
    rows, cols = low[0] + 1, low[1] + 1
    canvas = blocks.view(rows, cols, 4, 4).permute(0, 2, 1, 3).reshape(4 * rows, 4 * cols)
    return canvas[2 : 2 + size[0], 2 : 2 + size[1]].contiguous()
