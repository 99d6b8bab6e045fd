"""Training data, eval, predict and serve decode an image file to the same pixels (one rule: ``pil_to_rgb``)."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskformer.data.io import read_image
from maskformer.errors import DataError
from maskformer.inference.preprocess import load_image


def _exif_rotated_jpeg(path: Path) -> np.ndarray:
    """A 40x60 JPEG whose EXIF says "rotate 90° clockwise to display" (orientation 6, as phone photos)."""
    pixels = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes(), quality=100)
    return pixels


def test_exif_orientation_is_applied_by_predict_as_by_the_datasets(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    _exif_rotated_jpeg(path)
    trained_on = read_image(path)
    assert trained_on.shape == (60, 40, 3)  # displayed (rotated) orientation, as detectron2's read_image
    np.testing.assert_array_equal(load_image(path), trained_on)


def test_16bit_grey_image_is_scaled_not_clipped_in_predict(tmp_path: Path) -> None:
    grey16 = np.array([[0, 255, 256, 1000, 40000, 65535]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    expected = (grey16 >> 8).astype(np.uint8)  # [0, 0, 1, 3, 156, 255]; PIL's convert("RGB") would clip to 255
    for decoded in (read_image(tmp_path / "g16.png"), load_image(tmp_path / "g16.png")):
        assert decoded.dtype == np.uint8 and decoded.shape == (1, 6, 3)
        np.testing.assert_array_equal(decoded[..., 0], expected)


def test_a_pil_image_gives_the_pixels_of_its_file(tmp_path: Path) -> None:
    """The Python API on ``Image.open(path)`` sees what it sees on ``path``: before, 16-bit grey was clipped (99.97 %
    of these pixels differed) and the EXIF orientation ignored."""
    _exif_rotated_jpeg(tmp_path / "phone.jpg")
    Image.fromarray(np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)).save(tmp_path / "g16.png")
    for name in ("phone.jpg", "g16.png"):
        with Image.open(tmp_path / name) as pil:
            np.testing.assert_array_equal(load_image(pil), load_image(tmp_path / name))


def test_float_image_is_one_data_error_in_predict_too(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 5), dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    for reader in (read_image, load_image):
        with pytest.raises(DataError, match=r"f\.tif: floating-point image") as e:
            reader(tmp_path / "f.tif")
        assert str(e.value).count("f.tif") == 1, (
            e.value
        )  # (predict said "f.tif: cannot read image (DataError: f.tif..")


def test_a_picture_above_pillows_warning_size_is_read_without_its_warning(tmp_path: Path, monkeypatch) -> None:
    """A 10000x10000 photo printed Pillow's "DecompressionBombWarning: Image size ... exceeds limit" and its source
    line among predict's output; it is read as asked (twice that size is one line refusing it)."""
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # (a 12x12 picture stands for a 100-megapixel one)
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "big.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(tmp_path / "big.png").shape == (12, 12, 3)
    Image.fromarray(np.zeros((15, 15, 3), np.uint8)).save(tmp_path / "huge.png")
    with pytest.raises(DataError, match="huge.png: too large to decode"):
        load_image(tmp_path / "huge.png")


