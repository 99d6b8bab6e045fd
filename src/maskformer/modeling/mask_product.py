"""Mask logits of every decoder layer, ``einsum("lbqc,bchw->lbqhw")``, with a backward that skips zero gradient rows.

A set loss supervises only the queries matched to a target (about a tenth of them), so the gradient reaching the mask
logits is zero on every other (layer, image, query) row. The einsum's own backward multiplies those zero rows anyway:
two dense [B, L*Q, H*W] x [H*W, C] products (~20 GFLOP at 6 x 100 queries, 128 x 128, C = 256, twice the forward),
after stacking the per-layer gradients and permuting them into one contiguous buffer. This backward finds the rows
that are not all zero (one read of each layer's gradient), gathers them and multiplies only those.

Given the convolution that makes the per-pixel embeddings (the pixel decoder's ``mask_features``, 3x3, C -> C), the
gradient goes through it the same way: the n picked rows with embeddings E [n, C] act as a convolution with n output
channels and weight E @ W, so its input and weight gradients cost n / C of the dense ones (n ~ 60 of C = 256 with
~10 targets per image) and the dense [B, C, H, W] gradient of the embeddings is never formed; dW = E^T dW_virtual.
When n >= C the dense route is taken. Rows of zeros contribute exact zeros, so every gradient equals the dense one up
to float rounding (summation order). tests/test_mask_product.py compares both with autograd of the plain modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .winograd import apply_filters, pays, transform_filters

__all__ = ["layer_mask_logits"]


def _nonzero_rows(grad: Tensor) -> Tensor:
    """Indices of the rows of grad [R, P] holding a non-zero (or NaN) entry, without an [R, P] temporary. fp32 rows are
    read as int32 bit patterns, whose max and min reductions run ~20x faster than float ``aminmax`` (no NaN handling):
    both are 0 exactly for a row of +0.0 (a row holding -0.0 is kept, adding exact zeros)."""
    if grad.dtype == torch.float32:
        bits = grad.view(torch.int32)
        return ((bits.amax(-1) != 0) | (bits.amin(-1) != 0)).nonzero()[:, 0]
    low, high = torch.aminmax(grad, dim=-1)
    return ((low != 0) | (high != 0)).nonzero()[:, 0]


def _picked_rows(grads: tuple[Tensor | None, ...], b: int, pixels: int) -> list[tuple[int, Tensor, Tensor]]:
    """(layer, query indices, gradient rows [k, P]) of image b for every layer with non-zero rows."""
    picked = []
    for layer, grad in enumerate(grads):
        if grad is not None:
            rows = grad[b].reshape(-1, pixels)
            index = _nonzero_rows(rows)
            if index.numel():
                picked.append((layer, index, rows[index]))
    return picked


class _LayerMaskLogits(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, embed: Tensor, inputs: Tensor, weight: Tensor | None, bias: Tensor | None, padding: int, fast: bool
    ):
        """inputs: the per-pixel embeddings, or (weight given) the input of the 3x3 convolution that makes them;
        ``fast``: that convolution by Winograd where it pays (``ConvNorm.winograd``)."""
        if weight is None:
            features = inputs
        elif fast and pays(inputs, weight, (1, 1), (padding, padding), (1, 1), 1):
            features = apply_filters(inputs, transform_filters(weight).unbind(0), bias)
        else:
            features = F.conv2d(inputs, weight, bias, padding=padding)
        layers, batch, queries, channels = embed.shape
        _, _, height, width = features.shape
        # [B, L*Q, C] @ [B, C, H*W] (a view for NCHW and for channels-last features), as the einsum computes it
        product = torch.bmm(
            embed.permute(1, 0, 2, 3).reshape(batch, layers * queries, channels),
            features.reshape(batch, channels, height * width),
        )
        ctx.save_for_backward(embed, features, inputs, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        ctx.set_materialize_grads(False)
        return product.view(batch, layers, queries, height, width).unbind(1)

    @staticmethod
    def backward(ctx, *grads: Tensor | None):  # type: ignore[override]
        embed, features, inputs, weight = ctx.saved_tensors
        _, batch, _, channels = embed.shape
        _, _, height, width = features.shape
        pixels = height * width
        grad_embed = torch.zeros_like(embed, memory_format=torch.contiguous_format)
        grad_inputs = torch.zeros_like(inputs)
        grad_weight = None if weight is None else torch.zeros_like(weight)
        grad_bias = embed.new_zeros(channels) if ctx.has_bias else None
        flat_features = features.reshape(batch, channels, pixels)
        layout = (
            torch.channels_last if inputs.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        )
        for b in range(batch):
            picked = _picked_rows(grads, b, pixels)
            if not picked:
                continue
            grad_rows = torch.cat([rows for _, _, rows in picked])  # [n, H*W]
            embed_rows = torch.cat([embed[layer, b, index] for layer, index, _ in picked])  # [n, C]
            embed_grad_rows = grad_rows @ flat_features[b].T  # [n, C]
            start = 0
            for layer, index, _ in picked:
                grad_embed[layer, b, index] = embed_grad_rows[start : start + len(index)]
                start += len(index)
            if weight is None:  # dFeatures[b] = E^T G, written in the features' memory format
                grad_inputs[b].view(channels, pixels)[:] = embed_rows.T @ grad_rows
                continue
            if grad_bias is not None:
                grad_bias += embed_rows.T @ grad_rows.sum(1)
            n = grad_rows.shape[0]
            sparse = n < channels
            conv_weight = (embed_rows @ weight.reshape(channels, -1)).view(n, *weight.shape[1:]) if sparse else weight
            conv_grad = grad_rows if sparse else embed_rows.T @ grad_rows
            grad_in, grad_w, _ = torch.ops.aten.convolution_backward(
                conv_grad.view(1, -1, height, width).contiguous(memory_format=layout),
                inputs[b : b + 1],
                conv_weight,
                None,
                [1, 1],
                [ctx.padding, ctx.padding],
                [1, 1],
                False,
                [0, 0],
                1,
                [True, True, False],
            )
            grad_inputs[b] = grad_in[0]
            grad_weight += (embed_rows.T @ grad_w.reshape(n, -1)).view_as(weight) if sparse else grad_w
        return grad_embed, grad_inputs, grad_weight, grad_bias, None, None


def layer_mask_logits(embed: Tensor, features: Tensor, conv: nn.Conv2d | None = None) -> tuple[Tensor, ...]:
    """Mask logits per decoder layer.

    Args:
        embed: [L, B, Q, C] mask embeddings of every layer.
        features: [B, C, H, W] per-pixel embeddings (any memory format); with `conv`, the input of that convolution
            (stride 1, "same" padding, no groups or dilation), whose output are the per-pixel embeddings.
        conv: optional convolution applied to `features` first (inside the product, so that its backward sees the
            sparse rows).

    Returns:
        L tensors [B, Q, H, W], equal to ``torch.einsum("lbqc,bchw->lbqhw", embed, features).unbind(0)`` (with
        ``conv(features)``). With autograd, gradient rows that are all zero (unsupervised queries) are skipped.
    """
    if conv is not None and not torch.is_grad_enabled():
        features = conv(features)
        conv = None
    if not torch.is_grad_enabled():
        return torch.einsum("lbqc,bchw->lbqhw", embed, features).unbind(0)
    if conv is not None:
        if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError(f"layer_mask_logits supports stride-1 convolutions without groups, got {conv}")
        if conv.padding != (conv.kernel_size[0] // 2,) * 2 or conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError(f"layer_mask_logits needs a square 'same' convolution, got {conv}")
    device = features.device.type
    if torch.is_autocast_enabled(device):  # the product in the autocast dtype, as einsum's bmm would run it
        dtype = torch.get_autocast_dtype(device)
        embed, features = embed.to(dtype), features.to(dtype)
        if conv is not None:  # the convolution too, as autocast runs conv2d
            weight = conv.weight.to(dtype)
            bias = None if conv.bias is None else conv.bias.to(dtype)
            return _LayerMaskLogits.apply(embed, features, weight, bias, conv.padding[0], False)
    elif embed.dtype != features.dtype:
        raise TypeError(f"embed ({embed.dtype}) and features ({features.dtype}) need one dtype")
    if conv is None:
        return _LayerMaskLogits.apply(embed, features, None, None, 0, False)
    fast = bool(getattr(conv, "winograd", False))
    return _LayerMaskLogits.apply(embed, features, conv.weight, conv.bias, conv.padding[0], fast)
