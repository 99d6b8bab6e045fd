"""SSD colour augmentation and the OpenCV-exact HSV conversions.

The reference arrays (tests/data/opencv_hsv.json) were produced by opencv-python 4.10 (``cv2.cvtColor``, x86-64
AVX2 build) on a 2x40 image: columns 0..31 of each row go through OpenCV's SIMD path, columns 32..39 through its
scalar tail.
"""

import json
from pathlib import Path

import numpy as np

from maskformer.data.color import ColorAugSSD, bgr_to_hsv, hsv_to_bgr

_REFERENCE = json.loads((Path(__file__).parent / "data" / "opencv_hsv.json").read_text())


def _arr(name: str) -> np.ndarray:
    return np.array(_REFERENCE[name], dtype=np.uint8).reshape(2, 40, 3)


BGR_IN, HSV_OUT, HSV_IN, BGR_OUT = (_arr(n) for n in ("BGR_IN", "HSV_OUT", "HSV_IN", "BGR_OUT"))


def test_bgr_to_hsv_matches_opencv() -> None:
    np.testing.assert_array_equal(bgr_to_hsv(BGR_IN), HSV_OUT)


def test_hsv_to_bgr_matches_opencv_simd_blocks_and_scalar_tail() -> None:
    np.testing.assert_array_equal(hsv_to_bgr(HSV_IN), BGR_OUT)


def test_hsv_known_values() -> None:
    # Hand values: pure red is H 0, pure green H 60, pure blue H 120 in OpenCV's 0..179 hue; grey has S 0.
    bgr = np.array([[[0, 0, 255], [0, 255, 0], [255, 0, 0], [90, 90, 90]]], dtype=np.uint8)
    hsv = bgr_to_hsv(bgr)
    np.testing.assert_array_equal(hsv[0, :, 0], [0, 60, 120, 0])
    np.testing.assert_array_equal(hsv[0, :, 1], [255, 255, 255, 0])
    np.testing.assert_array_equal(hsv[0, :, 2], [255, 255, 255, 90])
    np.testing.assert_array_equal(hsv_to_bgr(hsv), bgr)


class ScriptedRng:
    """Stands in for numpy's Generator: returns scripted values in call order."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def integers(self, *args: object, **kwargs: object) -> int:
        return int(self.values.pop(0))

    def uniform(self, *args: object, **kwargs: object) -> float:
        return float(self.values.pop(0))


def test_color_aug_brightness_then_contrast_first_order() -> None:
    img = np.array([[[10, 100, 250], [0, 128, 255]]], dtype=np.uint8)
    # brightness fires (+20.7), then order "contrast -> saturation -> hue", contrast fires (x1.3), others skip
    rng = ScriptedRng([1, 20.7, 1, 1, 1.3, 0, 0])
    out = ColorAugSSD()(img, rng)
    # float32 add/multiply, clip to 0..255, truncate toward zero after each step (hand-computed)
    step1 = np.clip(img.astype(np.float32) + np.float32(20.7), 0, 255).astype(np.uint8)
    expected = np.clip(step1.astype(np.float32) * np.float32(1.3), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0].tolist() == [39, 156, 255]  # (10+20.7)*1.3 = 39.0, (100+20.7)=120 -> 156, 255 clipped
    assert not rng.values  # exactly the scripted draws were used


def test_color_aug_hue_shift_is_mod_180_in_bgr_space() -> None:
    img = np.array([[[255, 0, 0]]], dtype=np.uint8)  # RGB red -> BGR (0, 0, 255) -> H = 0
    # no brightness; order "saturation -> hue -> contrast": saturation skips, hue fires with -18, contrast skips
    out = ColorAugSSD()(img, ScriptedRng([0, 0, 0, 1, -18, 0]))
    # H = (0 - 18) mod 180 = 162 (= 324 degrees, a magenta-ish red): R max, B second, G 0
    hsv = bgr_to_hsv(out[:, :, ::-1].copy())
    assert hsv[0, 0, 0] == 162
    assert out[0, 0, 0] == 255 and out[0, 0, 1] == 0 and 0 < out[0, 0, 2] < 255


def test_color_aug_is_deterministic_for_a_seed_and_varies_across_seeds() -> None:
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    aug = ColorAugSSD()
    a = aug(img, np.random.default_rng(5))
    b = aug(img, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    outs = {aug(img, np.random.default_rng(s)).tobytes() for s in range(20)}
    assert len(outs) > 10
