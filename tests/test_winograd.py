"""Winograd F(2x2, 3x3) for the inference copy's wide 3x3 convolutions (``inference/accelerate/winograd.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import maskformer
from maskformer.inference.accelerate import onednn, winograd
from maskformer.modeling.layers import ConvNorm


def _error(y: torch.Tensor, exact: torch.Tensor) -> float:
    return float((y.double() - exact).abs().max() / exact.abs().max())


@pytest.mark.parametrize(
    ("batch", "cin", "cout", "size", "bias", "relu", "channels_last"),
    [
        (1, 256, 256, (16, 16), True, False, True),
        (2, 256, 320, (9, 13), False, True, False),  # odd sizes: the last tile row and column are cropped
        (1, 512, 256, (1, 3), True, True, True),
    ],
)
def test_winograd_is_as_close_to_the_exact_convolution_as_the_direct_kernel(
    batch: int, cin: int, cout: int, size: tuple, bias: bool, relu: bool, channels_last: bool
) -> None:
    g = torch.Generator().manual_seed(cin + cout + size[0])
    x = torch.randn(batch, cin, *size, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(cout, cin, 3, 3, generator=g) / (3 * cin**0.5)
    b = torch.randn(cout, generator=g) if bias else None
    exact = F.conv2d(x.double(), w.double(), None if b is None else b.double(), padding=1)
    if relu:
        exact = exact.relu()
    y = winograd.winograd_conv3x3(x, winograd.filters(w), b, relu=relu)
    assert y.shape == exact.shape and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last)
    # F(2x2, 3x3)'s transforms hold only 0, +-1/2 and +-1: ~6e-7 of the output range, where oneDNN's direct
    # channels-last kernel (the one it replaces) is at ~2e-6 on these shapes
    assert _error(y, exact) < 1e-6


def test_winograd_is_taken_only_where_it_pays() -> None:
    w = torch.zeros(256, 256, 3, 3)
    one = (1, 1)
    assert winograd.suits(w, one, one, one, 1)
    assert not winograd.suits(w, (2, 2), one, one, 1)  # strided
    assert not winograd.suits(w, one, (2, 2), (2, 2), 1)  # dilated
    assert not winograd.suits(w, one, one, one, 2)  # grouped
    assert not winograd.suits(w.bfloat16(), one, one, one, 1)  # bf16 keeps oneDNN's AMX kernels
    assert not winograd.suits(torch.zeros(256, 128, 3, 3), one, one, one, 1)  # too few channels in
    assert not winograd.suits(torch.zeros(100, 256, 3, 3), one, one, one, 1)  # too few out (the folded mask conv)
    assert not winograd.suits(torch.zeros(256, 256, 1, 1), one, (0, 0), one, 1)


def test_the_onednn_conv_layer_takes_winograd_and_follows_weight_changes(monkeypatch) -> None:
    calls = []
    real = winograd.winograd_conv3x3
    monkeypatch.setattr(winograd, "winograd_conv3x3", lambda *a, **k: calls.append(1) or real(*a, **k))
    g = torch.Generator().manual_seed(5)
    layer = ConvNorm(256, 256, 3, padding=1, bias=True, norm=None, relu=True).eval().requires_grad_(False)
    with torch.no_grad():
        layer.bias.normal_(generator=g)
    conv = onednn.Conv(layer, relu=True)
    x = torch.randn(1, 256, 10, 12, generator=g).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(conv(x), layer(x), atol=1e-5, rtol=1e-5)
        assert len(calls) == 1
        layer.weight.mul_(-2)  # the same Parameter: the transformed filters must follow
        torch.testing.assert_close(conv(x), layer(x), atol=1e-5, rtol=1e-5)
        conv.winograd = False
        torch.testing.assert_close(conv(x), layer(x), atol=1e-5, rtol=1e-5)
        assert len(calls) == 2
        with torch.enable_grad():  # training (autograd) keeps the plain convolution
            conv.winograd = True
            layer.weight.requires_grad_(True)
            conv(x.clone().requires_grad_(True))
        assert len(calls) == 2


def test_filters_of_inference_tensors_are_transformed_once(monkeypatch) -> None:
    with torch.inference_mode():
        layer = ConvNorm(256, 256, 3, padding=1, bias=False, norm=None, relu=False).eval().requires_grad_(False)
        assert layer.weight.is_inference()
        conv = onednn.Conv(layer, relu=False)
        x = torch.randn(1, 256, 6, 6)
        first = conv(x)
        transformed = conv._filters.weight
        assert transformed is not None and len(transformed) == 16
        monkeypatch.setattr(winograd, "filters", lambda *a: pytest.fail("transformed again"))
        assert torch.equal(conv(x), first)


def test_default_predictor_with_a_wide_pixel_decoder_keeps_the_exact_labels() -> None:
    torch.manual_seed(0)
    cfg = maskformer.load_config(None, ["data.dataset=synthetic", "model.num_classes=7", "model.num_queries=12",
        "model.backbone.blocks=[1,1,1,1]", "model.backbone.stem_out_channels=16", "model.backbone.width_per_group=8",
        "model.hidden_dim=32", "model.nheads=2", "model.dim_feedforward=64", "model.dec_layers=2",
        "model.convs_dim=256", "model.mask_dim=256", "test.min_size=64", "test.max_size=256"])  # fmt: skip
    model = maskformer.build_model(cfg).eval()
    fast, exact = maskformer.Predictor(model), maskformer.Predictor(model, optimize=False)
    wide = [m for m in fast.model.modules() if isinstance(m, onednn.Conv) and m._suits_winograd()]
    assert len(wide) == 4  # the FPN's output convolutions of every level
    image = np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    assert torch.equal(fast(image, task="semantic"), exact(image, task="semantic"))


def test_the_folded_mask_convolution_takes_winograd_with_the_same_rows_when_queries_are_selected(monkeypatch) -> None:
    """256 pixel-decoder channels and 64 queries: the mask convolution folded into the embeddings runs by Winograd; the
    panoptic path's selected rows equal the full forward's bit for bit, and the masks stay as close to the
    unmodified model's as the direct kernel's."""
    from maskformer.inference.accelerate.fast_model import prepare_for_inference

    calls = []
    real = winograd.winograd_conv3x3
    monkeypatch.setattr(
        winograd, "winograd_conv3x3", lambda x, u, *a, **k: calls.append(len(u[0])) or real(x, u, *a, **k)
    )
    torch.manual_seed(0)
    cfg = maskformer.load_config(None, ["data.dataset=synthetic", "model.num_classes=7", "model.num_queries=64",
        "model.backbone.blocks=[1,1,1,1]", "model.backbone.stem_out_channels=16", "model.backbone.width_per_group=8",
        "model.hidden_dim=32", "model.nheads=2", "model.dim_feedforward=64", "model.dec_layers=2",
        "model.convs_dim=256", "model.mask_dim=256", "model.backbone.norm=FrozenBN"])  # fmt: skip
    model = maskformer.build_model(cfg).eval()
    fast = prepare_for_inference(model)
    assert fast.fold_mask_features
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = model(x, with_aux=False)["pred_masks"]
        full = fast(x)["pred_masks"]
        assert calls == [256] * 4 + [64]  # the FPN's outputs, then the folded convolution with all 64 rows
        del calls[:]
        torch.testing.assert_close(full, ref, atol=1e-5 * float(ref.abs().max()), rtol=1e-4)
        for chosen in ([5], list(range(0, 64, 3)), list(range(64))):
            wanted = torch.zeros(64, dtype=torch.bool)
            wanted[chosen] = True
            got = fast(x, mask_queries=lambda logits, w=wanted: w)["pred_masks"]
            assert torch.equal(got[:, wanted], full[:, wanted]), chosen
    assert calls[4::5] == [17, 22, 64]  # topped up to 17 rows, then as selected


@pytest.mark.parametrize(
    ("batch", "cin", "cout", "size", "bias"),
    [(2, 8, 5, (6, 7), True), (1, 3, 4, (1, 3), False), (2, 4, 3, (2, 2), False), (1, 3, 2, (8, 10), True)],
)
def test_training_winograd_gives_the_convolutions_gradients(batch, cin, cout, size, bias) -> None:
    """modeling.winograd.conv3x3 (training): output and input / weight / bias gradients of conv2d(padding=1), exact
    in float64 (odd sizes crop the last tile row and column). For even sizes the input gradient comes out
    channels-last contiguous (a strided crop of the padded picture made the next layer's backward copy it)."""
    from maskformer.modeling.winograd import conv3x3

    g = torch.Generator().manual_seed(size[0] * size[1])
    x = torch.randn(batch, cin, *size, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(cout, cin, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(cout, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    grad = torch.randn(batch, cout, *size, generator=g, dtype=torch.float64)
    params = [x, w] + ([b] if bias else [])
    got = torch.autograd.grad(conv3x3(x, w, b), params, grad)
    want = torch.autograd.grad(F.conv2d(x, w, b, padding=1), params, grad)
    torch.testing.assert_close(conv3x3(x, w, b), F.conv2d(x, w, b, padding=1), atol=1e-12, rtol=1e-12)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=1e-12)
    if size[0] % 2 == 0 and size[1] % 2 == 0:
        assert got[0].is_contiguous(memory_format=torch.channels_last)


def test_training_takes_winograd_on_wide_layers_with_fp32_gradients_as_close_as_the_direct_kernels(monkeypatch):
    """ConvNorm.winograd (``train.winograd``): taken with autograd where it pays, not without (eval keeps the direct
    kernel); its fp32 output and gradients are at least as close to float64 as the direct kernel's."""
    from maskformer.modeling import layers
    from maskformer.modeling import winograd as training

    monkeypatch.setattr(training, "MIN_TRAIN_TILES", 16)
    g = torch.Generator().manual_seed(3)
    layer = ConvNorm(256, 256, 3, padding=1, bias=True, norm=nn_group_norm(), relu=True)
    assert layers.set_winograd(torch.nn.Sequential(layer), True) == 1
    calls = []
    real = training.conv3x3
    monkeypatch.setattr(layers, "conv3x3", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(2, 256, 8, 10, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(2, 256, 8, 10, generator=g)
    with torch.no_grad():
        layer(x)
    assert not calls
    errors = {}
    for name in ("winograd", "direct"):
        layer.winograd = name == "winograd"
        layer.zero_grad()
        x.grad = None
        y = layer(x)
        y.backward(grad)
        errors[name] = (y.detach(), x.grad.clone(), layer.weight.grad.clone())
    assert calls == [1]
    exact = layer.double()
    x64 = x.detach().double().requires_grad_()
    y64 = exact(x64)
    y64.backward(grad.double())
    for got_w, got_d, want in zip(errors["winograd"], errors["direct"], (y64.detach(), x64.grad, exact.weight.grad)):
        scale = float(want.abs().max())
        err_w, err_d = (float((t.double() - want).abs().max()) / scale for t in (got_w, got_d))
        assert err_w < max(2 * err_d, 1e-6), (err_w, err_d)


def nn_group_norm() -> torch.nn.GroupNorm:
    return torch.nn.GroupNorm(32, 256)


def test_mask_product_with_the_winograd_mask_convolution_equals_the_direct_one(monkeypatch) -> None:
    """The pixel decoder's mask_features convolution inside the mask product (training) by Winograd: the mask
    logits and every gradient as with the direct convolution, to fp32 rounding."""
    from maskformer.modeling import mask_product
    from maskformer.modeling import winograd as training
    from maskformer.modeling.mask_product import layer_mask_logits

    monkeypatch.setattr(training, "MIN_TRAIN_TILES", 16)
    calls = []
    real = mask_product.apply_filters
    monkeypatch.setattr(mask_product, "apply_filters", lambda *a: calls.append(1) or real(*a))
    g = torch.Generator().manual_seed(4)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1)
    y = torch.randn(2, 256, 12, 10, generator=g).requires_grad_()
    embed = torch.randn(3, 2, 5, 256, generator=g).requires_grad_()
    grads = [torch.randn(2, 5, 12, 10, generator=g) * (torch.rand(1, 5, 1, 1, generator=g) > 0.5) for _ in range(3)]
    results = []
    for on in (True, False):
        conv.winograd = on
        outs = layer_mask_logits(embed, y, conv)
        params = (embed, y, conv.weight, conv.bias)
        results.append((torch.stack(outs), *torch.autograd.grad(outs, params, grads)))
    assert calls == [1]
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=2e-5 * float(b.detach().abs().max()), rtol=1e-4)


def test_set_winograd_reaches_the_mask_convolution_of_a_built_model(monkeypatch) -> None:
    """``train.winograd`` on a whole model (what ``maskformer train`` calls): the pixel decoder's mask_features
    convolution, run inside the mask product, takes Winograd too, in training only."""
    from maskformer.modeling import mask_product
    from maskformer.modeling import winograd as training
    from maskformer.modeling.layers import set_winograd

    monkeypatch.setattr(training, "MIN_TRAIN_TILES", 16)
    calls = []
    real = mask_product.apply_filters
    monkeypatch.setattr(mask_product, "apply_filters", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    cfg = maskformer.load_config(None, ["data.dataset=synthetic", "model.num_classes=7", "model.num_queries=12",
        "model.backbone.blocks=[1,1,1,1]", "model.backbone.stem_out_channels=16", "model.backbone.width_per_group=8",
        "model.hidden_dim=32", "model.nheads=2", "model.dim_feedforward=64", "model.dec_layers=2",
        "model.convs_dim=256", "model.mask_dim=256"])  # fmt: skip
    model = maskformer.build_model(cfg).train()
    n = sum(isinstance(m, ConvNorm) for m in model.modules())
    assert set_winograd(model, True) == n + 1
    assert model.pixel_decoder.mask_features.winograd
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x)
    assert not calls
    model(x)["pred_masks"].sum().backward()
    assert calls == [1]
    assert set_winograd(model, False) == n + 1
    model(x)
    assert calls == [1]
