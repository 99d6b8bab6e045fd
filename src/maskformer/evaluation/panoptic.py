"""Panoptic quality (PQ/SQ/RQ) computed in memory with exactly panopticapi's ``pq_compute`` semantics.

Per image (panopticapi's definition, which this module reproduces):

* id 0 in a panoptic map is VOID; every other id must be listed in that image's segments.
* A ground-truth segment ``g`` and a predicted segment ``p`` of the same category, ``g`` not crowd, match when
  ``IoU = |g∩p| / (|p| + |g| - |g∩p| - |p∩VOID_gt|) > 0.5``. Segments never overlap, so matches are unique.
* Unmatched non-crowd ground truth: FN. Crowd ground truth: never matched and never FN.
* An unmatched prediction is FP unless ``(|p∩VOID_gt| + |p∩crowd_c|) / |p| > 0.5``, where ``crowd_c`` is the crowd
  segment of the prediction's category. panopticapi keeps one crowd segment per category in a dict filled in
  ``segments_info`` order, so with several crowd segments of one category the *last* one counts; so here.
* Per category: ``PQ = Σ IoU(TP) / (TP + FP/2 + FN/2)``, ``SQ = Σ IoU / TP`` (0 if no TP), ``RQ = TP / (TP + FP/2 +
  FN/2)``; categories with TP + FP + FN = 0 are left out of the means and ``n`` counts the others.

Differences from panopticapi, all for inputs it cannot handle or handles by accident:

* A subset (Things/Stuff) with ``n = 0`` gives ``pq = sq = rq = 0.0`` where panopticapi raises ZeroDivisionError.
* Ground-truth segments of an unknown category and duplicated segment ids raise ``ValueError``; panopticapi
  silently drops the former and keeps the last of the latter.
* panopticapi reads ground-truth areas from the annotation JSON; ``PanopticEvaluator.update`` counts pixels (the two
  agree on consistent data). The folder evaluator passes the JSON areas through, as panopticapi.

Speed: instead of panopticapi's ``np.unique`` over ``gt * 256**3 + pred`` (a sort of every pixel), the two maps are
run-length encoded jointly (two vectorised comparisons), run ids become compact segment indices through a
collision-free hash of the (few, known) segment ids, and one weighted ``np.bincount`` over
``gt_index * (P + 1) + pred_index`` gives every intersection at once; the matching then works on the small
``[G, P]`` matrix.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..fileio import json_integer
from ._util import as_int_array
from .reduce import all_reduce_sum

VOID = 0
_MAX_HASH_SIZE = 1 << 18  # largest direct-address table tried before falling back to a binary search


@dataclass
class PQStats:
    """Per-category accumulators, index = position in the evaluator's category list. All arrays ``[C]``."""

    tp: np.ndarray  # int64
    fp: np.ndarray  # int64
    fn: np.ndarray  # int64
    iou: np.ndarray  # float64, sum of IoU over true positives

    @classmethod
    def zeros(cls, num_categories: int) -> PQStats:
        z = np.zeros(num_categories, dtype=np.int64)
        return cls(tp=z.copy(), fp=z.copy(), fn=z.copy(), iou=np.zeros(num_categories, dtype=np.float64))

    def __iadd__(self, other: PQStats) -> PQStats:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou
        return self


