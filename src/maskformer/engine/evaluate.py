"""Evaluation of a model on a dataset's validation split: mIoU family, PQ^St, and PQ for panoptic models.

Each process evaluates its shard (batch 1, test-time resize), the evaluators all-reduce, every process gets the
metrics. Semantic metrics are in percent as detectron2's; panoptic ones as panopticapi's (fractions) plus PQ/SQ/RQ
in percent.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from ..build import build_dataset, build_meta
from ..config import Config
from ..errors import ConfigError, DataError, out_of_memory, raise_if_terminated
from . import distributed as dist
from .runtime import set_tf32


@torch.inference_mode()
def evaluate_model(
    cfg: Config,
    model: nn.Module,
    *,
    device: torch.device | str = "cpu",
    root: str | None = None,
    max_images: int | None = None,
    progress: bool = False,
    **predictor_options: object,
) -> dict:
    """Run ``model`` over ``cfg.data.val_split`` and return metrics (see module docstring).

    The images go through the same ``Predictor`` as ``maskformer predict`` (``predictor_options``: ``tta``, ``fast``,
    ``bf16``, ``compile``, ``optimize``; unset ones come from ``cfg``), one forward per image for all tasks, so the
    metrics measure exactly what prediction produces. ``model`` itself is not modified.
    """
    from ..data import build_test_loader
    from ..evaluation import PanopticEvaluator, SemanticEvaluator, SemanticPQEvaluator
    from ..inference.predictor import Predictor

    device = torch.device(device)
    set_tf32(cfg.train.tf32)
    was_training = model.training
    meta = build_meta(cfg)
    if meta.num_classes != cfg.model.num_classes:  # scores of one class table against labels of another
        where = f"{cfg.data.root}/classes.json" if cfg.data.dataset == "folder" else f"data.dataset={cfg.data.dataset}"
        raise ConfigError(f"{where}: the data has {meta.num_classes} classes, the model {cfg.model.num_classes}: "
                          "evaluate on data labelled with the model's classes")  # fmt: skip
    options = {k: v for k, v in predictor_options.items() if v is not None}
    predictor = Predictor(model, meta=meta, device=device, **options)  # type: ignore[arg-type]
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
    if progress and dist.is_main() and sys.stderr.isatty():  # a bar on a terminal; none in a log file or pipe
        from tqdm import tqdm

        iterator = tqdm(loader, desc="eval", total=len(loader) if max_images is None else min(max_images, len(loader)))
    seen = scored_panoptic = 0
    skipped: list[tuple[str, str]] = []
    try:
        for (rec,) in [] if max_images == 0 else iterator:
            raise_if_terminated()  # (a SIGTERM whose KeyboardInterrupt Python swallowed, e.g. in a fork hook)
            if rec.get("skipped"):
                # data.skip_bad_samples: a bad file's record is the next good sample, which is also scored at its own
                # turn; scoring it here too would count one image twice (and hide that an image is missing). Only the
                # sample asked for is counted: the bad ones after it are counted at their own turn (2 side by side
                # were counted 3 times)
                skipped.append(rec["skipped"][0])
                continue
            seen += 1
            tasks = [t for t, on, key in (("semantic", semantic, "sem_seg"), ("panoptic", panoptic, "pan_seg"))
                     if on and key in rec]  # fmt: skip
            if tasks:
                out_size = (int(rec["height"]), int(rec["width"]))
                try:
                    (result,) = predictor.predict_resized([rec["image"]], [out_size], tasks)
                except (RuntimeError, MemoryError) as e:  # (a picture too large for this machine: named)
                    if (why := out_of_memory(e)) is None:
                        raise
                    name = rec.get("file_name", f"sample {seen - 1}")
                    size = f"{out_size[1]}x{out_size[0]}"
                    raise DataError(f"{name} ({size}): {why}: leave it out or free memory") from None
                if "semantic" in result:
                    sem_eval.update(result["semantic"], rec["sem_seg"])
                    pq_st.update(result["semantic"], rec["sem_seg"])
                if "panoptic" in result:
                    pan, segments = result["panoptic"]
                    pan_eval.update(pan, segments, rec["pan_seg"], rec["segments_info"])
                    scored_panoptic += 1
            if max_images is not None and seen >= max_images:  # (before the loader reads one image more)
                if iterator is not loader:  # (tqdm counts an item when the next is asked for: this one too)
                    iterator.n = seen
                    iterator.close()
                break
    except BaseException:
        if iterator is not loader:  # (a bad file ends the run in one line: no half-drawn bar above it)
            iterator.leave = False
            iterator.close()
        raise
    metrics: dict = {"images": seen}
    if sem_eval is not None:
        sem_eval.synchronize()
        pq_st.synchronize()
        metrics.update(sem_eval.compute())
        metrics["classes"] = list(meta.classes)
        metrics["IoU_by_class"] = dict(zip(meta.classes, metrics["IoU"]))
        st = pq_st.compute()
        metrics["PQ_St"] = {"PQ": st["PQ"], "SQ": st["SQ"], "RQ": st["RQ"]}
    if pan_eval is not None:
        pan_eval.synchronize()
        # a panoptic model on data without panoptic ground truth (a semantic folder, CamVid): PQ is not measured,
        # and is left out rather than reported as 0
        if dist.all_reduce_mean({"n": float(scored_panoptic)})["n"] > 0:
            pan = pan_eval.compute()
            metrics.update({key: pan[key] for key in ("All", "Things", "Stuff", "PQ", "SQ", "RQ") if key in pan})
            ids = meta.contiguous_to_dataset_id  # per class under the dataset's ids (as eval-predictions does)
            metrics["per_class"] = {
                ids.get(int(c), int(c)): {"name": meta.classes[int(c)], **scores}
                for c, scores in pan.get("per_class", {}).items()
            }
        else:
            metrics["panoptic_note"] = "no panoptic ground truth in this split: PQ not measured"
    metrics["images"] = int(dist.all_reduce_mean({"n": float(seen)})["n"] * dist.world_size())
    n_skipped = int(round(dist.all_reduce_mean({"n": float(len(skipped))})["n"] * dist.world_size()))
    if n_skipped:
        metrics["skipped_images"] = n_skipped
        if dist.is_main() and skipped:  # (also with --json: the count alone does not say which file to fix)
            print(f"[maskformer] eval skipped {n_skipped} bad image(s) (data.skip_bad_samples), e.g. {skipped[0][1]}",
                  file=sys.stderr)  # fmt: skip
    model.train(was_training)
    return metrics
