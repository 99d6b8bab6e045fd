"""Inference-speed helpers: an optimised copy of a trained model and a reduced-precision context.

``prepare_for_inference`` never touches the model it is given (training keeps its FrozenBN buffers and layout); it
returns a deep copy in eval mode with

- frozen normalisation folded into the preceding convolution: ``conv(x) * scale + shift`` becomes one conv with
  weight ``W * scale`` and bias ``b * scale + shift``. Exact up to float rounding (~1e-6 relative) and it removes one
  full read+write of every backbone activation;
- channels-last (NHWC) weights, so oneDNN's fastest CPU convolution kernels run without layout reorders (inputs are
  converted by ``FastModel``, outputs are returned contiguous);
- the pixel decoder's last conv folded into the mask embeddings (lean outputs of a MaskFormer only): the masks are
  ``einsum(E, conv(y, W) + b)`` for the Q mask embeddings E [Q, D] of an image, which is the single convolution
  ``conv(y, E W) + E b`` with Q instead of D output channels. At ADE20K size (D = 256, Q = 100, 3x3 over
  256 x 128 x 128) that removes 5.9 of the 48.5 GMAC of an R50 forward; the mask_features map itself is never needed
  (the transformer reads the backbone or the encoder). Exact up to float rounding (~1e-6 relative);
- fp32 only: linear layers and attention through oneDNN instead of MKL (``accelerate.onednn``; ~2x faster matrix
  products on AMD CPUs, summation order only);
- convolution + bias + ReLU (+ the bottleneck's residual addition) as one oneDNN call, conv and linear weights
  packed once into oneDNN's layout (``maskformer.inference.accelerate.onednn``; bit-identical);
- optionally ``torch.compile``.

``autocast_context(device, bf16=True)`` is bfloat16 autocast on CPU or CUDA; outputs are cast back to float32 by
``FastModel`` so post-processing is unchanged.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

import maskformer.inference.accelerate.winograd as winograd
from maskformer.errors import ConfigError
from maskformer.inference.accelerate.onednn import (
    NO_BF16,
    NO_NATIVE_BF16,
    eager_onednn,
    linear,
    native_bf16,
    use_onednn_convolutions,
    use_onednn_layers,
)
from maskformer.inference.accelerate.swin import use_fast_swin_blocks
from maskformer.modeling.backbone.norm import FrozenBatchNorm2d
from maskformer.modeling.layers import ConvNorm

__all__ = [
    "FastModel",
    "autocast_context",
    "can_fold_mask_features",
    "fold_frozen_batchnorm",
    "folded_mask_forward",
    "prepare_for_inference",
]


def _affine_of(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale [C], shift [C]) of a norm that is a fixed per-channel affine at inference, else None."""
    if isinstance(norm, FrozenBatchNorm2d) or (isinstance(norm, nn.BatchNorm2d) and not norm.training):
        if norm.running_mean is None or norm.running_var is None:
            return None  # BatchNorm without running stats normalises with batch statistics: not foldable
        weight = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
        bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
        # float64 so the folded weights carry one rounding, not three
        scale = weight.double() * (norm.running_var.double() + norm.eps).rsqrt()
        shift = bias.double() - norm.running_mean.double() * scale
        return scale, shift
    return None


@torch.no_grad()
def fold_frozen_batchnorm(model: nn.Module) -> int:
    """Fold every FrozenBN / eval-mode BatchNorm2d of a ``ConvNorm`` into its convolution, in place.

    Returns the number of folded layers. GroupNorm (pixel decoder) depends on the data and is left alone.
    """
    folded = 0
    for module in model.modules():
        if not isinstance(module, ConvNorm) or module.norm is None:
            continue
        affine = _affine_of(module.norm)
        if affine is None:
            continue
        scale, shift = affine
        dtype = module.weight.dtype
        weight = module.weight.double() * scale.view(-1, 1, 1, 1)
        bias = shift if module.bias is None else module.bias.double() * scale + shift
        module.weight.copy_(weight.to(dtype))
        module.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
        module.norm = None
        folded += 1
    return folded


