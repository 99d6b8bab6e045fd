"""Multi-scale + flip test-time augmentation of semantic scores (OFFICIAL_SPEC §4.6), as the original evaluates it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from torch import Tensor

from maskformer.inference.postprocess import Size
from maskformer.inference.preprocess import resize_image, resize_shortest_edge_size

__all__ = ["semantic_tta"]


def semantic_tta(
    run_fn: Callable[[np.ndarray, Size], Tensor],
    image: np.ndarray,
    *,
    min_sizes: Sequence[int],
    max_size: int,
    flip: bool = True,
    output_size: Size | None = None,
) -> Tensor:
    """Multi-scale (+ horizontal flip) test-time augmentation for semantic segmentation (OFFICIAL_SPEC §4.6).

    For each min size the image is resized (shortest edge, PIL bilinear) and, if `flip`, also mirrored; each view is
    run through `run_fn(view, output_size) -> [K, H, W]` (un-normalised scores already at `output_size`), mirrored
    scores are flipped back, and the arithmetic mean of all views is returned.

    Args:
        image: uint8 HWC RGB; the original evaluates on the already test-resized image (short side MIN_SIZE_TEST).
        output_size: (H, W) of the scores; default the image's own size (the original uses the dataset image size).

    Returns:
        [K, H, W] mean scores.
    """
    height, width = image.shape[:2]
    out = tuple(output_size) if output_size is not None else (height, width)
    total: Tensor | None = None
    count = 0
    for min_size in min_sizes:
        view = resize_image(image, resize_shortest_edge_size(height, width, min_size, max_size))
        for mirrored in (False, True) if flip else (False,):
            scores = run_fn(np.ascontiguousarray(view[:, ::-1]) if mirrored else view, out)  # type: ignore[arg-type]
            scores = scores.flip(-1) if mirrored else scores
            total = scores.clone() if total is None else total.add_(scores)
            count += 1
    if total is None:
        raise ValueError("semantic_tta needs at least one min size")
    return total / count
