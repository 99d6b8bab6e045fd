"""The deterministic weight recipe of ../shared/reference/parity/README.md §2, written from its description."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference"


def read_key_list(variant: str) -> list[tuple[str, tuple[int, ...]]]:
    """``official_keys/keys_<variant>.txt`` -> [(key, shape)] (first line is a comment with parameter counts)."""
    out = []
    for line in (REFERENCE / "official_keys" / f"keys_{variant}.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        out.append((key, tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())))
    return out


def recipe_value(key: str, shape: tuple[int, ...]) -> np.ndarray:
    z = np.random.default_rng(zlib.crc32(key.encode("utf-8"))).standard_normal(shape)
    last = key.rsplit(".", 1)[-1]
    if last == "running_var":
        v = np.exp(0.2 * z)
    elif last == "running_mean":
        v = 0.1 * z
    elif last == "weight" and len(shape) == 1:
        v = 1 + 0.1 * z
    elif last in ("bias", "in_proj_bias"):
        v = 0.1 * z
    elif last == "relative_position_bias_table":
        v = 0.02 * z
    elif key.endswith("query_embed.weight"):
        v = z
    elif len(shape) >= 2:
        v = z / np.sqrt(np.prod(shape[1:]))
    else:
        raise AssertionError(f"no recipe rule for {key} {shape}")
    return v.astype(np.float32)


def recipe_state(variant: str, *, old_layout: bool = True) -> dict[str, np.ndarray]:
    """Recipe weights for every official key, as a model-zoo file would hold them (old layout, no criterion key).
    ``relative_position_index`` keeps the value the module creates (it is a fixed function of the window)."""
    from maskformer.modeling.backbone.swin import relative_position_index

    state = {}
    for key, shape in read_key_list(variant):
        if key == "criterion.empty_weight":
            continue
        if key.endswith("relative_position_index"):
            value = relative_position_index(int(round(shape[0] ** 0.5))).numpy()
        else:
            value = recipe_value(key, shape)
        if old_layout and key.startswith("sem_seg_head.pixel_decoder."):
            key = "sem_seg_head." + key[len("sem_seg_head.pixel_decoder.") :]
        state[key] = value
    return state


def recipe_input() -> np.ndarray:
    return np.random.default_rng(12345).standard_normal((1, 3, 160, 224)).astype(np.float32)
