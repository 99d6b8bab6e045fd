"""The web app of ``maskformer serve``: one Predictor, a page at ``/`` and a JSON API.

Starlette (ASGI) on uvicorn: a small, maintained stack with multipart uploads and a thread pool, and no build step for
the page (plain HTML/JS shipped in this package; nothing is fetched from the internet). Requests are served
concurrently; inference runs in the thread pool behind one lock (one model, two CPU cores: running two forwards at
once would only split the cores), so answers never mix.

- ``GET /``: the page; ``GET /health``: 200 ``{"status": "ok", "model"}`` once the model is loaded; ``GET
  /api/info``: model, tasks, classes with colours.
- ``POST /api/predict`` (multipart ``image``, optional ``task``): ``{"task", "width", "height", "time_ms",
  "segments": [{"id", "label", "category_id", "isthing", "area", "color"}], "overlay_png", "label_png",
  "segments_png"}`` (PNG files as base64; ``label_png`` is the file ``maskformer predict`` writes, ``segments_png`` the
  segment id per pixel as R + 256 G + 256² B). Uploads over the byte or pixel limit get 413, anything that is not a
  readable image 400, a task the model cannot do 400, an unexpected failure 500, all as ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import re
import threading
import time
import warnings
from importlib import resources

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from maskformer.errors import ConfigError, DataError, out_of_memory
from maskformer.fileio import unreadable_reason
from maskformer.inference.predictor import PANOPTIC_TTA
from maskformer.inference.preprocess import pil_to_rgb
from maskformer.inference.render import dataset_ids, label_file_values, render
from maskformer.inference.visualize import id2rgb

from .stopping import ServingState

__all__ = ["build_app"]


# formats every current browser shows in an <img> (the page shows the upload itself; other formats get image_png)
BROWSER_FORMATS = frozenset({"PNG", "JPEG", "GIF", "WEBP", "BMP", "ICO", "AVIF"})


@contextlib.contextmanager
def _pillow_limit(max_pixels: int):
    """Pillow's decompression-bomb guard (an error above twice ``Image.MAX_IMAGE_PIXELS``, a warning above it) raised
    to the server's own limit, which is checked on the header before any pixel is decoded: a --max-megapixels above
    179 answered "225000000 pixels is over the limit of 300000000 pixels". Requests are read one at a time on the
    event loop, so the module-wide value is set and put back around one read."""
    before = Image.MAX_IMAGE_PIXELS
    if before is not None:
        Image.MAX_IMAGE_PIXELS = max(before, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def _png(array_or_image: np.ndarray | Image.Image) -> str:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _mask_model(predictor) -> bool:
    """A mask-classification model (per-pixel baselines have no masks to make segments from)."""
    cfg = getattr(predictor, "cfg", None)
    return cfg is None or cfg.model.meta_arch == "maskformer"


def offered_tasks(predictor) -> tuple[str, ...]:
    """Semantic always; panoptic for mask-classification models whose class table has things or whose default is
    panoptic."""
    wanted = predictor.task_default == "panoptic" or bool(predictor.thing_ids)
    return ("semantic", "panoptic") if _mask_model(predictor) and wanted else ("semantic",)


def build_app(predictor, *, name: str = "model", max_upload_bytes: int = 20 << 20, max_pixels: int = 16_000_000,
              tasks: tuple[str, ...] = (), upload_timeout: float = 30.0):  # fmt: skip
    """A Starlette app serving ``predictor`` (a ``maskformer.Predictor``). ``tasks``: offered on the page and the API
    (default: ``offered_tasks``). ``max_pixels`` bounds width x height of an upload (the label maps and overlays are
    made at the upload's size); an upload that sends nothing for ``upload_timeout`` seconds is answered 408 (a
    stalled client does not hold its connection forever). Raises ``ConfigError`` when the predictor's default task is
    not offered."""
    lock = threading.Lock()
    turn = asyncio.Lock()  # requests wait here for the model, where a client that has gone can be noticed
    state = ServingState()
    logging.getLogger("python_multipart").setLevel(logging.ERROR)  # a malformed body is answered with a 400 already
    colors = np.asarray(predictor.colors, dtype=np.uint8)
    names = predictor.class_names
    label_values = label_file_values(predictor)
    ids = dataset_ids(predictor)  # category_id as in predict's predictions.json; class_index: the position 0..K-1
    tasks = tasks or offered_tasks(predictor)
    tta = bool(getattr(predictor, "tta", False))
    if tta and "panoptic" in tasks:  # TTA is for semantic labels only (as predict says)
        if predictor.task_default == "panoptic":
            raise ConfigError(f"{PANOPTIC_TTA} ({name} answers panoptic by default)")
        tasks = tuple(t for t in tasks if t != "panoptic")
    if predictor.task_default not in tasks:
        raise ConfigError(f"task {predictor.task_default!r} is not available for {name} (it can do {list(tasks)})")
    page = resources.files("maskformer.serve").joinpath("page.html").read_text()

    def infer(image: np.ndarray, task: str, filename: str, shown_as_is: bool = True) -> dict:
        with lock:
            start = time.perf_counter()
            result = predictor(image, task=task)
            elapsed = time.perf_counter() - start
        title = filename if len(filename) <= 100 else filename[:99] + "…"  # (the legend panel is as wide as it)
        shown = render(
            image, result, task, names, colors, title=title, label_values=label_values, thing_ids=predictor.thing_ids
        )  # (the title heads the legend panel, as predict's overlay)
        return {
            "task": task, "width": int(image.shape[1]), "height": int(image.shape[0]),
            "time_ms": round(1000 * elapsed, 1),
            "segments": [{**seg, "category_id": ids[seg["category_id"]], "class_index": seg["category_id"]}
                         for seg in shown.segments],
            "overlay_png": _png(shown.overlay), "label_png": _png(shown.label),
            "segments_png": _png(id2rgb(shown.segment_ids)),
            # the picture as read, for the page, where a browser cannot show the upload itself (e.g. TIFF)
            **({} if shown_as_is else {"image_png": _png(image)}),
        }  # fmt: skip

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": name})

    async def info(request: Request) -> JSONResponse:
        classes = [{"id": ids[i], "class_index": i, "name": n,
                    "color": [int(v) for v in colors[i]], "isthing": i in predictor.thing_ids}
                   for i, n in enumerate(names)]  # fmt: skip
        return JSONResponse({"model": name, "tasks": list(tasks), "default_task": predictor.task_default,
                             "classes": classes, "max_upload_bytes": max_upload_bytes,
                             "max_pixels": max_pixels})  # fmt: skip

    async def body(request: Request):
        """The body's chunks; ``TimeoutError`` when none comes for ``upload_timeout`` seconds."""
        chunks = request.stream().__aiter__()
        while True:
            try:
                yield await asyncio.wait_for(chunks.__anext__(), upload_timeout)
            except StopAsyncIteration:
                return

    async def too_large(stream, size: int) -> JSONResponse:
        # read (and drop) a bounded rest of the body first (``stream``: the body's chunks from where reading stopped;
        # none once it ended): a client still sending would otherwise see a broken pipe instead of the answer
        try:
            async for chunk in stream:
                if state.stopping:  # (Ctrl+C: an upload still arriving is not read to its end)
                    return _error(503, "the server is stopping; this upload was not read to its end")
                size += len(chunk)
                if size > 4 * max_upload_bytes + (16 << 20):
                    break
        except asyncio.TimeoutError:  # (the builtin TimeoutError from Python 3.11 on)
            pass
        limit = f"{max_upload_bytes / (1 << 20):.3g} MiB ({max_upload_bytes} bytes, --max-upload-mb)"
        return _error(413, f"upload is over the limit of {limit}")

    async def predict(request: Request) -> Response:
        state.busy += 1  # (from the first byte of the upload: a Ctrl+C meanwhile answers it 503)
        try:
            return await answer(request)
        except asyncio.CancelledError:  # a second Ctrl+C stopped the server during this request: said in JSON
            return _error(503, "the server was stopped before this picture was segmented")
        finally:
            state.busy -= 1

    async def answer(request: Request) -> Response:
        declared = request.headers.get("content-length")
        try:
            stream = body(request)  # (one reader: Starlette refuses a second one once the body has ended)
            if declared is not None and declared.isdigit() and int(declared) > max_upload_bytes:
                return await too_large(stream, 0)
            size = 0
            chunks = []
            async for chunk in stream:
                if state.stopping:  # (Ctrl+C: an upload still arriving is not read to its end)
                    return _error(503, "the server is stopping; this upload was not read to its end")
                size += len(chunk)
                if size > max_upload_bytes:
                    return await too_large(stream, size)
                chunks.append(chunk)
        except ClientDisconnect:  # the client went away mid-upload: nobody to answer, nothing to log
            return Response(status_code=400)
        except asyncio.TimeoutError:  # (the builtin TimeoutError from Python 3.11 on)
            return _error(408, f"the upload stalled: no bytes came for {upload_timeout:g} s after the first {size}")
        request._body = b"".join(chunks)  # the form parser reads the body we already hold
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":  # (a url-encoded form would parse, without any file in it)
            return _error(400, f"not a multipart form upload (Content-Type {kind or 'missing'}): send "
                               "multipart/form-data with the picture in the field 'image'")  # fmt: skip
        try:
            form = await request.form()
        except Exception as e:  # malformed multipart: the client's fault
            why = str(getattr(e, "detail", "") or e or type(e).__name__).strip().rstrip(".")
            return _error(400, f"malformed multipart form upload: {why}")
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            boundary = request.headers.get("content-type", "").partition("boundary=")[2].split(";")[0].strip('" ')
            if boundary and f"--{boundary}--".encode() not in request._body:
                return _error(400, "the multipart body is incomplete (no closing boundary): was the upload cut?")
            if isinstance(upload, str):  # (a part without filename= is a text field to Starlette)
                return _error(400, "the multipart field 'image' has no filename: send it as a file part "
                                   "(curl -F image=@photo.jpg, or a filename= in its Content-Disposition)")  # fmt: skip
            return _error(400, "no file in the multipart field 'image'")
        if len(form.getlist("image")) > 1:  # (one picture per request: which one would be answered?)
            return _error(400, "more than one file in the field 'image': send one picture per request")
        given = form.getlist("task")
        if len(given) > 1 or not all(isinstance(t, str) for t in given):  # (a file there was answered by its repr)
            return _error(400, "the field 'task' takes one text value (semantic or panoptic), not a file or several")
        task = str(given[0]).strip() if given and str(given[0]).strip() else predictor.task_default
        if task not in tasks:
            if task == "panoptic" and tta:
                # (an API client cannot drop the server's --tta: it is told what it can send)
                return _error(400, "task=panoptic: this server runs with --tta (test-time augmentation), which gives "
                                   "semantic labels only, as in the original: send task=semantic")  # fmt: skip
            if task == "panoptic" and _mask_model(predictor) and not predictor.thing_ids:
                # (predict --task panoptic runs it: here it is left out of the page's menu, and said why)
                return _error(400, f"task=panoptic: the classes of {name} have no things, so this server offers "
                                   "semantic only; `maskformer serve --task panoptic` offers panoptic (segments of "
                                   "stuff classes) as well")  # fmt: skip
            return _error(400, f"task must be one of {list(tasks)}, got {task!r}")
        data = await upload.read()
        filename = upload.filename or "upload"
        try:
            with _pillow_limit(max_pixels), Image.open(io.BytesIO(data)) as pil:
                width, height = pil.size  # from the header: refuse a huge picture before decoding its pixels
                if width * height > max_pixels:
                    size = f"{width * height} pixels ({width}x{height})"
                    return _error(413, f"{filename}: {size} is over the limit of {max_pixels} pixels")
                pil.load()
                image = pil_to_rgb(pil, filename)  # EXIF orientation, 16-bit grey: as eval and predict read it
                # (a browser turns a JPEG by its EXIF orientation, but not e.g. a WebP: those get the upright PNG)
                turned = pil.getexif().get(0x0112, 1) not in (0, 1)
                shown_as_is = pil.format in BROWSER_FORMATS and (pil.format == "JPEG" or not turned)
        except DataError as e:  # (a ValueError: before the generic handler below)
            return _error(400, str(e))
        except Image.DecompressionBombError as e:  # PIL's own guard, before the header check above could run
            pixels = re.search(r"\((\d+) pixels\)", str(e))
            size = f"{int(pixels[1])} pixels" if pixels else "the image"
            return _error(413, f"{filename}: {size} is over the limit of {max_pixels} pixels")  # (no size read yet)
        except (OSError, ValueError) as e:
            return _error(400, f"{filename}: not a readable image ({unreadable_reason(e, len(data))})")
        if image.shape[0] < 1 or image.shape[1] < 1:
            return _error(400, f"{filename}: empty image")
        try:
            if not await state.take_turn(turn):  # (Ctrl+C: the queue is answered at once, the running one finished)
                return _error(503, f"{filename}: the server is stopping; this picture was not segmented")
            try:
                if await request.is_disconnected():  # (gave up while waiting, e.g. a page closed: no work for it)
                    return Response(status_code=400)
                state.segmenting = True
                return JSONResponse(await run_in_threadpool(infer, image, task, filename, shown_as_is))
            finally:
                state.segmenting = False
                turn.release()
        except DataError as e:
            return _error(400, str(e))
        except (RuntimeError, MemoryError) as e:  # too large for this machine: the client's picture, the server stays
            if (why := out_of_memory(e)) is None:
                raise
            size = f"{image.shape[1]}x{image.shape[0]}"
            return _error(413, f"{filename} ({size}): {why}: send a smaller picture (or lower --max-megapixels)")

    routes = [
        Route("/", index),
        Route("/health", health),
        Route("/api/info", info),
        Route("/api/predict", predict, methods=["POST"]),
    ]

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        answer = _error(exc.status_code, str(exc.detail))
        if exc.status_code == 405:  # what to use instead, in words and in the Allow header HTTP asks for
            allowed = (exc.headers or {}).get("Allow", "")
            answer = _error(405, f"{request.method} {request.url.path} is not allowed: use {allowed or 'GET'}")
        answer.headers.update(exc.headers or {})
        return answer

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # the page and API clients read JSON even when something unforeseen fails; uvicorn logs the traceback
        return _error(500, f"the server failed on this request ({type(exc).__name__}: {exc})")

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.serving = state  # (the server sets .stopping when it is asked to stop; .busy counts the pictures)
    return app
