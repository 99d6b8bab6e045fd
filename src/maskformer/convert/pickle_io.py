"""Reading detectron2 ``.pkl`` checkpoints safely: a restricted unpickler that admits only numpy arrays and plain
containers, so a malicious file cannot run code."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError
from ..fileio import atomic_path, looks_like_text, not_a_file

# (module, name) pairs a numpy-array pickle legitimately needs; nothing else is resolved.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}' (only numpy arrays and containers allowed)")


def load_pkl(path: str | Path) -> dict:
    """Load a detectron2-style pickle ``{"model": {name: ndarray}, ...}`` without executing arbitrary code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {not_a_file(path)}")
    raw = path.read_bytes()
    if not raw:
        raise CheckpointError(f"{path}: an empty file, not a pickle")
    if looks_like_text(raw[:512]):
        raise CheckpointError(f"{path}: a text file, not a pickle of weights")
    try:
        data = _SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if "truncated" in str(e):  # (an incomplete download or copy, not an unsafe file)
            raise CheckpointError(f"{path}: the file is cut short ({e}): copy or download it again") from None
        raise CheckpointError(f"{path}: unsafe or invalid pickle: {e}") from None
    except Exception as e:  # truncated or not a pickle at all
        raise CheckpointError(f"{path}: cannot read as a pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(data).__name__}")
    return data


def save_pkl(obj: dict, path: str | Path) -> None:
    """Write ``{"model": {name: ndarray}}`` in detectron2's format (used by tests and `convert to-detectron2`)."""
    with atomic_path(path, suffix=".pkl") as tmp, open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=4)  # (protocol 2 wrote array bytes as latin-1 text: 1.5x the size)


def as_numpy_state(model_dict: dict, source: str) -> dict[str, np.ndarray]:
    out = {}
    for k, v in model_dict.items():
        if hasattr(v, "detach"):  # torch tensors in some third-party .pkl files
            v = v.detach().cpu().numpy()
        if not isinstance(v, np.ndarray):
            v = np.asarray(v)
        out[str(k)] = v
    if not out:
        raise CheckpointError(f"{source}: no weights found")
    return out
