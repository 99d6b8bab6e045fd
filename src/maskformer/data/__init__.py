"""Data: datasets in their standard on-disk formats, the original augmentations, batching and sampling, the class
tables of every dataset (``meta/*.json``, read by ``metadata``) and the embedded synthetic scenes.

``DATASETS[name](root=..., split=..., mapper=..., skip_bad_samples=...)`` builds a dataset whose items are
records (see ``maskformer.data.mappers``); ``load_meta(name)`` gives its class table.

May import: ``maskformer.inference.preprocess`` (the test-time resize, shared with the Predictor so that evaluation
and prediction see the same pixels) and ``maskformer.errors``. Never imports ``modeling``, ``criterion``,
``engine`` or ``cli``: a model sees batches, and batches never see a model.
"""

from collections.abc import Callable
from typing import Any

from .base import SegmentationDataset
from .collate import collate
from .color import ColorAugSSD
from .folder import camvid, folder
from .io import read_image, read_label, read_panoptic_png
from .loader import TrainLoader, build_test_loader, build_train_loader, seed_everything, worker_init_fn
from .mappers import DETRPanopticTrainMapper, PanopticTrainMapper, SemanticTrainMapper, TestMapper
from .metadata import DatasetMeta, load_meta
from .panoptic import PanopticDataset, ade20k_panoptic, coco_panoptic
from .samplers import InferenceSampler, InfiniteSampler
from .semantic import SemanticDataset, ade20k_150, ade20k_full_847, cityscapes, coco_stuff_10k, mapillary_vistas
from .synthetic import SyntheticDataset
from .transforms import resize_image, resize_shortest_edge_size


def synthetic(
    *,
    root: str = "",
    split: str,
    mapper: Any = None,
    skip_bad_samples: bool = False,
    length: int = 2000,
    num_classes: int = 8,
    image_size: int = 128,
    seed: int = 0,
    task: str = "semantic",
    num_stuff: int | None = None,
) -> SyntheticDataset:
    """The embedded generated dataset (``root`` is ignored: nothing is read from disk)."""
    return SyntheticDataset(
        split=split,
        length=length,
        num_classes=num_classes,
        image_size=image_size,
        seed=seed,
        mapper=mapper,
        task=task,
        num_stuff=num_stuff,
        skip_bad_samples=skip_bad_samples,
    )


# Dataset name -> factory (keyword-only: root, split, mapper, skip_bad_samples, + dataset-specific options).
DATASETS: dict[str, Callable[..., SegmentationDataset]] = {
    "ade20k_150": ade20k_150,
    "ade20k_full_847": ade20k_full_847,
    "coco_stuff_10k": coco_stuff_10k,
    "cityscapes": cityscapes,
    "mapillary_vistas": mapillary_vistas,
    "camvid": camvid,
    "folder": folder,
    "coco_panoptic": coco_panoptic,
    "ade20k_panoptic": ade20k_panoptic,
    "synthetic": synthetic,
}

__all__ = [
    "DATASETS",
    "DatasetMeta",
    "load_meta",
    "SegmentationDataset",
    "SemanticDataset",
    "PanopticDataset",
    "SyntheticDataset",
    "SemanticTrainMapper",
    "PanopticTrainMapper",
    "DETRPanopticTrainMapper",
    "TestMapper",
    "ColorAugSSD",
    "collate",
    "InfiniteSampler",
    "InferenceSampler",
    "TrainLoader",
    "build_train_loader",
    "build_test_loader",
    "worker_init_fn",
    "seed_everything",
    "resize_shortest_edge_size",
    "resize_image",
    "read_image",
    "read_label",
    "read_panoptic_png",
]
