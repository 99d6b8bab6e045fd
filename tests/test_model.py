"""Model shapes, feature contract, gradients and determinism, with tiny configs (fast) and full-size backbones."""

from __future__ import annotations

import math

import pytest
import torch

import maskformer
from conftest import CONFIGS
from maskformer.build import build_backbone
from maskformer.config import BackboneConfig, load_config

TINY_BACKBONES = {
    "resnet_tiny": [
        "model.backbone.type=resnet",
        "model.backbone.blocks=[1,1,1,1]",
        "model.backbone.width_per_group=8",
    ],
    "resnet_deeplab_tiny": [
        "model.backbone.blocks=[1,1,1,3]",
        "model.backbone.stem=deeplab",
        "model.backbone.res5_multi_grid=[1,2,4]",
        "model.backbone.width_per_group=8",
    ],
    "swin_tiny": [
        "model.backbone.type=swin",
        "model.backbone.embed_dim=16",
        "model.backbone.depths=[2,2,2,2]",
        "model.backbone.num_heads=[1,2,2,4]",
        "model.backbone.window_size=7",
    ],
    "timm_resnet18": ["model.backbone.type=timm", "model.backbone.timm_name=resnet18"],
}

FULL_BACKBONES = {
    "R50": BackboneConfig(depth=50),
    "R101": BackboneConfig(depth=101),
    "R101c": BackboneConfig(depth=101, stem="deeplab", stem_out_channels=128, res5_multi_grid=[1, 2, 4]),
    "SwinT": BackboneConfig(type="swin"),
    "SwinB": BackboneConfig(type="swin", embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12),
}


def tiny_cfg(extra: list[str] = ()):
    return load_config(CONFIGS / "demo.yaml", overrides=list(extra))


@pytest.mark.parametrize("name", list(FULL_BACKBONES))
@pytest.mark.parametrize("size", [(500, 375), (97, 161)])
def test_full_backbone_contract_at_odd_sizes(name, size):
    torch.manual_seed(0)
    bb = build_backbone(FULL_BACKBONES[name]).eval()
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, *size))
    assert list(feats) == ["res2", "res3", "res4", "res5"]
    for key, spec in bb.output_specs.items():
        assert feats[key].shape == (
            1,
            spec.channels,
            math.ceil(size[0] / spec.stride),
            math.ceil(size[1] / spec.stride),
        )


