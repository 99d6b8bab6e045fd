"""Predictor: the one path of an image through a model, used by ``maskformer predict``, ``eval``, ``serve`` and Python.

load (path, numpy, PIL, tensor) -> test resize (``preprocess``) -> normalise + pad -> model (the optimised copy from
``accelerate`` by default, the unmodified one with ``optimize=False``) -> semantic labels / panoptic segments at the
original size (``postprocess``). Two tiers, as Segment Anything's predictor: ``__call__`` takes images as users have
them; ``predict_resized`` takes images the data loader already test-resized (what ``maskformer eval`` uses), so
evaluation measures exactly what prediction produces.
"""

from __future__ import annotations

import inspect
import operator
import os
from collections.abc import Callable, Collection, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from maskformer.errors import ConfigError
from maskformer.inference.accelerate import accelerate
from maskformer.inference.device import check_device
from maskformer.inference.modes import eval_mode
from maskformer.inference.postprocess import Size, panoptic_keep, semantic_from_outputs, semantic_labels
from maskformer.inference.preprocess import (
    ImageInput,
    load_image,
    normalize_and_pad,
    resize_image,
    resize_shortest_edge_size,
)
from maskformer.inference.settings import PANOPTIC_TTA, TASKS, predictor_settings
from maskformer.inference.tta import semantic_tta

__all__ = ["PANOPTIC_TTA", "Predictor"]


