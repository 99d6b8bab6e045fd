"""Evaluation: semantic (mIoU, fwIoU, mACC, pACC) and panoptic (PQ/SQ/RQ, PQ^St), in memory or over folders,
with the reference tools' exact conventions (detectron2's ``SemSegEvaluator``, panopticapi's ``pq_compute``).

May import: numpy, PIL, torch.distributed (one sum across processes, ``reduce``) and ``maskformer.errors``. Never
imports ``modeling``, ``data``, ``inference``, ``engine`` or ``cli``: evaluators see label maps and segment lists.
"""

from .offline import (
    evaluate_panoptic_folder,
    evaluate_semantic_folder,
    id2rgb,
    read_label_png,
    read_panoptic_png,
    rgb2id,
)
from .panoptic import VOID, PanopticEvaluator, PQStats, pq_image_stats, pq_summary
from .semantic import MIOU_FORMULAS, SemanticEvaluator, semantic_metrics
from .semantic_pq import SemanticPQEvaluator, semantic_to_panoptic
from .table import format_panoptic_table, format_semantic_table, format_table

__all__ = [
    "MIOU_FORMULAS",
    "VOID",
    "PQStats",
    "PanopticEvaluator",
    "SemanticEvaluator",
    "SemanticPQEvaluator",
    "evaluate_panoptic_folder",
    "evaluate_semantic_folder",
    "format_panoptic_table",
    "format_semantic_table",
    "format_table",
    "id2rgb",
    "pq_image_stats",
    "pq_summary",
    "read_label_png",
    "read_panoptic_png",
    "rgb2id",
    "semantic_metrics",
    "semantic_to_panoptic",
]
