"""`maskformer serve` through a real server process on 127.0.0.1: status codes, JSON, concurrency, bad uploads."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serve_helpers import serving, train_tiny

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


def _multipart(fields: dict[str, tuple[str, bytes] | str | list]) -> tuple[bytes, str]:
    """A multipart body; a list value sends the field once per item."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    parts = [(name, v) for name, value in fields.items() for v in (value if isinstance(value, list) else [value])]
    for name, value in parts:
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            out.write(f'Content-Disposition: form-data; name="{name}"; filename="{value[0]}"\r\n'.encode())
            out.write(b"Content-Type: application/octet-stream\r\n\r\n" + value[1] + b"\r\n")
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _post(url: str, fields: dict) -> tuple[int, dict]:
    body, ctype = _multipart(fields)
    request = urllib.request.Request(url + "/api/predict", data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def server(checkpoint: Path):
    with serving(checkpoint, "--max-upload-mb", "0.5", "--max-megapixels", "0.5", "--upload-timeout", "1.5") as url:
        yield url


def _scenes() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (64 + 8 * i, 96 - 4 * i, 3), dtype=np.uint8) for i in range(8)]


def _info(server: str) -> dict:
    with urllib.request.urlopen(server + "/api/info") as r:
        return json.loads(r.read())


def test_health_info_and_page(server: str) -> None:
    with urllib.request.urlopen(server + "/health") as r:
        assert r.status == 200 and json.loads(r.read())["status"] == "ok"
    with urllib.request.urlopen(server + "/api/info") as r:
        info = json.loads(r.read())
    assert info["tasks"] == ["semantic", "panoptic"] and len(info["classes"]) == 8
    assert any(c["isthing"] for c in info["classes"])
    with urllib.request.urlopen(server + "/") as r:
        assert b"/api/predict" in r.read()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server + "/api/nothing")
    assert missing.value.code == 404 and "error" in json.loads(missing.value.read())
    # a GET of the upload address: says to POST, with the Allow header HTTP asks for (it had neither)
    with pytest.raises(urllib.error.HTTPError) as wrong:
        urllib.request.urlopen(server + "/api/predict")
    assert wrong.value.code == 405 and wrong.value.headers["Allow"] == "POST"
    assert json.loads(wrong.value.read())["error"] == "GET /api/predict is not allowed: use POST"


def test_predict_json_and_eight_concurrent_requests(server: str) -> None:
    scenes = _scenes()
    single = [_post(server, {"image": (f"s{i}.png", _png(s)), "task": "semantic"}) for i, s in enumerate(scenes)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _post(server, {"image": (f"s{i}.png", _png(scenes[i])),
                                                         "task": "semantic"}), range(8)))  # fmt: skip
    for i, (status, data) in enumerate(answers):
        assert status == 200
        h, w = scenes[i].shape[:2]
        assert (data["task"], data["height"], data["width"]) == ("semantic", h, w)
        labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data["label_png"]))))
        assert labels.shape == (h, w)
        assert sum(s["area"] for s in data["segments"]) == h * w
        assert {s["category_id"] for s in data["segments"]} == set(np.unique(labels).tolist())
        things = {c["id"] for c in _info(server)["classes"] if c["isthing"]}  # semantic segments say it as /api/info
        assert all(s["isthing"] == (s["category_id"] in things) for s in data["segments"])
        overlay = Image.open(io.BytesIO(base64.b64decode(data["overlay_png"])))
        assert overlay.size[1] >= h and data["time_ms"] > 0
    for (first, data), (_, again) in zip(single, answers):  # concurrency did not mix answers
        assert first == 200 and data["label_png"] == again["label_png"] and data["segments"] == again["segments"]
    status, pan = _post(server, {"image": ("p.png", _png(scenes[0])), "task": "panoptic"})
    assert status == 200 and pan["task"] == "panoptic"
    ids = np.asarray(Image.open(io.BytesIO(base64.b64decode(pan["label_png"])))).astype(np.int64)
    ids = ids[..., 0] + 256 * ids[..., 1] + 65536 * ids[..., 2]
    assert {s["id"] for s in pan["segments"]} == set(np.unique(ids).tolist()) - {0}


