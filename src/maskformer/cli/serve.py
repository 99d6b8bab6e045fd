"""``maskformer serve MODEL``: a web page (drop images, see overlays) and a JSON API on 127.0.0.1."""

from __future__ import annotations

import argparse
import math

from maskformer.cli.inference_options import MODEL_HELP, add_inference_options, predictor_options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="a local web page and JSON API for a model",
        description="Load MODEL once and serve GET / (a page: pick or drop images, overlays, legend, hover a segment"
        " for its class and area, downloads), POST /api/predict (multipart field 'image', optional 'task'; JSON with"
        " segments and base64 PNGs) and GET /health. Binds 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument(
        "checkpoint",
        metavar="MODEL",
        help=MODEL_HELP,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    task = "default task of the page and the API (default: the model's own; panoptic configs: panoptic)"
    p.add_argument("--task", choices=["semantic", "panoptic"], help=task)
    add_inference_options(p)
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted, in MiB (default 20)")
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=16.0,
        help="largest image accepted, width x height in millions (default 16: a 12 MP photo; the label maps and "
        "overlays are made at the image's size)",
    )
    p.add_argument("--upload-timeout", type=float, default=30.0,
                   help="seconds an upload may send nothing before it is answered 408, and a request's line and "
                        "headers may take before its connection is closed (default 30)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import signal
    import sys

    from maskformer.engine.checkpoint import load_model
    from maskformer.errors import UserError
    from maskformer.inference.predictor import Predictor
    from maskformer.zoo import resolve_model

    try:
        import uvicorn

        from maskformer.serve.app import build_app
        from maskformer.serve.protocol import head_timeout_protocol
    except ImportError as e:
        raise UserError(f"serve needs the web stack: pip install 'maskformer[serve]' ({e.name} is missing)") from None
    import importlib.util

    if not any(importlib.util.find_spec(name) for name in ("python_multipart", "multipart")):  # (Starlette loads it
        # at the first upload: every upload would be a 400 from a server that said it was up)
        raise UserError("serve needs the web stack: pip install 'maskformer[serve]' (python-multipart is missing)")
    limits = [("--max-upload-mb", args.max_upload_mb), ("--max-megapixels", args.max_megapixels),
              ("--upload-timeout", args.upload_timeout)]  # fmt: skip
    for flag, value in limits:
        if not (math.isfinite(value) and value > 0):  # (nan and inf too: a limit is a positive number)
            raise UserError(f"{flag} must be a positive number, got {value}")
    huge = 1 << 62  # (1e308 megapixels is no limit at all, not an overflow)
    max_upload_bytes = int(min(args.max_upload_mb * (1 << 20), huge))
    max_pixels = int(min(args.max_megapixels * 1e6, huge))
    for flag, value, amount, unit in (("--max-upload-mb", args.max_upload_mb, max_upload_bytes, "byte"),
                                      ("--max-megapixels", args.max_megapixels, max_pixels, "pixel")):  # fmt: skip
        if amount < 1:  # (1e-7 MB is 0 bytes: every upload would be over it)
            raise UserError(f"{flag} {value:g} allows not one {unit}: give a larger limit")
    port = _check_port(args.host, args.port)  # before the model loads: a busy port is one line at once
    path = resolve_model(args.checkpoint)
    predictor = Predictor(load_model(path, args.device), device=args.device, **predictor_options(args))
    if args.task:
        predictor.task_default = args.task
    app = build_app(predictor, name=str(args.checkpoint), max_upload_bytes=max_upload_bytes, max_pixels=max_pixels,
                    upload_timeout=args.upload_timeout)  # fmt: skip
    host = f"[{args.host}]" if ":" in args.host else args.host  # (an IPv6 address in a URL is bracketed)
    print(f"maskformer serve: {args.checkpoint} on http://{host}:{port}/ (Ctrl+C stops)", flush=True)
    # a request whose head stalls is disconnected after --upload-timeout too (uvicorn has no limit of its own there)
    protocol = head_timeout_protocol(args.upload_timeout)
    config = uvicorn.Config(app, host=args.host, port=port, log_level="warning", http=protocol, lifespan="off")
    server = _server_class(uvicorn.Server)(config)
    # (not uvicorn.run, which swallows the Ctrl-C it re-raises after the graceful shutdown: the command said nothing
    # and ended with 0; now Ctrl-C is "interrupted", 130, as every command's). uvicorn gives the signal that stopped
    # it to the handler that was set before it ran: a SIGTERM (a service manager's stop) is a normal end, exit 0.
    terminated = []
    previous = signal.signal(signal.SIGTERM, lambda *_: terminated.append(1))
    try:
        server.run()
    except KeyboardInterrupt:
        if server.abandoned:  # a second Ctrl+C: the picture being segmented runs on in a thread nothing can stop
            print("maskformer serve: interrupted", file=sys.stderr, flush=True)
            os._exit(130)  # (not waited for: its client was answered 503; the server writes no files)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if server.stopped_by == signal.SIGINT:  # (Ctrl-C where it was ignored before, e.g. `serve &` in a script)
        raise KeyboardInterrupt
    if terminated:
        print("maskformer serve: stopped (SIGTERM)", file=sys.stderr, flush=True)
    return 0


def _server_class(base: type) -> type:
    """``uvicorn.Server`` that tells the app when it is asked to stop: the pictures waiting are answered 503 at once,
    the one being segmented is finished (said in one line; a second Ctrl+C stops without it)."""
    import sys

    class Server(base):  # type: ignore[misc, valid-type]
        abandoned = False  # stopped by a second Ctrl+C while a picture was being segmented
        stopped_by = 0  # the first signal that stopped it

        def handle_exit(self, sig, frame) -> None:  # noqa: ANN001 - uvicorn's signal handler
            first = not self.should_exit
            self.stopped_by = self.stopped_by or sig
            super().handle_exit(sig, frame)
            state = self.config.app.state.serving
            state.stop()
            self.abandoned = self.abandoned or (self.force_exit and state.segmenting)
            if first and state.busy:
                what = ("the picture being segmented is finished, the others are answered 503 (Ctrl+C again stops at "
                        "once)") if state.segmenting else "they are answered 503"  # fmt: skip
                print(f"maskformer serve: stopping: {state.busy} request(s) in hand; {what}", file=sys.stderr,
                      flush=True)  # fmt: skip

    return Server


def _check_port(host: str, port: int) -> int:
    """The port to serve on (``port``, or for 0 a free one the system picks); a one-line UserError when (host, port)
    cannot be bound (in use, no such address, privileged)."""
    import socket

    from maskformer.errors import UserError

    if not 0 <= port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
            return int(probe.getsockname()[1])  # (0: the one the system picked, shown and then used)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
