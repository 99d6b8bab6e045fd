"""Small array helpers shared by the evaluators (no torch import: tensors are recognised by duck typing)."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_int_array(x: Any, *, name: str) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor or nested list of ints) as an integer numpy array without copying
    when possible. Raises ``ValueError`` for non-integer dtypes: label maps come from argmax or PNGs, so a float
    map means a caller forgot a conversion and silently truncating it would hide the bug."""
    if hasattr(x, "detach"):  # torch.Tensor; avoids importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    return arr
