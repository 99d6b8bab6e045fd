"""Class tables of every dataset: names, colours, thing/stuff flags, ignore label and id maps.

The tables are data, not code: one JSON file per dataset in ``maskformer/data/meta/`` (shipped with the package).
``load_meta(name)`` turns a file into a ``DatasetMeta``; the synthetic dataset builds its meta from its arguments
and the folder dataset from the user's ``classes.json`` / ``classes.yaml``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ..errors import CheckpointError, DataError

__all__ = [
    "moved_class",
    "DatasetMeta", "load_meta", "meta_from_dict", "meta_from_checkpoint", "generic_meta", "shipped_meta", "META_NAMES",
]  # fmt: skip

# Names with a JSON table in maskformer/data/meta (plus "synthetic" and "folder", built from arguments).
META_NAMES = (
    "ade20k_150",
    "ade20k_full_847",
    "coco_stuff_10k",
    "cityscapes",
    "mapillary_vistas",
    "camvid",
    "coco_panoptic",
)
# ADE20K panoptic uses the ADE20K-150 table (its category ids are the contiguous ids 0..149).
_ALIASES = {"ade20k_panoptic": "ade20k_150"}


@dataclass
class DatasetMeta:
    """What a model, an evaluator or a visualizer needs to know about a dataset's classes.

    ``classes[i]``, ``colors[i]`` and ``isthing[i]`` describe contiguous class id ``i`` (0..K-1).
    ``dataset_id_to_contiguous`` maps the ids written in annotation files (COCO category ids, ADE20K object ids)
    to contiguous ids; it is the identity when a dataset has no separate ids.
    ``label_id_to_train_id`` is Cityscapes' labelId -> trainId table (255 = ignore), empty elsewhere.
    """

    name: str
    classes: list[str]
    colors: list[list[int]]
    isthing: list[bool]
    ignore_label: int = 255
    dataset_id_to_contiguous: dict[int, int] = field(default_factory=dict)
    label_id_to_train_id: dict[int, int] = field(default_factory=dict)
    label_divisor: int = 1000

    def __post_init__(self) -> None:
        k = len(self.classes)
        if len(self.colors) != k or len(self.isthing) != k:
            raise DataError(
                f"meta '{self.name}': {k} classes but {len(self.colors)} colours, {len(self.isthing)} flags"
            )
        if not self.dataset_id_to_contiguous:
            self.dataset_id_to_contiguous = {i: i for i in range(k)}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def contiguous_to_dataset_id(self) -> dict[int, int]:
        """Inverse of ``dataset_id_to_contiguous`` (to write predictions with the dataset's own ids)."""
        return {c: d for d, c in self.dataset_id_to_contiguous.items()}

    @property
    def thing_ids(self) -> list[int]:
        """Contiguous ids of the "thing" classes (countable objects)."""
        return [i for i, t in enumerate(self.isthing) if t]

    @property
    def stuff_ids(self) -> list[int]:
        return [i for i, t in enumerate(self.isthing) if not t]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (written into checkpoints and metrics files)."""
        return {
            "name": self.name,
            "dataset": self.name,
            "ignore_label": self.ignore_label,
            "label_divisor": self.label_divisor,
            "classes": [
                {"id": d, "name": n, "color": c, "isthing": t}
                for d, n, c, t in zip(
                    [self.contiguous_to_dataset_id[i] for i in range(self.num_classes)],
                    self.classes,
                    self.colors,
                    self.isthing,
                )
            ],
            "label_id_to_train_id": {str(k): v for k, v in self.label_id_to_train_id.items()},
        }


def moved_class(trained: list[str], data: list[str]) -> str | None:
    """How a class table differs harmfully from the one a model was trained with: the first class of ``trained``
    that ``data`` lists at another position (a reordered or edited classes.json), as "'Sky' is class 1 here, the
    model's class 0"; None when every shared name keeps its position (renamed classes only, or equal tables)."""
    where = {name: i for i, name in enumerate(data)}
    for i, name in enumerate(trained):
        if name in where and where[name] != i:
            return f"{name!r} is class {where[name]} here, the model's class {i}"
    return None


def is_integer(value: Any) -> bool:
    """An int that is no bool (``true`` in JSON/YAML is an int to Python, and as an index it selects everything)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _color(value: Any, where: str) -> list[int]:
    if not (isinstance(value, list | tuple) and len(value) == 3 and all(is_integer(v) for v in value)):
        raise DataError(f"{where}: a colour must be a list of three integers, got {value!r}")
    if not all(0 <= v <= 255 for v in value):
        raise DataError(f"{where}: colour values must be in 0..255, got {value!r}")
    return [int(v) for v in value]


def meta_from_dict(data: dict[str, Any], *, name: str, where: str) -> DatasetMeta:
    """Build a ``DatasetMeta`` from the JSON/YAML layout of ``maskformer/data/meta/*.json``.

    ``data``: ``{"ignore_label": int, "classes": [{"name": str, "color": [r,g,b], "isthing": bool, "id": int}, ...]}``
    (``id``, ``color`` and ``isthing`` optional; ``classes`` may also be a plain list of names).
    ``where`` names the file in error messages.
    """
    if not isinstance(data, dict) or "classes" not in data:
        raise DataError(f"{where}: expected a mapping with a 'classes' list")
    raw = data["classes"]
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{where}: 'classes' must be a non-empty list")
    names: list[str] = []
    colors: list[list[int]] = []
    isthing: list[bool] = []
    ids: dict[int, int] = {}
    for i, c in enumerate(raw):
        if isinstance(c, str):
            c = {"name": c}
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"].strip():
            got = c.get("name") if isinstance(c, dict) else c
            hint = " (YAML reads yes/no/on/off/true/false unquoted as a boolean: quote the name)" if isinstance(
                got, bool) else ""  # fmt: skip
            raise DataError(f"{where}: classes[{i}] needs a non-empty 'name' string, got {got!r}{hint}")
        names.append(c["name"])
        # Classes without a colour get a deterministic, well-spread one (golden-ratio hue steps).
        colors.append(_color(c["color"], f"{where}: classes[{i}]") if "color" in c else _default_color(i))
        thing = c.get("isthing", False)
        if thing not in (True, False):  # (0 and 1 too: COCO's JSON writes them)
            raise DataError(f"{where}: classes[{i}] ({c['name']}) has isthing {thing!r}: write true or false")
        isthing.append(bool(thing))
        dataset_id = c.get("id", i)
        if not is_integer(dataset_id) or dataset_id in ids:
            raise DataError(f"{where}: classes[{i}] has a missing, non-integer or repeated id {dataset_id!r}")
        ids[dataset_id] = i
    ignore = data.get("ignore_label", 255)
    if not is_integer(ignore) or 0 <= ignore < len(names):
        raise DataError(f"{where}: ignore_label must be an integer outside 0..{len(names) - 1}, got {ignore!r}")
    table = data.get("label_id_to_train_id") or {}
    if not isinstance(table, dict) or not all(is_integer(v) and str(k).isdigit() for k, v in table.items()):
        raise DataError(f"{where}: label_id_to_train_id must map label ids to train ids (integers)")
    divisor = data.get("label_divisor", 1000)
    if not is_integer(divisor) or divisor < 1:
        raise DataError(f"{where}: label_divisor must be a positive integer, got {divisor!r}")
    return DatasetMeta(
        name=name,
        classes=names,
        colors=colors,
        isthing=isthing,
        ignore_label=ignore,
        dataset_id_to_contiguous=ids,
        label_id_to_train_id={int(k): int(v) for k, v in table.items()},
        label_divisor=int(divisor),
    )


def _default_color(i: int) -> list[int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.9)
    return [int(round(r * 255)), int(round(g * 255)), int(round(b * 255))]


def load_meta(name: str) -> DatasetMeta:
    """The class table of a dataset by name: one of ``META_NAMES`` or ``"ade20k_panoptic"`` (the synthetic and
    folder datasets build theirs from arguments: ``synthetic.synthetic_meta``, ``folder.read_folder_meta``)."""
    file = _ALIASES.get(name, name)
    if file not in META_NAMES:
        raise DataError(f"unknown dataset '{name}' (expected one of {sorted([*META_NAMES, *_ALIASES])})")
    text = resources.files("maskformer.data").joinpath("meta", f"{file}.json").read_text()
    return meta_from_dict(json.loads(text), name=name, where=f"maskformer/data/meta/{file}.json")


def shipped_meta(name: str, num_classes: int) -> DatasetMeta | None:
    """The shipped class table of dataset ``name`` when it has ``num_classes`` classes, else None."""
    if name not in META_NAMES and name not in _ALIASES:
        return None
    table = load_meta(name)
    return table if table.num_classes == num_classes else None


def generic_meta(num_classes: int, *, name: str = "unknown") -> DatasetMeta:
    """Classes ``class 0 .. class K-1`` with spread colours, all stuff: for a model that carries no class table."""
    return meta_from_dict({"classes": [f"class {i}" for i in range(num_classes)]}, name=name, where=name)


def meta_from_checkpoint(meta: dict[str, Any] | None, *, num_classes: int, dataset: str, where: str) -> DatasetMeta:
    """The class table stored in a checkpoint's ``meta``: the one schema every producer writes
    (``DatasetMeta.to_dict()``: ``{"dataset", "ignore_label", "classes": [{"id", "name", "color", "isthing"}]}``).

    Also reads the older layouts: ``classes`` as a list of names with separate ``colors`` / ``isthing`` lists
    (``maskformer convert`` before the schema), and no ``classes`` at all (then the shipped table of ``dataset`` when
    its class count fits, else ``generic_meta``). ``where`` names the checkpoint in errors; a class count that differs
    from the model's ``num_classes`` is a ``CheckpointError``.
    """
    meta = dict(meta or {})
    name = str(meta.get("dataset") or meta.get("name") or dataset)
    raw = meta.get("classes")
    try:
        if raw and isinstance(raw, list) and all(isinstance(c, str) for c in raw):
            colors, isthing = meta.get("colors") or [], meta.get("isthing") or []
            meta["classes"] = [
                {
                    "name": n,
                    **({"color": list(colors[i])} if i < len(colors) else {}),
                    "isthing": bool(isthing[i]) if i < len(isthing) else False,
                }
                for i, n in enumerate(raw)
            ]
        if raw:
            table = meta_from_dict(meta, name=name, where=f"{where}: meta")
        else:
            table = shipped_meta(dataset, num_classes) or generic_meta(num_classes, name=name)
    except DataError as e:
        raise CheckpointError(str(e)) from None
    if table.num_classes != num_classes:
        raise CheckpointError(
            f"{where}: its metadata lists {table.num_classes} classes but the model predicts {num_classes}"
        )
    return table