def _pixel_indices(flat: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Map pixel ids to positions in ``table`` (int64 ``[S]``, distinct, ``table[0] == VOID``).

    Returns ``(index intp [N], unknown bool [N] or None)``; ``index`` is meaningless where ``unknown`` is True.
    The hash is ``id & (m - 1)`` for the smallest power of two ``m`` without collisions among the table's ids:
    for small ids (what inference produces) that is a plain lookup table, for COCO's RGB ids it stays small too.
    """
    if flat.dtype not in (np.int32, np.int64, np.uint32):
        flat = flat.astype(np.int64)  # small dtypes cannot hold the hash mask; uint64 cannot index
    size = len(table)
    m = 64
    while m < 16 * size:  # sparse enough that random ids rarely collide on the first try
        m *= 2
    while m <= _MAX_HASH_SIZE and len(np.unique(table & (m - 1))) < size:
        m *= 2
    if m <= _MAX_HASH_SIZE:
        slots = np.zeros(m, dtype=np.intp)
        slots[table & (m - 1)] = np.arange(size)
        index = slots.take(flat & (m - 1))
    else:  # adversarial ids (e.g. all multiples of 2**20): binary search instead
        order = np.argsort(table)
        pos = np.minimum(np.searchsorted(table[order], flat), size - 1)
        index = order.take(pos)
    unknown = table.take(index) != flat
    return index, (unknown if unknown.any() else None)


def _runs(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encode two flat maps jointly: ``(gt id, pred id, length)`` per maximal run of equal pairs.

    Segments are regions, so a 640x480 map has a few thousand runs instead of 307,200 pixels: everything after this
    (hashing, validation, histogram) touches only the runs.
    """
    change = np.empty(gt.shape, dtype=np.bool_)
    if gt.size:
        change[0] = True
        np.not_equal(gt[1:], gt[:-1], out=change[1:])
        change[1:] |= pred[1:] != pred[:-1]
    starts = np.flatnonzero(change)
    lengths = np.diff(starts, append=gt.size)
    return gt[starts], pred[starts], lengths


def _segment_arrays(
    segments: Sequence[Mapping[str, Any]], cat_index: Mapping[int, int], *, name: str, with_crowd: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids int64 [S], category index intp [S], iscrowd bool [S])`` from a segments_info list."""
    if not isinstance(segments, list | tuple):
        raise ValueError(f"{name}: segments_info is a {type(segments).__name__}, not a list of segments")
    ids = np.empty(len(segments), dtype=np.int64)
    cats = np.empty(len(segments), dtype=np.intp)
    for i, s in enumerate(segments):
        missing = [k for k in ("id", "category_id") if not isinstance(s, Mapping) or k not in s]
        if missing:
            raise ValueError(f"{name}: segment {i} ({s!r:.80}) has no {' or '.join(repr(k) for k in missing)}")
        try:
            ids[i] = json_integer(s["id"])
        except ValueError as e:
            raise ValueError(f"{name}: segment id {e}") from None
        try:
            c = cat_index.get(json_integer(s["category_id"]))
        except ValueError as e:
            raise ValueError(f"{name}: segment {ids[i]}: category_id {e}") from None
        if c is None:
            raise ValueError(f"{name}: segment {ids[i]} has unknown category_id {s['category_id']}")
        cats[i] = c
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{name}: duplicated segment ids")
    if (ids == VOID).any():
        raise ValueError(f"{name}: segment id {VOID} is reserved for VOID")
    crowd = np.zeros(len(segments), dtype=np.bool_)
    for i, s in enumerate(segments if with_crowd else ()):
        try:  # (crowd is iscrowd == 1, as panopticapi's test: "0" and 2 were taken as crowd by their truth value)
            crowd[i] = json_integer(s.get("iscrowd", 0)) == 1
        except ValueError as e:
            raise ValueError(f"{name}: segment {ids[i]}: iscrowd {e}") from None
    return ids, cats, crowd


def _area(segment: Mapping[str, Any], counted: int, segment_id: int) -> float:
    """A ground-truth segment's ``"area"`` field (panopticapi's), or the pixels counted when it has none."""
    area = segment.get("area", counted)
    if isinstance(area, bool) or not isinstance(area, numbers.Real) or not math.isfinite(area) or area < 0:
        raise ValueError(f"ground-truth segments: segment {segment_id}: area {area!r} is not a number of pixels")
    return float(area)


def pq_image_stats(
    pred_pan: Any,
    pred_segments: Sequence[Mapping[str, Any]],
    gt_pan: Any,
    gt_segments: Sequence[Mapping[str, Any]],
    *,
    cat_index: Mapping[int, int],
    use_gt_area_field: bool = False,
    strict_gt: bool = False,
) -> PQStats:
    """TP/FP/FN/IoU-sum per category for one image (see the module docstring for the rules).

    Args:
        pred_pan, gt_pan: int ``[H, W]`` panoptic id maps, 0 = VOID.
        pred_segments: ``[{"id", "category_id"}, ...]``; every listed id must occur in ``pred_pan`` and every
            non-zero id of ``pred_pan`` must be listed (else ``ValueError``, as panopticapi's KeyError).
        gt_segments: ``[{"id", "category_id", "iscrowd"?, "area"?}, ...]``. Ground-truth ids missing from the list
            are tolerated as panopticapi does (neither VOID nor a segment); listed ids absent from the map are FN.
        cat_index: category id -> position in the stats arrays.
        use_gt_area_field: take ground-truth areas from ``"area"`` (panopticapi reads them from the JSON) instead of
            counting pixels.
        strict_gt: raise ``ValueError`` for ground-truth ids missing from the list or listed but absent from the map
            (the folder evaluator uses it: such files are corrupt), instead of panopticapi's tolerance.
    """
    pred = as_int_array(pred_pan, name="pred_pan")
    gt = as_int_array(gt_pan, name="gt_pan")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_pan shape {pred.shape} != gt_pan shape {gt.shape}")
    p_ids, p_cat, _ = _segment_arrays(pred_segments, cat_index, name="predicted segments", with_crowd=False)
    g_ids, g_cat, g_crowd = _segment_arrays(gt_segments, cat_index, name="ground-truth segments", with_crowd=True)
    n_p, n_g = len(p_ids), len(g_ids)

    g_vals, p_vals, run_lengths = _runs(gt.ravel(), pred.ravel())
    p_index, p_unknown = _pixel_indices(p_vals, np.concatenate(([VOID], p_ids)))
    if p_unknown is not None:
        extra = np.unique(p_vals[p_unknown])[:5].tolist()
        raise ValueError(f"predicted map contains segment id(s) {extra} not listed in its segments")
    g_index, g_unknown = _pixel_indices(g_vals, np.concatenate(([VOID], g_ids)))
    if g_unknown is not None:
        if strict_gt:
            extra = np.unique(g_vals[g_unknown])[:5].tolist()
            raise ValueError(f"ground-truth map contains segment id(s) {extra} not listed in its segments")
        g_index[g_unknown] = n_g + 1  # an extra row: overlaps nothing that is counted
    # hist[i, j] = pixels with gt row i (0 VOID, 1..G segments, G+1 unlisted) and pred column j (0 VOID, 1..P);
    # float64 weights are exact for pixel counts below 2**53
    joint = g_index * (n_p + 1) + p_index
    hist = np.bincount(joint, weights=run_lengths, minlength=(n_g + 2) * (n_p + 1)).astype(np.int64)
    hist = hist.reshape(n_g + 2, n_p + 1)

    p_area = hist.sum(axis=0)[1:]
    if n_p and not p_area.all():
        missing = p_ids[p_area == 0][:5].tolist()
        raise ValueError(f"predicted segment id(s) {missing} are listed but absent from the predicted map")
    p_void = hist[0, 1:]
    inter = hist[1 : n_g + 1, 1:]
    g_area = hist[1 : n_g + 1].sum(axis=1)
    if strict_gt and n_g and not g_area.all():
        missing = g_ids[g_area == 0][:5].tolist()
        raise ValueError(f"ground-truth segment id(s) {missing} are listed but absent from the ground-truth map")
    if use_gt_area_field:
        g_area = np.array([_area(s, a, g) for s, a, g in zip(gt_segments, g_area.tolist(), g_ids.tolist())])

    num_cats = len(cat_index)
    stats = PQStats.zeros(num_cats)
    gi, pj = np.nonzero((inter > 0) & (g_cat[:, None] == p_cat[None, :]) & ~g_crowd[:, None])
    it = inter[gi, pj]
    iou = it / (p_area[pj] + g_area[gi] - it - p_void[pj])
    hit = iou > 0.5
    gi, pj, iou = gi[hit], pj[hit], iou[hit]
    stats.tp += np.bincount(g_cat[gi], minlength=num_cats)
    stats.iou += np.bincount(g_cat[gi], weights=iou, minlength=num_cats)

    g_matched = np.zeros(n_g, dtype=np.bool_)
    g_matched[gi] = True
    stats.fn += np.bincount(g_cat[~g_matched & ~g_crowd], minlength=num_cats)

    crowd_of_cat = np.full(num_cats, -1, dtype=np.intp)
    for k in np.flatnonzero(g_crowd):  # in list order, so the last crowd segment of a category wins
        crowd_of_cat[g_cat[k]] = k
    p_matched = np.zeros(n_p, dtype=np.bool_)
    p_matched[pj] = True
    pu = np.flatnonzero(~p_matched)
    ignored = p_void[pu].copy()
    crowd_rows = crowd_of_cat[p_cat[pu]]
    has_crowd = crowd_rows >= 0
    ignored[has_crowd] += inter[crowd_rows[has_crowd], pu[has_crowd]]
    is_fp = ignored / p_area[pu] <= 0.5
    stats.fp += np.bincount(p_cat[pu[is_fp]], minlength=num_cats)
    return stats


def pq_summary(stats: PQStats, categories: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """panopticapi's result structure from accumulated stats, plus percent keys for people.

    Returns:
        ``{"All"|"Things"|"Stuff": {"pq", "sq", "rq" (fractions), "n"}, "per_class": {category_id: {"pq", "sq",
        "rq", "tp", "fp", "fn"}}, "PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"`` (percent).
    """
    tp, fp, fn, iou = (a.astype(np.float64) for a in (stats.tp, stats.fp, stats.fn, stats.iou))
    denom = tp + 0.5 * fp + 0.5 * fn
    counted = (stats.tp + stats.fp + stats.fn) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        pq_c = np.where(counted, iou / denom, 0.0)
        sq_c = np.where(stats.tp > 0, iou / tp, 0.0)
        rq_c = np.where(counted, tp / denom, 0.0)
    isthing = np.array([bool(c["isthing"]) for c in categories], dtype=np.bool_)

    result: dict[str, Any] = {}
    for name, subset in (("All", np.ones_like(isthing)), ("Things", isthing), ("Stuff", ~isthing)):
        keep = np.flatnonzero(subset & counted)
        n = len(keep)
        # sequential Python sums in category order, as panopticapi accumulates them
        result[name] = {
            "pq": sum(pq_c[keep].tolist()) / n if n else 0.0,
            "sq": sum(sq_c[keep].tolist()) / n if n else 0.0,
            "rq": sum(rq_c[keep].tolist()) / n if n else 0.0,
            "n": n,
        }
    result["per_class"] = {
        int(c["id"]): {
            "pq": float(pq_c[i]),
            "sq": float(sq_c[i]),
            "rq": float(rq_c[i]),
            "tp": int(stats.tp[i]),
            "fp": int(stats.fp[i]),
            "fn": int(stats.fn[i]),
        }
        for i, c in enumerate(categories)
    }
    for suffix, name in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        for key in ("pq", "sq", "rq"):
            result[key.upper() + suffix] = 100.0 * result[name][key]
    return result


class PanopticEvaluator:
    """Streamed panoptic quality over images given in memory (no PNG round trip).

    Args:
        categories: ``[{"id": int, "isthing": 0|1, "name"?: str}, ...]`` (COCO panoptic ``categories``).
    """

    def __init__(self, *, categories: Sequence[Mapping[str, Any]]) -> None:
        for c in categories:  # (read by the summary, after every image is scored: checked first)
            if not (isinstance(c, Mapping) and "id" in c):
                raise ValueError(f"a category is {c!r:.60}, not an object with an 'id'")
            if c.get("isthing") not in (0, 1):
                raise ValueError(f"category {c.get('id')!r} needs 'isthing' (1 for things, 0 for stuff)")
        self.categories = [dict(c) for c in categories]
        self.cat_index = {json_integer(c["id"]): i for i, c in enumerate(self.categories)}
        if len(self.cat_index) != len(self.categories):
            raise ValueError("categories: duplicated category ids")
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._stats = PQStats.zeros(len(self.categories))
        self._synced: PQStats | None = None

    def update(
        self,
        pred_pan: Any,
        pred_segments: Sequence[Mapping[str, Any]],
        gt_pan: Any,
        gt_segments: Sequence[Mapping[str, Any]],
    ) -> None:
        """Add one image. Maps are int ``[H, W]`` (numpy or torch); see ``pq_image_stats`` for the segment lists."""
        self.add_stats(pq_image_stats(pred_pan, pred_segments, gt_pan, gt_segments, cat_index=self.cat_index))

    def add_stats(self, stats: PQStats) -> None:
        """Add stats computed elsewhere (e.g. by worker processes of the folder evaluator)."""
        self._stats += stats
        self._synced = None

    def synchronize(self) -> None:
        """Sum the stats of all torch.distributed processes (no-op when not initialised)."""
        s = self._stats
        self._synced = PQStats(
            tp=all_reduce_sum(s.tp), fp=all_reduce_sum(s.fp), fn=all_reduce_sum(s.fn), iou=all_reduce_sum(s.iou)
        )

    def compute(self) -> dict[str, Any]:
        """Results over everything seen (after ``synchronize``: over all processes); see ``pq_summary``."""
        return pq_summary(self._stats if self._synced is None else self._synced, self.categories)
