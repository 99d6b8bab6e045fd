"""Parameter and FLOP counts with the conventions of the original's ``tools/analyze_model.py``.

FLOPs follow fvcore (one multiply-add = one flop) with detectron2's list of ignored element-wise ops, over the whole
semantic inference graph: normalize, pad, model, mask upsampling, semantic einsum, crop and resize.
"""

from __future__ import annotations

import warnings
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

# detectron2's FlopCountAnalysis silences these (element-wise / cheap ops are not counted)
D2_IGNORED_OPS = (
    "aten::add", "aten::add_", "aten::argmax", "aten::argsort", "aten::batch_norm", "aten::constant_pad_nd",
    "aten::div", "aten::div_", "aten::exp", "aten::log2", "aten::max_pool2d", "aten::meshgrid", "aten::mul",
    "aten::mul_", "aten::neg", "aten::nonzero_numpy", "aten::reciprocal", "aten::repeat_interleave", "aten::rsub",
    "aten::sigmoid", "aten::sigmoid_", "aten::softmax", "aten::sort", "aten::sqrt", "aten::sub", "torchvision::nms",
)  # fmt: skip


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"total": n, "<top-level child>": n, ...}``; buffers (e.g. FrozenBN statistics) are not parameters."""
    out = {"total": sum(p.numel() for p in model.parameters())}
    for name, child in model.named_children():
        out[name] = sum(p.numel() for p in child.parameters())
    return out


class SemanticInferenceGraph(nn.Module):
    """What the original runs at test time for one image, as one traceable module.

    ``image [3,H,W]`` (0..255) -> semantic scores ``[K,H,W]``. ``lean=True`` skips the five auxiliary heads.
    """

    def __init__(self, model: nn.Module, *, lean: bool = False) -> None:
        super().__init__()
        self.model = model
        self.lean = lean

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        m = self.model
        h, w = image.shape[-2:]
        x = (image - m.pixel_mean.view(3, 1, 1)) / m.pixel_std.view(3, 1, 1)
        d = m.size_divisibility
        if d > 0:
            x = F.pad(x, (0, (-w) % d, 0, (-h) % d))
        out = m(x[None], with_aux=not self.lean)
        if "sem_logits" in out:  # per-pixel baselines
            logits = F.interpolate(out["sem_logits"], size=x.shape[-2:], mode="bilinear", align_corners=False)
            return F.interpolate(logits[:, :, :h, :w], size=(h, w), mode="bilinear", align_corners=False)[0]
        masks = F.interpolate(out["pred_masks"], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
        probs = out["pred_logits"][0].softmax(-1)[:, :-1]
        scores = torch.einsum("qc,qhw->chw", probs, masks.sigmoid())
        return F.interpolate(scores[None, :, :h, :w], size=(h, w), mode="bilinear", align_corners=False)[0]


def _sdpa_flops(inputs: list, outputs: list) -> int:
    # fvcore has no handle for fused attention: count it as the two batched matmuls it replaces
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    batch = 1
    for s in q[:-2]:
        batch *= s
    return 2 * batch * q[-2] * k[-2] * q[-1]


def count_flops(model: nn.Module, *, height: int, width: int, lean: bool = False) -> tuple[int, dict[str, int]]:
    """Total FLOPs of the semantic inference graph on a zero image of the given size, and a per-operator breakdown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import-time torch.jit deprecation notice
        from fvcore.nn import FlopCountAnalysis

    graph = SemanticInferenceGraph(model, lean=lean).eval()
    image = torch.zeros(3, height, width)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(graph, (image,))
        analysis.set_op_handle(**{op: None for op in D2_IGNORED_OPS})
        analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flops)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        total = int(analysis.total())
        by_op = Counter({k: int(v) for k, v in analysis.by_operator().items()})
    return total, dict(by_op)


class _Call(nn.Module):
    def __init__(self, model: nn.Module, fn) -> None:
        super().__init__()
        self.model = model  # registered, so tracing sees its parameters as parameters
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fn(self.model, x)
        if not isinstance(out, dict):
            return out
        return out["pred_masks"] if "pred_masks" in out else out["sem_logits"]  # (a per-pixel baseline's scores)


def count_forward_flops(model: nn.Module, fn, images: torch.Tensor) -> int:
    """fvcore FLOPs (1 per multiply-add, detectron2's ignore list) of ``fn(model, images)`` alone: a network forward
    without normalisation, padding or post-processing, e.g. ``lambda m, x: m(x, with_aux=False)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        with torch.no_grad():
            analysis = FlopCountAnalysis(_Call(model, fn).eval(), (images,))
            analysis.set_op_handle(**{op: None for op in D2_IGNORED_OPS})
            analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flops)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            return int(analysis.total())