def _post_image(
    app, name: str, data: bytes, *, client_gone: bool = False, fields: dict[str, str] | None = None
) -> tuple[int, dict]:
    """POST a multipart upload (and text ``fields``) to an ASGI app in-process (no server, no HTTP client library);
    after the body the client waits for the answer (as uvicorn's ``receive`` does), or with ``client_gone`` has
    disconnected."""
    import asyncio
    import json

    boundary = "b0undary"
    text = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in (fields or {}).items()
    )
    body = (
        (
            f'{text}--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/predict", "raw_path": b"/api/predict", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        if chunks:
            return chunks.pop(0)
        if not client_gone:
            await asyncio.sleep(3600)  # (a waiting client: nothing more arrives; a check of it is cancelled)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body) if body else {}


def test_serve_decodes_uploads_with_the_same_rule(tmp_path: Path) -> None:
    pytest.importorskip("starlette")
    import maskformer
    from conftest import DEMO_YAML
    from maskformer.serve.app import build_app

    model = maskformer.build_model(maskformer.load_config(DEMO_YAML)).eval()
    app = build_app(maskformer.Predictor(model, optimize=False))
    _exif_rotated_jpeg(tmp_path / "phone.jpg")
    status, reply = _post_image(app, "phone.jpg", (tmp_path / "phone.jpg").read_bytes())
    assert status == 200, reply
    assert (reply["height"], reply["width"]) == (60, 40)  # the displayed orientation, as eval reads the file
    Image.fromarray(np.zeros((4, 5), dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    status, reply = _post_image(app, "f.tif", (tmp_path / "f.tif").read_bytes())
    assert status == 400 and "f.tif: floating-point image" in str(reply), reply


def test_label_of_the_stored_size_under_an_exif_rotation_names_the_cause(tmp_path: Path) -> None:
    from maskformer.data import DATASETS

    for split in ("images/train", "labels/train"):
        (tmp_path / split).mkdir(parents=True)
    (tmp_path / "classes.json").write_text('{"classes": ["a", "b"]}')
    _exif_rotated_jpeg(tmp_path / "images" / "train" / "phone.jpg")  # stored 60x40, upright 40x60
    Image.fromarray(np.zeros((40, 60), dtype=np.uint8)).save(tmp_path / "labels" / "train" / "phone.png")
    with pytest.raises(DataError) as e:
        DATASETS["folder"](root=str(tmp_path), split="train")[0]
    msg = str(e.value)
    assert "phone.png: label size 60x40 differs" in msg and "EXIF orientation 6" in msg and "\n" not in msg
    Image.fromarray(np.zeros((60, 40), dtype=np.uint8)).save(tmp_path / "labels" / "train" / "phone.png")
    assert DATASETS["folder"](root=str(tmp_path), split="train")[0]["image"].shape == (3, 60, 40)


def test_grey_pictures_are_taken_in_every_container_a_grey_array_is() -> None:
    """A 2-D numpy array was read as grey, but a 2-D (or 1xHxW) uint8 tensor and an HxWx1 array were refused."""
    import torch

    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    expected = load_image(grey)
    assert expected.shape == (3, 4, 3)
    for other in (grey[:, :, None], torch.from_numpy(grey), torch.from_numpy(grey)[None]):
        assert np.array_equal(load_image(other), expected)


def test_serve_does_no_work_for_a_client_that_has_gone(tmp_path: Path, monkeypatch) -> None:
    """Uploads whose client gave up (a closed page, `curl -m`) were still run through the model, and the next
    request waited for them (7.7 s after three aborted 16 MP uploads)."""
    pytest.importorskip("starlette")
    import maskformer
    from conftest import DEMO_YAML
    from maskformer.serve.app import build_app

    model = maskformer.build_model(maskformer.load_config(DEMO_YAML)).eval()
    calls: list[int] = []
    run = maskformer.Predictor.__call__
    monkeypatch.setattr(maskformer.Predictor, "__call__", lambda self, *a, **k: calls.append(1) or run(self, *a, **k))
    app = build_app(maskformer.Predictor(model, optimize=False))
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    _post_image(app, "a.png", data, client_gone=True)
    assert calls == []
    assert _post_image(app, "a.png", data)[0] == 200 and calls == [1]


def test_serve_reads_pictures_up_to_its_own_limit_and_gives_a_png_of_those_browsers_cannot_show(
    tmp_path: Path, monkeypatch
) -> None:
    """--max-megapixels 300 answered a 180 MP upload "180000000 pixels is over the limit of 300000000 pixels"
    (Pillow's own guard, which the server never raised). A TIFF upload showed as a broken picture on the page: the
    reply now carries the picture as read (``image_png``) for formats browsers do not show."""
    pytest.importorskip("starlette")
    import warnings

    import maskformer
    import maskformer.serve.app as serve_app
    from conftest import DEMO_YAML

    model = maskformer.build_model(maskformer.load_config(DEMO_YAML)).eval()
    app = serve_app.build_app(maskformer.Predictor(model, optimize=False), max_pixels=300_000_000)
    big = io.BytesIO()
    Image.new("1", (15000, 12000)).save(big, format="PNG")  # 180 MP in a few kB
    read = serve_app.pil_to_rgb
    monkeypatch.setattr(serve_app, "pil_to_rgb", lambda pil, name: read(pil.resize((30, 24)), name))  # (a quick model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        status, reply = _post_image(app, "big.png", big.getvalue())
    assert status == 200 and (reply["width"], reply["height"]) == (30, 24), reply
    assert "image_png" not in reply and Image.MAX_IMAGE_PIXELS == 89_478_485  # (Pillow's own limit put back)
    monkeypatch.setattr(serve_app, "pil_to_rgb", read)
    picture = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "scan.tif")
    status, reply = _post_image(app, "scan.tif", (tmp_path / "scan.tif").read_bytes())
    assert status == 200 and np.array_equal(
        np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["image_png"])))), picture
    )
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone photo saved as WebP: browsers do not turn it by its EXIF, the model reads it upright
    Image.fromarray(picture).save(tmp_path / "phone.webp", exif=exif, lossless=True)
    status, reply = _post_image(app, "phone.webp", (tmp_path / "phone.webp").read_bytes())
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["image_png"]))))
    assert status == 200 and np.array_equal(shown, np.rot90(picture, -1)), shown.shape


