"""Test-time preprocessing of the original (OFFICIAL_SPEC §4.7): read an image, shortest-edge resize with PIL
bilinear (antialiased), normalise with the model's pixel mean/std, zero-pad after normalisation to the size
divisibility. The training augmentations (``maskformer.data.transforms``) reuse the two resize functions.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from maskformer.errors import DataError
from maskformer.fileio import SPECIAL_FILE, broken_link, special_file, unreadable_reason, upright

__all__ = ["ImageInput", "load_image", "pil_to_rgb", "normalize_and_pad", "resize_shortest_edge_size", "resize_image"]

# What a Predictor accepts as one image: a path, uint8 HWC RGB numpy array, PIL image or uint8 CHW torch tensor.
ImageInput = Any


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def pil_to_rgb(pil: Image.Image, name: str = "image") -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` of a decoded file as a viewer shows it: EXIF orientation applied (as detectron2's
    ``read_image``; a phone photo's label map then lies over the photo), 16-bit grey scaled to 8 bits (``>> 8``; a
    32-bit integer image whose values fit in 0..255 is read as 8-bit grey), grey, palette, alpha and CMYK
    converted; float images are one ``DataError`` naming ``name``."""
    pil = upright(pil)  # (broken EXIF blocks are common: orientation is then left as stored)
    if pil.mode in _SIXTEEN_BIT:
        arr = np.asarray(pil)
        if arr.dtype != np.uint16 and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"{name}: 32-bit image with values outside 0..65535 is not supported")
        # a 32-bit integer image (mode I; 16-bit files open as I;16) whose values fit in 8 bits holds 8-bit grey
        eight_bit = pil.mode == "I" and arr.max(initial=0) <= 255
        gray = arr.astype(np.uint8) if eight_bit else (arr.astype(np.uint32) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if pil.mode == "F":
        raise DataError(f"{name}: floating-point image is not supported (expected 8-bit RGB or grayscale)")
    return np.array(pil if pil.mode == "RGB" else pil.convert("RGB"), dtype=np.uint8)


def load_image(image: ImageInput) -> np.ndarray:
    """uint8 HWC RGB array from a path (any PIL-readable file, read by ``pil_to_rgb``), a uint8 HWC RGB (or HW / HW1
    grey) array, a PIL image (read as its file is: EXIF orientation, 16-bit grey scaled) or a uint8 CHW (or HW / 1HW
    grey) torch tensor.
    Anything else is one ``DataError`` line."""
    if isinstance(image, str | Path):
        if special_file(image):
            raise DataError(f"{image}: {SPECIAL_FILE}")
        try:
            with warnings.catch_warnings():  # (no "DecompressionBombWarning" among the lines: a picture that big
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # is read as asked, or refused)
                warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")  # (corrupt EXIF blocks)
                with Image.open(image) as pil:
                    pil.load()
                    return pil_to_rgb(pil, str(image))
        except DataError:  # (it names the file: not again inside "cannot read image (DataError: ...)")
            raise
        except Image.DecompressionBombError as exc:
            raise DataError(f"{image}: too large to decode ({str(exc).split(',')[0]}); downscale it") from None
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            if isinstance(exc, OSError) and (link := broken_link(image)):
                raise DataError(f"{image}: {link}") from None
            if isinstance(exc, OSError) and exc.filename and exc.strerror:  # (the file is named once)
                raise DataError(f"{image}: cannot read image ({type(exc).__name__}: {exc.strerror})") from None
            size = os.path.getsize(image) if os.path.isfile(image) else None
            raise DataError(f"{image}: cannot read image ({unreadable_reason(exc, size)})") from None
    if isinstance(image, Image.Image):  # the same picture as its path gives (16-bit grey was clipped, EXIF ignored)
        if 0 in image.size:
            raise DataError(f"image: empty PIL image of size {image.size[0]}x{image.size[1]}")
        try:
            return pil_to_rgb(image)
        except DataError:  # (its own words: "image: floating-point image is not supported ...", named once)
            raise
        except (AssertionError, ValueError, OSError) as exc:  # (Pillow's bare AssertionError for a closed file)
            closed = getattr(image, "fp", "") is None  # (loaded pixels would not have failed)
            hint = ": its file was closed before its pixels were read (call .load() inside the `with` block)"
            why = str(exc) or type(exc).__name__
            raise DataError(f"image: cannot read this PIL image{hint if closed else f' ({why})'}") from None
    if type(image).__module__.startswith("torch"):
        grey = image.ndim == 2 or (image.ndim == 3 and image.shape[0] == 1)  # HxW or 1xHxW
        if str(image.dtype) != "torch.uint8" or not (grey or (image.ndim == 3 and image.shape[0] == 3)):
            raise DataError(f"image: expected a uint8 3xHxW (or HxW grey) tensor, got {image.dtype} of shape "
                            f"{tuple(image.shape)}")  # fmt: skip
        image = image.detach().cpu()
        image = image.reshape(image.shape[-2:]).numpy() if grey else image.permute(1, 2, 0).numpy()
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 1:  # HxWx1 grey
        image = image[:, :, 0]
    if isinstance(image, np.ndarray) and image.ndim == 2 and image.dtype == np.uint8:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise DataError(f"image: expected a path, uint8 HxWx3 RGB array, PIL image or uint8 3xHxW tensor; got {what}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"image: empty array of shape {image.shape}")
    return image


def resize_shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """Output ``(newh, neww)`` of detectron2's ResizeShortestEdge: short side -> ``short``, long side capped at
    ``max_size`` (0 or negative = no cap), each rounded with ``int(x + 0.5)`` and at least 1 (a 1 x 5000 strip capped
    at 1333 would otherwise get 0 rows)."""
    scale = short / min(h, w)
    if h < w:
        newh, neww = float(short), scale * w
    else:
        newh, neww = scale * h, float(short)
    if max_size > 0 and max(newh, neww) > max_size:
        scale = max_size / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return max(1, int(newh + 0.5)), max(1, int(neww + 0.5))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bilinear resize of a uint8 image ``[H, W, 3]`` or ``[H, W]`` to ``size = (h, w)``."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def normalize_and_pad(
    images: Sequence[np.ndarray], pixel_mean: torch.Tensor, pixel_std: torch.Tensor, size_divisibility: int = 0
) -> tuple[torch.Tensor, list[tuple[int, int]], tuple[int, int]]:
    """Test-resized uint8 ``[h, w, 3]`` images -> the model's input batch ``[B, 3, H, W]`` float32, on the device of
    ``pixel_mean`` (``[3]``, 0-255 scale, as ``pixel_std``): normalised, then zero-padded at the bottom/right to the
    largest image rounded up to ``size_divisibility``. The batch is channels-last in memory (``[B, H, W, 3]``, what
    the convolutions want, with no later copy).

    Returns (batch, per-image valid (h, w), padded (H, W)).
    """
    sizes = [(int(i.shape[0]), int(i.shape[1])) for i in images]
    height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
    if size_divisibility > 1:
        d = size_divisibility
        height, width = -(-height // d) * d, -(-width // d) * d
    batch = torch.zeros(len(images), height, width, 3, device=pixel_mean.device)
    for b, image in enumerate(images):
        pixels = torch.from_numpy(np.require(image, requirements=("C", "W"))).to(pixel_mean.device)
        region = batch[b, : sizes[b][0], : sizes[b][1]]
        region.copy_(pixels).sub_(pixel_mean).div_(pixel_std)  # in place: no float copy of the image
    return batch.permute(0, 3, 1, 2), sizes, (height, width)
