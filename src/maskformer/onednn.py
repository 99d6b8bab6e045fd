"""oneDNN calls for inference copies and post-processing: fp32 matrix products, convolutions with fused ReLU / add.

PyTorch's CPU ``mm``/``addmm``/``F.linear`` call MKL's sgemm. On AMD CPUs MKL does not take its AVX-512 kernels: on
this project's Zen 4 machine it reaches ~150-220 GFLOP/s on the shapes MaskFormer has (queries x channels, pixels x
queries), where oneDNN (PyTorch's convolution library, also behind ``torch.ops.mkldnn._linear_pointwise``) reaches
~400-480 (``benchmarks/RESULTS.md``). Results differ from sgemm only by summation order (~1e-7 relative).

``linear(x, weight, bias, relu=False)`` is ``F.linear`` (optionally followed by ReLU) on CPU fp32 when oneDNN is
available, else ``F.linear``. ``use_onednn_layers(model)`` swaps, in place, every ``nn.Linear`` for ``Linear`` and
every ``nn.MultiheadAttention`` (sequence-first, no masks: the DETR layers) for ``MultiheadAttention``, which keep
the same parameters.

``use_onednn_convolutions(model)`` swaps the norm-free ``ConvNorm`` layers (FrozenBN already folded) for ``Conv`` and
the ResNet ``Bottleneck`` blocks for ``Bottleneck``: the convolution, its bias, the ReLU and the residual addition in
one oneDNN call (``torch.ops.mkldnn._convolution_pointwise``, the kernel inductor emits for the same fusion) instead
of a convolution plus one or two passes over the activation: 10-40 % faster per fused layer on memory-bound (bf16,
1x1) layers. fp32 outputs are bit-identical on this project's machine (tests/test_fast_inference.py allows 1e-5);
in bf16 the residual sum is rounded once instead of twice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskformer.modeling.backbone.resnet import Bottleneck as ResNetBottleneck
from maskformer.modeling.layers import ConvNorm

__all__ = [
    "Bottleneck",
    "Conv",
    "Linear",
    "MultiheadAttention",
    "linear",
    "use_onednn_convolutions",
    "use_onednn_layers",
]


def _eager_onednn(x: Tensor, weight: Tensor) -> bool:
    """True where the oneDNN calls apply: CPU, fp32/bf16 weights, oneDNN built in, eager mode, no autograd."""
    if torch.compiler.is_compiling():  # first: inductor fuses the same way, and nothing below may break its graph
        return False
    return (
        x.device.type == "cpu"
        and weight.dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.is_available()
        and not (x.requires_grad or weight.requires_grad)
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, relu: bool = False) -> Tensor:
    """``F.linear(x, weight, bias)`` (then ReLU if ``relu``): x [..., in], weight [out, in] -> [..., out]."""
    if _eager_onednn(x, weight) and x.dtype == weight.dtype == torch.float32:
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
    for name, child in list(model.named_children()):
        if isinstance(child, nn.MultiheadAttention):
            setattr(model, name, MultiheadAttention(child))
            swapped += 1
        elif isinstance(child, nn.Linear):
            setattr(model, name, Linear(child))
            swapped += 1
        else:
            swapped += use_onednn_layers(child)
    return swapped


class Conv(nn.Module):
    """A norm-free ``ConvNorm`` (conv + bias [+ ReLU]) through one oneDNN call. [B, Cin, H, W] -> [B, Cout, H', W'].

    Inputs are cast to the weight's dtype (what bf16 autocast does for a convolution)."""

    def __init__(self, conv: nn.Conv2d, relu: bool) -> None:
        super().__init__()
        self.weight, self.bias, self.relu = conv.weight, conv.bias, relu
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        if isinstance(self.padding, str):
            raise ValueError("string padding is not supported")

    def _args(self) -> tuple:
        return self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups

    def forward(self, x: Tensor) -> Tensor:
        if _eager_onednn(x, self.weight):
            x = x.to(self.weight.dtype)
            return torch.ops.mkldnn._convolution_pointwise(x, *self._args(), "relu" if self.relu else "none", [], "")
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return F.relu_(y) if self.relu else y

    def add_relu(self, x: Tensor, other: Tensor, *, inplace: bool) -> Tensor:
        """relu(conv(x) + other), written into ``other`` when ``inplace``."""
        if _eager_onednn(x, self.weight) and other.dtype == self.weight.dtype:
            x = x.to(self.weight.dtype)
            if inplace:
                return torch.ops.mkldnn._convolution_pointwise_(other, x, *self._args(), "add", 1.0, "relu", [], "")
            return torch.ops.mkldnn._convolution_pointwise(x, other, *self._args(), "add", 1.0, "relu", [], "")
        return F.relu_(self.forward(x).add_(other))


class Bottleneck(nn.Module):
    """Inference form of ``modeling.backbone.resnet.Bottleneck`` with folded norms: relu(conv3(...) + shortcut) in one
    oneDNN call, accumulated into the projection shortcut's fresh output (or a new tensor for the identity)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.shortcut = None if block.shortcut is None else Conv(block.shortcut, relu=False)
        self.conv1 = Conv(block.conv1, relu=True)
        self.conv2 = Conv(block.conv2, relu=True)
        self.conv3 = Conv(block.conv3, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        if self.shortcut is None:
            return self.conv3.add_relu(out, x, inplace=False)
        return self.conv3.add_relu(out, self.shortcut(x), inplace=True)


def use_onednn_convolutions(model: nn.Module) -> int:
    """Swap, in place, ResNet bottlenecks and norm-free ``ConvNorm`` layers whose norm was folded (see the module
    docstring). Returns the number of swapped modules; layers that still have a norm are left alone."""

    def plain(m: nn.Module | None) -> bool:
        return m is None or (isinstance(m, ConvNorm) and m.norm is None)

    swapped = 0
    for name, child in list(model.named_children()):
        if isinstance(child, ResNetBottleneck) and all(
            plain(m) for m in (child.shortcut, child.conv1, child.conv2, child.conv3)
        ):
            setattr(model, name, Bottleneck(child))
            swapped += 1
        elif isinstance(child, ConvNorm) and child.norm is None:
            setattr(model, name, Conv(child, relu=child.relu))
            swapped += 1
        else:
            swapped += use_onednn_convolutions(child)
    return swapped
