"""oneDNN calls for inference copies and post-processing: fp32 matrix products, convolutions with fused ReLU / add.

PyTorch's CPU ``mm``/``addmm``/``F.linear`` call MKL's sgemm. On AMD CPUs MKL does not take its AVX-512 kernels: on
this project's Zen 4 machine it reaches ~150-220 GFLOP/s on the shapes MaskFormer has (queries x channels, pixels x
queries), where oneDNN (PyTorch's convolution library, also behind ``torch.ops.mkldnn._linear_pointwise``) reaches
~400-480 (run records: ``git show 3cea04c:benchmarks/RESULTS.md``). Results differ from sgemm only by summation
order (~1e-7 relative).

``linear(x, weight, bias, relu=False)`` is ``F.linear`` (optionally followed by ReLU) on CPU fp32 when oneDNN is
available, else ``F.linear``. ``use_onednn_layers(model)`` swaps, in place, every ``nn.Linear`` for ``Linear`` and
every ``nn.MultiheadAttention`` (sequence-first, no masks: the DETR layers) for ``MultiheadAttention``, which keep
the same parameters (and a copy of the weights in oneDNN's layout, ``_Packed``).

``use_onednn_convolutions(model)`` swaps the norm-free ``ConvNorm`` layers (FrozenBN already folded) and the
GroupNorm ones (the FPN's) for ``Conv`` and the ResNet ``Bottleneck`` blocks for ``Bottleneck``: weights packed once
into oneDNN's layout (``_Packed``), and the convolution, its bias, the ReLU and the residual addition in one oneDNN
call (``torch.ops.mkldnn._convolution_pointwise``, the kernel inductor emits for the same fusion) instead of a
convolution plus one or two passes over the activation: 10-40 % faster per fused layer on memory-bound (bf16, 1x1)
layers. fp32 outputs are bit-identical on this project's machine (tests/test_fast_inference.py allows 1e-5); in bf16
the residual sum is rounded once instead of twice. The packed weights double the inference copy's weight memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import maskformer.inference.accelerate.winograd as winograd
from maskformer.modeling.backbone.resnet import Bottleneck as ResNetBottleneck
from maskformer.modeling.layers import ConvNorm

_T = TypeVar("_T")

__all__ = [
    "Bottleneck",
    "Conv",
    "Linear",
    "MultiheadAttention",
    "eager_onednn",
    "linear",
    "native_bf16",
    "use_onednn_convolutions",
    "use_onednn_layers",
]


NO_NATIVE_BF16 = "this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX)"
NO_BF16 = "run without --bf16 / bf16=True"


def native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 on this CPU's own instructions (AVX-512 with BF16, or AMX). Elsewhere (an AVX2 CPU)
    it cannot lay out bf16 weights at all, and torch's autocast emulates bf16, slower than fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch without the query
        return False


def eager_onednn(x: Tensor, weight: Tensor) -> bool:
    """True where the oneDNN calls apply: CPU, fp32/bf16 weights, oneDNN built in, eager mode, no autograd."""
    if torch.compiler.is_compiling():  # first: inductor fuses the same way, and nothing below may break its graph
        return False
    if torch.jit.is_tracing():  # (fvcore's FLOP count, ONNX export): the plain ops, which tracers know
        return False
    return (
        x.device.type == "cpu"
        and weight.dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.is_available()
        and not (x.requires_grad or weight.requires_grad)
    )


def linear(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, *, relu: bool = False, packed: _Packed | None = None
) -> Tensor:
    """``F.linear(x, weight, bias)`` (then ReLU if ``relu``): x [..., in], weight [out, in] -> [..., out].
    ``packed``: a cache for ``weight`` in oneDNN's layout (layers whose weight is reused across calls). A bfloat16
    weight (the bf16 inference copy) takes x in bfloat16 and gives bfloat16, as autocast's linear does."""
    if eager_onednn(x, weight) and (x.dtype == weight.dtype == torch.float32 or weight.dtype == torch.bfloat16):
        x = x.to(weight.dtype)
        if packed is not None:
            rows = x.numel() // max(1, x.shape[-1])
            weight = packed.get(weight, lambda: torch.ops.mkldnn._reorder_linear_weight(weight, rows))
        return torch.ops.mkldnn._linear_pointwise.default(x, weight, bias, "relu" if relu else "none", [], "")
    y = F.linear(x, weight, bias)
    return F.relu(y) if relu else y


