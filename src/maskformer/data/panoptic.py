"""Panoptic datasets in COCO panoptic format: COCO panoptic 2017 and ADE20K panoptic (OFFICIAL_SPEC §5.4).

Each sample: an image, an RGB-encoded PNG of segment ids (``id = R + 256 G + 256^2 B``, 0 = VOID) and the JSON
``segments_info`` (``id``, ``category_id``, ``iscrowd``, ``area``, ``bbox``). Category ids are mapped to contiguous
ids here and ``isthing`` is added, as detectron2's loaders do; crowd segments stay in ``segments_info`` (the
evaluator needs them) but are not training targets. ADE20K panoptic also carries the semantic map; COCO panoptic's
is derived from the segments (``semantic_from_panoptic``: every segment, crowd included, is its class; VOID is
ignored, the conversion COCO-panoptic semantic benchmarks use), so the per-pixel baselines, the semantic mapper and
semantic evaluation (mIoU, PQ^St) work on it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..fileio import json_integer, read_user_text
from .base import Mapper, SegmentationDataset
from .io import check_label_values, exif_size_hint, read_image, read_label, read_panoptic_png
from .metadata import DatasetMeta, load_meta, meta_from_dict

__all__ = ["PanopticDataset", "load_panoptic_json", "semantic_from_panoptic", "coco_panoptic", "ade20k_panoptic"]


def load_panoptic_json(
    json_file: Path,
    image_dir: Path,
    panoptic_dir: Path,
    meta: DatasetMeta,
    *,
    semantic_dir: Path | None = None,
    check_files: bool = True,
    left_out: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Entries from a COCO-panoptic JSON (``annotations`` with ``file_name`` and ``segments_info``).

    The image file comes from the JSON ``images`` list when it names the image, else ``<png stem>.jpg``
    (the original's assumption). Unknown category ids raise ``DataError`` naming the JSON file; with
    ``check_files`` so does a missing image or PNG, here rather than when a training step first reads it.
    ``left_out``: receives the file names of the images listed in ``images`` without an annotation (they are not
    entries, as in the original and panopticapi).
    """
    if not json_file.is_file():
        raise DataError(f"{json_file}: panoptic JSON not found")
    try:
        data = json.loads(read_user_text(json_file, error=DataError))
        annotations = data["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{json_file}: not a COCO panoptic JSON ({type(e).__name__}: {e})") from None
    image_names = {im["id"]: im["file_name"] for im in data.get("images", []) if "id" in im and "file_name" in im}
    to_contiguous = meta.dataset_id_to_contiguous
    entries: list[dict[str, Any]] = []
    for ann in annotations:
        try:
            png, image_id, segments = ann["file_name"], ann["image_id"], ann["segments_info"]
            image_name = image_names.get(image_id, Path(png).stem + ".jpg")
            infos, seen = [], set()
            for s in segments:
                try:
                    segment_id, cat = json_integer(s["id"]), json_integer(s["category_id"])
                except ValueError as e:
                    raise DataError(f"{json_file}: image {image_id}: a segment's id or category_id {e}") from None
                if cat not in to_contiguous:
                    raise DataError(f"{json_file}: image {image_id}: unknown category_id {cat}")
                c = to_contiguous[cat]
                if segment_id in seen:
                    raise DataError(f"{json_file}: image {image_id}: segment id {segment_id} is listed twice")
                seen.add(segment_id)
                infos.append(
                    {
                        "id": segment_id,
                        "category_id": c,
                        "iscrowd": int(s.get("iscrowd", 0)),
                        "isthing": bool(meta.isthing[c]),
                        "area": int(s.get("area", 0)),
                        "bbox": list(s.get("bbox", [])),
                    }
                )
        except (KeyError, TypeError, ValueError) as e:  # (ValueError: e.g. "iscrowd": "yes")
            where = f"image {ann.get('image_id')}: " if isinstance(ann, dict) and "image_id" in ann else ""
            raise DataError(f"{json_file}: {where}malformed annotation ({type(e).__name__}: {e})") from None
        entry = {
            "file_name": str(image_dir / image_name),
            "image_id": image_id,
            "pan_seg_file_name": str(panoptic_dir / png),
            "segments_info": infos,
        }
        if semantic_dir is not None:
            entry["sem_seg_file_name"] = str(semantic_dir / png)
        if check_files:
            for key in ("file_name", "pan_seg_file_name"):
                if not Path(entry[key]).is_file():
                    raise DataError(f"{entry[key]}: file not found (image {image_id} of {json_file})")
        entries.append(entry)
    if left_out is not None:
        annotated = {ann.get("image_id") for ann in annotations if isinstance(ann, dict)}
        left_out += [str(name) for image_id, name in image_names.items() if image_id not in annotated]
    return entries