def can_fold_mask_features(model: nn.Module) -> bool:
    """True for mask-classification models with an FPN-style pixel decoder (not the per-pixel baselines) and fewer
    queries than mask channels (otherwise the folded convolution would be the larger one)."""
    decoder = getattr(model, "pixel_decoder", None)
    predictor = getattr(model, "predictor", None)
    conv = getattr(decoder, "mask_features", None)
    queries = getattr(getattr(predictor, "query_embed", None), "num_embeddings", None)
    return (
        hasattr(model, "mask_parts")
        and hasattr(decoder, "forward_until_mask_features")
        and isinstance(conv, nn.Conv2d)
        and not isinstance(conv.padding, str)
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
        and hasattr(predictor, "last_layer_embeddings")
        and bool(getattr(predictor, "mask_classification", False))
        and queries is not None
        and queries < conv.out_channels
    )


# fp32 convolutions with at most 16 output channels take another oneDNN kernel, whose sums round differently; from 17
# on, the rows of a selected-query convolution equal the full one's bit for bit (tests/test_fast_inference.py)
_MIN_SELECTED = 17


def folded_mask_forward(
    model: nn.Module, images: torch.Tensor, queries: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Lean outputs {"pred_logits" [B, Q, K+1], "pred_masks" [B, Q, H/4, W/4]} of a MaskFormer with the mask_features
    conv folded into the mask embeddings (module docstring). ``images`` [B, 3, H, W] as for ``model(images)``.

    ``queries``: float32 logits [Q, K+1] of one image -> bool [Q], the queries whose masks are wanted (panoptic
    inference reads only the kept ones): only those rows (at least 17, see ``_MIN_SELECTED``) are convolved, with
    the same values as without selection; the other rows of ``pred_masks`` are zeros."""
    y, conv, embed, logits = model.mask_parts(images)  # the model's documented entry for this: [B, Q, D], [B, Q, K+1]
    masks = []
    num_queries = embed.shape[1]
    layout = torch.channels_last if y.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    for i in range(embed.shape[0]):  # per image: its own Q x C x 3 x 3 kernel
        weight = _fold_weight(embed[i], conv.weight.to(embed.dtype))
        bias = (embed[i] @ conv.bias.to(embed.dtype)[:, None])[:, 0] if conv.bias is not None else None
        rows = None if queries is None else _selected_rows(queries(logits[i].float()), _MIN_SELECTED)
        # Winograd is chosen by all Q rows, so the selected rows take the same algorithm and give the same numbers
        u = winograd.filters(weight) if _folded_winograd(y, weight, conv) else None
        if rows is None:
            masks.append(_conv(y[i : i + 1], weight, bias, conv, layout, u))
            continue
        # the folded weights are made for all queries first, so the selected rows are the same numbers
        size = [(n + 2 * p - (k - 1) - 1) // s + 1 for n, p, k, s in zip(y.shape[-2:], *_geometry(conv))]
        full = y.new_zeros(1, num_queries, *size).contiguous(memory_format=layout)
        if rows.numel():
            u_rows = None if u is None else tuple(m[rows].contiguous() for m in u)
            b_rows = None if bias is None else bias[rows]
            full[:, rows] = _conv(y[i : i + 1], weight[rows], b_rows, conv, layout, u_rows)
        masks.append(full)
    return {"pred_logits": logits, "pred_masks": torch.cat(masks)}


def _geometry(conv: nn.Conv2d) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(padding, kernel size, stride) of the mask_features convolution (numeric padding, no dilation, one group:
    ``can_fold_mask_features``)."""
    return tuple(conv.padding), tuple(conv.kernel_size), tuple(conv.stride)


def _folded_winograd(y: torch.Tensor, weight: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Whether the folded convolution (all Q rows of ``weight``) takes Winograd's F(2x2, 3x3) (``winograd.py``): fp32
    eager inference through oneDNN with at least 256 mask channels and ``MIN_FOLDED_OUT`` queries."""
    geometry = (conv.stride, conv.padding, conv.dilation, conv.groups)
    return eager_onednn(y, weight) and winograd.suits(weight, *geometry, min_out=winograd.MIN_FOLDED_OUT)


def _conv(
    y: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv: nn.Conv2d,
    layout,
    u: tuple[torch.Tensor, ...] | None = None,
) -> torch.Tensor:
    """The folded convolution of y [1, D, h, w] -> [1, rows, h', w']; by Winograd with its filters ``u`` if given."""
    if u is not None:
        return winograd.winograd_conv3x3(y, u, bias).contiguous(memory_format=layout)
    weight = weight.contiguous(memory_format=layout)
    return F.conv2d(y, weight, bias, stride=conv.stride, padding=conv.padding)


def _selected_rows(wanted: torch.Tensor, minimum: int) -> torch.Tensor | None:
    """Row indices for bool ``wanted`` [Q]: the wanted rows topped up with the first others to ``minimum`` rows;
    None when that would be all rows."""
    rows = wanted.nonzero()[:, 0]
    if rows.numel() == 0:
        return rows
    if rows.numel() < minimum:
        others = (~wanted).nonzero()[:, 0][: minimum - rows.numel()]
        rows = torch.cat([rows, others]).sort().values
    return None if rows.numel() >= wanted.numel() else rows


def _fold_weight(embed: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """einsum("qd,dckl->qckl", embed [Q, D], weight [D, C, kh, kw]) as one (oneDNN) matrix product over the weight's
    memory order; a channels-last weight gives a channels-last result without a copy."""
    d, c, kh, kw = weight.shape
    if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        flat = weight.permute(0, 2, 3, 1).reshape(d, -1)  # [D, kh * kw * C], a view
        return linear(embed, flat.t()).view(-1, kh, kw, c).permute(0, 3, 1, 2)
    return linear(embed, weight.reshape(d, -1).t()).view(-1, c, kh, kw)


class FastModel(nn.Module):
    """Wraps an inference model: converts the input to channels-last, runs it (optionally under bf16 autocast) and
    returns float32 ``pred_logits`` / ``pred_masks`` (and ``sem_logits`` for per-pixel baselines); mask maps keep
    the convolution's channels-last memory (the post-processing accepts either layout and computes the same labels).

    Keeps ``pixel_mean``, ``pixel_std``, ``size_divisibility`` of the wrapped model, so a ``Predictor`` accepts it.
    ``forward(images [B,3,H,W], with_aux=False)`` -> the wrapped model's dict (aux outputs only if asked).
    """

    def __init__(
        self, model: nn.Module, *, channels_last: bool = True, bf16: bool = False, fold_mask_features: bool = True
    ) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.bf16 = bf16
        self.fold_mask_features = fold_mask_features and can_fold_mask_features(model)
        self.size_divisibility = int(getattr(model, "size_divisibility", 0) or 0)
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone(), persistent=False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone(), persistent=False)
        self._compiled: nn.Module | None = None

    def enable_compile(self, **kwargs: object) -> FastModel:
        """Use ``torch.compile`` on the lean forward (first call per input shape pays the compilation, ~15 s for R50
        on 2 CPU cores). Inductor's ``freezing`` treats the (frozen) weights as constants, which lets it pre-pack
        them for oneDNN and fuse bias/ReLU/additions and other elementwise work. The eager copy now does the same
        itself (packed weights, fused conv+ReLU/add, ``accelerate.onednn``) and is 3-10 % faster than the compiled
        one in fp32 and about as fast in bf16 for an R50 at 512x512 on this project's 2-core machine
        (``git show 3cea04c:benchmarks/RESULTS.md``); compiling may still pay elsewhere (other CPUs, CUDA). The
        weights must not change afterwards (this is an inference copy)."""
        quiet_cpp_extension()
        self._compiled = torch.compile(self._lean, **kwargs)  # type: ignore[assignment]
        return self

    def _lean(self, images: torch.Tensor, with_aux: bool = False, mask_queries: Callable | None = None) -> dict:
        if self.fold_mask_features and not with_aux:
            return folded_mask_forward(self.model, images, mask_queries)
        return self.model(images, with_aux=with_aux)

    def forward(self, images: torch.Tensor, *, with_aux: bool = False, mask_queries: Callable | None = None) -> dict:
        """``mask_queries``: only the masks of these queries are needed (``folded_mask_forward``'s ``queries``; the
        others may come out as zeros). Used by the eager folded forward; otherwise all masks are computed."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_context(images.device, bf16=self.bf16):
            if self._compiled is None:
                out = self._lean(images, with_aux, mask_queries)
            else:  # the setting must be active whenever a (re)compilation may happen, i.e. around every call
                import torch._inductor.config as inductor_config

                with inductor_config.patch(freezing=True):
                    out = self._compiled(images, with_aux)
        return _to_float(out)


def _to_float(out: object) -> object:
    if isinstance(out, torch.Tensor):  # channels-last maps stay so (the label post-processing reads them pixel-major)
        out = out.float()
        return out if out.dim() == 4 and out.is_contiguous(memory_format=torch.channels_last) else out.contiguous()
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    if isinstance(out, list):
        return [_to_float(v) for v in out]
    return out


def quiet_cpp_extension() -> None:
    """Import ``torch.utils.cpp_extension`` (inductor does, at the first compiled call) without its warning "No CUDA
    runtime is found, using CUDA_HOME=..." on a CPU-only machine with a CUDA folder: not a problem of the user's."""
    import logging

    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import torch.utils.cpp_extension  # noqa: F401
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def autocast_context(device: torch.device | str, *, bf16: bool) -> Iterator[None]:
    """bfloat16 autocast on ``device`` (CPU or CUDA) when ``bf16``, else a no-op."""
    if not bf16:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        yield


def _optimized_copy(model: nn.Module, *, channels_last: bool, fold_frozen_bn: bool, bf16: bool) -> nn.Module:
    fast = copy.deepcopy(model).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    if fold_frozen_bn:
        fold_frozen_batchnorm(fast)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    if bf16:  # store conv/linear weights in bf16 once, instead of autocast converting them on every call
        for module in fast.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.to(torch.bfloat16)
    # linear layers (fp32: and the DETR decoder's attention) through oneDNN with packed weights (maskformer.inference
    # .accelerate.onednn); in bf16 nn.MultiheadAttention stays as it is (its fp32 parts keep the labels closer)
    use_onednn_layers(fast, attention=not bf16)
    if channels_last:  # conv + bias + ReLU (+ residual add) in one oneDNN call (maskformer.inference.accelerate.onednn)
        use_onednn_convolutions(fast)
    use_fast_swin_blocks(fast)  # Swin backbones: window gathers, SDPA, fused projections (accelerate.swin)
    return fast


def prepare_for_inference(
    model: nn.Module,
    *,
    channels_last: bool = True,
    fold_frozen_bn: bool = True,
    bf16: bool = False,
    compile: bool = False,
    fold_mask_features: bool = True,
) -> FastModel:
    """An optimised eval-mode copy of ``model`` (the argument is not modified). See the module docstring.

    The copy's outputs equal the original's to float rounding in fp32 (tests/test_fast_inference.py); with ``bf16``
    they are bfloat16 autocast results (≈ 3 significant digits) cast back to float32.
    """
    if bf16 and not native_bf16():
        raise ConfigError(f"bf16: {NO_NATIVE_BF16}, which the optimised bf16 copy needs: {NO_BF16}")
    # normal tensors even when called under inference_mode: inference tensors have no version counter, which the
    # packed oneDNN weights need to notice in-place changes (onednn._Packed)
    with torch.inference_mode(False):
        fast = _optimized_copy(model, channels_last=channels_last, fold_frozen_bn=fold_frozen_bn, bf16=bf16)
    wrapped = FastModel(fast, channels_last=channels_last, bf16=bf16, fold_mask_features=fold_mask_features).eval()
    if compile:
        wrapped.enable_compile()
    return wrapped