@pytest.mark.parametrize(
    "fields, status, words",
    [
        ({"image": ("junk.png", b"this is not an image")}, 400, "not a readable image (not an image format"),
        ({"image": ("cut.png", _png(np.zeros((40, 40, 3), np.uint8))[:60])}, 400, "(the file is cut short)"),
        ({"image": ("empty.png", b"")}, 400, "empty.png: not a readable image (empty file, 0 bytes)"),
        ({"other": "x"}, 400, "'image'"),
        ({"image": "the picture's bytes as a text part"}, 400, "'image' has no filename: send it as a file part"),
        ({"image": ("x.png", _png(np.zeros((8, 8, 3), np.uint8))), "task": "instance"}, 400, "task"),
        ({"image": ("big.bin", bytes(600_000))}, 413, "limit"),
        ({"image": ("wide.png", _png(np.zeros((500, 1001, 3), np.uint8)))}, 413, "500500 pixels (1001x500) is over"),
        ({"image": [("a.png", _png(np.zeros((8, 8, 3), np.uint8)))] * 2}, 400, "more than one file"),
        # `curl -F task=@file`: the answer was "got 'UploadFile(filename=...)'"; two tasks: the first was taken
        (
            {"image": ("x.png", _png(np.zeros((8, 8, 3), np.uint8))), "task": ("t.txt", b"semantic")},
            400,
            "the field 'task' takes one text value",
        ),
        (
            {"image": ("x.png", _png(np.zeros((8, 8, 3), np.uint8))), "task": ["semantic", "panoptic"]},
            400,
            "the field 'task' takes one text value",
        ),
    ],
)
def test_bad_uploads_get_a_json_error_and_the_server_stays_up(server: str, fields, status: int, words: str) -> None:
    got, data = _post(server, fields)
    assert got == status and words in data["error"]
    assert _post(server, {"image": ("ok.png", _png(_scenes()[0]))})[0] == 200


def test_a_task_read_from_a_file_with_its_newline_is_taken(server: str) -> None:
    """`curl -F "task=<task.txt"` sends the file's text with its line end: it got "got 'semantic\\n'"."""
    status, data = _post(server, {"image": ("ok.png", _png(_scenes()[0])), "task": "semantic\n"})
    assert status == 200 and data["task"] == "semantic", data


def test_a_picture_over_pillows_own_limit_gets_the_servers_limit_message(server: str, tmp_path: Path) -> None:
    """Over ~179 MP Pillow refuses to open a file before the server reads its size; the answer was Pillow's
    'decompression bomb DOS attack' text. predict says the file is too large to decode, in one line."""
    buffer = io.BytesIO()
    Image.new("1", (14000, 13000)).save(buffer, format="PNG")  # 182 MP in 22 kB
    status, data = _post(server, {"image": ("huge.png", buffer.getvalue())})
    assert status == 413 and data["error"] == "huge.png: 182000000 pixels is over the limit of 500000 pixels"
    # under Pillow's limit the size comes from the header: the same words, with the sides
    # (it said "800x700 pixels is over ..." there and "560000 pixels is over ..." above it)
    status, data = _post(server, {"image": ("wide.png", _png(np.zeros((700, 800, 3), np.uint8)))})
    assert status == 413 and data["error"] == "wide.png: 560000 pixels (800x700) is over the limit of 500000 pixels"
    assert _post(server, {"image": ("ok.png", _png(_scenes()[0]))})[0] == 200
    from maskformer.errors import DataError
    from maskformer.inference.preprocess import load_image

    (tmp_path / "huge.png").write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match=r"huge.png: too large to decode \(Image size \(182000000 pixels\)"):
        load_image(tmp_path / "huge.png")


