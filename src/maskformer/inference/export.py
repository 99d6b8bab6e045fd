"""ONNX export of the lean inference model and its verification with onnxruntime.

The exported graph is ``images [1, 3, H, W]`` (normalised, padded to the model's size divisibility) ->
``pred_logits [1, Q, K+1]``, ``pred_masks [1, Q, H/4, W/4]``: the ``with_aux=False`` forward with FrozenBN folded
into the convolutions (accelerate.fast_model).
Normalisation, padding and post-processing stay outside, as in ``Predictor``.

Shapes: H and W are exported as dynamic axes (multiples of 32) through torch.export, for ResNet and Swin backbones
(size arithmetic in the model avoids negative operands of ``%`` and ``//``: ONNX truncates where Python floors). If a
model's size logic prevents a dynamic export, or the dynamic graph does not run in onnxruntime at the export size and
at a second one, the graph is exported for the given size only and ``ExportReport.dynamic`` says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maskformer.errors import UserError, is_interrupt, raise_if_terminated
from maskformer.fileio import atomic_path
from maskformer.inference.accelerate.fast_model import fold_frozen_batchnorm

__all__ = ["ExportReport", "LeanInference", "export_onnx", "graph_info", "verify_onnx"]


class LeanInference(nn.Module):
    """``forward(images [B,3,H,W]) -> (pred_logits [B,Q,K+1], pred_masks [B,Q,H/4,W/4])`` (no auxiliary heads)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images, with_aux=False)
        return out["pred_logits"], out["pred_masks"]


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote: the file, the opset, whether H/W are dynamic, and the verification result
    (max |onnxruntime - PyTorch| per output at the export size, float32)."""

    path: Path
    opset: int
    dynamic: bool
    max_abs_diff: dict[str, float]


def _lean_copy(model: nn.Module) -> LeanInference:
    import copy

    lean = copy.deepcopy(model).eval().float()
    for p in lean.parameters():
        p.requires_grad_(False)
    fold_frozen_batchnorm(lean)
    return LeanInference(lean).eval()


# onnxscript's graph optimiser warns once per Split it cannot fold; torch logs a guard's traceback at ERROR level when
# a dynamic export fails, which export_onnx answers with a static one
_QUIET = {"onnxscript": logging.ERROR, "torch._guards": logging.CRITICAL, "torch.fx.experimental.symbolic_shapes":
          logging.CRITICAL, "torch._dynamo": logging.CRITICAL, "torch.export": logging.CRITICAL}  # fmt: skip


def _export(lean: LeanInference, example: torch.Tensor, path: Path, opset: int, dynamic: bool) -> int:
    """Write the graph; returns the opset the file declares (torch keeps 18 when asked for less)."""
    shapes = None
    if dynamic:
        # multiples of 32: the stride-32 features and the 4x mask resolution stay integral; traced at 64 or more
        # (torch specialises a dimension of size 1 and then refuses it as dynamic)
        h, w = torch.export.Dim("h32", min=1, max=128), torch.export.Dim("w32", min=1, max=128)
        shapes = {"images": {2: 32 * h, 3: 32 * w}}
        example = torch.zeros(1, 3, max(64, example.shape[2]), max(64, example.shape[3]))
    loggers = {name: logging.getLogger(name) for name in _QUIET}
    levels = {name: logger.level for name, logger in loggers.items()}
    for name, logger in loggers.items():
        logger.setLevel(_QUIET[name])
    try:
        program = _onnx_export(lean, example, opset, shapes)
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
    program.model.metadata_props.update(graph_info(lean.model))
    if dynamic:
        _name_dimensions(program.model.graph)
    program.save(str(path))
    return int(program.model.opset_imports.get("", opset))


def _name_dimensions(graph) -> None:
    """Name the dynamic sizes of the inputs and outputs for a reader of the graph ("height", "width"; the masks
    "height/4", "width/4"), instead of the exporter's symbols ("32*h32", "8*s39")."""
    import onnx_ir as ir

    names = {"images": ("height", "width"), "pred_masks": ("height/4", "width/4")}
    for value in [*graph.inputs, *graph.outputs]:
        if value.name in names and value.shape is not None and len(value.shape) == 4:
            value.shape = ir.Shape([*value.shape[:2], *(ir.SymbolicDim(n) for n in names[value.name])])


def graph_info(model: nn.Module) -> dict[str, str]:
    """What a user of the graph needs besides it, stored in the ONNX file's metadata (onnxruntime:
    ``session.get_modelmeta().custom_metadata_map``), all strings: ``pixel_mean`` / ``pixel_std`` (JSON, RGB on the
    0..255 scale), ``size_divisibility`` (the multiple to pad the input to: the model's, at least 32), ``classes``
    (JSON names in the logits' order, the last logit being "no object"; empty for a model without its config) and
    the ``Predictor``'s test resize (``test_min_size``: the shorter side, ``test_max_size``: the longer side's cap; 0
    without a config). docs/onnx.md shows their use."""
    import json

    cfg = getattr(model, "cfg", None)
    meta = getattr(model, "class_meta", None)
    generic = [f"class {i}" for i in range(cfg.model.num_classes)] if cfg is not None else []  # (the Predictor's)
    names = list(meta.classes) if meta is not None else generic
    return {
        "pixel_mean": json.dumps([round(float(v), 6) for v in model.pixel_mean]),
        "pixel_std": json.dumps([round(float(v), 6) for v in model.pixel_std]),
        # the multiple the graph takes: traced on multiples of 32 also for a model that pads nothing (the COCO-panoptic
        # configs' size_divisibility 0), whose Predictor then differs near the bottom and right edges
        "size_divisibility": str(max(32, int(getattr(model, "size_divisibility", 0) or 0))),
        "classes": json.dumps(names, ensure_ascii=False),
        "test_min_size": str(cfg.test.min_size if cfg is not None else 0),
        "test_max_size": str(cfg.test.max_size if cfg is not None else 0),
    }


