"""``maskformer predict MODEL IMAGE_OR_DIR...``: label maps, panoptic PNG + JSON, and overlay pictures."""

from __future__ import annotations

import argparse

from maskformer.cli.inference_options import add_inference_options, predictor_options

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment images and draw the result",
        description="For every image: OUTPUT_DIR/<name>_overlay.png (colours + legend), <name>_labels.png (semantic"
        " label map, class index per pixel); with --task panoptic also <name>_panoptic.png (COCO-panoptic id PNG) and"
        " one predictions.json in COCO-panoptic format. Folders are searched for images (not recursively). An"
        " unreadable image is named and skipped; the exit code is 2 at the end if any was (--strict: stop at once).",
    )
    p.add_argument("checkpoint", metavar="MODEL", help="a checkpoint written by `maskformer train` or `convert`")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    p.add_argument("--output-dir", required=True, help="where results go")
    p.add_argument("--task", choices=["semantic", "panoptic"], help="default: panoptic if the config turns it on")
    add_inference_options(p)
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.set_defaults(func=run)


def _collect(inputs: list[str]) -> list:
    from pathlib import Path

    from maskformer.errors import DataError

    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{path}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from maskformer.engine.checkpoint import atomic_write_text, load_model
    from maskformer.errors import DataError
    from maskformer.inference.predictor import Predictor
    from maskformer.inference.preprocess import load_image
    from maskformer.inference.visualize import id2rgb, panoptic_picture, save_png, semantic_picture

    files = _collect(args.inputs)
    options = predictor_options(args)
    predictor = Predictor(load_model(args.checkpoint, args.device), device=args.device, **options)
    task = args.task or predictor.task_default
    names, colors = predictor.class_names, np.asarray(predictor.colors, dtype=np.uint8)
    thing = predictor.thing_ids
    out = Path(args.output_dir)
    annotations, failed = [], []
    for path in tqdm(files, desc="predict", disable=len(files) < 2):
        try:
            image = load_image(path)
        except DataError as e:
            if args.strict or len(files) == 1:
                raise
            print(f"maskformer predict: skipped {e}", file=sys.stderr)
            failed.append(str(path))
            continue
        stem = path.stem
        if task == "semantic":
            labels = predictor(image, task="semantic").numpy()
            save_png(labels.astype(np.uint8 if len(names) <= 256 else np.uint16), out / f"{stem}_labels.png")
            save_png(semantic_picture(image, labels, names, colors, title=path.name), out / f"{stem}_overlay.png")
        else:
            pan, segments = predictor(image, task="panoptic")
            pan = pan.numpy()
            save_png(id2rgb(pan), out / f"{stem}_panoptic.png")
            save_png(
                panoptic_picture(image, pan, segments, names, colors, title=path.name), out / f"{stem}_overlay.png"
            )
            areas = np.bincount(pan.ravel(), minlength=(max([s["id"] for s in segments], default=0) + 1))
            annotations.append(
                {
                    "image_id": stem,
                    "file_name": f"{stem}_panoptic.png",
                    "segments_info": [
                        dict(s, area=int(areas[s["id"]]), category_name=names[s["category_id"]]) for s in segments
                    ],
                }
            )
    if task == "panoptic":
        categories = [{"id": i, "name": n, "isthing": int(i in thing)} for i, n in enumerate(names)]
        atomic_write_text(out / "predictions.json", json.dumps({"annotations": annotations, "categories": categories}))
    done = len(files) - len(failed)
    print(f"wrote results for {done} image(s) to {out}")
    if failed:
        print(f"maskformer predict: error: {len(failed)} of {len(files)} image(s) unreadable: {', '.join(failed)}",
              file=sys.stderr)  # fmt: skip
        return 2
    return 0