def test_a_phone_photo_is_segmented_as_the_page_shows_it(server: str) -> None:
    """The browser shows an upload with its EXIF orientation applied; the overlay and label map must match that."""
    stored = _scenes()[1]  # 72 x 92
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="JPEG", exif=exif)
    status, data = _post(server, {"image": ("phone.jpg", buffer.getvalue()), "task": "semantic"})
    assert status == 200 and (data["height"], data["width"]) == (92, 72)
    labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data["label_png"]))))
    assert labels.shape == (92, 72)


def test_serving_a_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "maskformer.cli", "serve", str(tmp_path / "nope.pt")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2 and "nope.pt" in run.stderr and "Traceback" not in run.stderr


@contextlib.contextmanager
def _running(server):
    """Run a ``uvicorn.Server`` in a thread of this process until the block ends; yields its URL."""
    thread = threading.Thread(target=server.run, daemon=True)  # (signals are not set up off the main thread)
    thread.start()
    try:
        for _ in range(200):  # bounded: 20 s
            if server.started:
                break
            time.sleep(0.1)
        assert server.started
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _per_pixel_checkpoint(path: Path) -> Path:
    """A per-pixel baseline (no masks, so no panoptic) whose class table has things, saved as tests save models."""
    import torch

    import maskformer
    from maskformer.engine.checkpoint import save_checkpoint

    cfg = maskformer.load_config(Path(maskformer.__file__).parent / "resources" / "demo.yaml",
                                 overrides=["model.meta_arch=per_pixel"])  # fmt: skip
    torch.manual_seed(0)
    classes = [{"id": i, "name": f"kind{i}", "color": [30 * i, 200, 90], "isthing": i >= 4} for i in range(8)]
    save_checkpoint(path, cfg=cfg, model=maskformer.build_model(cfg),
                    meta={"classes": classes, "ignore_label": 255, "dataset": "test"})  # fmt: skip
    return path


def test_a_per_pixel_model_offers_semantic_only(tmp_path: Path) -> None:
    import subprocess
    import sys

    checkpoint = _per_pixel_checkpoint(tmp_path / "pp.pt")
    with serving(checkpoint) as url:
        with urllib.request.urlopen(url + "/api/info") as r:
            info = json.loads(r.read())
        assert info["tasks"] == ["semantic"] and info["classes"][5]["name"] == "kind5"
        image = _png(_scenes()[1])
        status, data = _post(url, {"image": ("a.png", image), "task": "panoptic"})
        assert status == 400 and "task" in data["error"]
        status, data = _post(url, {"image": ("a.png", image)})
        assert status == 200 and data["task"] == "semantic"
        assert {s["label"] for s in data["segments"]} <= {f"kind{i}" for i in range(8)}
    run = subprocess.run([sys.executable, "-m", "maskformer.cli", "serve", str(checkpoint), "--task", "panoptic"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "panoptic" in lines[0], run.stderr


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "maskformer.cli", "serve", str(tmp_path / "unread.pt"), "--port",
                              str(port)], capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], run.stderr


def test_an_unforeseen_failure_is_a_json_500_and_the_server_stays_up(tmp_path: Path) -> None:
    """build_app on uvicorn in this process, around a Predictor whose call fails once."""

    import uvicorn

    import maskformer
    from maskformer.serve.app import build_app
    from serve_helpers import free_port

    class FailsOnce:
        def __init__(self, predictor) -> None:
            self.predictor, self.failed = predictor, False

        def __getattr__(self, name: str):
            return getattr(self.predictor, name)

        def __call__(self, *args, **kwargs):
            if not self.failed:
                self.failed = True
                raise RuntimeError("out of something")
            return self.predictor(*args, **kwargs)

    predictor = FailsOnce(maskformer.Predictor.from_checkpoint(_per_pixel_checkpoint(tmp_path / "pp.pt")))
    config = uvicorn.Config(build_app(predictor), host="127.0.0.1", port=free_port(), log_level="critical")
    with _running(uvicorn.Server(config)) as url:
        status, data = _post(url, {"image": ("a.png", _png(_scenes()[0]))})
        assert status == 500 and "RuntimeError: out of something" in data["error"]
        status, data = _post(url, {"image": ("a.png", _png(_scenes()[0]))})
        assert status == 200 and data["task"] == "semantic"