def _onnx_export(lean: LeanInference, example: torch.Tensor, opset: int, shapes: dict | None):
    return torch.onnx.export(
        lean,
        (example,),
        input_names=["images"],
        output_names=["pred_logits", "pred_masks"],
        opset_version=opset,
        dynamo=True,
        verbose=False,  # torch.onnx's own progress lines would interleave with ours
        dynamic_shapes=shapes,
        external_data=False,
    )


def export_onnx(
    model: nn.Module,
    output: str | os.PathLike,
    *,
    height: int = 512,
    width: int = 512,
    opset: int = 18,
    dynamic: bool = True,
    verify: bool = True,
    seed: int = 0,
    tolerance: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export ``model`` (a MaskFormer) to ``output`` atomically (temporary file in the same folder, then rename).

    Falls back to a static-shape export when the dynamic one fails (tracing, or with ``verify`` onnxruntime at the
    export size or at (height + 32, width + 64)). With ``verify`` the file is run with
    onnxruntime on a seeded random input of (height, width) and compared with the PyTorch lean forward; with a
    ``tolerance`` a larger max |difference| (divided by max(1, max |output|) per output: float32 rounding grows with
    the values, as in the large activations of random weights) is a ``UserError`` and no file is written.
    ``progress`` is told each step as it starts (tracing takes minutes on a small CPU).
    """
    say = progress or (lambda step: None)
    if height % 32 or width % 32:
        raise ValueError(f"export size must be a multiple of 32, got {height}x{width}")
    output = Path(output)  # (atomic_path makes the missing folders, and removes them again when the export fails)
    lean = _lean_copy(model)
    example = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
    with atomic_path(output, suffix=".onnx") as tmp:
        diffs: dict[str, tuple[float, float]] = {}
        shapes = "any height and width (multiples of 32)" if dynamic else f"{height}x{width}"
        say(f"tracing the model for inputs of {shapes} (torch.export; this takes minutes on a small CPU)")
        try:
            written = _export(lean, example, tmp, opset, dynamic)
            if dynamic and verify:  # the dynamic graph must run at the export size and at another one (a Swin
                # graph once kept a trace-time window count and failed in onnxruntime at every size)
                say("running the graph with onnxruntime at two sizes")
                diffs = _differences(tmp, model, example)
                other = torch.randn(1, 3, height + 32, width + 64, generator=torch.Generator().manual_seed(seed + 1))
                verify_onnx(tmp, model, other)
        except Exception as e:  # noqa: BLE001 - any tracing or dynamic-graph failure means: shapes must be static
            if not dynamic or is_interrupt(e):  # (a Ctrl-C torch wrapped in its own error while tracing)
                raise
            raise_if_terminated()  # (a Ctrl-C or SIGTERM whose KeyboardInterrupt the tracer swallowed)
            dynamic, diffs = False, {}
            say(f"the graph of any size failed: tracing one for {height}x{width} inputs")
            written = _export(lean, example, tmp, opset, dynamic)
        if verify and not diffs:
            say("comparing onnxruntime with PyTorch")
            try:
                diffs = _differences(tmp, model, example)
            except Exception as e:  # noqa: BLE001 - onnxruntime's errors (e.g. an opset it does not know)
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                first = first.replace(str(tmp), output.name)  # (the temporary file's name means nothing to the user)
                hint = f"; opset {opset} may be newer than this onnxruntime runs: try --opset 18" if opset > 18 else ""
                raise UserError(
                    f"{output}: not written: onnxruntime cannot run the graph ({first[:200]}){hint}"
                ) from None
        worst = max((diff / scale for diff, scale in diffs.values()), default=0.0)
        if tolerance is not None and worst > tolerance:
            raise UserError(f"{output}: not written: onnxruntime differs from PyTorch by {worst:.2e} > {tolerance} "
                            "(of the outputs' range; a model whose outputs are sensitive to rounding can need more: "
                            "--tolerance sets the bound)")  # fmt: skip
    return ExportReport(path=output, opset=written, dynamic=dynamic, max_abs_diff={k: d for k, (d, _) in diffs.items()})


def verify_onnx(path: str | os.PathLike, model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Max |onnxruntime - PyTorch| of ``pred_logits`` and ``pred_masks`` for ``images [1,3,H,W]`` (the PyTorch side is
    ``model(images, with_aux=False)`` in eval mode, unfolded)."""
    return {name: diff for name, (diff, _) in _differences(path, model, images).items()}


def _differences(path: str | os.PathLike, model: nn.Module, images: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Per output: (max |onnxruntime - PyTorch|, max(1, max |PyTorch|)), the scale float32 rounding grows with."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failing run raises with its message; no second copy in onnxruntime's log
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(["pred_logits", "pred_masks"], {"images": images.numpy().astype(np.float32)})
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        ref = model(images, with_aux=False)
    model.train(was_training)
    return {
        name: (float(np.abs(g - ref[name].numpy()).max()), max(1.0, float(ref[name].abs().max())))
        for name, g in zip(("pred_logits", "pred_masks"), got)
    }
