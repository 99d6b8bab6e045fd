"""SSD photometric augmentation (``ColorAugSSDTransform`` of the original) and OpenCV-exact uint8 HSV conversion.

OpenCV is not a dependency, so the 8-bit BGR<->HSV conversions are re-implemented with OpenCV's own arithmetic
(fixed-point division tables forward, float32 sector formula backward; H in 0..179, S and V in 0..255; checked
bit-exact against opencv-python 4.10 and 5.0 over all 2^24 colours and all HSV triples) — the
saturation and hue steps of the augmentation round-trip through them, so matching them matters for parity.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["bgr_to_hsv", "hsv_to_bgr", "ColorAugSSD"]

_SHIFT = 12
# HSV -> BGR: for each hue sector, which of (v, p, q, t) goes to B, G, R (OpenCV's sector_data).
_SECTOR = np.array([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])
_H_OFFSET = 255  # raw hue numerators range over -255..1275


@lru_cache(maxsize=1)
def _forward_tables() -> tuple[np.ndarray, np.ndarray]:
    """``S[v, diff]`` and ``H[h_raw + 255, diff]`` of OpenCV's fixed-point RGB2HSV_b (computed once, lazily).

    OpenCV: ``sdiv_table[i] = saturate_cast<int>((255 << 12) / i)``, ``hdiv_table180[i] = (180 << 12) / (6 i)``
    (``[0] = 0``); ``s = (diff * sdiv[v] + 2^11) >> 12``, ``h = (h_raw * hdiv[diff] + 2^11) >> 12``, +180 if < 0.
    """
    i = np.arange(256, dtype=np.float64)
    with np.errstate(divide="ignore"):
        sdiv = np.where(i > 0, np.rint((255 << _SHIFT) / np.maximum(i, 1)), 0).astype(np.int64)
        hdiv = np.where(i > 0, np.rint((180 << _SHIFT) / (6.0 * np.maximum(i, 1))), 0).astype(np.int64)
    diff = np.arange(256, dtype=np.int64)
    s_table = ((diff[None, :] * sdiv[:, None] + (1 << (_SHIFT - 1))) >> _SHIFT).clip(0, 255).astype(np.uint8)
    h_raw = np.arange(-_H_OFFSET, 1276, dtype=np.int64)
    h = (h_raw[:, None] * hdiv[None, :] + (1 << (_SHIFT - 1))) >> _SHIFT  # arithmetic shift floors, as in C
    h_table = ((h + np.where(h < 0, 180, 0)) % 256).astype(np.uint8)
    return s_table.ravel(), h_table.ravel()


def bgr_to_hsv(img: np.ndarray) -> np.ndarray:
    """``cv2.cvtColor(img, cv2.COLOR_BGR2HSV)`` for uint8 ``[..., 3]`` BGR: H 0..179, S, V 0..255 (uint8)."""
    s_table, h_table = _forward_tables()
    b, g, r = (img[..., k].astype(np.int32) for k in range(3))
    v = np.maximum(np.maximum(b, g), r)
    diff = v - np.minimum(np.minimum(b, g), r)
    h_raw = np.where(v == g, b - r + 2 * diff, r - g + 4 * diff)
    h_raw = np.where(v == r, g - b, h_raw)  # red wins ties, then green, as in OpenCV
    out = np.empty(img.shape, dtype=np.uint8)
    out[..., 0] = np.take(h_table, (h_raw + _H_OFFSET) * 256 + diff)
    out[..., 1] = np.take(s_table, v * 256 + diff)
    out[..., 2] = v
    return out


@lru_cache(maxsize=1)
def _inverse_tables() -> tuple[np.ndarray, np.ndarray]:
    """``v[V]`` = V / 255 in float32, and ``w[c, H * 256 + S]``: the float32 factor channel c gets multiplied by.

    OpenCV's HSV2RGB: ``h = H * (6 / 180)``, ``sector = floor(h) mod 6``, ``f = h - floor(h)``,
    ``tab = (v, v (1 - s), v * fma(-s, f, 1), v * fma(-s, 1 - f, 1))`` (the compiled code contracts these into
    fused multiply-adds), channel c takes ``tab[sector_data[sector][c]]``. The factor depends on (H, S) only.
    """
    hh = np.arange(256, dtype=np.float32)[:, None] * np.float32(6.0 / 180.0)
    ss = np.arange(256, dtype=np.float32)[None, :] * np.float32(1.0 / 255.0)
    floor = np.floor(hh)
    frac = hh - floor
    one = np.float32(1.0)

    def fma(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # float32 a * b + 1 with a single rounding
        return (a.astype(np.float64) * b.astype(np.float64) + 1.0).astype(np.float32)

    factors = np.stack(
        np.broadcast_arrays(
            np.ones_like(ss), one - ss, fma(-ss, np.broadcast_to(frac, (256, 256))), fma(-ss, one - frac)
        )
    )  # [4, H, S]
    sector = floor[:, 0].astype(np.int64) % 6
    w = np.empty((3, 256, 256), dtype=np.float32)
    for c in range(3):
        w[c] = factors[_SECTOR[sector, c], np.arange(256)]
    return np.arange(256, dtype=np.float32) * np.float32(1.0 / 255.0), w.reshape(3, -1)


def hsv_to_bgr(hsv: np.ndarray, *, simd_block: int = 32) -> np.ndarray:
    """``cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)`` for uint8 ``[H, W, 3]`` HSV (H in 0..179), bit-exact.

    OpenCV converts each row in SIMD blocks of ``simd_block`` pixels (32 with the AVX2 dispatch of x86-64
    builds, 16 with SSE/NEON) that truncate ``x * 255`` to uint8, and the row's remaining pixels with scalar code
    that rounds; both paths are reproduced.
    """
    v_table, w = _inverse_tables()
    v = v_table[hsv[..., 2]]
    idx = hsv[..., 0].astype(np.int32) * 256 + hsv[..., 1]
    width = hsv.shape[-2]
    tail = width - width % simd_block if simd_block > 0 else 0
    out = np.empty(hsv.shape, dtype=np.uint8)
    for c in range(3):
        x = (v * np.take(w[c], idx)) * np.float32(255.0)
        x[..., :tail] = np.trunc(x[..., :tail])
        x[..., tail:] = np.rint(x[..., tail:])
        out[..., c] = np.clip(x, 0, 255)
    return out


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """The original's ``clip(img.astype(float32) * alpha + beta, 0, 255).astype(uint8)`` (truncation), as a
    256-entry lookup table: same float32 arithmetic per value, one gather per pixel."""
    table = np.arange(256, dtype=np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(table, 0, 255).astype(np.uint8)[img]


class ColorAugSSD:
    """SSD colour distortion: brightness, then contrast/saturation/hue in one of two orders (OFFICIAL_SPEC §5.1).

    Each step fires with probability 0.5: brightness ``+U(-32, 32)``, contrast ``x U(0.5, 1.5)``, saturation
    ``S x U(0.5, 1.5)``, hue ``H + randint(-18, 18) mod 180``. Works on BGR like the original (input RGB).
    """

    def __init__(
        self,
        *,
        brightness_delta: int = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``image``: uint8 RGB ``[H, W, 3]`` -> augmented uint8 RGB ``[H, W, 3]``."""
        img = image[:, :, ::-1]
        if rng.integers(2):
            img = _convert(img, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        if rng.integers(2):
            img = self._hue(self._saturation(self._contrast(img, rng), rng), rng)
        else:
            img = self._contrast(self._hue(self._saturation(img, rng), rng), rng)
        return np.ascontiguousarray(img[:, :, ::-1])

    def _contrast(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            return _convert(img, alpha=rng.uniform(*self.contrast_range))
        return img

    def _saturation(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            hsv = bgr_to_hsv(img)
            hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(*self.saturation_range))
            return hsv_to_bgr(hsv)
        return img

    def _hue(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            hsv = bgr_to_hsv(img)
            shift = int(rng.integers(-self.hue_delta, self.hue_delta + 1))
            hsv[..., 0] = (hsv[..., 0].astype(np.int64) + shift) % 180
            return hsv_to_bgr(hsv)
        return img
