"""PQ^St: panoptic quality of a semantic segmentation, as the original tools/evaluate_pq_for_semantic_segmentation.py.

Every class present in a map is one stuff segment, ignored ground-truth pixels are VOID, and all categories are
stuff, so panopticapi's rules reduce to: a class matches itself when its IoU (with prediction pixels on VOID removed
from the union) exceeds 0.5; unmatched ground-truth classes are FN; unmatched predicted classes are FP unless more
than half of their pixels lie on VOID. "All" and "Stuff" are identical. The original tool also prints an mIoU with
the 2021 detectron2 formula; ``compute`` includes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._util import as_int_array
from .panoptic import PanopticEvaluator
from .semantic import SemanticEvaluator


def semantic_to_panoptic(
    label_map: Any, *, num_classes: int, ignore_label: int | None = None
) -> tuple[np.ndarray, list[dict[str, int]]]:
    """Panoptic form of a semantic label map: class ``c`` becomes segment id ``c + 1`` of category ``c``.

    Args:
        label_map: int ``[H, W]``, values in ``[0, K)`` or ``ignore_label``.
        num_classes: K.
        ignore_label: value turned into VOID (id 0); ``None`` for predictions, which have no ignore value.

    Returns:
        ``(pan int64 [H, W], segments [{"id", "category_id", "iscrowd": 0}, ...])`` with one segment per class present.
    """
    labels = as_int_array(label_map, name="label_map").astype(np.int64, copy=False)
    valid = np.ones(labels.shape, dtype=np.bool_) if ignore_label is None else labels != ignore_label
    pan = np.where(valid, labels + 1, 0)
    if pan.size and (int(pan.min()) < 0 or int(pan.max()) > num_classes):
        bad = labels[valid & ((labels < 0) | (labels >= num_classes))][0]
        raise ValueError(f"label {int(bad)} outside [0, {num_classes}) and not the ignore label {ignore_label}")
    present = np.flatnonzero(np.bincount(pan.ravel(), minlength=num_classes + 1)[1:])
    segments = [{"id": int(c) + 1, "category_id": int(c), "iscrowd": 0} for c in present]
    return pan, segments


class SemanticPQEvaluator:
    """Streamed PQ^St (and the 2021-formula mIoU) for semantic predictions.

    Categories are the class indices ``0..K-1``, all stuff; ``compute()`` returns ``All``, ``Stuff``, ``per_class``
    (keyed by class index), ``PQ``, ``SQ``, ``RQ`` (percent) and ``mIoU`` (percent, detectron2 2021 formula).
    """

    def __init__(self, *, num_classes: int, ignore_label: int) -> None:
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self._pq = PanopticEvaluator(categories=[{"id": c, "isthing": 0} for c in range(self.num_classes)])
        self._sem = SemanticEvaluator(num_classes=num_classes, ignore_label=ignore_label, miou_formula="d2_2021")

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._pq.reset()
        self._sem.reset()

    def update(self, pred: Any, gt: Any) -> None:
        """Add one image ``[H, W]`` or a batch ``[B, H, W]``: pred in ``[0, K)``, gt in ``[0, K)`` or ignore."""
        p = as_int_array(pred, name="pred")
        g = as_int_array(gt, name="gt")
        if p.shape != g.shape:
            raise ValueError(f"pred shape {p.shape} != gt shape {g.shape}")
        self._sem.update(p, g)  # validates both label ranges
        for p_map, g_map in zip(p.reshape(-1, *p.shape[-2:]), g.reshape(-1, *g.shape[-2:])):
            pred_pan, pred_segments = semantic_to_panoptic(p_map, num_classes=self.num_classes)
            gt_pan, gt_segments = semantic_to_panoptic(
                g_map, num_classes=self.num_classes, ignore_label=self.ignore_label
            )
            self._pq.update(pred_pan, pred_segments, gt_pan, gt_segments)

    def synchronize(self) -> None:
        """Sum over torch.distributed processes (no-op when not initialised)."""
        self._pq.synchronize()
        self._sem.synchronize()

    def compute(self) -> dict[str, Any]:
        """See the class docstring."""
        full = self._pq.compute()
        result = {key: full[key] for key in ("All", "Stuff", "per_class", "PQ", "SQ", "RQ")}
        result["mIoU"] = self._sem.compute()["mIoU"]
        return result