def test_port_0_serves_on_a_free_port_and_says_which(tmp_path: Path) -> None:
    """`--port 0` (any free port): the printed address is the one that answers (it printed :0 before)."""
    import re
    import subprocess
    import sys
    import time

    checkpoint = train_tiny(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "maskformer.cli", "serve", str(checkpoint), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found and int(found.group(1)) > 0, line
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(found.group(0) + "health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_stalled_upload_is_answered_408_and_the_server_stays_up(server: str) -> None:
    """An upload that stops sending held its connection open for good (400 such connections stayed open)."""
    import socket

    port = int(server.rsplit(":", 1)[1])
    head = (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xx\r\n"
            b"Content-Length: 100000\r\n\r\n--xx\r\nContent-Disposition: form-data; name=\"image\"; "
            b"filename=\"a.jpg\"\r\n\r\nabc")  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        start = time.monotonic()
        s.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            part = s.recv(4096)
            if not part:
                break
            answer += part
    assert time.monotonic() - start < 15
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"the upload stalled: no bytes came for 1.5 s after the first" in answer, answer
    assert _info(server)["model"]  # still serving


def _raw_exchange(server: str, data: bytes, timeout: float = 20) -> tuple[bytes, float]:
    """Send ``data`` on a new connection; (everything read until the server closes it or stops, seconds taken)."""
    import socket

    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        start = time.monotonic()
        s.sendall(data)
        answer = b""
        while part := s.recv(65536):
            answer += part
            if answer.rstrip().endswith(b"}"):
                break
        return answer, time.monotonic() - start


def test_a_chunked_upload_over_the_limit_in_its_last_chunk_is_413(server: str) -> None:
    """A chunked body that went over --max-upload-mb only in its last piece was a 500 "Stream consumed" with a
    traceback in the log: the over-limit answer read the body a second time after it had ended."""
    limit = _info(server)["max_upload_bytes"]
    body, ctype = _multipart({"image": ("a.png", b"x" * (limit + 100))})
    head = f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked = b"".join(f"{len(body[i : i + 60000]):x}\r\n".encode() + body[i : i + 60000] + b"\r\n"
                       for i in range(0, len(body), 60000))  # fmt: skip
    answer, _ = _raw_exchange(server, head.encode() + chunked + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    words = f"upload is over the limit of {limit / (1 << 20):.3g} MiB ({limit} bytes, --max-upload-mb)"
    assert words.encode() in answer
    assert _info(server)["model"]


def test_a_request_whose_head_stalls_is_disconnected(server: str) -> None:
    """--upload-timeout (1.5 s here) covered a stalled body only: a client that sent part of its request line and
    headers and then nothing held its connection for good (1100 such connections stayed open)."""
    answer, seconds = _raw_exchange(server, b"POST /api/predict HTTP/1.1\r\nHost: x\r\n")
    assert answer == b"" and 1.0 < seconds < 12, (answer, seconds)
    answer, seconds = _raw_exchange(server, b"")  # a connection that sends nothing at all
    assert answer == b"" and 1.0 < seconds < 12, (answer, seconds)
    assert _info(server)["model"]  # still serving, and a request that keeps coming is answered as usual
    status, data = _post(server, {"image": ("a.png", _png(_scenes()[0]))})
    assert status == 200 and "segments" in data


def test_a_url_encoded_form_is_named_as_not_multipart(server: str) -> None:
    """`curl -d x=1` (application/x-www-form-urlencoded) gets the reason, not "no file in the field"."""
    request = urllib.request.Request(server + "/api/predict", data=b"x=1", method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request)
    assert e.value.code == 400 and "not a multipart form upload" in json.loads(e.value.read())["error"]
    assert _post(server, {"image": ("ok.png", _png(_scenes()[0]))})[0] == 200


@pytest.mark.parametrize(
    "content_type, cut, words",
    [
        ("multipart/form-data", False, "malformed multipart form upload: Missing boundary"),
        (None, True, "the multipart body is incomplete (no closing boundary)"),
    ],
)
def test_a_malformed_or_cut_multipart_body_says_which(server: str, content_type, cut: bool, words: str) -> None:
    """A multipart type without its boundary, and an upload whose body stops inside the image part (which the form
    parser reads as a form without that field): each named, then the server still answers."""
    body, ctype = _multipart({"image": ("a.png", _png(_scenes()[0]))})
    body = body[: len(body) // 2] if cut else body
    request = urllib.request.Request(server + "/api/predict", data=body, method="POST",
                                     headers={"Content-Type": content_type or ctype})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request)
    assert e.value.code == 400 and json.loads(e.value.read())["error"].startswith(words)
    assert _post(server, {"image": ("ok.png", _png(_scenes()[0]))})[0] == 200


def test_category_ids_are_the_datasets_as_in_predictions_json(tmp_path: Path) -> None:
    """A COCO model (ids 1..200 with gaps): the API's segments and class table give COCO's ids, as predict's
    predictions.json does (it gave the model's positions 0..132), with the position as class_index."""
    import maskformer
    from conftest import DEMO_YAML
    from maskformer.cli import main
    from maskformer.data import load_meta
    from maskformer.engine.checkpoint import save_checkpoint

    sets = ["model.num_classes=133", "data.dataset=coco_panoptic", "inference.panoptic_on=true", "model.num_queries=12",
            "inference.object_mask_threshold=0.0", "inference.overlap_threshold=0.0"]  # fmt: skip
    cfg = maskformer.load_config(DEMO_YAML, overrides=sets)
    model = maskformer.build_model(cfg)
    save_checkpoint(tmp_path / "coco.pt", cfg=cfg, model=model, meta=model.class_meta.to_dict())
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "street.png")
    assert main(["predict", str(tmp_path / "coco.pt"), str(tmp_path / "street.png"), "--output-dir",
                 str(tmp_path / "out")]) == 0  # fmt: skip
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())["annotations"][0]["segments_info"]
    coco = load_meta("coco_panoptic")
    with serving(tmp_path / "coco.pt") as url:
        status, data = _post(url, {"image": ("street.png", _png(image)), "task": "panoptic"})
        classes = _info(url)["classes"]
    assert status == 200 and data["segments"], data
    assert [(s["id"], s["category_id"]) for s in data["segments"]] == [(s["id"], s["category_id"]) for s in written]
    for s in data["segments"]:
        assert s["category_id"] == coco.contiguous_to_dataset_id[s["class_index"]]
        assert s["label"] == coco.classes[s["class_index"]]
    assert classes[0]["id"] == 1 and classes[-1]["id"] == 200 and classes[-1]["class_index"] == 132


def test_a_client_gone_mid_upload_and_a_malformed_body_leave_a_quiet_log(tmp_path: Path) -> None:
    """A client that sends half its announced body and hangs up printed starlette's ClientDisconnect traceback, and a
    malformed multipart body a parser warning per bad byte; the server answers (or drops) and logs neither."""
    import socket
    import subprocess
    import sys
    import time

    from serve_helpers import free_port

    checkpoint = train_tiny(tmp_path / "run")
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "maskformer.cli", "serve", str(checkpoint), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.3)
        body, ctype = _multipart({"image": ("a.png", _png(_scenes()[0]))})
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            head = (
                f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            s.sendall(head.encode() + body[: len(body) // 2])
        request = urllib.request.Request(url + "/api/predict", data=b"--x\r\nnot a part at all", method="POST",
                                         headers={"Content-Type": "multipart/form-data; boundary=zz"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request)
        assert e.value.code == 400
        time.sleep(1.0)  # the server notices the closed connection
        assert _post(url, {"image": ("ok.png", _png(_scenes()[0]))})[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in text and "ClientDisconnect" not in text and "Expected" not in text, text


def test_tta_serves_semantic_labels_only_and_a_panoptic_default_is_refused_at_start(checkpoint: Path) -> None:
    """TTA has no panoptic form (as predict and eval say): serve offers semantic alone, and refuses to start when its
    default task would be panoptic, instead of answering every default request with a 500."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "maskformer.cli", "serve", str(checkpoint), "--tta", "--task",
                          "panoptic"], capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "semantic labels only" in lines[0], run.stderr
    with serving(checkpoint, "--tta", "--task", "semantic") as url:
        assert _info(url)["tasks"] == ["semantic"]
        image = _png(_scenes()[2])
        status, data = _post(url, {"image": ("a.png", image), "task": "panoptic"})
        assert status == 400 and "semantic labels only" in data["error"] and "send task=semantic" in data["error"]
        assert "Python" not in data["error"] and "drop --tta" not in data["error"]  # (what a client cannot do)
        status, data = _post(url, {"image": ("a.png", image)})
        assert status == 200 and data["task"] == "semantic"


def test_the_overlay_download_is_headed_by_the_uploads_name_as_predicts_is(server: str) -> None:
    """predict's overlay PNG names its file above the legend; the page's download had no name on it."""
    scene = _png(_scenes()[0])
    pictures = []
    for name in ("first-name.png", "another-longer-file-name.png"):
        status, data = _post(server, {"image": (name, scene), "task": "semantic"})
        assert status == 200
        pictures.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data["overlay_png"]))).convert("RGB")))
    h, w = data["height"], data["width"]
    assert np.array_equal(pictures[0][:h, :w], pictures[1][:h, :w])  # the image part the page shows: the same
    assert pictures[0].shape != pictures[1].shape or not np.array_equal(pictures[0], pictures[1])  # the titles differ


def test_a_very_long_upload_name_does_not_widen_the_overlay_without_bound(server: str) -> None:
    scene = _png(_scenes()[0])
    widths = []
    for name in ("a" * 120 + ".png", "a" * 900 + ".png"):
        status, data = _post(server, {"image": (name, scene), "task": "semantic"})
        assert status == 200
        widths.append(Image.open(io.BytesIO(base64.b64decode(data["overlay_png"]))).width)
    assert widths[0] == widths[1]


@pytest.mark.parametrize("flag", ["--max-upload-mb", "--max-megapixels"])
def test_a_limit_too_small_for_one_byte_or_pixel_is_one_line(tmp_path: Path, capsys, flag: str) -> None:
    """``--max-upload-mb 1e-7`` started a server whose limit was 0 bytes: every upload was "over the limit"."""
    from maskformer.cli import main

    assert main(["serve", str(tmp_path / "unread.pt"), flag, "1e-7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"maskformer serve: error: {flag} 1e-07 allows not one ") and "\n" not in err, err


@pytest.mark.parametrize("flag", ["--max-upload-mb", "--max-megapixels", "--upload-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "0"])
def test_limits_that_are_no_positive_number_are_one_line(tmp_path: Path, capsys, flag: str, value: str) -> None:
    """``--max-megapixels nan`` / ``inf`` ended in a traceback (cannot convert float NaN / infinity to integer)."""
    from maskformer.cli import main

    assert main(["serve", str(tmp_path / "unread.pt"), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"maskformer serve: error: {flag} must be a positive number, got {float(value)}", err


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM", "SIGINT_IGNORED"])
def test_ctrl_c_or_sigterm_on_a_serving_server_says_interrupted(checkpoint: Path, signum: str) -> None:
    """uvicorn.run swallowed the Ctrl-C it re-raises after its graceful shutdown: a serving server stopped by Ctrl-C
    said nothing and exited 0, unlike every other command (one "interrupted" line, exit code 130). A SIGTERM, a
    service manager's stop, is a normal end (it gave 130, a failed stop to systemd). Started with SIGINT ignored (as
    a script's `serve &`), uvicorn still stops on it and gives it back to "ignored": that too ended with 0."""
    import signal
    import subprocess
    import sys
    import time

    from serve_helpers import free_port

    port = free_port()
    ignored = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if signum == "SIGINT_IGNORED" else None
    proc = subprocess.Popen([sys.executable, "-m", "maskformer.cli", "serve", str(checkpoint), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignored)  # fmt: skip
    signum = signum.removesuffix("_IGNORED")
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        proc.send_signal(getattr(signal, signum))
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    if signum == "SIGTERM":
        assert proc.returncode == 0 and err.strip().splitlines()[-1] == "maskformer serve: stopped (SIGTERM)", err
    else:
        assert proc.returncode == 130 and err.strip().splitlines()[-1] == "maskformer serve: interrupted", err[-2000:]
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--max-upload-mb", "--max-megapixels"])
def test_a_huge_finite_limit_is_no_limit_not_an_overflow(tmp_path: Path, capsys, flag: str) -> None:
    """``--max-megapixels 1e308`` ended in a traceback (OverflowError: cannot convert float infinity to integer):
    the limit times 1e6 is infinite. It now means no practical limit, and the command goes on to the model (here a
    missing file, named in one line)."""
    from maskformer.cli import main

    assert main(["serve", str(tmp_path / "unread.pt"), flag, "1e308", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unread.pt" in err and "\n" not in err and "Overflow" not in err, err


def test_panoptic_on_a_model_without_things_says_how_to_serve_it(tmp_path: Path) -> None:
    """A model whose classes are all stuff (e.g. trained on CamVid): predict --task panoptic runs it, and serve, whose
    menu leaves it out, answered an API request for it with a bare "task must be one of ['semantic']"."""
    import maskformer
    from conftest import DEMO_YAML
    from maskformer.serve.app import build_app
    from test_image_reading import _post_image

    model = maskformer.build_model(maskformer.load_config(DEMO_YAML)).eval()
    image = _png(_scenes()[1])
    app = build_app(maskformer.Predictor(model, optimize=False, thing_ids=(), task_default="semantic"))
    status, data = _post_image(app, "a.png", image, fields={"task": "panoptic"})
    assert status == 400 and "no things" in data["error"] and "serve --task panoptic" in data["error"], data
    status, data = _post_image(app, "a.png", image, fields={"task": "semantic"})
    assert status == 200 and data["task"] == "semantic", data
    app = build_app(maskformer.Predictor(model, optimize=False, thing_ids=(), task_default="panoptic"))
    status, data = _post_image(app, "a.png", image, fields={"task": "panoptic"})
    assert status == 200 and data["task"] == "panoptic", data


def test_ctrl_c_answers_the_waiting_pictures_at_once_and_a_second_one_the_running_one(tmp_path: Path, capsys) -> None:
    """Ctrl+C kept the server running until every queued picture was segmented (42 s for three 3 MP uploads), saying
    nothing; a second Ctrl+C then gave the running picture's client uvicorn's plain-text 500 and two tracebacks.
    Now the waiting pictures are answered 503 (JSON) at once, the one being segmented is finished, a line says so,
    and a second Ctrl+C answers that one 503 too. The server class of `maskformer serve`, in this process, around a
    Predictor that segments only when the test lets it."""
    import signal
    import threading

    import uvicorn

    import maskformer
    from maskformer.cli.serve import _server_class
    from maskformer.serve.app import build_app
    from serve_helpers import free_port

    go, started, returned = threading.Event(), threading.Event(), threading.Event()
    dropped = []  # (set: the held call returns without running the model, whose thread no one waits for)

    class Held:
        def __init__(self, predictor) -> None:
            self.predictor = predictor

        def __getattr__(self, name: str):
            return getattr(self.predictor, name)

        def __call__(self, *args, **kwargs):
            started.set()
            try:
                assert go.wait(timeout=60)
                if dropped:
                    raise RuntimeError("dropped by the test")
                return self.predictor(*args, **kwargs)
            finally:
                returned.set()

    predictor = Held(maskformer.Predictor.from_checkpoint(_per_pixel_checkpoint(tmp_path / "pp.pt")))
    port = free_port()
    for second in (False, True):
        go.clear(), started.clear(), returned.clear()
        app = build_app(predictor)  # (one per server: its lock belongs to the server's event loop)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off")
        server = _server_class(uvicorn.Server)(config)
        with _running(server) as url:
            try:
                pool = ThreadPoolExecutor(3)
                first = pool.submit(_post, url, {"image": ("first.png", _png(_scenes()[0]))})
                assert started.wait(timeout=30)
                waiting = [pool.submit(_post, url, {"image": (f"w{i}.png", _png(_scenes()[i]))}) for i in (1, 2)]
                for _ in range(600):  # bounded: 60 s (a loaded machine), until both wait for the model
                    if app.state.serving.busy == 3:
                        break
                    time.sleep(0.1)
                assert app.state.serving.busy == 3, "the two uploads never reached the model's queue"
                server.handle_exit(signal.SIGINT, None)
                answers = [w.result(timeout=10) for w in waiting]  # (at once: the running picture is still held)
                assert all(status == 503 and "the server is stopping" in data["error"] for status, data in answers)
                said = capsys.readouterr().err
                assert "stopping: 3 request(s) in hand; the picture being segmented is finished" in said
                if second:
                    server.handle_exit(signal.SIGINT, None)
                    status, data = first.result(timeout=10)
                    assert status == 503 and "the server was stopped before" in data["error"], data
                    assert server.abandoned
                else:
                    go.set()
                    status, data = first.result(timeout=30)
                    assert status == 200 and data["task"] == "semantic"
                    assert not server.abandoned
                pool.shutdown()
            finally:
                if second:  # (the server is gone: the held call has no one to answer)
                    dropped.append(True)
                go.set()
        # (a model call still running in a worker thread when pytest exits aborts the process: exit code 134)
        assert not started.is_set() or returned.wait(timeout=60)


def test_ctrl_c_answers_an_upload_still_arriving_at_its_next_chunk(tmp_path: Path, capsys) -> None:
    """An upload still arriving kept a stopping server up until its last byte (43 s at 200 kB/s), unsaid."""
    import signal
    import socket

    import uvicorn

    import maskformer
    from maskformer.cli.serve import _server_class
    from maskformer.serve.app import build_app
    from serve_helpers import free_port

    app = build_app(maskformer.Predictor.from_checkpoint(_per_pixel_checkpoint(tmp_path / "pp.pt")))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off")
    server = _server_class(uvicorn.Server)(config)
    with _running(server):
        body, ctype = _multipart({"image": ("big.png", bytes(400_000))})
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:100_000])  # fmt: skip
            for _ in range(600):  # bounded: 60 s (a loaded machine), until the server has the first chunk in hand
                if app.state.serving.busy:
                    break
                time.sleep(0.1)
            assert app.state.serving.busy, "the upload never reached the server"
            server.handle_exit(signal.SIGINT, None)
            s.sendall(body[100_000:200_000])  # (the next chunk: answered now, the rest never sent)
            answer = ""
            for _ in range(20):  # bounded: the head and the JSON may come in two reads
                part = s.recv(65536).decode()
                answer += part
                if not part or answer.endswith("}"):
                    break
        assert answer.startswith("HTTP/1.1 503") and "this upload was not read to its end" in answer, answer
        assert "stopping: 1 request(s) in hand; they are answered 503" in capsys.readouterr().err


def test_serve_without_python_multipart_says_what_to_install(tmp_path: Path, capsys, monkeypatch) -> None:
    """Without python-multipart the server started and said it was healthy, then answered every upload with a 400
    (Starlette imports it at the first form): it is named at the start, as a missing uvicorn is."""
    import importlib.util

    from maskformer.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "multipart" in name else real(name, *a))
    assert main(["serve", str(tmp_path / "never-read.pt"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["maskformer serve: error: serve needs the web stack: pip install 'maskformer[serve]' "
                   "(python-multipart is missing)"]  # fmt: skip
