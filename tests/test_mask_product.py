"""layer_mask_logits (the mask product of all decoder layers) against the plain einsum: values, and gradients when only
some query rows are supervised (the backward skips all-zero gradient rows), for NCHW and channels-last features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from maskformer.modeling.mask_product import layer_mask_logits


def _inputs(channels_last: bool, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(3, 2, 7, 5, generator=g, dtype=dtype)
    features = torch.randn(2, 5, 6, 4, generator=g, dtype=dtype)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    return embed.requires_grad_(), features.requires_grad_()


def _sparse_loss(masks, g):
    """A loss on a few rows of layers 0 and 2 only (layer 1 is unused, as an unsupervised output would be)."""
    weights = torch.randn(masks[0].shape, generator=g, dtype=masks[0].dtype)
    return (masks[0][0, [1, 4]] * weights[0, [1, 4]]).sum() + (masks[2][1, 3].sigmoid() * weights[1, 3]).sum()


@pytest.mark.parametrize("channels_last", [False, True])
def test_values_and_gradients_match_einsum(channels_last):
    embed, features = _inputs(channels_last)
    ref = torch.einsum("lbqc,bchw->lbqhw", embed, features).unbind(0)
    ours = layer_mask_logits(embed, features)
    assert len(ours) == 3
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    ref_grads = torch.autograd.grad(_sparse_loss(ref, torch.Generator().manual_seed(1)), (embed, features))
    grads = torch.autograd.grad(_sparse_loss(ours, torch.Generator().manual_seed(1)), (embed, features))
    assert ref_grads[0].abs().sum() > 0 and ref_grads[1].abs().sum() > 0
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    assert grads[1].is_contiguous(memory_format=torch.channels_last) == channels_last
    assert grads[0][1].abs().sum() == 0  # layer 1 had no loss


def test_dense_loss_and_no_loss_rows():
    """Every row supervised (all rows picked) and a loss that is zero everywhere (no row picked)."""
    embed, features = _inputs(False)
    ref = torch.einsum("lbqc,bchw->lbqhw", embed, features).unbind(0)
    ours = layer_mask_logits(embed, features)
    dense_ref = torch.autograd.grad(sum((m.tanh()).sum() for m in ref), (embed, features))
    dense = torch.autograd.grad(sum((m.tanh()).sum() for m in ours), (embed, features))
    for a, b in zip(dense, dense_ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    ours = layer_mask_logits(embed, features)
    zero = torch.autograd.grad((ours[0] * 0).sum(), (embed, features))
    assert all(bool((z == 0).all()) for z in zero)


def test_no_grad_and_bf16_autocast():
    embed, features = _inputs(True, torch.float32)
    with torch.no_grad():
        plain = layer_mask_logits(embed, features)
    torch.testing.assert_close(plain[1], torch.einsum("bqc,bchw->bqhw", embed[1], features))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        masks = layer_mask_logits(embed, features.to(torch.bfloat16))
        ref = torch.einsum("lbqc,bchw->lbqhw", embed, features.to(torch.bfloat16)).unbind(0)
    assert masks[0].dtype == ref[0].dtype == torch.bfloat16
    torch.testing.assert_close(masks[2], ref[2])
    grads = torch.autograd.grad(masks[2][:, :3].float().sum(), (embed, features))
    ref_grads = torch.autograd.grad(ref[2][:, :3].float().sum(), (embed, features))
    for a, b in zip(grads, ref_grads):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("queries", [7, 2])  # 7: up to 3 rows per image, < C = 5 (sparse); 2 x 3 layers >= 5 (dense)
def test_with_convolution_matches_conv_then_einsum(channels_last, queries):
    g = torch.Generator().manual_seed(5)
    embed = torch.randn(3, 2, queries, 5, generator=g, dtype=torch.float64).requires_grad_()
    y = torch.randn(2, 4, 6, 7, generator=g, dtype=torch.float64)
    conv = nn.Conv2d(4, 5, 3, padding=1).double()
    if channels_last:
        y, conv = y.contiguous(memory_format=torch.channels_last), conv.to(memory_format=torch.channels_last)
    y.requires_grad_()
    params = (embed, y, conv.weight, conv.bias)
    ref = torch.einsum("lbqc,bchw->lbqhw", embed, conv(y)).unbind(0)
    ours = layer_mask_logits(embed, y, conv)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)

    def loss(masks):  # rows 0 and 1 of layer 0 in image 0, row 1 of layer 2 in image 1: sparse for queries=7
        rows = [masks[0][0, :2], masks[2][1, 1:2]] if queries == 7 else list(masks)
        return sum((r.sigmoid() * torch.linspace(-1, 2, r.numel(), dtype=r.dtype).view_as(r)).sum() for r in rows)

    ref_grads = torch.autograd.grad(loss(ref), params)
    grads = torch.autograd.grad(loss(ours), params)
    for name, a, b in zip(("embed", "input", "weight", "bias"), grads, ref_grads):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10, msg=name)
    assert grads[1].is_contiguous(memory_format=torch.channels_last) == channels_last


def test_model_training_gradients_unchanged(monkeypatch):
    """Tiny model + criterion in float64: every parameter gradient equals the one of the plain conv + einsum path."""
    import maskformer
    from maskformer.config import load_config
    from maskformer.modeling import heads

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml", overrides=["model.dropout=0.0"])
    torch.manual_seed(0)
    model = maskformer.build_model(cfg).double().train().to(memory_format=torch.channels_last)
    criterion = maskformer.build_criterion(cfg)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 64, 64, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    targets = [
        {"labels": torch.tensor([1, 2]), "masks": torch.rand(2, 64, 64, generator=g) > 0.5},
        {"labels": torch.tensor([0]), "masks": torch.rand(1, 64, 64, generator=g) > 0.3},
    ]

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        criterion(model(images), targets)["loss"].backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ours = grads()

    def plain(embed, features, conv=None):
        return torch.einsum("lbqc,bchw->lbqhw", embed, features if conv is None else conv(features)).unbind(0)

    monkeypatch.setattr(heads, "layer_mask_logits", plain)
    ref = grads()
    assert set(ours) == set(ref) and "pixel_decoder.mask_features.weight" in ref
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], atol=1e-12, rtol=1e-9, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nonzero_rows_finds_every_row_that_is_not_all_plus_zero(dtype):
    """The rows whose gradient the backward multiplies: every row with a non-zero, NaN or infinite entry; rows of zeros
    are skipped (a row of -0.0 may be kept: fp32 reads the bit patterns as int32, and it adds exact zeros)."""
    from maskformer.modeling.mask_product import _nonzero_rows

    grad = torch.zeros(8, 50, dtype=dtype)
    grad[1, 49] = 1e-38
    grad[2, 0] = -3.0
    grad[3, 7] = float("nan")
    grad[4, 20] = float("-inf")
    grad[5, 30] = -0.0
    grad[6] = torch.linspace(-1, 1, 50, dtype=dtype)
    assert set(_nonzero_rows(grad).tolist()) - {5} == {1, 2, 3, 4, 6}
    assert _nonzero_rows(torch.zeros(3, 4, dtype=dtype)).numel() == 0
