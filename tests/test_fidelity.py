"""The last differences to the original implementation (OFFICIAL_SPEC), each checked where it could go wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import maskformer
from maskformer.build import build_criterion, build_mapper
from maskformer.errors import ConfigError
from maskformer.inference.postprocess import overlap_passes, semantic_from_outputs
from maskformer.inference.predictor import Predictor
from maskformer.modeling.transformer import Transformer
from test_predictor import _Stub


def _stub_with(panoptic_on: bool, before: bool) -> _Stub:
    model = _Stub(queries=6, classes=4)
    model.cfg = maskformer.load_config(None, [
        "model.num_classes=4", "test.min_size=40", "test.max_size=1000",
        f"inference.panoptic_on={str(panoptic_on).lower()}",
        f"inference.sem_seg_postprocess_before_inference={str(before).lower()}",
    ])  # fmt: skip
    return model


@pytest.mark.parametrize("panoptic_on, before, want_before", [(False, False, False), (True, False, True),
                                                               (False, True, True)])  # fmt: skip
def test_semantic_post_processing_order_follows_the_original(panoptic_on, before, want_before) -> None:
    image = np.random.default_rng(4).integers(0, 256, (53, 71, 3), dtype=np.uint8)  # resized 40 x 54 for the model
    model = _stub_with(panoptic_on, before)
    pred = Predictor(model, optimize=False, task_default="semantic")
    assert pred.postprocess_before_inference is want_before
    labels = pred(image, task="semantic")
    resized = pred._resize(image)
    outputs, sizes, padded = pred._forward([resized])
    direct = {
        order: semantic_from_outputs(outputs, sizes, [(53, 71)], input_size=padded,
                                     postprocess_before_inference=order)[0].argmax(0)
        for order in (False, True)
    }  # fmt: skip
    assert not torch.equal(direct[False], direct[True])  # the two orders differ on this input
    assert torch.equal(labels, direct[want_before])
    assert torch.equal(Predictor(model, task_default="semantic")(image, task="semantic"), labels)  # default path too


def test_pre_norm_keeps_the_encoder_norm_with_zero_encoder_layers() -> None:
    torch.manual_seed(0)
    t = Transformer(d_model=16, nhead=2, enc_layers=0, dec_layers=1, dim_feedforward=32, dropout=0.0, pre_norm=True)
    assert {"encoder.norm.weight", "encoder.norm.bias"} <= set(t.state_dict())
    with torch.no_grad():
        t.encoder.norm.weight.uniform_(0.5, 2.0)
        t.encoder.norm.bias.uniform_(-1, 1)
    src, pos = torch.randn(1, 16, 3, 4), torch.randn(1, 16, 3, 4)
    memory = t.encode(src, pos)
    expected = torch.nn.functional.layer_norm(src.permute(0, 2, 3, 1), (16,), t.encoder.norm.weight,
                                              t.encoder.norm.bias).permute(0, 3, 1, 2)  # fmt: skip
    torch.testing.assert_close(memory, expected)
    post = Transformer(d_model=16, nhead=2, enc_layers=0, dec_layers=1, dim_feedforward=32, dropout=0.0)
    assert not any(k.startswith("encoder.norm") for k in post.state_dict())


def test_detr_crop_range_comes_from_the_config() -> None:
    cfg = maskformer.load_config(None, ["data.mapper=detr_panoptic", "data.crop_size=[200,300]"])
    assert build_mapper(cfg, train=True, ignore_label=255).crop_range == (200, 300)
    with pytest.raises(ConfigError, match="crop_size"):
        build_mapper(maskformer.load_config(None, ["data.mapper=detr_panoptic", "data.crop_size=[300,200]"]),
                     train=True, ignore_label=255)  # fmt: skip


def test_per_pixel_plus_matching_is_fixed_or_rejected() -> None:
    base = ["model.meta_arch=per_pixel_plus", "model.num_classes=5", "model.num_queries=5"]
    criterion = build_criterion(maskformer.load_config(None, [*base, "loss.matching=fixed"]))
    assert type(criterion).__name__ == "PerPixelCriterion" and criterion.deep_supervision  # per-pixel CE per layer
    with pytest.raises(ConfigError, match="loss.matching=hungarian"):
        build_criterion(maskformer.load_config(None, [*base, "loss.matching=hungarian"]))


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_follows_the_config(tf32: bool, tmp_path) -> None:
    from maskformer.engine.runtime import set_tf32

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        set_tf32(not tf32)
        # (the stub's 4 classes)
        cfg = maskformer.load_config(None, ["data.dataset=synthetic", f"train.tf32={str(tf32).lower()}",
                                            "data.synthetic_val_size=1", "model.num_classes=4",
                                            "data.synthetic_num_classes=4"])  # fmt: skip
        from maskformer.engine.evaluate import evaluate_model

        evaluate_model(cfg, _stub_with(False, False), max_images=0)
        assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_overlap_ratio_is_compared_in_float64() -> None:
    # 32000000 / 40000001 is below 0.8 in float64 but its float32 quotient equals float32(0.8) (the original divides
    # Python ints: float64)
    areas, original = torch.tensor([32000000, 4, 0]), torch.tensor([40000001, 5, 3])
    assert (areas[0].item() / original[0].item()) < 0.8
    assert not bool((areas / original)[0] < 0.8)  # the float32 ratio would let it pass
    assert overlap_passes(areas, original, 0.8).tolist() == [False, True, False]