def test_a_32_bit_integer_image_with_8_bit_values_reads_as_that_grey(tmp_path) -> None:
    """Mode I (a 32-bit integer TIFF of 0..255 grey) was shifted as 16-bit data: an all-black input, exit 0."""
    import numpy as np
    from PIL import Image

    from maskformer.inference.preprocess import load_image

    grey = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    path = tmp_path / "i32.tif"
    Image.fromarray(grey).convert("I").save(path)
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(load_image(path), np.repeat(grey[:, :, None], 3, axis=2))
    wide = tmp_path / "i32_wide.tif"  # 16-bit values in a 32-bit image: scaled as 16-bit grey, as before
    Image.fromarray(grey.astype(np.int32) * 256).save(wide)
    np.testing.assert_array_equal(load_image(wide)[:, :, 0], grey)


def test_a_corrupt_exif_block_is_read_without_pillows_warnings(tmp_path) -> None:
    """Pillow's two-line UserWarnings about a broken EXIF block were printed at every read (twice per step)."""
    import warnings

    import numpy as np
    from PIL import Image

    from maskformer.data.io import read_image
    from maskformer.inference.preprocess import load_image

    exif = Image.Exif()
    exif[0x0112] = 6
    data = exif.tobytes()
    path = tmp_path / "bad_exif.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, exif=data[:20] + b"\xff" * 10 + data[30:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path).shape == read_image(path).shape == (8, 8, 3)


def test_an_unreadable_image_says_why_in_words(tmp_path: Path) -> None:
    """predict said "cannot read image (UnidentifiedImageError: cannot identify image file ...)" for an empty file
    and for text alike, and serve only "(OSError)" for a picture cut short."""
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "whole.jpg")
    whole = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    for name, why in (("empty.jpg", "empty file, 0 bytes"), ("text.jpg", "not an image format Pillow knows"),
                      ("cut.jpg", "the file is cut short)")):  # fmt: skip
        with pytest.raises(DataError) as e:
            load_image(tmp_path / name)
        assert str(e.value).startswith(f"{tmp_path / name}: cannot read image ({why}"), e.value
        with pytest.raises(DataError) as e:  # training and eval read their samples with the same words
            read_image(tmp_path / name)
        assert str(e.value).startswith(f"{tmp_path / name}: unreadable or corrupt image ({why}"), e.value
