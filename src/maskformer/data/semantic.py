"""Semantic-segmentation datasets in their standard on-disk layouts (OFFICIAL_SPEC §5.4).

``root`` may be the detectron2-style datasets folder (holding ``ADEChallengeData2016/``, ``cityscapes/``, ...) or
the dataset folder itself. ``split`` is "train" or "val" (COCO-Stuff's "test" is accepted for "val").
Label conversions are done on the fly with a lookup table, so raw downloads work without a prepare step:
ADE20K ``annotations/`` (0 = other) are shifted by -1 (0 -> 255) exactly as ``prepare_ade20k_sem_seg.py`` does,
and Cityscapes ``*_labelIds.png`` are mapped to trainIds when ``*_labelTrainIds.png`` is absent.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..fileio import SPECIAL_FILE, special_file
from .base import Mapper, SegmentationDataset
from .io import check_label_values, exif_size_hint, read_image, read_label
from .metadata import DatasetMeta, load_meta

__all__ = [
    "SemanticDataset",
    "pair_by_stem",
    "ade20k_150",
    "ade20k_full_847",
    "coco_stuff_10k",
    "cityscapes",
    "mapillary_vistas",
]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def _check_files_exist(entries: list[dict[str, Any]]) -> None:
    """A ``DataError`` naming the first listed image or label that is not a file (and how many more are missing)."""
    missing = {str(e[k]): k for e in entries for k in ("file_name", "sem_seg_file_name") if not Path(e[k]).is_file()}
    if missing:  # (a dict: a file listed twice counts once)
        more = f" (and {len(missing) - 1} more listed files)" if len(missing) > 1 else ""
        name, kind = next(iter(missing.items()))
        first = Path(name)
        if first.is_dir():
            raise DataError(f"{first}: is a folder, not {'an image' if kind == 'file_name' else 'a label'} file{more}")
        if special_file(first):  # (a named pipe: reading it would wait forever)
            raise DataError(f"{first}: {SPECIAL_FILE}{more}")
        others = (
            sorted(p.name for p in first.parent.glob(f"{glob.escape(first.stem)}.*") if p.is_file())
            if first.parent.is_dir()
            else []
        )
        near = f"; there is {', '.join(others)}" if others else ""  # (e.g. X.PNG, or a label saved as X.jpg)
        if others and kind == "sem_seg_file_name":
            near += " (label maps are lossless .png files)"
        raise DataError(f"{first}: file not found{more}{near}")


class SemanticDataset(SegmentationDataset):
    """Image + single-channel label map per sample; entries hold ``file_name`` and ``sem_seg_file_name``.

    ``label_bits``: 8 or 16 (16-bit TIFF/PNG for ADE20K-Full). ``lut``: optional table applied to the raw label
    values, whose valid raw values are given by the bool table ``allowed``; entries with ``"convert": False``
    are read as stored. Each sample is checked: readable files, equal image/label sizes, label values that are
    class ids or the ignore label.
    """

    def __init__(
        self,
        *,
        entries: list[dict[str, Any]],
        meta: DatasetMeta,
        mapper: Mapper | None = None,
        skip_bad_samples: bool = False,
        label_bits: int = 8,
        lut: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
        where: str = "",
    ) -> None:
        super().__init__(entries=entries, meta=meta, mapper=mapper, skip_bad_samples=skip_bad_samples, where=where)
        if not skip_bad_samples:  # a missing file now, not when (or if) a training step first draws it
            _check_files_exist(entries)
        self.label_bits = label_bits
        self.lut = lut
        self.allowed = allowed
        self.class_colors = _class_colors(meta, converted=lut is not None)

    def load(self, entry: dict[str, Any]) -> dict[str, Any]:
        image = read_image(entry["file_name"])
        label_file = entry["sem_seg_file_name"]
        convert = self.lut is not None and entry.get("convert", True)
        colors = self.class_colors if convert or self.lut is None else None
        label = read_label(label_file, bits=self.label_bits, class_colors=colors)
        if label.shape != image.shape[:2]:
            raise DataError(
                f"{label_file}: label size {label.shape[1]}x{label.shape[0]} differs from its image "
                f"{entry['file_name']} ({image.shape[1]}x{image.shape[0]})"
                + exif_size_hint(entry["file_name"], label.shape, label_file)
            )
        m = self.meta
        allowed = self.allowed if convert else None
        check_label_values(
            label, num_classes=m.num_classes, ignore_label=m.ignore_label, path=label_file, allowed=allowed
        )
        if convert:
            label = self.lut[label]
        return {
            "image": image,
            "sem_seg": label,
            "file_name": str(entry["file_name"]),
            "sem_seg_file_name": str(label_file),
            "height": image.shape[0],
            "width": image.shape[1],
        }


def _class_colors(meta: DatasetMeta, *, converted: bool) -> dict[tuple[int, ...], tuple[int, str]]:
    """{colour: (label value in the files, class name)} for the classes whose colour is their own (unique)."""
    value_of = {c: v for v, c in meta.dataset_id_to_contiguous.items()} if converted else {}
    table: dict[tuple[int, ...], tuple[int, str]] = {}
    repeated = set()
    for i, (name, color) in enumerate(zip(meta.classes, meta.colors)):
        key = tuple(int(c) for c in color)
        if key in table:
            repeated.add(key)
        table[key] = (value_of.get(i, i), name)
    return {k: v for k, v in table.items() if k not in repeated}


def _pick(root: Path, *candidates: str) -> Path:
    """The first ``root/candidate`` that exists (``""`` = root itself), else root."""
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    return root


def _split(split: str, names: dict[str, str], dataset: str) -> str:
    if split not in names:
        raise DataError(f"{dataset}: unknown split '{split}' (expected one of {sorted(names)})")
    return names[split]


def _files(folder: Path, recursive: bool) -> list[Path]:
    """Files of ``folder`` (and its subfolders when ``recursive``), sorted; hidden ones (``.DS_Store``, macOS's
    ``._x.jpg`` resource forks, anything under a ``.folder``) left out; linked subfolders are followed, once each."""
    if not recursive:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and _listed(p))
    found, seen = [], set()
    for top, dirs, names in os.walk(folder, followlinks=True):  # (a linked subfolder holds samples too)
        real = os.path.realpath(top)
        if real in seen:  # (a link back up, or the same folder linked twice: read once)
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(top, n) for n in names if not n.startswith(".")]
    return sorted(p for p in found if _listed(p))


def _listed(p: Path) -> bool:
    """A regular file, or a named pipe / socket / device (listed, so that the file check names it)."""
    return p.is_file() or special_file(p)


def pair_by_stem(
    image_dir: Path,
    label_dir: Path,
    label_ext: str,
    *,
    suffix: str = "",
    every_label: bool = False,
    recursive: bool = False,
) -> list[dict[str, Any]]:
    """One entry per image in ``image_dir`` (with ``recursive`` also in its subfolders); its label is
    ``label_dir/<relative folder>/<stem><suffix><label_ext>`` (may be missing: that is reported when the sample is
    read). Two images of one stem (``a.jpg``, ``a.png``) are an error; with ``every_label`` so is a label file that
    no image pairs with (it would be left out without a word)."""
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found")
    images = [p for p in _files(image_dir, recursive) if p.suffix.lower() in IMAGE_EXTS]
    if not images:
        raise DataError(f"{image_dir}: no images found")
    seen: dict[str, Path] = {}
    for p in images:
        key = p.relative_to(image_dir).with_suffix("").as_posix()
        if key in seen:
            raise DataError(f"{seen[key]} and {p}: two images named {p.stem!r} would share one label; keep one")
        seen[key] = p
    if every_label and label_dir.is_dir():
        ending = f"{suffix}{label_ext}"
        for label in _files(label_dir, recursive):
            name = label.relative_to(label_dir).as_posix()
            if name.lower().endswith(ending.lower()) and name[: -len(ending)] not in seen:
                stem = label.name[: -len(ending)]
                others = [p.name for p in (image_dir / name).parent.glob(f"{glob.escape(stem)}.*") if p.is_file()]
                if others:
                    raise DataError(f"{label}: no image of that name in {image_dir}; there is {others[0]}, a file "
                                    f"type not read as an image (use one of {', '.join(IMAGE_EXTS)})")  # fmt: skip
                raise DataError(f"{label}: no image of that name in {image_dir} (every label needs its image)")
    return [{"file_name": str(p), "sem_seg_file_name": str(_label_file(label_dir, f"{key}{suffix}", label_ext))}
            for key, p in seen.items()]  # fmt: skip


def _label_file(label_dir: Path, name: str, ext: str) -> Path:
    """``label_dir/<name><ext>``, or the file whose extension differs from ``ext`` in case only (X.PNG)."""
    path = label_dir / f"{name}{ext}"
    if path.is_file() or not path.parent.is_dir():
        return path
    upper = path.with_name(f"{path.name[: -len(ext)]}{ext.upper()}")
    return upper if upper.is_file() else path


def ade20k_150(
    *, root: str, split: str, mapper: Mapper | None = None, skip_bad_samples: bool = False
) -> SemanticDataset:
    """ADE20K SceneParsing (150 classes, ignore 255): ``ADEChallengeData2016/images/{training,validation}/*.jpg``
    with ``annotations_detectron2/`` (already shifted) or raw ``annotations/`` (shifted on the fly: v - 1 mod 256).
    A flat ``images/`` + ``annotations/`` folder (no split subfolders) is accepted too."""
    base = _pick(Path(root), "ADEChallengeData2016")
    sub = _split(split, {"train": "training", "val": "validation"}, "ade20k_150")
    images = base / "images" / sub if (base / "images" / sub).is_dir() else base / "images"
    meta = load_meta("ade20k_150")
    for ann in ("annotations_detectron2", "annotations"):
        labels = base / ann / sub if (base / ann / sub).is_dir() else base / ann
        if labels.is_dir():
            break
    else:
        raise DataError(f"{base}: neither annotations_detectron2/ nor annotations/ found")
    lut = allowed = None
    if labels.parent.name == "annotations" or labels.name == "annotations":
        # Raw ADE20K: 0 = "other" (ignored), 1..150 = classes -> uint8 (v - 1): 0 -> 255, k -> k - 1.
        lut = ((np.arange(256) - 1) % 256).astype(np.uint8)
        allowed = np.arange(256) <= 150
    return SemanticDataset(
        entries=pair_by_stem(images, labels, ".png"),
        meta=meta,
        mapper=mapper,
        skip_bad_samples=skip_bad_samples,
        lut=lut,
        allowed=allowed,
        where=str(images),
    )


def ade20k_full_847(
    *, root: str, split: str, mapper: Mapper | None = None, skip_bad_samples: bool = False
) -> SemanticDataset:
    """ADE20K-Full (847 classes, ignore 65535): ``ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg``
    and 16-bit ``annotations_detectron2/.../*.tif`` (as written by ``prepare_ade20k_full_sem_seg.py``)."""
    base = _pick(Path(root), "ADE20K_2021_17_01")
    sub = _split(split, {"train": "training", "val": "validation"}, "ade20k_full_847")
    return SemanticDataset(
        entries=pair_by_stem(base / "images_detectron2" / sub, base / "annotations_detectron2" / sub, ".tif"),
        meta=load_meta("ade20k_full_847"),
        mapper=mapper,
        skip_bad_samples=skip_bad_samples,
        label_bits=16,
        where=str(base),
    )


def coco_stuff_10k(
    *, root: str, split: str, mapper: Mapper | None = None, skip_bad_samples: bool = False
) -> SemanticDataset:
    """COCO-Stuff-10K (171 classes, ignore 255): ``coco/coco_stuff_10k/images_detectron2/{train,test}/*.jpg`` and
    ``annotations_detectron2/{train,test}/*.png`` (written by ``prepare_coco_stuff_10k_v1.0_sem_seg.py``)."""
    base = _pick(Path(root), "coco/coco_stuff_10k", "coco_stuff_10k")
    sub = _split(split, {"train": "train", "val": "test", "test": "test"}, "coco_stuff_10k")
    return SemanticDataset(
        entries=pair_by_stem(base / "images_detectron2" / sub, base / "annotations_detectron2" / sub, ".png"),
        meta=load_meta("coco_stuff_10k"),
        mapper=mapper,
        skip_bad_samples=skip_bad_samples,
        where=str(base),
    )


def cityscapes(
    *, root: str, split: str, mapper: Mapper | None = None, skip_bad_samples: bool = False
) -> SemanticDataset:
    """Cityscapes fine (19 classes, ignore 255): ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with
    ``gtFine/{split}/{city}/*_gtFine_labelTrainIds.png``, or ``*_gtFine_labelIds.png`` mapped through the
    labelId -> trainId table when the trainId files have not been generated."""
    base = _pick(Path(root), "cityscapes")
    sub = _split(split, {"train": "train", "val": "val", "test": "test"}, "cityscapes")
    image_root = base / "leftImg8bit" / sub
    if not image_root.is_dir():
        raise DataError(f"{image_root}: image folder not found")
    meta = load_meta("cityscapes")
    entries: list[dict[str, Any]] = []
    for img in sorted(image_root.glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        gt = base / "gtFine" / sub / img.parent.name
        train_ids, label_ids = gt / f"{stem}_gtFine_labelTrainIds.png", gt / f"{stem}_gtFine_labelIds.png"
        if train_ids.is_file() or not label_ids.is_file():
            entries.append({"file_name": str(img), "sem_seg_file_name": str(train_ids), "convert": False})
        else:
            entries.append({"file_name": str(img), "sem_seg_file_name": str(label_ids), "convert": True})
    if not entries:
        raise DataError(f"{image_root}: no *_leftImg8bit.png images found")
    # labelId -> trainId for the entries that only have *_labelIds.png (ids absent from the table are errors).
    lut = np.full(256, meta.ignore_label, dtype=np.uint8)
    allowed = np.zeros(256, dtype=bool)
    for label_id, train_id in meta.label_id_to_train_id.items():
        if label_id >= 0:
            lut[label_id] = train_id
            allowed[label_id] = True
    return SemanticDataset(
        entries=entries,
        meta=meta,
        mapper=mapper,
        skip_bad_samples=skip_bad_samples,
        lut=lut,
        allowed=allowed,
        where=str(image_root),
    )


def mapillary_vistas(
    *, root: str, split: str, mapper: Mapper | None = None, skip_bad_samples: bool = False
) -> SemanticDataset:
    """Mapillary Vistas v1.2 (65 classes, ignore 65): ``mapillary_vistas/{training,validation}/images/*.jpg`` and
    palette PNGs ``labels/*.png`` whose indices are the class ids (no preprocessing)."""
    base = _pick(Path(root), "mapillary_vistas")
    sub = _split(split, {"train": "training", "val": "validation"}, "mapillary_vistas")
    return SemanticDataset(
        entries=pair_by_stem(base / sub / "images", base / sub / "labels", ".png"),
        meta=load_meta("mapillary_vistas"),
        mapper=mapper,
        skip_bad_samples=skip_bad_samples,
        where=str(base / sub),
    )
