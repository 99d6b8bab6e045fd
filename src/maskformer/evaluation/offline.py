"""Scoring prediction folders on disk: COCO-panoptic (JSON + RGB PNGs) and semantic label PNGs.

Images are processed one at a time (optionally by a pool of worker processes, each summing its share), so memory
does not grow with the dataset. Every problem with the files raises ``DataError`` naming the file and the fault.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, leave_signals_to_parent
from ..fileio import JPEG_LABEL, files_in, not_a_file, read_user_text, unreadable_reason, upright
from .panoptic import PanopticEvaluator, PQStats, pq_image_stats
from .semantic import SemanticEvaluator, semantic_metrics

T = TypeVar("T")


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic id map from an RGB array: ``id = R + 256 G + 256^2 B``. uint8 ``[H, W, 3]`` -> int64 ``[H, W]``."""
    c = rgb.astype(np.int64)
    return c[..., 0] + 256 * c[..., 1] + 65536 * c[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb2id``: int ``[H, W]`` (ids < 256^3) -> uint8 ``[H, W, 3]``."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise DataError(f"{path}: {not_a_file(path)}")
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot read image ({unreadable_reason(e, path.stat().st_size)})") from e
    return image


def read_panoptic_png(path: Path) -> np.ndarray:
    """Panoptic id map ``[H, W]`` (uint32) from an RGB PNG (or a single-channel PNG holding the ids directly), turned
    by its EXIF orientation as training and ``maskformer eval`` read it."""
    image = upright(_open(path))
    if image.mode == "RGB":
        # PIL packs RGB as little-endian RGBX words in C; masking the X byte yields rgb2id without int64 temporaries
        words = np.frombuffer(image.tobytes("raw", "RGBX"), dtype="<u4").reshape(image.height, image.width)
        return words & np.uint32(0xFFFFFF)
    if image.mode in ("L", "I", "I;16"):
        return np.asarray(image).astype(np.uint32)
    raise DataError(f"{path}: expected an RGB panoptic PNG, got mode {image.mode}")


def read_label_png(path: Path) -> np.ndarray:
    """Semantic label map ``[H, W]`` from a single-channel (L, P, I, I;16) PNG; palette images give their indices;
    turned by its EXIF orientation as training and ``maskformer eval`` read it. A JPEG is refused (lossy ids)."""
    image = upright(_open(path))
    if image.format in ("JPEG", "MPO"):  # (also JPEG data under a .png name)
        raise DataError(f"{path}: {JPEG_LABEL}")
    if image.mode not in ("L", "P", "I", "I;16"):
        raise DataError(f"{path}: expected a single-channel label PNG, got mode {image.mode}")
    return np.asarray(image)


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: {not_a_file(path)}")
    text = read_user_text(path, error=DataError)  # UTF-8 with or without a BOM; another encoding is one line
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e


def _annotations(data: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: expected a COCO panoptic JSON object with an 'annotations' list")
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or not {"image_id", "file_name", "segments_info"} <= ann.keys():
            raise DataError(f"{path}: an annotation lacks image_id, file_name or segments_info")
        image_id = ann["image_id"]
        if isinstance(image_id, bool) or not isinstance(image_id, str | int):
            raise DataError(f"{path}: image_id {image_id!r:.60} is not a string or an integer")
        if not isinstance(ann["file_name"], str) or not ann["file_name"]:
            raise DataError(f"{path}: image_id {image_id!r}: file_name {ann['file_name']!r:.60} is not a file name")
    return data["annotations"]


def _chunks(items: Sequence[T], workers: int) -> list[Sequence[T]]:
    """Split into about 4 chunks per worker so one slow chunk does not idle the others."""
    n = max(1, min(len(items), 4 * workers))
    bounds = np.linspace(0, len(items), n + 1).astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _run(job: Callable[[Sequence[T]], Any], items: Sequence[T], workers: int) -> Iterable[Any]:
    """``job`` over chunks of ``items``, in this process (``workers <= 1``) or a pool; results in any order."""
    if not items:
        return []
    if workers <= 1 or len(items) <= 1:
        return [job(items)]
    with multiprocessing.get_context().Pool(workers, initializer=leave_signals_to_parent) as pool:
        return list(pool.imap_unordered(job, _chunks(items, workers)))


_PanopticItem = tuple[Any, Path, list, Path, list, Mapping[int, int], Path]


def _panoptic_chunk(items: Sequence[_PanopticItem]) -> PQStats:
    stats: PQStats | None = None
    for image_id, gt_png, gt_segments, pred_png, pred_segments, cat_index, pred_json in items:
        gt = read_panoptic_png(gt_png)
        pred = read_panoptic_png(pred_png)
        if pred.shape != gt.shape:
            raise DataError(
                f"{pred_png}: size {pred.shape[1]}x{pred.shape[0]} differs from ground truth {gt_png} "
                f"({gt.shape[1]}x{gt.shape[0]})"
            )
        try:
            one = pq_image_stats(
                pred, pred_segments, gt, gt_segments, cat_index=cat_index, use_gt_area_field=True, strict_gt=True
            )
        except KeyError as e:
            raise DataError(f"{gt_png} / {pred_png} (image_id {image_id}): a segment lacks the key {e}") from e
        except ValueError as e:
            culprit = gt_png if "ground-truth" in str(e) else f"{pred_png} / {pred_json}"
            raise DataError(f"{culprit} (image_id {image_id}): {e}") from e
        if stats is None:
            stats = one
        else:
            stats += one
    assert stats is not None, "called with an empty chunk"
    return stats


def evaluate_panoptic_folder(
    gt_json: str | Path,
    gt_dir: str | Path,
    pred_json: str | Path,
    pred_dir: str | Path,
    *,
    categories: Sequence[Mapping[str, Any]] | None = None,
    workers: int = 0,
) -> dict[str, Any]:
    """panopticapi's ``pq_compute`` over COCO-panoptic files, with the same result (see ``PanopticEvaluator``).

    Args:
        gt_json, pred_json: COCO panoptic JSON; annotations are paired by ``image_id`` (or a prediction's
            ``image_id`` equal to the ground-truth PNG's file stem, as ``maskformer predict`` writes them); every
            ground-truth image needs a prediction (extra predictions are ignored, as panopticapi).
        gt_dir, pred_dir: folders of the RGB PNGs named by each annotation's ``file_name``.
        categories: ``[{"id", "isthing", ...}]``; default: the ``categories`` of ``gt_json``.
        workers: worker processes (0 or 1: none).

    Returns:
        ``PanopticEvaluator.compute()``'s dict (``All``/``Things``/``Stuff``/``per_class`` + percent keys).
    """
    gt_json, gt_dir, pred_json, pred_dir = Path(gt_json), Path(gt_dir), Path(pred_json), Path(pred_dir)
    gt_data = _load_json(gt_json)
    gt_anns = _annotations(gt_data, gt_json)
    if not gt_anns:  # (PQ over no image is no score)
        raise DataError(f"{gt_json}: its 'annotations' list is empty: no image to score")
    pred_data = _load_json(pred_json)
    pred_anns = _annotations(pred_data, pred_json)
    if categories is None:
        if not isinstance(gt_data.get("categories"), list):
            raise DataError(f"{gt_json}: no 'categories' list (pass categories explicitly)")
        categories = gt_data["categories"]
    try:
        evaluator = PanopticEvaluator(categories=categories)
    except (KeyError, ValueError) as e:
        raise DataError(f"{gt_json}: bad categories ({e})") from e

    pred_by_image: dict[Any, dict[str, Any]] = {}
    for ann in pred_anns:
        if ann["image_id"] in pred_by_image:
            raise DataError(f"{pred_json}: image_id {ann['image_id']} has two annotations")
        pred_by_image[ann["image_id"]] = ann
    to_gt = _category_map(pred_data.get("categories"), categories, pred_json)
    gt_ids = {ann["image_id"] for ann in gt_anns}
    scores: dict[Any, Any] = {}  # a prediction's image_id -> the ground-truth image_id it is scored against
    items: list[_PanopticItem] = []
    for gt_ann in gt_anns:
        pred_ann = pred_by_image.get(gt_ann["image_id"])
        name = Path(gt_ann["file_name"]).with_suffix("")
        if pred_ann is None:
            # `maskformer predict` names an image by its file's stem ("000000139769"), COCO by a number (139769);
            # with --recursive by its path in the folder ("city/000139769"), as the ground truth's file_name has it.
            # Never another ground-truth image's own prediction (that image is scored with it)
            found = [k for k in (name.as_posix(), name.name) if k in pred_by_image and k not in gt_ids]
            pred_ann = pred_by_image[found[0]] if found else None
        if pred_ann is None:
            raise DataError(f"{pred_json}: no prediction for image_id {gt_ann['image_id']} (nor for its file name"
                            f" {name.as_posix()!r}, as `maskformer predict` names them)")  # fmt: skip
        if pred_ann["image_id"] in scores:
            raise DataError(f"{pred_json}: the prediction of image_id {pred_ann['image_id']!r} would be scored for "
                            f"two images ({scores[pred_ann['image_id']]!r} and {gt_ann['image_id']!r}): give each "
                            "ground-truth image its own")  # fmt: skip
        scores[pred_ann["image_id"]] = gt_ann["image_id"]
        if to_gt:
            segments = [dict(s, category_id=to_gt.get(s.get("category_id"), s.get("category_id")))
                        for s in pred_ann["segments_info"]]  # fmt: skip
            pred_ann = dict(pred_ann, segments_info=segments)
        items.append(
            (
                gt_ann["image_id"],
                gt_dir / gt_ann["file_name"],
                gt_ann["segments_info"],
                pred_dir / pred_ann["file_name"],
                pred_ann["segments_info"],
                evaluator.cat_index,
                pred_json,
            )
        )
    for stats in _run(_panoptic_chunk, items, workers):
        evaluator.add_stats(stats)
    return evaluator.compute()


def _category_map(
    pred_categories: Any, gt_categories: Sequence[Mapping[str, Any]], pred_json: Path
) -> dict[int, int] | None:
    """Prediction category id -> ground-truth id, by name, when the prediction JSON lists its categories with other
    ids (a class table numbered 0..K-1, as a model trained on a folder dataset has, against a ground truth with its own
    ids); else None. Names given twice cannot pair ids: then the ids must agree (else a DataError)."""
    if not isinstance(pred_categories, list):
        return None
    if not all(isinstance(c, Mapping) and isinstance(c.get("name"), str) for c in pred_categories):
        return None  # (no names to pair by: ids are taken as they are)
    gt_pairs = {(c.get("id"), c.get("name")) for c in gt_categories}
    if all(isinstance(c, Mapping) and (c.get("id"), c.get("name")) in gt_pairs for c in pred_categories):
        return None  # the same ids with the same names
    for table in (gt_categories, pred_categories):
        names = [c.get("name") for c in table if isinstance(c, Mapping)]
        twice = sorted({str(n) for n in names if names.count(n) > 1})
        if twice:
            raise DataError(f"{pred_json}: its categories have other ids than the ground truth's, and the name "
                            f"{twice[0]!r} is given to two categories: the ids cannot be paired by name")  # fmt: skip
    by_name = {c.get("name"): c.get("id") for c in gt_categories}
    try:
        mapping = {c["id"]: by_name[c["name"]] for c in pred_categories}
    except (KeyError, TypeError):
        return None  # not the same class table: ids are taken as they are
    return None if all(k == v for k, v in mapping.items()) else mapping


LabelMap = Callable[[np.ndarray, Path], np.ndarray]  # (label file values, file) -> class positions 0..K-1 / ignore
_SemanticItem = tuple[Path, Path, int, int, LabelMap | None, LabelMap | None]  # (.., ground truth's map, predictions')


def ade20k_raw_positions(label: np.ndarray, path: Path) -> np.ndarray:
    """ADE20K's raw ``annotations/`` PNGs (0 = other, k = class k - 1 of the 150) -> positions, 255 = ignore: the
    shift ``maskformer eval`` applies when it reads them (``data.semantic.ade20k_150``)."""
    if label.size and int(label.max()) > 150:
        raise DataError(f"{path}: value {int(label.max())} is not an ADE20K-150 raw annotation (0..150)")
    return ((label.astype(np.int64) - 1) % 256).astype(np.uint8)


def _read_positions(path: Path, to_positions: LabelMap | None) -> np.ndarray:
    label = read_label_png(path)
    return label if to_positions is None else to_positions(label, path)


def _semantic_chunk(items: Sequence[_SemanticItem]) -> np.ndarray:
    num_classes, ignore_label = items[0][2], items[0][3]
    evaluator = SemanticEvaluator(num_classes=num_classes, ignore_label=ignore_label)
    for gt_png, pred_png, _, _, gt_map, to_positions in items:
        gt = _read_positions(gt_png, gt_map)
        pred = _read_positions(pred_png, to_positions)
        if pred.shape != gt.shape:
            raise DataError(
                f"{pred_png}: size {pred.shape[1]}x{pred.shape[0]} differs from ground truth {gt_png} "
                f"({gt.shape[1]}x{gt.shape[0]})"
            )
        try:
            evaluator.update(pred, gt)
        except ValueError as e:
            if to_positions is not None and str(e).startswith("predicted"):  # name the file's values, not positions
                raw = read_label_png(pred_png)[(pred < 0) | (pred >= num_classes)]
                values = ", ".join(str(v) for v in np.unique(raw)[:5])
                raise DataError(f"{pred_png}: value {values} names no class of --classes (a prediction holds a "
                                "class id at every pixel; the ignore value is for ground truth)") from e  # fmt: skip
            culprit = gt_png if "ground-truth" in str(e) else pred_png
            hint = "; if the files hold a folder dataset's class ids, pass --classes" if to_positions is None else ""
            raise DataError(f"{culprit}: {e}{hint}") from e
    return evaluator.confusion_matrix


def evaluate_semantic_folder(
    gt_dir: str | Path,
    pred_dir: str | Path,
    *,
    num_classes: int,
    ignore_label: int,
    miou_formula: str = "d2_2021",
    workers: int = 0,
    to_positions: LabelMap | None = None,
    gt_to_positions: LabelMap | None = None,
    recursive: bool = False,
) -> dict[str, Any]:
    """mIoU & co. over label PNGs: each ``gt_dir/NAME.png`` is paired with ``pred_dir/NAME.png`` or
    ``pred_dir/NAME_labels.png`` (``maskformer predict``'s name; both there is an error); with ``recursive`` also
    ``gt_dir/SUB/NAME.png`` with ``pred_dir/SUB/NAME[_labels].png`` (``maskformer predict --recursive``; hidden files
    and folders left out).
    ``to_positions``: both hold class ids that this maps to positions 0..num_classes-1, checking them (a folder
    dataset's: ``data.folder.folder_label_map``);
    ``gt_to_positions``: the ground truth's own map instead (e.g. ``ade20k_raw_positions``).

    Extra prediction files are ignored. Returns ``SemanticEvaluator.compute()``'s dict.
    """
    SemanticEvaluator(num_classes=num_classes, ignore_label=ignore_label, miou_formula=miou_formula)  # checks args
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder in (gt_dir, pred_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: not a directory")
    gt_files = files_in(gt_dir, {".png"}, recursive=recursive)
    if not gt_files:
        below = 0 if recursive else len(files_in(gt_dir, {".png"}, recursive=True))
        hint = f" (its subfolders hold {below}: add --recursive)" if below else ""
        raise DataError(f"{gt_dir}: no .png label files{hint}")
    gt_map = to_positions if gt_to_positions is None else gt_to_positions
    items: list[_SemanticItem] = []
    for gt_png in gt_files:
        same = pred_dir / gt_png.relative_to(gt_dir)
        labels = same.with_name(f"{gt_png.stem}_labels.png")  # (`maskformer predict`'s)
        if same.is_file() and labels.is_file():
            raise DataError(f"{same} and {labels.name} are both there: which one is the prediction for {gt_png} is "
                            "unclear (move one of them away)")  # fmt: skip
        pred_png = same if same.is_file() else labels
        if not pred_png.is_file():
            raise DataError(f"{same} (or {pred_png.name}): prediction for {gt_png} not found")
        items.append((gt_png, pred_png, num_classes, ignore_label, gt_map, to_positions))
    total = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for conf in _run(_semantic_chunk, items, workers):
        total += conf
    return semantic_metrics(total, miou_formula=miou_formula)
