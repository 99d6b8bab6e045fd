"""fp32 matrix products through oneDNN instead of the default CPU BLAS (inference copies and post-processing only).

PyTorch's CPU ``mm``/``addmm``/``F.linear`` call MKL's sgemm. On AMD CPUs MKL does not take its AVX-512 kernels: on
this project's Zen 4 machine it reaches ~150-220 GFLOP/s on the shapes MaskFormer has (queries x channels, pixels x
queries), where oneDNN (PyTorch's convolution library, also behind ``torch.ops.mkldnn._linear_pointwise``) reaches
~400-480 (``benchmarks/RESULTS.md``). Results differ from sgemm only by summation order (~1e-7 relative).

``linear(x, weight, bias, relu=False)`` is ``F.linear`` (optionally followed by ReLU) on CPU fp32 when oneDNN is
available, else ``F.linear``. ``use_onednn_layers(model)`` swaps, in place, every ``nn.Linear`` for ``Linear`` and
every ``nn.MultiheadAttention`` (sequence-first, no masks: the DETR layers) for ``MultiheadAttention``, which keep
the same parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Linear", "MultiheadAttention", "linear", "onednn_applies", "use_onednn_layers"]


def onednn_applies(x: Tensor) -> bool:
    """True where the oneDNN product is used: fp32 CPU tensors with oneDNN built in."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, relu: bool = False) -> Tensor:
    """``F.linear(x, weight, bias)`` (then ReLU if ``relu``): x [..., in], weight [out, in] -> [..., out]."""
    eager = not torch.compiler.is_compiling()  # (inductor maps F.linear to oneDNN itself, with packed weights)
    if eager and onednn_applies(x) and weight.dtype == torch.float32 and not (x.requires_grad or weight.requires_grad):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")
    y = F.linear(x, weight, bias)
    return F.relu(y) if relu else y


class Linear(nn.Module):
    """An ``nn.Linear``'s parameters used through :func:`linear`. [..., in] -> [..., out]."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.weight = layer.weight
        self.bias = layer.bias

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


class MultiheadAttention(nn.Module):
    """Inference form of a sequence-first ``nn.MultiheadAttention`` without masks or dropout, projections through
    :func:`linear` and ``F.scaled_dot_product_attention``. query [L, B, C], key/value [S, B, C] -> ([L, B, C], None).
    """

    def __init__(self, attn: nn.MultiheadAttention) -> None:
        super().__init__()
        if attn.batch_first or not attn._qkv_same_embed_dim or attn.bias_k is not None:
            raise ValueError("only sequence-first attention with one packed in_proj and no bias_k/bias_v is supported")
        self.num_heads = attn.num_heads
        self.in_proj_weight = attn.in_proj_weight
        self.in_proj_bias = attn.in_proj_bias
        self.out_proj = Linear(attn.out_proj)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, need_weights: bool = False) -> tuple[Tensor, None]:
        length, batch, dim = query.shape
        heads = self.num_heads
        w, b = self.in_proj_weight, self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:dim], b[dim : 2 * dim], b[2 * dim :])
        q = linear(query, w[:dim], bq)
        k = linear(key, w[dim : 2 * dim], bk)
        v = linear(value, w[2 * dim :], bv)

        def split(t: Tensor) -> Tensor:  # [S, B, C] -> [B, heads, S, C / heads]
            return t.reshape(t.shape[0], batch, heads, dim // heads).permute(1, 2, 0, 3)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v))  # [B, heads, L, d]
        return self.out_proj(out.permute(2, 0, 1, 3).reshape(length, batch, dim)), None


def use_onednn_layers(model: nn.Module) -> int:
    """Swap every ``nn.Linear`` / ``nn.MultiheadAttention`` of ``model`` in place (see module docstring); returns the
    number of swapped modules. Inference only: the swapped layers keep the parameters but not training semantics."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(parent, name, MultiheadAttention(child))
                swapped += 1
            elif isinstance(child, nn.Linear):
                setattr(parent, name, Linear(child))
                swapped += 1
    return swapped
