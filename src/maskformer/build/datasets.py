"""Config -> the data side: the class table (``build_meta``), the class count fitted to it (``fit_classes``), the
augmentation (``build_mapper``) and the datasets (``build_dataset``). Re-exported by ``maskformer.build``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..config import Config
from ..errors import ConfigError, DataError

__all__ = ["build_dataset", "build_mapper", "build_meta", "check_dataset_name", "fit_classes"]


def check_dataset_name(cfg: Config) -> None:
    """One ``ConfigError`` naming the datasets there are when ``data.dataset`` is none of them."""
    from ..data import DATASETS

    if cfg.data.dataset not in DATASETS:
        import difflib

        close = difflib.get_close_matches(cfg.data.dataset.replace("-", "_"), sorted(DATASETS), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"data.dataset: unknown '{cfg.data.dataset}' ({hint}expected one of {sorted(DATASETS)})")


def build_meta(cfg: Config):
    """The dataset's class table (names, colours, thing/stuff, ignore label)."""
    from ..data import load_meta
    from ..data.folder import read_folder_meta
    from ..data.synthetic import synthetic_meta

    d = cfg.data
    check_dataset_name(cfg)
    if d.dataset == "synthetic":
        return synthetic_meta(num_classes=d.synthetic_num_classes)
    if d.dataset == "folder":
        return read_folder_meta(Path(d.root))
    if d.dataset == "coco_panoptic" and d.panoptic_json:  # COCO-format data of one's own: its JSON's categories
        from ..data.panoptic import panoptic_json_meta

        return panoptic_json_meta(_categories_json(cfg))
    return load_meta(d.dataset)


def _categories_json(cfg: Config) -> Path:
    """The panoptic JSON whose categories are the class table: the training split's, or the evaluation split's when
    only that one is at hand (evaluating on one's own validation data)."""
    d = cfg.data
    paths = [Path(d.root) / d.panoptic_json.replace("{split}", split) for split in (d.train_split, d.val_split)]
    found = next((p for p in paths if p.is_file()), None)
    if found is None:  # (both named: evaluating reads the validation split's)
        names = " or ".join(dict.fromkeys(str(p) for p in paths))
        raise DataError(f"{names}: panoptic JSON not found (data.panoptic_json={d.panoptic_json}, under --data-root)")
    return found


def sets_num_classes(overrides: list[str]) -> bool:
    """Whether command-line ``--set`` values name ``model.num_classes`` (``fit_classes``'s ``explicit``)."""
    return any(o.replace(" ", "").startswith("model.num_classes=") for o in overrides)


def fit_classes(cfg: Config, *, explicit: bool = False) -> Config:
    """``cfg`` with ``model.num_classes`` taken from the data's class table (own data: ``classes.json``) when they
    disagree; with ``explicit`` (the user set ``model.num_classes`` on the command line) a disagreement is one
    ``ConfigError`` naming both numbers. Also rejects panoptic training on semantic-only data."""
    from dataclasses import replace

    d = cfg.data
    check_dataset_name(cfg)
    if d.mapper != "semantic" and d.dataset not in ("coco_panoptic", "ade20k_panoptic", "synthetic"):
        raise ConfigError(
            f"data.mapper={d.mapper}: data.dataset={d.dataset} has semantic labels only; train a semantic config "
            "(e.g. configs/folder/maskformer_R50.yaml) or pass --set data.mapper=semantic"
        )
    if d.dataset == "synthetic":
        return cfg
    meta = build_meta(cfg)
    if meta.num_classes == cfg.model.num_classes:
        return cfg
    tables = [n for n in ("classes.json", "classes.yaml", "classes.yml") if (Path(d.root) / n).is_file()]
    source = f"{d.root}/{(tables or ['classes.json'])[0]}" if d.dataset == "folder" else f"the {d.dataset} class table"
    if d.dataset == "coco_panoptic" and d.panoptic_json:
        source = f"the categories of {_categories_json(cfg)}"
    if explicit:
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} but {source} lists {meta.num_classes} classes: "
            "drop --set model.num_classes (it is taken from the data) or fix the class table"
        )
    if os.environ.get("RANK", "0") in ("", "0"):  # (under torchrun, every process fits the same table)
        print(f"maskformer: note: model.num_classes {cfg.model.num_classes} -> {meta.num_classes} (from {source})",
              file=sys.stderr)  # fmt: skip
    return replace(cfg, model=replace(cfg.model, num_classes=meta.num_classes))


