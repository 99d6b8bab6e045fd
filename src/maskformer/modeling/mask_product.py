"""Mask logits of every decoder layer, ``einsum("lbqc,bchw->lbqhw")``, with a backward that skips zero gradient rows.

A set loss supervises only the queries matched to a target (about a tenth of them), so the gradient reaching the mask
logits is zero on every other (layer, image, query) row. The einsum's own backward multiplies those zero rows anyway:
two dense [B, L*Q, H*W] x [H*W, C] products (~20 GFLOP at 6 x 100 queries, 128 x 128, C = 256, twice the forward),
after stacking the per-layer gradients and permuting them into one contiguous buffer. This backward finds the rows
that are not all zero (one read of each layer's gradient), gathers them and multiplies only those. Rows of zeros
contribute exact zeros, so the gradients are the dense ones up to float rounding (summation order).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["layer_mask_logits"]


def _nonzero_rows(grad: Tensor) -> Tensor:
    """Indices of the rows of grad [R, P] holding a non-zero (or NaN) entry: one pass, no [R, P] temporary."""
    low, high = torch.aminmax(grad, dim=-1)
    return ((low != 0) | (high != 0)).nonzero()[:, 0]


class _LayerMaskLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, embed: Tensor, features: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        layers, batch, queries, channels = embed.shape
        _, _, height, width = features.shape
        # [B, L*Q, C] @ [B, C, H*W] (a view for NCHW and for channels-last features), as the einsum computes it
        product = torch.bmm(
            embed.permute(1, 0, 2, 3).reshape(batch, layers * queries, channels),
            features.reshape(batch, channels, height * width),
        )
        ctx.save_for_backward(embed, features)
        ctx.set_materialize_grads(False)
        return product.view(batch, layers, queries, height, width).unbind(1)

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        embed, features = ctx.saved_tensors
        layers, batch, queries, channels = embed.shape
        _, _, height, width = features.shape
        pixels = height * width
        channels_last = features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()
        grad_embed = torch.zeros_like(embed, memory_format=torch.contiguous_format)
        # channels-last features get a channels-last gradient ([B, H*W, C] memory), others a contiguous one
        grad_features = (
            embed.new_zeros(batch, pixels, channels) if channels_last else embed.new_zeros(batch, channels, pixels)
        )
        flat_features = features.reshape(batch, channels, pixels)
        for b in range(batch):
            picked: list[tuple[int, Tensor, Tensor]] = []
            for layer, grad in enumerate(grads):
                if grad is None:
                    continue
                rows = grad[b].reshape(queries, pixels)
                index = _nonzero_rows(rows)
                if index.numel():
                    picked.append((layer, index, rows[index]))
            if not picked:
                continue
            grad_rows = torch.cat([rows for _, _, rows in picked])  # [n, H*W]
            embed_rows = torch.cat([embed[layer, b, index] for layer, index, _ in picked])  # [n, C]
            embed_grad_rows = grad_rows @ flat_features[b].T  # [n, C]
            start = 0
            for layer, index, _ in picked:
                grad_embed[layer, b, index] = embed_grad_rows[start : start + len(index)]
                start += len(index)
            if channels_last:
                torch.mm(grad_rows.T, embed_rows, out=grad_features[b])
            else:
                torch.mm(embed_rows.T, grad_rows, out=grad_features[b])
        if channels_last:
            grad_features = grad_features.view(batch, height, width, channels).permute(0, 3, 1, 2)
        else:
            grad_features = grad_features.view(batch, channels, height, width)
        return (grad_embed if ctx.needs_input_grad[0] else None, grad_features if ctx.needs_input_grad[1] else None)


def layer_mask_logits(embed: Tensor, features: Tensor) -> tuple[Tensor, ...]:
    """Mask logits per decoder layer.

    Args:
        embed: [L, B, Q, C] mask embeddings of every layer.
        features: [B, C, H, W] per-pixel embeddings (any memory format).

    Returns:
        L tensors [B, Q, H, W], equal to ``torch.einsum("lbqc,bchw->lbqhw", embed, features).unbind(0)``. With autograd
        the gradient rows that are all zero (unsupervised queries) are skipped in backward.
    """
    if not torch.is_grad_enabled() or not (embed.requires_grad or features.requires_grad):
        return torch.einsum("lbqc,bchw->lbqhw", embed, features).unbind(0)
    device = features.device.type
    if torch.is_autocast_enabled(device):  # the product in the autocast dtype, as einsum's bmm would run it
        dtype = torch.get_autocast_dtype(device)
        embed, features = embed.to(dtype), features.to(dtype)
    elif embed.dtype != features.dtype:
        raise TypeError(f"embed ({embed.dtype}) and features ({features.dtype}) need one dtype")
    return _LayerMaskLogits.apply(embed, features)
