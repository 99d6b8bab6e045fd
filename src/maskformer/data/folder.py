"""CamVid (SegNet layout) and the generic folder dataset for custom data.

Both read "image label" pairs. CamVid: ``{split}.txt`` lines ``train/x.png trainannot/x.png`` (relative to the
root, or SegNet's absolute ``/SegNet/CamVid/...`` paths, re-rooted), 11 classes, ignore 11.

Folder dataset: ``classes.json`` or ``classes.yaml`` in the root::

    {"ignore_label": 255, "classes": [{"name": "road", "color": [128, 64, 128], "id": 0}, ...]}

(``classes`` may be a plain list of names; ``id`` = the value written in the label files, default = position;
``isthing`` optional; ``ignore_label`` = the files' ignore value, any value that is no class id) and one of these
layouts: ``{split}.txt`` pair lists; ``images/{split}/`` + ``labels/{split}/`` (labels matched by file stem,
``.png``, in the same subfolder: subfolders are read too, hidden files are not); or, for ``split="all"``, flat
``images/`` + ``labels/``.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import DataError
from ..fileio import read_user_text
from .base import Mapper
from .io import check_label_values
from .metadata import DatasetMeta, is_integer, load_meta, meta_from_dict
from .semantic import SemanticDataset, pair_by_stem

__all__ = ["read_pair_list", "read_folder_meta", "camvid", "folder"]


def _resolve(root: Path, text: str) -> Path:
    p = Path(text)
    if not p.is_absolute():
        return root / p
    if p.exists():
        return p
    # SegNet's lists carry absolute paths of the authors' machine: keep "<folder>/<file>" under our root.
    return root / p.parent.name / p.name


def read_pair_list(root: Path, list_file: Path) -> list[dict[str, Any]]:
    """Entries from a text file of ``image label`` lines (blank lines and ``#`` comments ignored; a line with one
    tab is split at the tab, so file names may hold spaces)."""
    if not list_file.is_file():
        raise DataError(f"{list_file}: split list not found")
    entries: list[dict[str, Any]] = []
    for n, line in enumerate(read_user_text(list_file, error=DataError).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")] if line.count("\t") == 1 else line.split()
        if len(parts) != 2:
            hint = " (for file names with spaces, put one tab between the two paths)" if len(parts) > 2 else ""
            raise DataError(f"{list_file}:{n}: expected 'image label', got {line!r}{hint}")
        entries.append({"file_name": str(_resolve(root, parts[0])), "sem_seg_file_name": str(_resolve(root, parts[1]))})
    if not entries:
        raise DataError(f"{list_file}: no samples listed")
    return entries


def _read_classes_file(root: Path) -> tuple[DatasetMeta, int]:
    """``(meta, file_ignore)``: the class table, and the ignore value as written in the label files.

    The files may use any value for "ignore" (0 is common) as long as it is no class's id; in the converted
    (contiguous) maps the ignore label must not collide with a class id, so it becomes 255 (65535 for >= 255
    classes) when the file's value lies in 0..K-1.
    """
    present = [n for n in ("classes.json", "classes.yaml", "classes.yml") if (root / n).exists()]
    if len(present) > 1:
        raise DataError(f"{root}: both {' and '.join(present)} describe the classes: keep one")
    for name in ("classes.json", "classes.yaml", "classes.yml"):
        f = root / name
        if f.is_dir():
            raise DataError(f"{f}: a folder, not a file describing the classes")
        if not f.is_file():
            continue
        try:
            text = read_user_text(f, error=DataError)
            data = json.loads(text) if f.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise DataError(f"{f}: not valid {f.suffix[1:].upper()} ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise DataError(f"{f}: expected a mapping with a 'classes' list")
        _check_keys(data, f)
        file_ignore = data.get("ignore_label", 255)
        ids = [c.get("id", i) if isinstance(c, dict) else i for i, c in enumerate(data["classes"])]
        if not is_integer(file_ignore) or file_ignore in ids:
            default = "" if "ignore_label" in data else " (the default)"
            hint = " (e.g. 65535 for 16-bit label PNGs)" if file_ignore == 255 and file_ignore in ids else ""
            raise DataError(
                f"{f}: ignore_label {file_ignore!r}{default} must be an integer that is no class's id{hint}"
            )
        if not 0 <= file_ignore <= 65535:
            raise DataError(f"{f}: ignore_label {file_ignore} is outside 0..65535 (the values of 8/16-bit label PNGs)")
        for i, d in enumerate(ids):
            if is_integer(d) and not 0 <= d <= 65535:
                raise DataError(f"{f}: classes[{i}] has id {d}, outside 0..65535 (the values of 8/16-bit label PNGs)")
        k = len(data["classes"])
        ignore = file_ignore if not 0 <= file_ignore < k else (255 if k < 255 else 65535)
        return meta_from_dict(dict(data, ignore_label=ignore), name="folder", where=str(f)), file_ignore
    if root.is_file():  # (--data-root mydata/classes.json)
        raise DataError(f"{root}: a file; the data root is the folder holding classes.json, images/ and labels/")
    raise DataError(f"{root}: no classes.json or classes.yaml describing the classes")


_CLASS_KEYS = ("name", "id", "color", "isthing")


# keys of the shipped tables that a folder's classes.json cannot use: named instead of silently ignored
_UNUSED_KEYS = {
    "label_id_to_train_id": "label files hold the classes' ids: give each class its 'id' as written in them",
    "label_divisor": "folder data is semantic: no panoptic segment ids",
}


def _check_keys(data: dict, f: Path) -> None:
    """A misspelt key ("ignore_lable", "is_thing", "colour") was ignored and its default used, and two classes with
    one name could not be told apart in tables and predictions. Other keys (a source, notes) are left alone."""
    for key in data:
        misspelt = key != "ignore_label" and difflib.get_close_matches(key, ["ignore_label"], cutoff=0.85)
        if misspelt or (key in ("ignore_index", "ignore_value", "ignore") and "ignore_label" not in data):
            raise DataError(f"{f}: unknown key {key!r} (did you mean 'ignore_label'?)")
    for key, why in _UNUSED_KEYS.items():
        if key in data:
            raise DataError(f"{f}: {key!r} is not used by folder datasets ({why})")
    if "num_classes" in data and data["num_classes"] != len(data["classes"]):
        raise DataError(f"{f}: num_classes is {data['num_classes']!r} but 'classes' lists {len(data['classes'])}")
    seen: dict[str, int] = {}
    for i, c in enumerate(data["classes"]):
        for key in c if isinstance(c, dict) else []:
            near = difflib.get_close_matches(key, _CLASS_KEYS, n=1, cutoff=0.75) if key not in _CLASS_KEYS else []
            if near:
                raise DataError(f"{f}: classes[{i}] has an unknown key {key!r} (did you mean {near[0]!r}?)")
        name = c.get("name") if isinstance(c, dict) else c
        if isinstance(name, str) and name in seen:
            raise DataError(f"{f}: classes[{seen[name]}] and classes[{i}] are both named {name!r}")
        if isinstance(name, str):
            seen[name] = i


def read_folder_meta(root: Path) -> DatasetMeta:
    """The class table of a folder dataset from ``root/classes.json`` or ``root/classes.yaml``."""
    return _read_classes_file(root)[0]


def folder_label_map(root: Path) -> tuple[DatasetMeta, Callable[[np.ndarray, Path], np.ndarray]]:
    """(class table, ``f(label file values, file) -> class positions``) of the folder dataset at ``root``; f checks
    the values as training does (the values as they are when the files hold the positions and the ignore label)."""
    meta, file_ignore = _read_classes_file(root)
    _, lut, allowed = _value_tables(meta, file_ignore)
    if lut is None or allowed is None:
        return meta, _as_is
    return meta, functools.partial(_to_positions, lut=lut, allowed=allowed)  # (picklable for worker processes)


def _as_is(label: np.ndarray, path: Path) -> np.ndarray:
    return label


def _to_positions(label: np.ndarray, path: Path, *, lut: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    check_label_values(label, num_classes=len(lut), ignore_label=-1, path=path, allowed=allowed)
    return lut[label]


def _value_tables(meta: DatasetMeta, file_ignore: int) -> tuple[int, np.ndarray | None, np.ndarray | None]:
    """Bit depth, lookup table and valid-value table for label files whose values are the classes' ids."""
    ids = meta.dataset_id_to_contiguous
    top = max(max(ids), file_ignore, meta.ignore_label)
    bits = 8 if top < 256 else 16
    if all(d == c for d, c in ids.items()) and file_ignore == meta.ignore_label:
        return bits, None, None
    size = 256 if bits == 8 else 65536
    lut = np.full(size, meta.ignore_label, dtype=np.uint8 if bits == 8 else np.uint16)
    allowed = np.zeros(size, dtype=bool)
    for d, c in ids.items():
        if not 0 <= d < size:
            raise DataError(f"folder dataset: class id {d} is outside 0..{size - 1}")
        lut[d], allowed[d] = c, True
    if 0 <= file_ignore < size:
        lut[file_ignore], allowed[file_ignore] = meta.ignore_label, True
    return bits, lut, allowed