def semantic_from_panoptic(pan: np.ndarray, segments_info: list[dict[str, Any]], *, ignore_label: int) -> np.ndarray:
    """The semantic label map of a panoptic annotation: ``pan`` [H, W] segment ids (0 = VOID) and its segments
    (contiguous ``category_id``) -> [H, W] class ids, ``ignore_label`` where no segment is (VOID or an id that has
    no segment). uint8 when the ignore label fits in 8 bits, else uint16."""
    dtype = np.uint8 if ignore_label < 256 else np.uint16
    out = np.full(pan.shape, ignore_label, dtype=dtype)
    if not segments_info:
        return out
    ids = np.array([s["id"] for s in segments_info], dtype=np.int64)
    classes = np.array([s["category_id"] for s in segments_info], dtype=dtype)
    order = np.argsort(ids)
    ids, classes = ids[order], classes[order]
    where = np.clip(np.searchsorted(ids, pan), 0, len(ids) - 1)
    hit = ids[where] == pan
    out[hit] = classes[where[hit]]
    return out


class PanopticDataset(SegmentationDataset):
    """COCO-format panoptic samples; optional semantic maps (``sem_seg_file_name``, ADE20K panoptic).

    Checked per sample: readable files, equal sizes, PNG segment ids == JSON segment ids, semantic values. Without a
    semantic file the semantic map is derived from the segments (``semantic_from_panoptic``).
    ``sem_lut``/``sem_allowed``: optional conversion of raw semantic values (ADE20K raw ``annotations/``).
    """

    def __init__(
        self,
        *,
        entries: list[dict[str, Any]],
        meta: DatasetMeta,
        mapper: Mapper | None = None,
        skip_bad_samples: bool = False,
        sem_lut: np.ndarray | None = None,
        sem_allowed: np.ndarray | None = None,
        where: str = "",
    ) -> None:
        super().__init__(entries=entries, meta=meta, mapper=mapper, skip_bad_samples=skip_bad_samples, where=where)
        self.sem_lut = sem_lut
        self.sem_allowed = sem_allowed

    def load(self, entry: dict[str, Any]) -> dict[str, Any]:
        image = read_image(entry["file_name"])
        pan_file = entry["pan_seg_file_name"]
        pan = read_panoptic_png(pan_file)
        if pan.shape != image.shape[:2]:
            raise DataError(
                f"{pan_file}: panoptic PNG size {pan.shape[1]}x{pan.shape[0]} differs from its image "
                f"{entry['file_name']} ({image.shape[1]}x{image.shape[0]})"
                + exif_size_hint(entry["file_name"], pan.shape, pan_file)
            )
        in_png = set(np.unique(pan).tolist()) - {0}
        in_json = {s["id"] for s in entry["segments_info"]}
        if in_png != in_json:
            extra, missing = sorted(in_png - in_json)[:5], sorted(in_json - in_png)[:5]
            raise DataError(
                f"{pan_file}: segment ids do not match the JSON"
                + (f"; in the PNG but not the JSON: {extra}" if extra else "")
                + (f"; in the JSON but not the PNG: {missing}" if missing else "")
            )
        raw: dict[str, Any] = {
            "image": image,
            "sem_seg": None,
            "pan_seg": pan,
            "segments_info": [dict(s) for s in entry["segments_info"]],
            "file_name": str(entry["file_name"]),
            "pan_seg_file_name": str(pan_file),
            "image_id": entry["image_id"],
            "height": image.shape[0],
            "width": image.shape[1],
        }
        sem_file = entry.get("sem_seg_file_name")
        if sem_file is not None:
            sem = read_label(sem_file)
            if sem.shape != image.shape[:2]:
                raise DataError(f"{sem_file}: label size {sem.shape[1]}x{sem.shape[0]} differs from its image")
            m = self.meta
            check_label_values(
                sem, num_classes=m.num_classes, ignore_label=m.ignore_label, path=sem_file, allowed=self.sem_allowed
            )
            raw["sem_seg"] = self.sem_lut[sem] if self.sem_lut is not None else sem
            raw["sem_seg_file_name"] = str(sem_file)
        else:
            raw["sem_seg"] = semantic_from_panoptic(pan, raw["segments_info"], ignore_label=self.meta.ignore_label)
        return raw


