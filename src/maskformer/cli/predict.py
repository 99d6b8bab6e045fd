"""``maskformer predict CHECKPOINT IMAGE_OR_DIR...``: label maps, panoptic PNG + JSON, and overlay pictures."""

from __future__ import annotations

import argparse

from maskformer.cli.inference_options import add_inference_options, inference_model

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment images and draw the result",
        description="For every image: OUTPUT_DIR/<name>_overlay.png (colours + legend), <name>_labels.png (semantic"
        " label map, class index per pixel); with --task panoptic also <name>_panoptic.png (COCO-panoptic id PNG) and"
        " one predictions.json in COCO-panoptic format. Folders are searched for images (not recursively).",
    )
    p.add_argument("checkpoint", help="a checkpoint written by `maskformer train` or `maskformer convert`")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    p.add_argument("--output-dir", required=True, help="where results go")
    p.add_argument("--task", choices=["semantic", "panoptic"], help="default: panoptic if the config turns it on")
    add_inference_options(p)
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
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from maskformer.engine.checkpoint import atomic_write_text, load_model_and_config
    from maskformer.inference.predictor import Predictor, _load_image
    from maskformer.inference.visualize import id2rgb, palette, panoptic_picture, save_png, semantic_picture

    files = _collect(args.inputs)
    model, cfg, meta = load_model_and_config(args.checkpoint, args.device)
    k = cfg.model.num_classes
    names = meta.get("classes") or [f"class {i}" for i in range(k)]
    colors = palette(k, meta.get("colors"))
    isthing = meta.get("isthing") or [False] * k
    task = args.task or (
        "panoptic" if cfg.inference.panoptic_on and cfg.model.meta_arch == "maskformer" else "semantic"
    )
    model = inference_model(model, args, args.device)
    predictor = Predictor(
        model,
        min_size=cfg.test.min_size,
        max_size=cfg.test.max_size,
        task_default=task,
        thing_ids=[i for i, t in enumerate(isthing) if t],
        object_mask_threshold=cfg.inference.object_mask_threshold,
        overlap_threshold=cfg.inference.overlap_threshold,
        fast=args.fast,
        device=args.device,
    )
    out = Path(args.output_dir)
    annotations = []
    for path in tqdm(files, desc="predict", disable=len(files) < 2):
        image = _load_image(path)
        stem = path.stem
        if task == "semantic":
            if args.tta:
                scores = predictor.tta_scores(
                    image, min_sizes=cfg.test.tta_min_sizes, max_size=cfg.test.tta_max_size, flip=cfg.test.tta_flip
                )
                labels = scores.argmax(0).numpy()
            else:
                labels = predictor(image, task="semantic").numpy()
            save_png(labels.astype(np.uint8 if k <= 256 else np.uint16), out / f"{stem}_labels.png")
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
        categories = [{"id": i, "name": names[i], "isthing": int(bool(isthing[i]))} for i in range(k)]
        atomic_write_text(out / "predictions.json", json.dumps({"annotations": annotations, "categories": categories}))
    print(f"wrote results for {len(files)} image(s) to {out}")
    return 0
