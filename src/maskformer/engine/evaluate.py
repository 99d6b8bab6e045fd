"""Evaluation of a model on a dataset's validation split: mIoU family, PQ^St, and PQ for panoptic models.

Each process evaluates its shard (batch 1, test-time resize), the evaluators all-reduce, every process gets the
metrics. Semantic metrics are in percent as detectron2's; panoptic ones as panopticapi's (fractions) plus PQ/SQ/RQ
in percent.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..build import build_dataset, build_meta
from ..config import Config
from . import distributed as dist


def normalize_and_pad(images: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """uint8 ``[B,3,h,w]`` -> float ``[B,3,H,W]``: (x - mean) / std, then zero-padded to the size divisibility."""
    x = (images.float() - model.pixel_mean.view(1, 3, 1, 1)) / model.pixel_std.view(1, 3, 1, 1)
    d = model.size_divisibility
    if d > 0:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % d, 0, (-h) % d))
    return x


def _semantic_scores(model, image: torch.Tensor, output_size, *, fast: bool) -> torch.Tensor:
    from ..inference.postprocess import semantic_from_outputs

    x = normalize_and_pad(image[None], model)
    out = model(x, with_aux=False)
    return semantic_from_outputs(out, [tuple(image.shape[-2:])], [output_size], input_size=x.shape[-2:], fast=fast)[0]


@torch.inference_mode()
def evaluate_model(
    cfg: Config,
    model: nn.Module,
    *,
    device: torch.device | str = "cpu",
    root: str | None = None,
    tta: bool | None = None,
    fast: bool | None = None,
    max_images: int | None = None,
    progress: bool = False,
) -> dict:
    """Run ``model`` over ``cfg.data.val_split`` and return metrics (see module docstring)."""
    from ..data import build_test_loader
    from ..evaluation import PanopticEvaluator, SemanticEvaluator, SemanticPQEvaluator
    from ..inference.postprocess import panoptic_from_outputs, semantic_tta

    tta = cfg.test.tta if tta is None else tta
    fast = cfg.test.fast if fast is None else fast
    device = torch.device(device)
    was_training = model.training
    model.eval()
    meta = build_meta(cfg)
    dataset = build_dataset(cfg, split=cfg.data.val_split, train=False, root=root)
    loader = build_test_loader(dataset, num_workers=min(cfg.data.num_workers, 2), rank=dist.rank(),
                               world_size=dist.world_size())  # fmt: skip
    k, ignore = meta.num_classes, meta.ignore_label
    semantic = cfg.model.meta_arch != "maskformer" or cfg.inference.semantic_on
    panoptic = cfg.model.meta_arch == "maskformer" and cfg.inference.panoptic_on
    sem_eval = SemanticEvaluator(num_classes=k, ignore_label=ignore) if semantic else None
    pq_st = SemanticPQEvaluator(num_classes=k, ignore_label=ignore) if semantic else None
    categories = [{"id": i, "isthing": int(meta.isthing[i]), "name": meta.classes[i]} for i in range(k)]
    pan_eval = PanopticEvaluator(categories=categories) if panoptic else None
    iterator = loader
    if progress and dist.is_main():
        from tqdm import tqdm

        iterator = tqdm(loader, desc="eval", total=len(loader) if max_images is None else min(max_images, len(loader)))
    seen = 0
    for (rec,) in iterator:
        if max_images is not None and seen >= max_images:
            break
        seen += 1
        image = rec["image"].to(device)
        out_size = (int(rec["height"]), int(rec["width"]))
        if semantic and "sem_seg" in rec:
            if tta:
                run = lambda view, size: _semantic_scores(  # noqa: E731
                    model, torch.from_numpy(np.ascontiguousarray(view)).permute(2, 0, 1).to(device), size, fast=fast
                )
                scores = semantic_tta(
                    run, image.permute(1, 2, 0).cpu().numpy(), min_sizes=cfg.test.tta_min_sizes,
                    max_size=cfg.test.tta_max_size, flip=cfg.test.tta_flip, output_size=out_size,
                )  # fmt: skip
            else:
                scores = _semantic_scores(model, image, out_size, fast=fast)
            pred = scores.argmax(0).cpu()
            sem_eval.update(pred, rec["sem_seg"])
            pq_st.update(pred, rec["sem_seg"])
        if panoptic and "pan_seg" in rec:
            x = normalize_and_pad(image[None], model)
            out = model(x, with_aux=False)
            (pan, segments), = panoptic_from_outputs(
                out, [tuple(image.shape[-2:])], [out_size], thing_ids=set(meta.thing_ids),
                object_mask_threshold=cfg.inference.object_mask_threshold,
                overlap_threshold=cfg.inference.overlap_threshold, input_size=x.shape[-2:],
            )  # fmt: skip
            pan_eval.update(pan.cpu(), segments, rec["pan_seg"], rec["segments_info"])
    metrics: dict = {"images": seen}
    if sem_eval is not None:
        sem_eval.synchronize()
        pq_st.synchronize()
        metrics.update(sem_eval.compute())
        st = pq_st.compute()
        metrics["PQ_St"] = {"PQ": st["PQ"], "SQ": st["SQ"], "RQ": st["RQ"]}
    if pan_eval is not None:
        pan_eval.synchronize()
        pan = pan_eval.compute()
        metrics.update({key: pan[key] for key in ("All", "Things", "Stuff", "PQ", "SQ", "RQ") if key in pan})
    metrics["images"] = int(dist.all_reduce_mean({"n": float(seen)})["n"] * dist.world_size())
    model.train(was_training)
    return metrics
