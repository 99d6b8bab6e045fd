"""accelerate.swin: the inference form of the Swin blocks equals the reference blocks (modeling/backbone/swin.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import maskformer
from conftest import DEMO_YAML, NEEDS_BF16, TINY_SWIN
from maskformer.inference.accelerate.fast_model import prepare_for_inference
from maskformer.inference.accelerate.onednn import Linear, use_onednn_layers
from maskformer.inference.accelerate.swin import ChannelsLastSwin, SwinBlock, use_fast_swin_blocks, window_index
from maskformer.modeling.backbone.swin import SwinBlock as ReferenceBlock
from maskformer.modeling.backbone.swin import shifted_window_mask


@pytest.mark.parametrize("h, w, shift", [(14, 14, 0), (14, 14, 3), (9, 16, 3), (5, 3, 3), (8, 8, 0)])
def test_window_index_is_the_references_pad_roll_partition_and_its_inverse(h, w, shift):
    ws = 7
    tokens = torch.arange(1, h * w + 1, dtype=torch.float32)  # 0 marks padding
    padded = F.pad(tokens.view(h, w), (0, (-w) % ws, 0, (-h) % ws))
    rolled = torch.roll(padded, shifts=(-shift, -shift), dims=(0, 1)) if shift else padded
    hp, wp = rolled.shape
    expected = rolled.view(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1)
    gather, scatter = window_index(h, w, ws, shift, torch.device("cpu"))
    got = torch.cat([tokens, torch.zeros(1)])[gather]
    assert torch.equal(got, expected)
    assert torch.equal(got[scatter], tokens)  # the inverse: window order back to the h*w tokens


def _block(dim: int, heads: int, shift: int, seed: int) -> ReferenceBlock:
    torch.manual_seed(seed)
    block = ReferenceBlock(dim, num_heads=heads, window_size=7, shift=shift, mlp_ratio=4.0, drop_path=0.0).eval()
    with torch.no_grad():
        for p in block.parameters():  # away from the initialisation (zero biases would hide the padding rows)
            p.add_(0.3 * torch.randn_like(p))
    return block


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("h, w, shift, batch", [(14, 14, 3, 1), (9, 16, 3, 2), (9, 16, 0, 2), (4, 5, 3, 1)])
def test_fast_block_equals_the_reference_block(h, w, shift, batch, onednn):
    reference = _block(32, 2, shift, seed=h * w + shift)
    holder = torch.nn.Module()
    holder.block = copy.deepcopy(reference).requires_grad_(False)
    if onednn:  # the fp32 inference copy: linear layers through oneDNN, fused GELU / residual additions
        use_onednn_layers(holder)
    assert use_fast_swin_blocks(holder) == 1 and isinstance(holder.block, SwinBlock)
    x = torch.randn(batch, h * w, 32)
    hp, wp = -(-h // 7) * 7, -(-w // 7) * 7
    mask = shifted_window_mask(hp, wp, 7, 3, x.device) if shift else None
    with torch.no_grad():
        expected = reference(x, h, w, mask)
        got = holder.block(x, h, w)
        again = holder.block(x, h, w)  # from the cached plan
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, got)
    # a block whose padding rows were wrong (zeros instead of the qkv bias) would differ by far more
    assert (expected - x).abs().max() > 1e-2


def test_prepared_swin_model_matches_and_returns_channels_last_features():
    cfg = maskformer.load_config(DEMO_YAML, TINY_SWIN)
    torch.manual_seed(0)
    model = maskformer.build_model(cfg).eval()
    fast = prepare_for_inference(model)
    assert isinstance(fast.model.backbone, ChannelsLastSwin)
    assert type(model.backbone).__name__ == "SwinTransformer"  # the original is untouched
    assert not any(isinstance(m, SwinBlock) for m in model.modules())
    for size in ((64, 96), (75, 50)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = model(x, with_aux=False)
            got = fast(x)
            feats = fast.model.backbone(x.contiguous(memory_format=torch.channels_last))
            ref_feats = model.backbone(x)
        for k in ("pred_logits", "pred_masks"):
            torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-4)
        for k, v in ref_feats.items():
            assert feats[k].is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(feats[k], v, rtol=1e-4, atol=1e-4)
    # a deep copy of the inference copy still runs (Predictor and serve copy models)
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(fast)(x)["pred_masks"], got["pred_masks"])


@NEEDS_BF16
def test_bf16_swin_copy_is_close_to_fp32():
    cfg = maskformer.load_config(DEMO_YAML, TINY_SWIN)
    torch.manual_seed(0)
    model = maskformer.build_model(cfg).eval()
    fast16 = prepare_for_inference(model, bf16=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x, with_aux=False)["pred_masks"]
        got = fast16(x)["pred_masks"]
    assert got.dtype == torch.float32
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    # every linear layer runs through oneDNN with its weight stored in bf16 (packed once); torch's attention stays
    assert not any(type(m) is torch.nn.Linear for m in fast16.modules())
    linears = [m for m in fast16.modules() if isinstance(m, Linear)]
    assert len(linears) > 10 and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert any(isinstance(m, torch.nn.MultiheadAttention) for m in fast16.modules())


@NEEDS_BF16
@pytest.mark.parametrize("h, w, shift, batch", [(14, 14, 3, 1), (9, 16, 3, 2), (9, 16, 0, 2)])
def test_bf16_fast_block_follows_the_reference_block_under_autocast(h, w, shift, batch):
    """The bf16 inference copy's block (bf16 weights, linear layers through oneDNN with fc1 + GELU fused, baddbmm
    attention with the per-window mask) against the reference block in fp32: bf16-close, and closer than a block
    whose shifted-window mask were left out."""
    reference = _block(32, 2, shift, seed=h * w + shift)
    holder = torch.nn.Module()
    holder.block = copy.deepcopy(reference).requires_grad_(False)
    for m in holder.modules():
        if isinstance(m, torch.nn.Linear):
            m.to(torch.bfloat16)
    use_onednn_layers(holder, attention=False)
    use_fast_swin_blocks(holder)
    assert all(
        isinstance(m, Linear) and m.weight.dtype == torch.bfloat16 for m in (holder.block.qkv, holder.block.mlp.fc1)
    )
    x = torch.randn(batch, h * w, 32)
    hp, wp = -(-h // 7) * 7, -(-w // 7) * 7
    mask = shifted_window_mask(hp, wp, 7, 3, x.device) if shift else None
    with torch.inference_mode():
        expected = reference(x, h, w, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = holder.block(x, h, w).float()
            unmasked = reference(x, h, w, None).float()
    scale = (expected - x).abs().max()
    err = (got - expected).abs().max()
    assert err < 0.05 * scale, (err, scale)
    if shift:  # the mask matters at these sizes: leaving it out is far off
        assert (unmasked - expected).abs().max() > 4 * err


@NEEDS_BF16
def test_bf16_linear_through_onednn_equals_autocast_linear():
    """``onednn.linear`` with a bf16 weight takes the input in bf16 (as autocast does) and gives what autocast's
    linear gives, up to bf16 rounding; fused GELU likewise."""
    from maskformer.inference.accelerate.onednn import linear
    from maskformer.inference.accelerate.swin import _linear

    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 384).to(torch.bfloat16).requires_grad_(False)
    wrapped = Linear(layer)
    x = torch.randn(2, 50, 96)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = layer(x)
        got = linear(x, layer.weight, layer.bias)
        gelu = _linear(wrapped, x, post="gelu")
    assert got.dtype == gelu.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), plain.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gelu.float(), F.gelu(plain.float()), rtol=2e-2, atol=2e-2)


def test_fast_forwards_never_format_a_tensor(monkeypatch):
    """The oneDNN calls name their overload: calling the packet with the binary arguments first tried the default
    overload, whose failure message printed the bias (~10 % of a Swin-T forward at 512x512 went into that)."""
    import torch._tensor_str

    from maskformer.inference.accelerate.onednn import Conv
    from maskformer.modeling.layers import ConvNorm

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was formatted during an inference forward")

    cfg = maskformer.load_config(DEMO_YAML, TINY_SWIN)
    torch.manual_seed(0)
    fast = prepare_for_inference(maskformer.build_model(cfg).eval())
    conv = Conv(ConvNorm(8, 8, 1).eval(), relu=False)
    x, other = torch.randn(1, 3, 64, 64), torch.randn(1, 8, 5, 5)
    monkeypatch.setattr(torch._tensor_str, "_str", refuse)
    with torch.inference_mode():
        fast(x)
        out = conv.add_relu(torch.randn(1, 8, 5, 5), other, inplace=False)
    assert out.shape == other.shape and not torch.equal(out, other)