class Predictor:
    """Run a MaskFormer (or per-pixel baseline) model on images.

    Every setting defaults to the model's own config (``model.cfg``, attached by ``build_model`` and the checkpoint
    loader) and class table (``model.class_meta``); pass a keyword to override it.

    Args:
        model: outputs dict from ``model(images)`` for normalised, padded images [B, 3, H, W]; has ``pixel_mean``,
            ``pixel_std`` (0-255 RGB scale) and ``size_divisibility``.
        min_size, max_size: test resize (short side, cap on the long side); config ``test.min_size/max_size``.
        task_default: "semantic" or "panoptic" (default: panoptic when the config turns panoptic inference on).
        meta: class table (``classes``, ``colors``, ``isthing`` lists); default ``model.class_meta`` or generic names.
        thing_ids: contiguous ids of thing classes (default: from ``meta``).
        object_mask_threshold, overlap_threshold: panoptic thresholds (config ``inference.*``).
        fast: approximate semantic labels (block corner labels / masks combined at 1/4 resolution); ``test.fast``.
        tta: multi-scale + flip test-time augmentation for semantic labels (config ``test.tta*``).
        optimize: run the optimised copy (``inference.accelerate``; fp32 labels differ only at float-rounding ties),
            made when the Predictor is built: later changes to the model's weights need a new Predictor.
            False: the unmodified model, as it is at each call. Either way the model's training mode is left as it
            was (each forward runs in eval mode).
        bf16: bfloat16 autocast forward (labels from block corners unless ``corner_labels=False``).
        compile: torch.compile the forward.
        device: where the model and images go.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        min_size: int | None = None,
        max_size: int | None = None,
        task_default: str | None = None,
        meta: object | None = None,
        thing_ids: Collection[int] | None = None,
        object_mask_threshold: float | None = None,
        overlap_threshold: float | None = None,
        fast: bool | None = None,
        tta: bool | None = None,
        optimize: bool = True,
        bf16: bool = False,
        compile: bool = False,
        corner_labels: bool | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(model, nn.Module):
            got = f"{str(model)!r}" if isinstance(model, str | os.PathLike) else f"a {type(model).__name__}"
            raise ConfigError(f"Predictor takes a model (an nn.Module), got {got}: Predictor.from_checkpoint(path) "
                              "loads a checkpoint, Predictor.from_pretrained(name) a zoo name or a Hub id")  # fmt: skip
        cfg = getattr(model, "cfg", None)
        settings = predictor_settings(
            cfg, min_size=min_size, max_size=max_size, task_default=task_default, fast=fast, tta=tta,
            object_mask_threshold=object_mask_threshold, overlap_threshold=overlap_threshold,
        )  # fmt: skip
        self.device = check_device(device)
        self.cfg = cfg
        self.task_default = settings.task_default
        self.min_size, self.max_size = settings.min_size, settings.max_size
        self.object_mask_threshold = settings.object_mask_threshold
        self.overlap_threshold = settings.overlap_threshold
        self.fast = settings.fast
        self.postprocess_before_inference = settings.postprocess_before_inference
        self.tta, self.tta_flip = settings.tta, settings.tta_flip
        self.tta_min_sizes, self.tta_max_size = list(settings.tta_min_sizes), settings.tta_max_size
        self.meta = meta if meta is not None else getattr(model, "class_meta", None)
        if self.meta is not None and not (hasattr(self.meta, "classes") and hasattr(self.meta, "isthing")):
            raise ConfigError(f"Predictor meta: a class table (DatasetMeta) is needed, got {type(self.meta).__name__}")
        num_classes = cfg.model.num_classes if cfg is not None else (len(self.meta.classes) if self.meta else 0)
        self.num_classes = int(num_classes)
        if self.meta is not None and len(self.meta.classes) != self.num_classes:
            raise ConfigError(f"Predictor meta: {len(self.meta.classes)} classes for a model of {self.num_classes}")
        meta_things = [i for i, t in enumerate(self.meta.isthing) if t] if self.meta is not None else []
        things = list(thing_ids if thing_ids is not None else meta_things)
        top = self.num_classes or float("inf")  # (a model without config or class table: its count is unknown)
        if not all(isinstance(i, int | np.integer) and not isinstance(i, bool) and 0 <= i < top for i in things):
            raise ConfigError(f"Predictor thing_ids: class ids 0..{top - 1} expected, got {things}")
        self.thing_ids = frozenset(int(i) for i in things)
        dtypes = {str(p.dtype).replace("torch.", "") for p in model.parameters() if p.is_floating_point()}
        if dtypes - {"float32"}:  # (a model cast with .half() / .bfloat16(): torch's input/weight type error)
            got = " and ".join(sorted(dtypes))
            raise ConfigError(f"Predictor: the model's weights are {got}; it runs float32 weights: pass "
                              "model.float() (bf16=True: bfloat16 arithmetic on them)")  # fmt: skip
        self.reference = model.to(self.device)
        with eval_mode(model):  # the optimised copy is made in eval mode; the caller's model keeps its own mode
            acc = accelerate(model, enabled=optimize, bf16=bf16, compile=compile, device=str(self.device))
        self.model, self._semantic_labels, self.accelerated = acc.model, acc.semantic_labels, acc.active
        self._callers_model = not acc.active  # the unmodified model (maybe wrapped): each forward sets eval mode
        self._panoptic = acc.panoptic
        self.corner_labels = acc.bf16 if corner_labels is None else corner_labels
        self.pixel_mean = torch.as_tensor(model.pixel_mean).detach().float().to(self.device).view(3)
        self.pixel_std = torch.as_tensor(model.pixel_std).detach().float().to(self.device).view(3)
        self.size_divisibility = int(getattr(model, "size_divisibility", 0) or 0)
        try:
            parameters = inspect.signature(self.model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins / scripted modules without a signature
            parameters = {}
        self._lean = "with_aux" in parameters
        self._selects_masks = "mask_queries" in parameters  # (the optimised copy: only the kept queries' masks)

    # ----- classes -----
    @property
    def class_names(self) -> list[str]:
        """Name of every contiguous class id (``class i`` when the model carries no class table)."""
        if self.meta is not None:
            return list(self.meta.classes)
        return [f"class {i}" for i in range(self.num_classes)]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        """RGB colour of every class (the dataset's own, else well-spread hues)."""
        from maskformer.inference.visualize import palette

        table = palette(len(self.class_names), getattr(self.meta, "colors", None))
        return [tuple(int(v) for v in c) for c in table]

    # ----- constructors -----
    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu", **overrides: object) -> Predictor:
        """A Predictor for a checkpoint written by ``maskformer train`` or ``maskformer convert``; keyword
        arguments override the checkpoint config's settings (e.g. ``fast=True``)."""
        from maskformer.engine.checkpoint import load_model  # the loader lives above inference (it builds models)

        return cls(load_model(path, device), device=device, **overrides)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, device: str | torch.device = "cpu", **overrides: object
                        ) -> Predictor:  # fmt: skip
        """A Predictor for a model-zoo name, transformers Hub id, ``.pt``, original ``.pkl`` or transformers folder
        (downloaded, converted and cached once: ``maskformer.zoo``); keyword arguments as ``from_checkpoint``."""
        from maskformer.zoo import resolve_model  # the zoo lives above inference (it downloads and converts)

        return cls.from_checkpoint(resolve_model(name_or_path), device=device, **overrides)

    # ----- prediction -----
    @torch.inference_mode()
    def __call__(
        self, image: ImageInput | Sequence[ImageInput], task: str | None = None, return_scores: bool = False
    ) -> object:
        """Predict one image or a list of images.

        Args:
            image: a path, uint8 HWC RGB numpy array, PIL image, uint8 CHW torch tensor, or a list of those.
            task: "semantic" or "panoptic" (default: ``task_default``).
            return_scores: semantic only - also return the [K, H, W] float scores.

        Returns:
            Per image, semantic: label map int64 [H, W] (or (labels, scores) with return_scores); panoptic:
            (panoptic map int32 [H, W], segments_info list of {"id", "isthing", "category_id"}), where
            category_id is the class's position in ``class_names`` (``predict``'s predictions.json gives the
            dataset's own ids instead). CPU tensors at the original image size. A list in, a list out: the
            images of a list run as one batch, padded to the largest (as the original batches them), and the
            attention sees that padding, so an image's result in a list of other sizes can differ from its result
            alone; call once per image (or pass same-sized images) for results equal to single calls up to
            float rounding (batched products sum in another order, which can flip a pixel at an exact near-tie).
        """
        task = self._task(task)
        if task == "panoptic" and self.tta:
            raise ConfigError(PANOPTIC_TTA)
        if return_scores and task != "semantic":
            raise ConfigError("return_scores is only available for task='semantic'")
        batched = isinstance(image, list | tuple)
        if batched and not image:
            return []
        arrays = [load_image(i) for i in (image if batched else [image])]  # type: ignore[union-attr]
        sizes = [(int(a.shape[0]), int(a.shape[1])) for a in arrays]
        if task == "semantic" and return_scores:
            if self.tta:
                scores = [self.tta_scores(a) for a in arrays]
            else:
                outputs, image_sizes, padded = self._forward([self._resize(a) for a in arrays])
                scores = self._scores(outputs, image_sizes, sizes, padded)
            results: list[object] = [(s.argmax(0).cpu(), s.cpu()) for s in scores]
        else:
            results = [r[task] for r in self.predict_resized([self._resize(a) for a in arrays], sizes, (task,))]
        return results if batched else results[0]

    def check_task(self, task: str) -> None:
        """``ConfigError`` when this model cannot do ``task`` (panoptic on a per-pixel baseline): callers that loop
        over many images ask once before the first."""
        if task == "panoptic" and self.cfg is not None and self.cfg.model.meta_arch != "maskformer":
            raise ConfigError(f"task panoptic: model.meta_arch={self.cfg.model.meta_arch} is a per-pixel baseline "
                              "(no masks to make segments of); panoptic needs a MaskFormer")  # fmt: skip

    @torch.inference_mode()
    def predict_resized(
        self, images: Sequence[np.ndarray | Tensor], output_sizes: Sequence[Size], tasks: Sequence[str]
    ) -> list[dict[str, object]]:
        """The tensor-level tier: images already test-resized (uint8 HWC arrays or CHW tensors), one forward for all
        ``tasks``. Returns per image {"semantic": labels int64 [H, W], "panoptic": (map int32 [H, W], segments)}
        for the tasks asked, at ``output_sizes``. With ``tta`` the semantic labels come from the TTA scores."""
        for task in tasks:
            self.check_task(self._task(task))
        if len(output_sizes) != len(images):
            raise ConfigError(f"predict_resized: {len(images)} image(s) and {len(output_sizes)} output size(s)")
        output_sizes = [_output_size(s) for s in output_sizes]
        arrays = [load_image(i) for i in images]
        results: list[dict[str, object]] = [{} for _ in arrays]
        if not arrays:
            return results
        if "semantic" in tasks and self.tta:
            for r, a, size in zip(results, arrays, output_sizes):
                r["semantic"] = self._tta(a, size).argmax(0)
            tasks = [t for t in tasks if t != "semantic"]
        if not tasks:
            return results
        # panoptic alone reads only the kept queries' masks: the optimised copy then computes only those
        only_kept = list(tasks) == ["panoptic"] and self._selects_masks
        outputs, image_sizes, padded = self._forward(arrays, self._panoptic_keep if only_kept else None)
        sizes = [(int(s[0]), int(s[1])) for s in output_sizes]
        if "semantic" in tasks:
            if self.postprocess_before_inference and not self.fast:
                labels = semantic_labels(
                    outputs, image_sizes, sizes, input_size=padded, postprocess_before_inference=True
                )
            else:
                labels = self._semantic_labels(
                    outputs, image_sizes, sizes, input_size=padded, fast=self.fast, corner_labels=self.corner_labels
                )
            for r, lab in zip(results, labels):
                r["semantic"] = lab.cpu()
        if "panoptic" in tasks:
            if "pred_masks" not in outputs:
                raise ConfigError("panoptic inference needs a mask-classification model (pred_logits/pred_masks)")
            pan = self._panoptic(
                outputs, image_sizes, sizes, thing_ids=self.thing_ids, input_size=padded,
                object_mask_threshold=self.object_mask_threshold, overlap_threshold=self.overlap_threshold,
            )  # fmt: skip
            for r, (seg, info) in zip(results, pan):
                r["panoptic"] = (seg.cpu(), info)
        return results

    @torch.inference_mode()
    def semantic_scores(self, image: ImageInput, output_size: Size | None = None, *, resize: bool = True) -> Tensor:
        """Un-normalised semantic scores [K, H, W] of one image at ``output_size`` (default its size), without TTA.
        With resize=False the image is used at its own size (TTA passes views it resized)."""
        array = load_image(image)
        view = self._resize(array) if resize else array
        outputs, image_sizes, padded = self._forward([view])
        size: Size = _output_size(output_size) if output_size is not None else (array.shape[0], array.shape[1])
        return self._scores(outputs, image_sizes, [size], padded)[0].cpu()

    def _scores(self, outputs: dict, image_sizes: list[Size], sizes: Sequence[Size], padded: Size) -> list[Tensor]:
        """Semantic scores in the original's order of post-processing (``postprocess_before_inference``)."""
        return semantic_from_outputs(
            outputs, image_sizes, sizes, input_size=padded, fast=self.fast,
            postprocess_before_inference=self.postprocess_before_inference,
        )  # fmt: skip

    def tta_scores(self, image: ImageInput, *, min_sizes: Sequence[int] | None = None, max_size: int | None = None,
                   flip: bool | None = None) -> Tensor:  # fmt: skip
        """Multi-scale + flip TTA scores [K, H, W] at the original size (default sizes: config ``test.tta_*``)."""
        array = load_image(image)
        return self._tta(self._resize(array), (array.shape[0], array.shape[1]), min_sizes, max_size, flip)

    def _tta(self, resized: np.ndarray, size: Size, min_sizes: Sequence[int] | None = None,
             max_size: int | None = None, flip: bool | None = None) -> Tensor:  # fmt: skip
        """The original's TTA: the test-resized image re-resized to every min size (tta.semantic_tta)."""
        return semantic_tta(
            lambda view, out: self.semantic_scores(view, out, resize=False), resized,
            min_sizes=self.tta_min_sizes if min_sizes is None else min_sizes,
            max_size=self.tta_max_size if max_size is None else max_size,
            flip=self.tta_flip if flip is None else flip, output_size=size,
        ).cpu()  # fmt: skip

    def _task(self, task: str | None) -> str:
        if task is not None and not isinstance(task, str):
            raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
        task = task or self.task_default
        if task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
        return task

    def _resize(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return resize_image(image, resize_shortest_edge_size(h, w, self.min_size, self.max_size))

    def _panoptic_keep(self, mask_cls: Tensor) -> Tensor:
        return panoptic_keep(mask_cls, self.object_mask_threshold)[2]

    @torch.inference_mode()
    def _forward(
        self, images: Sequence[np.ndarray], mask_queries: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[dict[str, Tensor], list[Size], Size]:
        """Normalise, pad (zeros after normalisation, to the batch max rounded up to size_divisibility), run the model
        (``mask_queries``: the queries whose masks are read, for a model that can skip the others).

        Returns (outputs, per-image valid (h, w), padded (H, W)).
        """
        batch, sizes, padded = normalize_and_pad(images, self.pixel_mean, self.pixel_std, self.size_divisibility)
        with eval_mode(self.model) if self._callers_model else nullcontext():  # (our copy is always in eval mode)
            if mask_queries is not None:
                outputs = self.model(batch, with_aux=False, mask_queries=mask_queries)
            else:
                outputs = self.model(batch, with_aux=False) if self._lean else self.model(batch)
        return outputs, sizes, padded


def _output_size(size: object) -> Size:
    """(height, width) of an output, two positive integers, else a ConfigError naming it."""
    try:
        h, w = size  # type: ignore[misc]
        ok = not isinstance(h, bool) and not isinstance(w, bool)
        h, w = operator.index(h), operator.index(w)  # (ints, numpy and torch integers; not floats)
        ok = ok and h > 0 and w > 0
    except (TypeError, ValueError, RuntimeError):
        ok = False
    if not ok:
        raise ConfigError(f"output size must be (height, width), two positive integers, got {size!r}")
    return int(h), int(w)