class Linear(nn.Module):
    """An ``nn.Linear``'s parameters used through :func:`linear`. [..., in] -> [..., out]."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.weight = layer.weight
        self.bias = layer.bias
        self._packed = _Packed()

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, packed=self._packed)


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
        self._packed = (_Packed(), _Packed(), _Packed())  # q, k, v rows of in_proj_weight

    def forward(self, query: Tensor, key: Tensor, value: Tensor, need_weights: bool = False) -> tuple[Tensor, None]:
        length, batch, dim = query.shape
        heads = self.num_heads
        w, b = self.in_proj_weight, self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:dim], b[dim : 2 * dim], b[2 * dim :])
        pq, pk, pv = self._packed
        q = linear(query, w[:dim], bq, packed=pq)
        k = linear(key, w[dim : 2 * dim], bk, packed=pk)
        v = linear(value, w[2 * dim :], bv, packed=pv)

        def split(t: Tensor) -> Tensor:  # [S, B, C] -> [B, heads, S, C / heads]
            return t.reshape(t.shape[0], batch, heads, dim // heads).permute(1, 2, 0, 3)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v))  # [B, heads, L, d]
        return self.out_proj(out.permute(2, 0, 1, 3).reshape(length, batch, dim)), None


def use_onednn_layers(model: nn.Module, *, attention: bool = True) -> int:
    """Swap every ``nn.Linear`` (and, with ``attention``, every ``nn.MultiheadAttention``) of ``model`` in place (see
    module docstring); returns the number of swapped modules. Inference only: the swapped layers keep the parameters
    but not training semantics."""
    swapped = 0
    for name, child in list(model.named_children()):
        if isinstance(child, nn.MultiheadAttention):
            if attention:
                setattr(model, name, MultiheadAttention(child))
                swapped += 1
        elif isinstance(child, nn.Linear):
            setattr(model, name, Linear(child))
            swapped += 1
        else:
            swapped += use_onednn_layers(child, attention=attention)
    return swapped


class _Packed:
    """A weight reordered once into oneDNN's blocked layout (``_reorder_convolution_weight`` /
    ``_reorder_linear_weight``). A plain weight is reordered inside every oneDNN call, which reads and writes the
    whole weight and allocates a fresh buffer each time: ~1.1 of 5.6 ms for the pixel decoder's 2048 -> 256 3x3 at
    16x16, ~8 % of the decoder's linear layers; results are bit-identical. The layout is chosen for the first
    input's shape; oneDNN reorders again by itself when another shape wants a different one, so every shape stays
    correct. Rebuilt when the weight tensor changes; ``copy.deepcopy`` gives an empty cache (oneDNN tensors cannot be
    copied)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.weight: Any = None

    def __deepcopy__(self, memo: dict) -> _Packed:
        return _Packed()

    def get(self, weight: Tensor, pack: Callable[[], _T], *, always: bool = False) -> _T:
        """The packed weight; an inference tensor (made under inference_mode: no version counter to notice in-place
        changes) is used unpacked, or with ``always`` (a transform the call cannot do without) packed once."""
        if weight.is_inference() and not always:
            return weight
        version = -1 if weight.is_inference() else weight._version
        key = (weight.data_ptr(), version, weight.dtype, tuple(weight.shape))
        if self.key != key or self.weight is None:
            self.weight = pack()
            self.key = key
        return self.weight


