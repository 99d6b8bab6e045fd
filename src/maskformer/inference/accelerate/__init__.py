"""CPU speed-ups for inference, behind one door: ``accelerate(model, ...)`` (read ``README.md`` in this folder).

The ``Predictor`` calls ``accelerate`` once and from then on runs ``Accelerated.model`` and asks
``Accelerated.semantic_labels`` for label maps. Where the tricks are not tested to be exact (not an x86-64 CPU, not
the CPU device, a torch release other than the tested ones, or ``MASKFORMER_ACCELERATE=0``) the door steps aside:
``model`` is the unmodified model and ``semantic_labels`` the plain post-processing (argmax of the exact scores).
``optimize=False`` keeps the unmodified model but, on a supported machine, the fused labels (bit-identical to the
argmax of the exact scores computed with the same matrix-product kernels; a different kernel, e.g. MKL's, can only
flip exact near-ties).
Either way the labels are the exact path's in fp32 up to float-rounding ties (README.md: "What exact labels covers";
``fast`` / ``bf16`` are approximations by request).

May import: ``maskformer.modeling`` (to rebuild blocks of a model copy) and ``maskformer.inference.postprocess``.
"""

from __future__ import annotations

import inspect
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from maskformer.allocator import reuse_freed_memory
from maskformer.errors import ConfigError
from maskformer.inference.postprocess import Size, panoptic_from_outputs, semantic_labels

__all__ = ["Accelerated", "accelerate", "supported"]

# torch releases (major.minor) on which the exactness tests of this folder ran (tests/test_fast_inference.py).
TESTED_TORCH = ("2.14",)


def supported(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """(True, "") where the speed-ups are tested to be exact, else (False, why). ``MASKFORMER_ACCELERATE=1`` forces
    them on for another torch release (at your own risk), ``=0`` turns them off."""
    env = os.environ.get("MASKFORMER_ACCELERATE", "")
    if env == "0":
        return False, "MASKFORMER_ACCELERATE=0"
    if torch.device(device).type != "cpu":
        return False, f"device {device} (the speed-ups are for CPUs)"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False, f"{platform.machine()} CPU (tested on x86-64 only)"
    if not torch.backends.mkldnn.is_available():
        return False, "torch without oneDNN"
    release = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    if release not in TESTED_TORCH and env != "1":
        return False, f"torch {release} (tested on {', '.join(TESTED_TORCH)}; MASKFORMER_ACCELERATE=1 forces)"
    return True, ""


def _plain_labels(
    outputs: Mapping[str, Tensor],
    image_sizes: Sequence[Size],
    output_sizes: Sequence[Size],
    *,
    input_size: Size | None = None,
    fast: bool = False,
    corner_labels: bool = False,
) -> list[Tensor]:
    del corner_labels  # an approximation of the accelerated path only
    return semantic_labels(outputs, image_sizes, output_sizes, input_size=input_size, fast=fast)


class _Autocast(nn.Module):
    """bf16 autocast around an unmodified model (the stepped-aside path of ``bf16=True``); float32 outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.pixel_mean, self.pixel_std = model.pixel_mean, model.pixel_std
        self.size_divisibility = getattr(model, "size_divisibility", 0)
        try:
            self._lean = "with_aux" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover
            self._lean = False

    def forward(self, images: Tensor, with_aux: bool = False) -> dict:
        with torch.autocast(images.device.type, dtype=torch.bfloat16):
            out = self.model(images, with_aux=with_aux) if self._lean else self.model(images)
        return {k: v.float() if isinstance(v, Tensor) else v for k, v in out.items()}


@dataclass
class Accelerated:
    """What the Predictor runs: ``model(images, with_aux=False)`` -> outputs dict,
    ``semantic_labels(outputs, image_sizes, output_sizes, input_size=, fast=, corner_labels=)`` -> label maps and
    ``panoptic(outputs, image_sizes, output_sizes, thing_ids=, object_mask_threshold=, overlap_threshold=,
    input_size=)`` -> (panoptic map, segments) per image (``postprocess.panoptic_from_outputs``'s signature)."""

    model: nn.Module
    semantic_labels: Callable[..., list[Tensor]]
    active: bool
    why_not: str = ""
    bf16: bool = False  # the forward runs in bfloat16 (its scores carry ~3 significant digits)
    panoptic: Callable[..., list] = panoptic_from_outputs


def accelerate(
    model: nn.Module, *, enabled: bool = True, bf16: bool = False, compile: bool = False, device: str = "cpu"
) -> Accelerated:
    """The one door. ``enabled=False`` (``Predictor(optimize=False)``) keeps the unmodified model; an unsupported
    machine gives the plain path (unmodified model, plain post-processing); otherwise an optimised copy of ``model``
    (``fast_model.prepare_for_inference``: FrozenBN folded, channels-last, packed oneDNN weights, optional bf16 /
    torch.compile) and the fused label post-processing (``labels.semantic_labels_from_outputs``); glibc's malloc is
    set to keep freed memory for reuse (``maskformer.allocator``, process-wide). ``model`` itself is never modified."""
    from .fast_model import FastModel, prepare_for_inference, quiet_cpp_extension
    from .labels import semantic_labels_from_outputs
    from .onednn import NO_BF16, NO_NATIVE_BF16, native_bf16
    from .panoptic import panoptic_from_outputs_in_strips

    ok, why = supported(device)
    # the fused labels are bit-identical to the argmax of the exact scores computed with the same kernels, so the
    # unmodified model (optimize=False) keeps them on a supported machine: its labels are the exact path's (and the
    # same holds for the panoptic strips)
    labels = semantic_labels_from_outputs if ok else _plain_labels
    panoptic = panoptic_from_outputs_in_strips if ok else panoptic_from_outputs
    if ok and isinstance(model, FastModel):  # already an optimised copy
        reuse_freed_memory()
        return Accelerated(model, labels, True, bf16=model.bf16, panoptic=panoptic)
    if ok and enabled and not hasattr(model, "backbone"):  # not a model of this package: keep it
        why = f"{type(model).__name__} is not a maskformer model"
    elif ok and not enabled:
        why = "optimize=False"
    elif ok and bf16 and not native_bf16():  # (optimize=False keeps torch's autocast, which emulates bf16 there)
        raise ConfigError(f"bf16: {NO_NATIVE_BF16}, where it is emulated, several times slower than fp32: {NO_BF16}")
    if not (ok and enabled) or why:
        if compile:
            quiet_cpp_extension()
            model = torch.compile(model)  # type: ignore[assignment]
        return Accelerated(_Autocast(model) if bf16 else model, labels, False, why, bf16, panoptic)
    fast = prepare_for_inference(model, bf16=bf16, compile=compile)
    reuse_freed_memory()  # no page faults on every call's large tensors (maskformer/allocator.py)
    return Accelerated(fast, semantic_labels_from_outputs, True, bf16=bf16, panoptic=panoptic)
