"""Pictures people would rather look at than read: colour overlays with a legend, label PNGs, panoptic PNGs."""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..fileio import atomic_path


def palette(num_classes: int, colors: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """``[K, 3]`` uint8 colours: the dataset's own when given, else well-separated hues."""
    if colors is not None and len(colors) >= num_classes:
        return np.asarray(colors[:num_classes], dtype=np.uint8).reshape(num_classes, 3)
    import colorsys

    return np.asarray(
        [[int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.7, 0.95)] for i in range(num_classes)],
        dtype=np.uint8,
    )


def overlay(
    image: np.ndarray, labels: np.ndarray, colors: np.ndarray, *, alpha: float = 0.55, ignore: int | None = None
) -> np.ndarray:
    """Blend class colours over ``image`` (uint8 HWC) for ``labels`` ([H, W] ints); ``ignore`` pixels stay as is.
    ``colors``: [K, 3] RGB (an array, or a list such as ``Predictor.colors``)."""
    lab = np.asarray(labels)
    colors = np.asarray(colors, dtype=np.uint8)
    image = np.asarray(image)
    valid = (lab >= 0) & (lab < len(colors))
    if ignore is not None:
        valid &= lab != ignore
    colored = colors[np.clip(lab, 0, len(colors) - 1)].astype(np.float32)
    out = image.astype(np.float32)
    out[valid] = (1 - alpha) * out[valid] + alpha * colored[valid]
    edges = np.zeros_like(valid)
    edges[1:, :] |= lab[1:, :] != lab[:-1, :]
    edges[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    out[edges & valid] = 0.6 * out[edges & valid]  # darken region borders so neighbouring regions read apart
    return out.clip(0, 255).astype(np.uint8)


# Outline fonts with more than Latin letters, tried in order for non-ASCII legends (Debian's fonts-dejavu-core,
# Noto CJK, macOS, Windows); Pillow's own default font draws other letters as boxes.
_WIDE_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "C:/Windows/Fonts/arial.ttf",
)


@functools.cache
def _outline_font(path: str) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(path, 11)
    except OSError:
        return None


def _font(texts: Sequence[str]) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The first outline font of ``_WIDE_FONTS`` that has a glyph for each letter of ``texts`` (else the one with
    the most), at 11 px; Pillow's default font when none is installed (its spaces are about a pixel wide at this
    size: "no segments found" read as "nosegmentsfound")."""
    wide = {ch for text in texts for ch in text if ord(ch) > 126}
    best, best_count = None, -1
    for path in _WIDE_FONTS:
        font = _outline_font(path)
        if font is None:
            continue
        count = sum(1 for ch in wide if _has_glyph(font, ch))
        if count > best_count:
            best, best_count = font, count
        if count == len(wide):
            break
    return best if best is not None else ImageFont.load_default()


def _has_glyph(font: ImageFont.FreeTypeFont, ch: str) -> bool:
    """Whether ``font`` draws ``ch`` as itself rather than as its missing-glyph box (drawn for U+FFFF)."""

    def ink(text: str) -> bytes:
        picture = Image.new("L", (32, 32))
        ImageDraw.Draw(picture).text((4, 4), text, font=font, fill=255)
        return picture.tobytes()

    return ink(ch) != ink("\uffff")


def with_legend(image: np.ndarray, entries: Sequence[tuple[str, Sequence[int]]], *, title: str = "",
                empty: str = "nothing found") -> Image.Image:  # fmt: skip
    """Put a legend column (colour swatch + name per entry, or the ``empty`` note) to the right of ``image``."""
    font = _font([title, empty] + [name for name, _ in entries])
    row = 16
    texts = [title, "x" * 8] + ([n for n, _ in entries] or [empty])
    text_width = max(max(7 * len(text), font.getlength(text)) for text in texts)
    width = 12 + int(np.ceil(text_width)) + 24
    h = max(image.shape[0], row * (len(entries) + 2))
    canvas = Image.new("RGB", (image.shape[1] + width, h), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0, y = image.shape[1] + 8, 4
    if title:
        draw.text((x0, y), title, fill=(0, 0, 0), font=font)
        y += row
    for name, color in entries:
        draw.rectangle([x0, y + 2, x0 + 12, y + 12], fill=tuple(int(c) for c in color), outline=(0, 0, 0))
        draw.text((x0 + 18, y), name, fill=(0, 0, 0), font=font)
        y += row
    if not entries:
        draw.text((x0, y), empty, fill=(96, 96, 96), font=font)
    return canvas


def semantic_picture(image: np.ndarray, labels: np.ndarray, class_names: Sequence[str], colors: np.ndarray,
                     *, ignore: int | None = None, title: str = "") -> Image.Image:  # fmt: skip
    """Overlay + legend listing the classes present, most pixels first."""
    lab = np.asarray(labels)
    ids, counts = np.unique(lab[(lab >= 0) & (lab < len(colors))], return_counts=True)
    if ignore is not None:
        keep = ids != ignore
        ids, counts = ids[keep], counts[keep]
    order = ids[np.argsort(-counts)]
    entries = [(class_names[i] if i < len(class_names) else str(i), colors[i]) for i in order[:40]]
    return with_legend(overlay(image, lab, colors, ignore=ignore), entries, title=title)


def panoptic_picture(image: np.ndarray, pan: np.ndarray, segments: Sequence[dict], class_names: Sequence[str],
                     colors: np.ndarray, *, title: str = "") -> Image.Image:  # fmt: skip
    """Each segment in its class colour, things jittered so instances of one class read apart; VOID untouched."""
    seg_colors = np.zeros((int(pan.max()) + 1 if pan.size else 1, 3), dtype=np.uint8)
    drawn = segment_colors(segments, colors)
    entries = []
    for s in segments:
        base = drawn[int(s["id"])]
        seg_colors[s["id"]] = base
        name = class_names[s["category_id"]] if s["category_id"] < len(class_names) else str(s["category_id"])
        entries.append((f"{name}" + (f" #{s['id']}" if s.get("isthing") else ""), base))
    labels = np.where(pan > 0, pan, -1)
    return with_legend(overlay(image, labels, seg_colors), entries[:40], title=title,
                       empty="no segments found")  # fmt: skip


def segment_colors(segments: Sequence[dict], colors: np.ndarray) -> dict[int, list[int]]:
    """The colour of each panoptic segment: its class colour, jittered for things so instances read apart."""
    rng = np.random.default_rng(0)
    out = {}
    for s in segments:
        base = np.asarray(colors[s["category_id"]]).astype(np.int32)
        if s.get("isthing"):
            base = np.clip(base + rng.integers(-40, 41, 3), 0, 255)
        out[int(s["id"])] = [int(v) for v in base]
    return out


def save_png(img: Image.Image | np.ndarray, path: str | Path) -> None:
    """Write a PNG atomically (temporary name, then rename); encoded in memory first, so a pipe can take it too
    (Pillow's PNG writer seeks in its file)."""
    buffer = io.BytesIO()
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(buffer, format="PNG")
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(buffer.getvalue())


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """COCO-panoptic PNG encoding: id = R + 256 G + 256^2 B."""
    ids = np.asarray(ids, dtype=np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)