class Conv(nn.Module):
    """A ``ConvNorm`` (conv + bias [+ norm] [+ ReLU]) with the convolution through oneDNN and a pre-packed weight
    (``_Packed``); without a norm the ReLU runs inside the same call. [B, Cin, H, W] -> [B, Cout, H', W'].
    fp32 3x3 convolutions with many channels take Winograd's F(2x2, 3x3) instead (``winograd.py``; ``winograd``
    False keeps oneDNN's direct kernel).

    Inputs are cast to the weight's dtype (what bf16 autocast does for a convolution)."""

    def __init__(self, conv: nn.Conv2d, relu: bool, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.weight, self.bias, self.relu, self.norm = conv.weight, conv.bias, relu, norm
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        if isinstance(self.padding, str):
            raise ValueError("string padding is not supported")
        self._packed = _Packed()
        self.winograd = True
        self._filters = _Packed()  # winograd.filters(weight)

    def _args(self, x: Tensor) -> tuple:
        padding, stride, dilation = list(self.padding), list(self.stride), list(self.dilation)

        def pack() -> Tensor:
            return torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, padding, stride, dilation, self.groups, list(x.shape)
            )

        return self._packed.get(self.weight, pack), self.bias, padding, stride, dilation, self.groups

    def forward(self, x: Tensor) -> Tensor:
        fused_relu = self.relu and self.norm is None
        eager = eager_onednn(x, self.weight)
        if eager and self.winograd and x.dtype == torch.float32 and self._suits_winograd():
            rows = x.shape[0] * -(-x.shape[2] // 2) * -(-x.shape[3] // 2)  # 2x2 output tiles
            u = self._filters.get(self.weight, lambda: winograd.filters(self.weight, rows), always=True)
            y = winograd.winograd_conv3x3(x, u, self.bias, relu=fused_relu)
        elif eager:
            x = x.to(self.weight.dtype)
            y = torch.ops.mkldnn._convolution_pointwise.default(
                x, *self._args(x), "relu" if fused_relu else "none", [], ""
            )
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            y = F.relu_(y) if fused_relu else y
        if self.norm is None:
            return y
        y = self.norm(y)
        return F.relu_(y) if self.relu else y

    def _suits_winograd(self) -> bool:
        return winograd.suits(self.weight, self.stride, self.padding, self.dilation, self.groups)

    def add_relu(self, x: Tensor, other: Tensor, *, inplace: bool) -> Tensor:
        """relu(conv(x) + other), written into ``other`` when ``inplace`` (norm-free convolutions only)."""
        if self.norm is not None:
            raise ValueError("add_relu needs a convolution without norm")
        if eager_onednn(x, self.weight) and other.dtype == self.weight.dtype:
            x = x.to(self.weight.dtype)
            if inplace:
                return torch.ops.mkldnn._convolution_pointwise_(other, x, *self._args(x), "add", 1.0, "relu", [], "")
            return torch.ops.mkldnn._convolution_pointwise.binary(x, other, *self._args(x), "add", 1.0, "relu", [], "")
        return F.relu_(self.forward(x).add_(other))


class Bottleneck(nn.Module):
    """Inference form of ``modeling.backbone.resnet.Bottleneck`` with folded norms: relu(conv3(...) + shortcut) in one
    oneDNN call, accumulated into the projection shortcut's fresh output. With an identity shortcut the sum goes into
    a new tensor, or into the block's input itself when ``reuse_input`` (set by ``use_onednn_convolutions`` for a block
    that follows another block in the same stage, whose output nothing else holds): oneDNN's in-place "sum" is ~4x
    faster than its "add" into a new tensor for the 64 -> 256 1x1 convolution at 1/4 resolution, and bit-identical."""

    def __init__(self, block: nn.Module, *, reuse_input: bool = False) -> None:
        super().__init__()
        self.reuse_input = reuse_input
        self.shortcut = None if block.shortcut is None else Conv(block.shortcut, relu=False)
        self.conv1 = Conv(block.conv1, relu=True)
        self.conv2 = Conv(block.conv2, relu=True)
        self.conv3 = Conv(block.conv3, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        if self.shortcut is None:
            return self.conv3.add_relu(out, x, inplace=self.reuse_input)
        return self.conv3.add_relu(out, self.shortcut(x), inplace=True)


def use_onednn_convolutions(model: nn.Module) -> int:
    """Swap, in place, ResNet bottlenecks, norm-free ``ConvNorm`` layers (whose norm was folded) and GroupNorm
    ``ConvNorm`` layers (see the module docstring). Returns the number of swapped modules; layers with another norm
    (e.g. an unfolded BatchNorm) are left alone."""

    def plain(m: nn.Module | None) -> bool:
        return m is None or (isinstance(m, ConvNorm) and m.norm is None)

    swapped = 0
    previous: nn.Module | None = None
    for name, child in list(model.named_children()):
        if isinstance(child, ResNetBottleneck) and all(
            plain(m) for m in (child.shortcut, child.conv1, child.conv2, child.conv3)
        ):
            # inside a stage (nn.Sequential) a block's input is the previous block's output and used by nobody else
            follows_block = isinstance(model, nn.Sequential) and isinstance(previous, Bottleneck)
            child = Bottleneck(child, reuse_input=follows_block)
            setattr(model, name, child)
            swapped += 1
        elif isinstance(child, ConvNorm) and (child.norm is None or isinstance(child.norm, nn.GroupNorm)):
            child = Conv(child, relu=child.relu, norm=child.norm)  # (GroupNorm: the FPN's data-dependent norm)
            setattr(model, name, child)
            swapped += 1
        else:
            swapped += use_onednn_convolutions(child)
        previous = child
    return swapped