def build_mapper(cfg: Config, *, train: bool, ignore_label: int):
    from ..data import DETRPanopticTrainMapper, PanopticTrainMapper, SemanticTrainMapper, TestMapper

    d = cfg.data
    if not train:
        return TestMapper(min_size=cfg.test.min_size, max_size=cfg.test.max_size, ignore_label=ignore_label)
    kwargs = {
        "min_sizes": d.min_size_train,
        "max_size": d.max_size_train,
        "crop_size": tuple(d.crop_size),
        "single_category_max_area": d.single_category_max_area,
        "ignore_label": ignore_label,
        "color_aug_ssd": d.color_aug_ssd,
        "pad_to_crop": d.pad_to_crop,
    }
    if d.mapper == "semantic":
        return SemanticTrainMapper(**kwargs)
    if d.mapper == "panoptic":
        return PanopticTrainMapper(**kwargs)
    if d.mapper == "detr_panoptic":
        # the original's RandomCrop("absolute_range", (384, 600)): data.crop_size is that [min, max] range
        low, high = (int(v) for v in d.crop_size)
        if not 0 < low <= high:
            raise ConfigError(f"data.crop_size: the detr_panoptic mapper takes a [min, max] range, got {d.crop_size}")
        return DETRPanopticTrainMapper(min_sizes=d.min_size_train, max_size=d.max_size_train, ignore_label=ignore_label,
                                       crop_range=(low, high))  # fmt: skip
    raise ConfigError(f"data.mapper: unknown '{d.mapper}' (expected semantic, panoptic or detr_panoptic)")


def build_dataset(cfg: Config, *, split: str, train: bool, root: str | None = None):
    """A dataset of records: training augmentation when ``train``, else the test-time resize."""
    from ..data import DATASETS

    d = cfg.data
    meta = build_meta(cfg)  # (checks data.dataset first)
    mapper = build_mapper(cfg, train=train, ignore_label=meta.ignore_label)
    kwargs = {"root": root or d.root, "split": split, "mapper": mapper, "skip_bad_samples": d.skip_bad_samples}
    paths = {"json_file": d.panoptic_json, "image_dir": d.panoptic_images, "panoptic_dir": d.panoptic_masks}
    if any(paths.values()):
        if d.dataset != "coco_panoptic":
            raise ConfigError("data.panoptic_json/panoptic_images/panoptic_masks locate COCO-format panoptic data: "
                              f"they need data.dataset=coco_panoptic, not {d.dataset}")  # fmt: skip
        kwargs.update({k: v.replace("{split}", split) or None for k, v in paths.items()}, meta=meta)
    if d.dataset == "synthetic":
        kwargs.update(
            length=d.synthetic_train_size if split == "train" else d.synthetic_val_size,
            num_classes=d.synthetic_num_classes,
            image_size=d.synthetic_image_size,
            seed=d.synthetic_seed,
            task="panoptic" if cfg.inference.panoptic_on else "semantic",
        )
    dataset = DATASETS[d.dataset](**kwargs)
    left_out = getattr(dataset, "unannotated", ())
    where = (getattr(dataset, "where", ""), split)
    if left_out and where not in _SAID and os.environ.get("RANK", "0") in ("", "0"):  # (once per split and process)
        _SAID.add(where)
        more = f" and {len(left_out) - 1} more" if len(left_out) > 1 else ""
        print(f"maskformer: note: {where[0]}: {len(left_out)} image(s) listed under 'images' have no annotation and "
              f"are left out of the {split} split ({left_out[0]}{more})", file=sys.stderr)  # fmt: skip
    return dataset


_SAID: set[tuple[str, str]] = set()  # (JSON, split) whose images without annotation were noted by build_dataset