@pytest.mark.parametrize("name", list(TINY_BACKBONES))
@pytest.mark.parametrize("size", [(480, 640), (500, 375), (64, 96)])
def test_model_output_shapes(name, size):
    cfg = tiny_cfg(TINY_BACKBONES[name])
    model = maskformer.build_model(cfg).eval()
    h, w = size
    d = model.size_divisibility
    hp, wp = -(-h // d) * d, -(-w // d) * d
    with torch.no_grad():
        out = model(torch.randn(2, 3, hp, wp))
    q, k = cfg.model.num_queries, cfg.model.num_classes
    assert out["pred_logits"].shape == (2, q, k + 1)
    assert out["pred_masks"].shape == (2, q, hp // 4, wp // 4)
    assert len(out["aux_outputs"]) == cfg.model.dec_layers - 1
    for aux in out["aux_outputs"]:
        assert (
            aux["pred_logits"].shape == out["pred_logits"].shape and aux["pred_masks"].shape == out["pred_masks"].shape
        )
    for key, spec in model.backbone.output_specs.items():
        assert spec.stride == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}[key]


def test_train_and_eval_return_the_same_keys_and_lean_path_matches():
    model = maskformer.build_model(tiny_cfg())
    x = torch.randn(1, 3, 64, 64)
    train_keys = set(model.train()(x))
    model.eval()
    with torch.no_grad():
        full, lean = model(x), model(x, with_aux=False)
    assert train_keys == set(full) == {"pred_logits", "pred_masks", "aux_outputs"}
    assert lean["aux_outputs"] == []
    # the same computation; only the einsum's batching (1 vs 6 layers) may change float summation order
    torch.testing.assert_close(lean["pred_logits"], full["pred_logits"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lean["pred_masks"], full["pred_masks"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(TINY_BACKBONES))
def test_gradients_reach_every_trainable_parameter(name):
    # At initialisation the first decoder layer's self-attention sees tgt = 0, so its weights get no gradient until
    # the biases have moved (true of the original too); after one optimizer step every parameter must get one.
    torch.manual_seed(0)
    # no dropout / stochastic depth: a dropped residual branch legitimately gets no gradient in that step
    overrides = [*TINY_BACKBONES[name], "model.dropout=0.0", "model.backbone.drop_path_rate=0.0"]
    model = maskformer.build_model(tiny_cfg(overrides)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 3, 64, 96)
    for _ in range(2):
        opt.zero_grad()
        out = model(x)
        loss = out["pred_logits"].square().mean() + out["pred_masks"].square().mean()
        for aux in out["aux_outputs"]:
            loss = loss + aux["pred_logits"].square().mean() + aux["pred_masks"].square().mean()
        loss.backward()
        opt.step()
    no_grad = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert not no_grad, no_grad


def test_eval_is_deterministic():
    model = maskformer.build_model(tiny_cfg(["model.dropout=0.1"])).eval()
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_masks"], b["pred_masks"])


@pytest.mark.parametrize("arch,aux", [("per_pixel", 0), ("per_pixel_plus", 5)])
def test_baselines(arch, aux):
    cfg = tiny_cfg([f"model.meta_arch={arch}"])
    model = maskformer.build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out["sem_logits"].shape == (1, cfg.model.num_classes, 16, 24)
    assert len(out["aux_outputs"]) == aux


def test_transformer_encoder_pixel_decoder():
    cfg = tiny_cfg(
        [
            "model.pixel_decoder=transformer_encoder",
            "model.transformer_in_feature=transformer_encoder",
            "model.pixel_decoder_enc_layers=2",
        ]
    )
    model = maskformer.build_model(cfg).eval()
    assert isinstance(model.predictor.input_proj, torch.nn.Sequential)  # 256 -> 256: identity, as the original
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["pred_masks"].shape == (1, cfg.model.num_queries, 16, 16)


PAPER_PARAMS = {
    "ade20k-150/maskformer_R50_bs16_160k.yaml": 41_254_743,
    "ade20k-150/maskformer_R101_bs16_160k.yaml": 60_194_647,
    "ade20k-150/maskformer_R101c_bs16_160k.yaml": 60_318_039,
    "ade20k-150/swin/maskformer_swin_tiny_bs16_160k.yaml": 41_757_009,
    "ade20k-150/swin/maskformer_swin_small_bs16_160k.yaml": 63_074_913,
    "ade20k-150/swin/maskformer_swin_base_IN21k_384_bs16_160k_res640.yaml": 101_829_391,
    "ade20k-150/swin/maskformer_swin_large_IN21k_384_bs16_160k_res640.yaml": 211_575_627,
    "coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml": 45_012_038,
    "coco-panoptic/maskformer_panoptic_R101_bs64_554k.yaml": 63_951_942,
    "coco-panoptic/swin/maskformer_panoptic_swin_tiny_bs64_554k.yaml": 41_752_640,
    "ade20k-full-847/maskformer_R50_bs16_200k.yaml": 41_433_872,
    "coco-stuff-10k-171/maskformer_R50_bs32_60k.yaml": 41_260_140,
    "mapillary-vistas/maskformer_R50_bs16_300k.yaml": 41_232_898,
    "cityscapes/maskformer_R101_bs16_90k.yaml": 60_160_980,
}


@pytest.mark.parametrize("path", list(PAPER_PARAMS))
def test_parameter_counts_equal_the_original(path):
    with torch.device("meta"):
        model = maskformer.build_model(load_config(CONFIGS / path))
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMS[path]


def test_flops_of_r50_follow_the_original_analysis_tool():
    """fvcore + detectron2's ignore list over the whole semantic inference graph: the original prints 55.0 G for R50
    at 512x512 (OFFICIAL_SPEC §2.5); within 3 %. The lean graph drops the five aux mask einsums (~2.2 G)."""
    from maskformer.engine.analysis import count_flops

    model = maskformer.build_model(load_config(CONFIGS / "ade20k-150/maskformer_R50_bs16_160k.yaml"))
    total, by_op = count_flops(model, height=512, width=512)
    lean, _ = count_flops(model, height=512, width=512, lean=True)
    assert abs(total / 1e9 - 55.0) / 55.0 < 0.03
    assert by_op["conv"] / 1e9 == pytest.approx(46.92, rel=0.01)
    assert 1.5e9 < total - lean < 3.0e9


def test_frozen_norm_folded_in_training_matches_the_unfolded_layer():
    """With autograd on, ConvNorm folds a FrozenBN into the conv weights; values and gradients equal conv -> norm."""
    from maskformer.modeling.backbone.norm import FrozenBatchNorm2d
    from maskformer.modeling.layers import ConvNorm

    g = torch.Generator().manual_seed(4)
    layer = ConvNorm(6, 5, 3, padding=1, bias=True, norm=FrozenBatchNorm2d(5), relu=True).double()
    with torch.no_grad():
        for t in (layer.bias, layer.norm.weight, layer.norm.bias, layer.norm.running_mean):
            t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64))
        layer.norm.running_var.copy_(torch.rand(5, generator=g, dtype=torch.float64) + 0.5)
    x = torch.randn(2, 6, 7, 9, generator=g, dtype=torch.float64, requires_grad=True)
    folded = layer(x)
    (gw, gx) = torch.autograd.grad(folded.square().sum(), (layer.weight, x))
    plain = torch.nn.functional.relu(layer.norm(torch.nn.functional.conv2d(x, layer.weight, layer.bias, padding=1)))
    (rw, rx) = torch.autograd.grad(plain.square().sum(), (layer.weight, x))
    torch.testing.assert_close(folded, plain)
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gx, rx)
    with torch.no_grad():  # the unfolded arithmetic without autograd
        torch.testing.assert_close(layer(x), plain)