def camvid(*, root: str, split: str, mapper: Mapper | None = None, skip_bad_samples: bool = False) -> SemanticDataset:
    """CamVid, SegNet 11-class version (ignore 11): ``{train,val,test}.txt`` pair lists under ``root`` or
    ``root/camvid`` (images may be PNG or WebP)."""
    base = Path(root)
    if not (base / f"{split}.txt").is_file() and (base / "camvid" / f"{split}.txt").is_file():
        base = base / "camvid"
    return SemanticDataset(
        entries=read_pair_list(base, base / f"{split}.txt"),
        meta=load_meta("camvid"),
        mapper=mapper,
        skip_bad_samples=skip_bad_samples,
        where=str(base),
    )


def folder(*, root: str, split: str, mapper: Mapper | None = None, skip_bad_samples: bool = False) -> SemanticDataset:
    """A custom semantic dataset: ``classes.json``/``classes.yaml`` + one of the layouts in the module docstring."""
    base = Path(root)
    meta, file_ignore = _read_classes_file(base)
    if (base / f"{split}.txt").is_file():
        entries = read_pair_list(base, base / f"{split}.txt")
    elif (base / "images" / split).is_dir():
        entries = pair_by_stem(
            base / "images" / split, base / "labels" / split, ".png", every_label=True, recursive=True
        )
    elif split == "all" and (base / "images").is_dir():
        entries = pair_by_stem(base / "images", base / "labels", ".png", every_label=True, recursive=True)
    else:
        raise DataError(
            f"{base}: no {split}.txt, no images/{split}/ folder"
            + (
                " and no images/ folder"
                if split == "all"
                else " (flat images/ + labels/ folders are the split 'all': train with --set data.train_split=all"
                " --set data.val_split=all, evaluate with --split all)"
            )
        )
    bits, lut, allowed = _value_tables(meta, file_ignore)
    return SemanticDataset(
        entries=entries,
        meta=meta,
        mapper=mapper,
        skip_bad_samples=skip_bad_samples,
        label_bits=bits,
        lut=lut,
        allowed=allowed,
        where=str(base),
    )
