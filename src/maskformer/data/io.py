"""Safe reading of images, label maps and panoptic PNGs: every problem becomes a one-line ``DataError``.

Images are always returned as uint8 RGB ``[H, W, 3]`` (grayscale, palette, RGBA, CMYK and 16-bit images are
converted, EXIF orientation applied as detectron2's ``read_image`` does). Label maps are returned with their stored
values (no conversion; turned by an EXIF orientation as images are): a colour or JPEG file is an error, because
silently converting it would train on garbage; a 16-bit file is read losslessly, and a value that does not fit the
dataset's label depth is an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from ..fileio import JPEG_LABEL, not_a_file, unreadable_reason, upright
from ..inference.preprocess import pil_to_rgb

__all__ = ["read_image", "read_label", "exif_size_hint", "read_panoptic_png", "rgb2id", "id2rgb", "check_label_values"]

# Pillow modes of single-channel index maps, by bit depth.
_LABEL_MODES_8 = ("L", "P")
_LABEL_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _open(path: str | Path) -> Image.Image:
    """Open and fully decode a file (decoding is lazy in Pillow: truncation only shows in ``load``)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: {not_a_file(p)}")
    try:
        with warnings.catch_warnings():  # (Pillow's "Corrupt EXIF data" warnings, at every read of a sample)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            img = Image.open(p)
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # Pillow raises OSError for truncated data and UnidentifiedImageError (an OSError) for non-images.
        reason = unreadable_reason(e, p.stat().st_size).splitlines()[0]
        raise DataError(f"{p}: unreadable or corrupt image ({reason})") from None
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Read any image as uint8 RGB ``[H, W, 3]`` with the rule ``predict`` and ``serve`` use too
    (``maskformer.inference.preprocess.pil_to_rgb``: EXIF orientation, grey/palette/RGBA/CMYK -> RGB, 16-bit grey
    ``>> 8``, floating-point refused), so training, evaluation and prediction see the same pixels."""
    return pil_to_rgb(_open(path), str(path))


def _orientation(path: str | Path) -> tuple[tuple[int, int], int] | None:
    """(stored width, height), EXIF orientation of an image file from its header; None when unreadable."""
    try:
        with Image.open(path) as image:
            return image.size, int(image.getexif().get(0x0112, 1))
    except Exception:  # the hint is optional; the mismatch is reported anyway
        return None


def exif_size_hint(image_path: str | Path, label_hw: tuple[int, ...], label_path: str | Path | None = None) -> str:
    """For a size-mismatch message: ``"; ..."`` when an EXIF orientation explains it, else ``""``: the label has the
    image's *stored* size and the image's orientation turns it (images are read upright, as detectron2 reads them),
    or the label (``label_path``) carries a quarter-turn orientation of its own that the image does not."""
    image = _orientation(image_path)
    if image is None:
        return ""
    (stored_w, stored_h), orientation = image
    if orientation in (5, 6, 7, 8) and tuple(label_hw[:2]) == (stored_h, stored_w):
        return (
            f"; the label has the image's stored size {stored_w}x{stored_h}, but the image's EXIF orientation "
            f"{orientation} turns it upright when read: label it upright, or save the image's pixels upright"
        )
    label = _orientation(label_path) if label_path is not None else None
    if label is not None and label[1] in (5, 6, 7, 8) and orientation not in (5, 6, 7, 8):
        return (
            f"; the label file's own EXIF orientation {label[1]} turns it when read, as an image is turned (its "
            f"image has none): save the label without that tag"
        )
    return ""


def read_label(
    path: str | Path, *, bits: int = 8, class_colors: dict[tuple[int, ...], tuple[int, str]] | None = None
) -> np.ndarray:
    """Read a single-channel label map exactly as stored (palette PNGs give their indices).

    ``class_colors``: {RGB colour: (label value, class name)} of the dataset's classes. A palette file whose used
    indices are mostly drawn in the colours of *other* classes (an image editor's "indexed colour" mode orders its
    palette by itself) is a ``DataError``: its indices are not the class ids its colours show.

    ``bits=8``: uint8 result from 8-bit (L/P) files, or from 16-bit files whose values are all <= 255 (a larger
    value is a ``DataError``). ``bits=16``: uint16 result from 16-bit (e.g. ADE20K-Full TIFF) or 8-bit files.
    Colour files raise ``DataError``.
    Returns ``[H, W]`` uint8 or uint16.
    """
    img = upright(_open(path))
    mode = img.mode
    if img.format in ("JPEG", "MPO"):  # (also JPEG data under another name, or named in a train.txt list)
        raise DataError(f"{path}: {JPEG_LABEL}")
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
        raise DataError(f"{path}: colour label file (mode {mode}); expected a single-channel index map")
    if mode in ("LA", "PA"):
        raise DataError(f"{path}: label file with an alpha channel (mode {mode}); expected a single-channel index "
                        "map: save it without transparency")  # fmt: skip
    if mode in _LABEL_MODES_8:
        arr = np.asarray(img, dtype=np.uint8)
        if mode == "P" and class_colors:
            _check_palette(path, arr, img.getpalette() or [], class_colors)
        return arr.copy() if bits == 8 else arr.astype(np.uint16)
    if mode not in _LABEL_MODES_16:
        expected = "an 8-bit index map (mode L or P)" if bits == 8 else "a 16-bit index map"
        what = "a 1-bit (mode 1) label file" if mode == "1" else f"a mode {mode} label file"
        raise DataError(f"{path}: {what} where {expected} is expected (class ids as pixel values)")
    arr = np.asarray(img)
    top = int(arr.max()) if arr.size else 0
    if arr.size and (int(arr.min()) < 0 or top > 65535):
        raise DataError(f"{path}: label values outside 0..65535")
    if bits == 8:
        # A 16-bit file (numpy uint16 arrays save as such) read losslessly when its values fit: they are then
        # checked against the class ids like any label. A larger value cannot be a label of an 8-bit dataset.
        if top > 255:
            raise DataError(
                f"{path}: 16-bit label file with value {top}; this dataset's label values are 0..255 "
                "(class ids and the ignore value)"
            )
        return arr.astype(np.uint8)
    return arr.astype(np.uint16)


def _check_palette(
    path: str | Path, arr: np.ndarray, palette: list[int], class_colors: dict[tuple[int, ...], tuple[int, str]]
) -> None:
    """DataError when most used palette indices (at least two) have the colour of a class with another value."""
    used = np.flatnonzero(np.bincount(arr.ravel(), minlength=1))
    same, other = 0, []
    for v in used.tolist():
        hit = class_colors.get(tuple(palette[3 * v : 3 * v + 3]))
        if hit is not None:
            if hit[0] == v:
                same += 1
            else:
                other.append((v, hit))
    if len(other) >= 2 and len(other) > same:
        v, (value, name) = other[0]
        raise DataError(
            f"{path}: palette label file whose index {v} is drawn in the colour of class '{name}' (label value "
            f"{value}), and {len(other) - 1} more index(es) likewise; a label file holds class ids, not colours: save "
            "the ids as a greyscale (mode L) PNG, or order the palette as classes.json"
        )


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic encoding: ``id = R + 256 G + 256^2 B``. ``[H, W, 3]`` uint8 -> ``[H, W]`` int64."""
    c = rgb.astype(np.int64)
    return c[..., 0] + 256 * c[..., 1] + 65536 * c[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb2id``: ``[H, W]`` ints in 0..2^24-1 -> ``[H, W, 3]`` uint8."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256], axis=-1).astype(np.uint8)


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """Read a COCO-format panoptic PNG (RGB-encoded segment ids) as ``[H, W]`` int64 ids (0 = VOID)."""
    img = upright(_open(path))
    if img.mode not in ("RGB", "RGBA"):
        raise DataError(f"{path}: panoptic PNG must be RGB (segment id = R + 256 G + 256^2 B), got mode {img.mode}")
    return rgb2id(np.asarray(img.convert("RGB"), dtype=np.uint8))


def check_label_values(
    label: np.ndarray,
    *,
    num_classes: int,
    ignore_label: int,
    path: str | Path,
    allowed: np.ndarray | None = None,
) -> None:
    """Every value must be a class id (0..K-1) or the ignore label, else ``DataError`` naming a bad value.

    ``allowed``: optional bool table over raw values (for files whose values are mapped afterwards, e.g.
    Cityscapes labelIds or ADE20K's shifted labels); when given it replaces the 0..K-1/ignore rule.
    """
    # bincount over small unsigned dtypes is the fastest way to list the values present in a big map.
    if label.dtype in (np.uint8, np.uint16):
        values = np.flatnonzero(np.bincount(label.ravel(), minlength=1))
    else:
        values = np.unique(label)
    if allowed is not None:
        ok = np.zeros(values.shape, dtype=bool)
        inside = (values >= 0) & (values < len(allowed))
        ok[inside] = allowed[values[inside]]
        bad = values[~ok]
        if bad.size:
            raise DataError(
                f"{path}: label value {int(bad[0])} is not one of this dataset's label values "
                f"(valid: {_ranges(np.flatnonzero(allowed))}; {bad.size} distinct bad value(s)){_jpeg_hint(path)}"
            )
        return
    else:
        bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_label)]
    if bad.size:
        raise DataError(
            f"{path}: label value {int(bad[0])} is not a class id (0..{num_classes - 1}) "
            f"nor the ignore value {ignore_label} ({bad.size} distinct such value(s)){_jpeg_hint(path)}"
        )


def _jpeg_hint(path: object) -> str:
    """A JPEG label map: its compression blurs the class ids at every edge."""
    jpeg = Path(path).suffix.lower() in (".jpg", ".jpeg")
    if not jpeg:  # (JPEG data under another name)
        try:
            with open(path, "rb") as f:  # type: ignore[arg-type]
                jpeg = f.read(3) == b"\xff\xd8\xff"
        except (OSError, TypeError):
            pass
    return "; a JPEG label map: its compression changes values, save label maps as PNG" if jpeg else ""


def _ranges(values: np.ndarray) -> str:
    """``[0,1,2,5,255]`` -> ``"0..2, 5, 255"`` for messages."""
    parts: list[str] = []
    start = prev = None
    for v in [int(x) for x in values] + [None]:
        if start is not None and (v is None or v != prev + 1):
            parts.append(str(start) if start == prev else f"{start}..{prev}")
            start = None
        if v is not None and start is None:
            start = v
        prev = v
    return ", ".join(parts)
