"""Predictor: images in (numpy or paths), semantic label maps or panoptic maps out, at the original image size.

Owns the test-time preprocessing of the original (OFFICIAL_SPEC §4.7): shortest-edge resize with PIL bilinear
(antialiased), normalisation with the model's pixel mean/std, zero padding after normalisation to the model's size
divisibility; then post-processing back to the original size (maskformer.inference.postprocess).
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from maskformer.errors import DataError
from maskformer.inference.accelerate.labels import semantic_labels_from_outputs
from maskformer.inference.postprocess import (
    Size,
    panoptic_from_outputs,
    semantic_from_outputs,
    semantic_tta,
)
from maskformer.inference.preprocess import resize_image, resize_shortest_edge_size

__all__ = ["Predictor"]

ImageInput = np.ndarray | str | Path
_TASKS = ("semantic", "panoptic")


def _load_image(image: ImageInput) -> np.ndarray:
    """uint8 HWC RGB array from an array or a path (any PIL-readable file, converted to RGB)."""
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as pil:
                return np.asarray(pil.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"{image}: cannot read image ({type(exc).__name__}: {exc})") from exc
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise DataError(f"image: expected a uint8 HxWx3 RGB array or a path, got {what}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"image: empty array of shape {image.shape}")
    return image


class Predictor:
    """Run a MaskFormer (or per-pixel baseline) model on images.

    Args:
        model: returns the outputs dict from `model(images)` for normalised, padded images [B, 3, H, W]; has
            `pixel_mean`, `pixel_std` (tensors [3], 0-255 RGB scale) and `size_divisibility` (int, 0 = none).
            Put in eval mode; if its forward accepts `with_aux`, it is called with with_aux=False.
        min_size, max_size: test resize (short side, cap on the long side), e.g. 512 / 2048 for ADE20K.
        task_default: task used when __call__ gets none.
        thing_ids: contiguous ids of thing classes (panoptic); all other classes are stuff.
        object_mask_threshold, overlap_threshold: panoptic thresholds (COCO configs: 0.8 / 0.8).
        fast: approximate semantic labels / scores (see accelerate.labels.semantic_labels_from_outputs).
        corner_labels: semantic labels at the input size from the block corner labels (``fast``'s approximation for
            that case only; resized outputs stay exact). Default: on for a bf16 model (``prepare_for_inference(...,
            bf16=True)``), whose scores carry ~3 significant digits anyway, off otherwise.
        device: where the model and images go.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        min_size: int,
        max_size: int,
        task_default: str = "semantic",
        thing_ids: Collection[int] = (),
        object_mask_threshold: float = 0.8,
        overlap_threshold: float = 0.8,
        fast: bool = False,
        corner_labels: bool | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if task_default not in _TASKS:
            raise ValueError(f"task_default must be one of {_TASKS}, got {task_default!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.min_size = min_size
        self.max_size = max_size
        self.task_default = task_default
        self.thing_ids = frozenset(int(i) for i in thing_ids)
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.fast = fast
        self.corner_labels = bool(getattr(model, "bf16", False)) if corner_labels is None else corner_labels
        self.pixel_mean = torch.as_tensor(model.pixel_mean).detach().float().to(self.device).view(3, 1, 1)
        self.pixel_std = torch.as_tensor(model.pixel_std).detach().float().to(self.device).view(3, 1, 1)
        self.size_divisibility = int(getattr(model, "size_divisibility", 0) or 0)
        try:
            self._lean = "with_aux" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins / scripted modules without a signature
            self._lean = False

    @torch.inference_mode()
    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput],
        task: str | None = None,
        return_scores: bool = False,
    ) -> object:
        """Predict one image or a list of images.

        Args:
            image: uint8 HWC RGB array, a path, or a list of those (one batch).
            task: "semantic" or "panoptic" (default: task_default).
            return_scores: semantic only - also return the [K, H, W] float scores.

        Returns:
            Per image, semantic: label map int64 [H, W] (or (labels, scores) with return_scores); panoptic:
            (panoptic map int32 [H, W], segments_info list of {"id", "isthing", "category_id"}). CPU tensors at the
            original image size. A list in, a list out.
        """
        task = task or self.task_default
        if task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
        if return_scores and task != "semantic":
            raise ValueError("return_scores is only available for task='semantic'")
        batched = isinstance(image, (list, tuple))
        arrays = [_load_image(i) for i in (image if batched else [image])]  # type: ignore[union-attr]
        outputs, image_sizes, padded = self._forward([self._resize(a) for a in arrays])
        output_sizes: list[Size] = [(int(a.shape[0]), int(a.shape[1])) for a in arrays]
        if task == "panoptic":
            if "pred_masks" not in outputs:
                raise ValueError("panoptic inference needs a mask-classification model (pred_logits/pred_masks)")
            pan = panoptic_from_outputs(
                outputs,
                image_sizes,
                output_sizes,
                thing_ids=self.thing_ids,
                object_mask_threshold=self.object_mask_threshold,
                overlap_threshold=self.overlap_threshold,
                input_size=padded,
            )
            results: list[object] = [(seg.cpu(), info) for seg, info in pan]
        else:
            if return_scores:
                scores = semantic_from_outputs(outputs, image_sizes, output_sizes, input_size=padded, fast=self.fast)
                results = [(s.argmax(0).cpu(), s.cpu()) for s in scores]
            else:  # same labels without full-resolution score maps (maskformer.inference.accelerate.labels)
                labels = semantic_labels_from_outputs(
                    outputs,
                    image_sizes,
                    output_sizes,
                    input_size=padded,
                    fast=self.fast,
                    corner_labels=self.corner_labels,
                )
                results = [lab.cpu() for lab in labels]
        return results if batched else results[0]

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu", **overrides: object) -> Predictor:
        """A Predictor for a checkpoint written by ``maskformer train`` or ``maskformer convert``: the test sizes,
        thresholds and thing classes come from the checkpoint's own config and metadata; keyword arguments
        override them (e.g. ``fast=True``)."""
        from maskformer.engine.checkpoint import load_model_and_config

        model, cfg, meta = load_model_and_config(path, device)
        isthing = meta.get("isthing") or []
        kwargs: dict = {
            "min_size": cfg.test.min_size,
            "max_size": cfg.test.max_size,
            "task_default": "panoptic"
            if cfg.inference.panoptic_on and cfg.model.meta_arch == "maskformer"
            else "semantic",
            "thing_ids": [i for i, t in enumerate(isthing) if t],
            "object_mask_threshold": cfg.inference.object_mask_threshold,
            "overlap_threshold": cfg.inference.overlap_threshold,
            "fast": cfg.test.fast,
            "device": device,
        }
        kwargs.update(overrides)
        return cls(model, **kwargs)  # type: ignore[arg-type]

    @torch.inference_mode()
    def semantic_scores(self, image: ImageInput, output_size: Size | None = None, *, resize: bool = True) -> Tensor:
        """Un-normalised semantic scores [K, H, W] of one uint8 HWC RGB image at `output_size` (default its size).

        With resize=False the image is used at its own size (test-time augmentation passes views it resized).
        """
        array = _load_image(image)
        view = self._resize(array) if resize else array
        outputs, image_sizes, padded = self._forward([view])
        size: Size = (int(output_size[0]), int(output_size[1])) if output_size else (array.shape[0], array.shape[1])
        return semantic_from_outputs(outputs, image_sizes, [size], input_size=padded, fast=self.fast)[0].cpu()

    def tta_scores(self, image: ImageInput, *, min_sizes: Sequence[int], max_size: int, flip: bool = True) -> Tensor:
        """Multi-scale + flip TTA scores [K, H, W] at the original size, as the original evaluates it: the
        test-resized image is re-resized to every min size (inference.semantic_tta)."""
        array = _load_image(image)

        def run(view: np.ndarray, size: Size) -> Tensor:
            return self.semantic_scores(view, size, resize=False)

        size = (array.shape[0], array.shape[1])
        return semantic_tta(
            run, self._resize(array), min_sizes=min_sizes, max_size=max_size, flip=flip, output_size=size
        )

    def _resize(self, image: np.ndarray) -> np.ndarray:
        return resize_image(
            image, resize_shortest_edge_size(image.shape[0], image.shape[1], self.min_size, self.max_size)
        )

    @torch.inference_mode()
    def _forward(self, images: Sequence[np.ndarray]) -> tuple[dict[str, Tensor], list[Size], Size]:
        """Normalise, pad (zeros after normalisation, to the batch max rounded up to size_divisibility), run the model.

        Returns (outputs, per-image valid (h, w), padded (H, W)).
        """
        sizes: list[Size] = [(int(i.shape[0]), int(i.shape[1])) for i in images]
        height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
        if self.size_divisibility > 1:
            d = self.size_divisibility
            height, width = -(-height // d) * d, -(-width // d) * d
        # built channels-last ([B, H, W, 3] memory, [B, 3, H, W] view): what the convolutions want, no later copy
        batch = torch.zeros(len(images), height, width, 3, device=self.device)
        mean, std = self.pixel_mean.view(3), self.pixel_std.view(3)
        for b, image in enumerate(images):
            pixels = torch.from_numpy(np.require(image, requirements=("C", "W"))).to(self.device)
            region = batch[b, : sizes[b][0], : sizes[b][1]]
            region.copy_(pixels).sub_(mean).div_(std)  # (x - mean) / std in place: no float copy of the image
        batch = batch.permute(0, 3, 1, 2)
        outputs = self.model(batch, with_aux=False) if self._lean else self.model(batch)
        return outputs, sizes, (height, width)
