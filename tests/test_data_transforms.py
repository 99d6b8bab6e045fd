"""Geometric transforms and mappers: sizes, interpolation rules, alignment of image and labels, statistics."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from maskformer.data.mappers import DETRPanopticTrainMapper, PanopticTrainMapper, SemanticTrainMapper, TestMapper
from maskformer.data.transforms import (
    absolute_range_crop,
    category_area_crop,
    pad_to,
    resize_ids,
    resize_image,
    resize_label,
    resize_shortest_edge_size,
)


@pytest.mark.parametrize(
    "h, w, short, max_size, expected",
    [
        (512, 683, 256, 2048, (256, 342)),  # 683 * 0.5 = 341.5 -> int(342.0)
        (480, 640, 800, 1333, (800, 1067)),  # 640 * 800/480 = 1066.67
        (360, 480, 512, 2048, (512, 683)),  # 480 * 512/360 = 682.67
        (100, 1000, 512, 2048, (205, 2048)),  # capped: 512x5120 -> scale 0.4 -> 204.8 x 2048
        (1000, 100, 512, 2048, (2048, 205)),
        (300, 300, 128, 0, (128, 128)),  # 0 = no cap
        (200, 600, 400, 0, (400, 1200)),
    ],
)
def test_resize_shortest_edge_size_hand_values(h: int, w: int, short: int, max_size: int, expected: tuple) -> None:
    assert resize_shortest_edge_size(h, w, short, max_size) == expected


def test_resize_image_is_pil_bilinear_with_antialias() -> None:
    img = np.random.default_rng(0).integers(0, 256, (40, 60, 3)).astype(np.uint8)
    out = resize_image(img, (13, 21))
    ref = np.asarray(Image.fromarray(img).resize((21, 13), Image.BILINEAR))
    np.testing.assert_array_equal(out, ref)
    # downscaling a checkerboard by 4 with antialiasing averages it to ~128 (plain bilinear would not)
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    small = resize_image(np.stack([checker] * 3, -1), (16, 16))
    assert abs(float(small[2:-2, 2:-2].mean()) - 127.5) < 3


def test_resize_label_is_legacy_nearest_floor() -> None:
    # legacy nearest: src = floor(dst * in / out); 4 -> 7 picks rows 0,0,1,1,2,2,3 ; 6 -> 4 picks 0,1,3,4
    lab = (np.arange(4)[:, None] * 10 + np.arange(6)[None, :]).astype(np.int64)
    out = resize_label(lab, (7, 4))
    rows = [math.floor(i * 4 / 7) for i in range(7)]
    cols = [math.floor(j * 6 / 4) for j in range(4)]
    assert rows == [0, 0, 1, 1, 2, 2, 3] and cols == [0, 1, 3, 4]
    np.testing.assert_array_equal(out, lab[np.ix_(rows, cols)])
    assert out.dtype == np.int64
    # large values (16-bit ignore) survive the float64 round trip
    big = np.full((3, 3), 65535, dtype=np.uint16)
    assert resize_label(big, (5, 5)).max() == 65535


def test_resize_ids_matches_pil_nearest_on_rgb_png() -> None:
    ids = np.random.default_rng(1).integers(0, 2**24, (9, 13)).astype(np.int64)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    ref_rgb = np.asarray(Image.fromarray(rgb).resize((29, 17), Image.NEAREST)).astype(np.int64)
    ref = ref_rgb[..., 0] + 256 * ref_rgb[..., 1] + 65536 * ref_rgb[..., 2]
    np.testing.assert_array_equal(resize_ids(ids, (17, 29)), ref)


def test_category_area_crop_rejects_single_category_crops() -> None:
    sem = np.zeros((100, 100), dtype=np.int64)
    sem[:, 80:] = 1  # class 1 only in the right strip (20 columns)
    sem[:10, :] = 255  # ignore at the top (excluded from the counts)

    def good(y0: int, x0: int, ch: int, cw: int) -> bool:
        crop = sem[y0 : y0 + ch, x0 : x0 + cw]
        vals, cnt = np.unique(crop[crop != 255], return_counts=True)
        return len(vals) > 1 and cnt.max() < 0.75 * cnt.sum()

    rng = np.random.default_rng(0)
    constrained = [category_area_crop(sem, (100, 100), (40, 40), 0.75, 255, rng) for _ in range(60)]
    plain = [category_area_crop(sem, (100, 100), (40, 40), 1.0, 255, rng) for _ in range(60)]
    assert all(c[2:] == (40, 40) for c in constrained + plain)
    # a good crop needs x0 >= 51: 10 of 61 positions. Plain: p = 0.16 per crop; constrained (10 tries): p = 0.83
    n_constrained, n_plain = sum(good(*c) for c in constrained), sum(good(*c) for c in plain)
    assert n_constrained >= 35 and n_plain <= 22
    # the crop is clipped to the image size
    y0, x0, ch, cw = category_area_crop(sem, (30, 100), (40, 40), 1.0, 255, rng)
    assert (ch, cw) == (30, 40) and y0 == 0 and 0 <= x0 <= 60


def test_absolute_range_crop_bounds() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        y0, x0, ch, cw = absolute_range_crop((500, 450), (384, 600), rng)
        assert 384 <= ch <= 500 and 384 <= cw <= 450
        assert 0 <= y0 <= 500 - ch and 0 <= x0 <= 450 - cw


def test_pad_to() -> None:
    a = np.ones((2, 3), dtype=np.int64)
    p = pad_to(a, (4, 5), 255)
    assert p.shape == (4, 5) and p[:2, :3].sum() == 6 and (p[2:] == 255).all() and (p[:, 3:] == 255).all()
    assert pad_to(a, (1, 1), 0) is a


def _coded_sample(h: int = 60, w: int = 90) -> dict:
    """Image whose red channel encodes the label (label * 20) in large asymmetric blocks."""
    sem = np.zeros((h, w), dtype=np.uint8)
    sem[: h // 3, : w // 4] = 1
    sem[h // 3 :, w // 2 :] = 2
    sem[h // 2 :, : w // 6] = 3
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0] = sem * 60
    image[..., 1] = np.arange(w)[None, :] * 255 // w  # horizontal ramp: shows flips
    return {"image": image, "sem_seg": sem, "file_name": "coded", "height": h, "width": w}


def test_semantic_mapper_keeps_image_and_labels_aligned() -> None:
    mapper = SemanticTrainMapper(
        min_sizes=[48, 64, 80], max_size=400, crop_size=(64, 64), ignore_label=255, color_aug_ssd=False
    )
    flips = 0
    for seed in range(30):
        raw = _coded_sample()
        rec = mapper(raw, np.random.default_rng(seed))
        img, sem = rec["image"].numpy(), rec["sem_seg"].numpy()
        assert img.shape == (3, 64, 64) and sem.shape == (64, 64)
        valid = sem != 255
        # padding: image 128, labels ignore, exactly outside the resized crop
        y0, x0, ch, cw = rec["aug"]["crop"]
        assert (img[:, ch:, :] == 128).all() and (img[:, :, cw:] == 128).all()
        assert valid[:ch, :cw].all() and not valid[ch:, :].any() and not valid[:, cw:].any()
        # interior pixels (away from bilinear/nearest boundary differences): red channel == 60 * label
        inner = valid.copy()
        for dy in (-2, 0, 2):
            for dx in (-2, 0, 2):
                inner &= np.roll(np.roll(sem, dy, 0), dx, 1) == sem
        assert inner.sum() > 0.3 * valid.sum()
        np.testing.assert_array_equal(img[0][inner], sem[inner].astype(np.uint8) * 60)
        # the green ramp increases left->right unless flipped
        row = img[1, 0, : cw - 1].astype(int)
        slope = np.sign(np.diff(row)).sum()
        flips += rec["aug"]["flip"]
        assert (slope < 0) == rec["aug"]["flip"]
        # one target per class present, ascending, masks equal to the label map
        classes = sorted(set(np.unique(sem).tolist()) - {255})
        assert rec["labels"].tolist() == classes
        for c, m in zip(classes, rec["masks"]):
            assert torch.equal(m, torch.from_numpy(sem == c))
    assert 0 < flips < 30


def test_semantic_mapper_statistics_follow_the_config() -> None:
    min_sizes = [32, 40, 48, 56]
    mapper = SemanticTrainMapper(min_sizes=min_sizes, max_size=1000, crop_size=(32, 32), color_aug_ssd=True)
    raw = _coded_sample(40, 50)
    n = 600
    shorts, flips = [], 0
    for seed in range(n):
        aug = mapper(raw, np.random.default_rng(seed))["aug"]
        shorts.append(aug["short"])
        flips += aug["flip"]
        assert min(aug["resize"]) == aug["short"]
    assert set(shorts) == set(min_sizes)
    counts = np.array([shorts.count(s) for s in min_sizes])
    # each size ~ n/4; 4.5 binomial standard deviations
    assert np.all(np.abs(counts - n / 4) < 4.5 * math.sqrt(n * 0.25 * 0.75))
    assert abs(flips - n / 2) < 4.5 * math.sqrt(n * 0.25)


def test_mapper_is_reproducible_for_a_seed() -> None:
    mapper = SemanticTrainMapper(min_sizes=[40, 60], max_size=400, crop_size=(32, 32))
    a = mapper(_coded_sample(), np.random.default_rng(3))
    b = mapper(_coded_sample(), np.random.default_rng(3))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["sem_seg"], b["sem_seg"]) and a["aug"] == b["aug"]


def test_panoptic_mapper_moves_ids_with_the_image_and_pads_void() -> None:
    raw = _coded_sample()
    pan = np.zeros(raw["sem_seg"].shape, dtype=np.int64)
    pan[raw["sem_seg"] == 1] = 1001
    pan[raw["sem_seg"] == 2] = 2002
    raw.update(
        pan_seg=pan,
        segments_info=[
            {"id": 1001, "category_id": 5, "iscrowd": 0},
            {"id": 2002, "category_id": 7, "iscrowd": 1},
        ],
    )
    mapper = PanopticTrainMapper(min_sizes=[100], max_size=400, crop_size=(120, 160), color_aug_ssd=False)
    rec = mapper(raw, np.random.default_rng(0))
    p, s = rec["pan_seg"].numpy(), rec["sem_seg"].numpy()
    h, w = rec["aug"]["resize"]
    assert (p[h:, :] == 0).all() and (p[:, w:] == 0).all()  # padding is VOID
    # where the semantic map is unambiguous (block interiors) the id map agrees with it
    assert ((p == 1001) <= (np.abs(s - 1) <= 2)).all()
    assert ((s[:h, :w] == 1) & (p[:h, :w] != 1001)).mean() < 0.03
    assert rec["labels"].tolist() == [5]  # crowd segment is not a target
    assert torch.equal(rec["masks"][0], torch.from_numpy(p == 1001))
    assert len(rec["segments_info"]) == 2


def test_detr_mapper_sizes() -> None:
    raw = _coded_sample(300, 400)
    raw["pan_seg"] = raw["sem_seg"].astype(np.int64)
    raw["segments_info"] = [{"id": 1, "category_id": 0, "iscrowd": 0}]
    raw["sem_seg"] = None
    mapper = DETRPanopticTrainMapper(min_sizes=[480, 512], max_size=1333)
    crops = 0
    for seed in range(40):
        rec = mapper(raw, np.random.default_rng(seed))
        h, w = rec["image"].shape[1:]
        assert min(h, w) in (480, 512) and max(h, w) <= 1333
        assert rec["pan_seg"].shape == (h, w) and rec["masks"].shape == (1, h, w)
        if rec["aug"]["crop"] is not None:
            crops += 1
            _, _, ch, cw = rec["aug"]["crop"]
            assert 384 <= min(ch, cw) and max(ch, cw) <= 600
    assert 5 < crops < 35


def test_test_mapper_resizes_image_only() -> None:
    raw = _coded_sample(60, 90)
    rec = TestMapper(min_size=120, max_size=1000)(raw)
    assert tuple(rec["image"].shape) == (3, 120, 180)
    assert tuple(rec["sem_seg"].shape) == (60, 90) and rec["height"] == 60 and rec["width"] == 90
    assert rec["masks"].shape[-2:] == (60, 90)
    np.testing.assert_array_equal(
        rec["image"].permute(1, 2, 0).numpy(),
        np.asarray(Image.fromarray(raw["image"]).resize((180, 120), Image.BILINEAR)),
    )