def panoptic_json_meta(json_file: Path) -> DatasetMeta:
    """The class table of a COCO-format panoptic JSON's ``categories`` (``id``, ``name``, ``isthing``, ``color``):
    COCO's own table (its class order) when they are COCO's 133, else these categories in the listed order."""
    coco = load_meta("coco_panoptic")
    if not json_file.is_file():
        raise DataError(f"{json_file}: panoptic JSON not found")
    try:
        data = json.loads(read_user_text(json_file, error=DataError))
    except json.JSONDecodeError as e:
        raise DataError(f"{json_file}: not a COCO panoptic JSON ({type(e).__name__}: {e})") from None
    try:
        categories = data["categories"]
        ids_names = sorted((int(c["id"]), str(c["name"])) for c in categories)
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{json_file}: no readable 'categories' list ({type(e).__name__}: {e})") from None
    if ids_names == sorted((i, coco.classes[c]) for i, c in coco.dataset_id_to_contiguous.items()):
        return coco
    unsaid = [c["name"] for c in categories if c.get("isthing") not in (0, 1, True, False)]
    if unsaid:  # all stuff by default would train a panoptic model without things, silently
        raise DataError(f"{json_file}: categories need 'isthing' (1 for things, 0 for stuff); missing or not 0/1 for "
                        f"{', '.join(map(str, unsaid[:5]))}{' ...' if len(unsaid) > 5 else ''}")  # fmt: skip
    names = [name for _, name in ids_names]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # (a model's classes are found again by name: in eval, eval-predictions, conversions)
        raise DataError(f"{json_file}: two categories are named {twice[0]!r}; give each category its own name")
    # the semantic maps made from the segments mark "no segment" with 255, or 65535 when 255 is a class's position
    ignore = coco.ignore_label if len(categories) <= coco.ignore_label else 65535
    return meta_from_dict({"ignore_label": ignore, "classes": categories}, name="coco_panoptic",
                          where=f"{json_file}: categories")  # fmt: skip


def coco_panoptic(
    *,
    root: str,
    split: str,
    mapper: Mapper | None = None,
    skip_bad_samples: bool = False,
    json_file: str | None = None,
    image_dir: str | None = None,
    panoptic_dir: str | None = None,
    meta: DatasetMeta | None = None,
) -> PanopticDataset:
    """COCO panoptic 2017 (133 classes): ``coco/{split}2017/``, ``coco/panoptic_{split}2017/`` and
    ``coco/annotations/panoptic_{split}2017.json``; each path can be overridden (relative to ``root``). ``meta``:
    another class table (``panoptic_json_meta`` of a JSON with its own categories); default COCO's."""
    base = Path(root)
    if (base / "coco").is_dir() and json_file is None:
        base = base / "coco"
    if split not in ("train", "val"):
        raise DataError(f"coco_panoptic: unknown split '{split}' (expected train or val)")
    meta = meta or load_meta("coco_panoptic")
    jf = base / (json_file or f"annotations/panoptic_{split}2017.json")
    left_out: list[str] = []
    entries = load_panoptic_json(
        jf, base / (image_dir or f"{split}2017"), base / (panoptic_dir or f"panoptic_{split}2017"), meta,
        check_files=not skip_bad_samples, left_out=left_out,
    )  # fmt: skip
    dataset = PanopticDataset(
        entries=entries, meta=meta, mapper=mapper, skip_bad_samples=skip_bad_samples, where=str(jf)
    )
    dataset.unannotated = left_out  # (said by build_dataset)
    return dataset


def ade20k_panoptic(
    *, root: str, split: str, mapper: Mapper | None = None, skip_bad_samples: bool = False
) -> PanopticDataset:
    """ADE20K panoptic (150 classes, 100 things): ``ADEChallengeData2016/ade20k_panoptic_{train,val}.json`` and
    ``ade20k_panoptic_{train,val}/*.png`` (from ``prepare_ade20k_pan_seg.py``), images in
    ``images/{training,validation}``, semantic maps from ``annotations_detectron2/`` or raw ``annotations/``."""
    base = Path(root) / "ADEChallengeData2016" if (Path(root) / "ADEChallengeData2016").is_dir() else Path(root)
    names = {"train": "training", "val": "validation"}
    if split not in names:
        raise DataError(f"ade20k_panoptic: unknown split '{split}' (expected train or val)")
    meta = load_meta("ade20k_panoptic")
    sem_dir, lut, allowed = base / "annotations_detectron2" / names[split], None, None
    if not sem_dir.is_dir() and (base / "annotations" / names[split]).is_dir():
        sem_dir = base / "annotations" / names[split]
        lut, allowed = ((np.arange(256) - 1) % 256).astype(np.uint8), np.arange(256) <= 150
    jf = base / f"ade20k_panoptic_{split}.json"
    left_out: list[str] = []
    entries = load_panoptic_json(
        jf, base / "images" / names[split], base / f"ade20k_panoptic_{split}", meta, semantic_dir=sem_dir,
        left_out=left_out,
    )  # fmt: skip
    dataset = PanopticDataset(
        entries=entries,
        meta=meta,
        mapper=mapper,
        skip_bad_samples=skip_bad_samples,
        sem_lut=lut,
        sem_allowed=allowed,
        where=str(jf),
    )
    dataset.unannotated = left_out  # (said by build_dataset)
    return dataset
