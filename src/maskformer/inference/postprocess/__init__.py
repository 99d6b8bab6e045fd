"""Post-processing of model outputs into semantic and panoptic results (OFFICIAL_SPEC §4). Pure functions.

Semantic (original order): the 1/4-resolution mask logits are bilinearly upsampled to the padded input size, the
padding is cropped, then per pixel  scores[c] = sum_q softmax(class_logits_q)[c] * sigmoid(mask_q)  for c < K (softmax
over K+1, the no-object column dropped afterwards, no renormalisation), and the K-channel score map is bilinearly
resized to the output size. Panoptic resizes the mask *logits* to the output size first, then assigns pixels.
All resizes are bilinear with align_corners=False.

``semantic.py`` holds the semantic part, ``panoptic.py`` the panoptic part; both are re-exported here.
``row_resize.py`` gives rows of a bilinear resize with the kernel's own values, for label maps of large pictures
computed in strips of output rows.
May import: nothing of this package (pure functions on tensors).
"""

from __future__ import annotations

from .panoptic import (
    SegmentInfo,
    overlap_passes,
    panoptic_from_outputs,
    panoptic_inference,
    panoptic_keep,
    panoptic_segments,
)
from .semantic import (
    Size,
    sem_seg_postprocess,
    semantic_from_outputs,
    semantic_from_sem_logits,
    semantic_inference,
    semantic_labels,
)

__all__ = [
    "SegmentInfo",
    "Size",
    "overlap_passes",
    "panoptic_from_outputs",
    "panoptic_inference",
    "panoptic_keep",
    "panoptic_segments",
    "sem_seg_postprocess",
    "semantic_from_outputs",
    "semantic_from_sem_logits",
    "semantic_inference",
    "semantic_labels",
]
