"""``maskformer serve MODEL``: a web page (drop images, see overlays) and a JSON API on 127.0.0.1."""

from __future__ import annotations

import argparse

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
    p.add_argument("--task", choices=["semantic", "panoptic"], help="default task of the page and the API")
    add_inference_options(p)
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted (default 20 MB)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from maskformer.engine.checkpoint import load_model
    from maskformer.errors import UserError
    from maskformer.inference.predictor import Predictor
    from maskformer.zoo import resolve_model

    try:
        import uvicorn

        from maskformer.serve.app import build_app
    except ImportError as e:
        raise UserError(f"serve needs the web stack: pip install 'maskformer[serve]' ({e.name} is missing)") from None
    path = resolve_model(args.checkpoint)
    predictor = Predictor(load_model(path, args.device), device=args.device, **predictor_options(args))
    if args.task:
        predictor.task_default = args.task
    app = build_app(predictor, name=str(args.checkpoint), max_upload_bytes=int(args.max_upload_mb * (1 << 20)))
    print(f"maskformer serve: {args.checkpoint} on http://{args.host}:{args.port}/ (Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
