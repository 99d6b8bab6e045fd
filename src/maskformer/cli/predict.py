"""``maskformer predict MODEL IMAGE_OR_DIR...``: label maps, panoptic PNG + JSON, and overlay pictures."""

from __future__ import annotations

import argparse

from maskformer.cli.inference_options import MODEL_HELP, add_inference_options, check_output_dir, predictor_options
from maskformer.cli.outputs import drop_panoptic_entries, foreign_table, panoptic_table

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
GIF = ".gif"  # one frame: an image; animated: a video
_OUTPUT_ENDINGS = ("_overlay.mp4", "_overlay.png", "_labels.png", "_panoptic.png")  # what predict writes


def _frames(path) -> int:
    """How many pictures an image file holds (pages of a TIFF, frames of a WebP); 1 when unreadable (named later)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return int(getattr(image, "n_frames", 1))
    except Exception:  # noqa: BLE001 - unreadable: the image reader names it
        return 1


def _is_video(path) -> bool:
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return True
    if path.suffix.lower() != GIF or not path.is_file():  # (a named pipe: the image reader names it)
        return False
    from PIL import Image

    try:
        with Image.open(path) as gif:
            first_only = not getattr(gif, "is_animated", False)
    except Exception:  # noqa: BLE001 - unreadable: the image reader names it
        return False
    return not first_only  # (a cut animation is a video too: its decoding error then names it)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment images and draw the result",
        description="For every image: OUTPUT_DIR/<name>_overlay.png (colours + legend) and, semantic,"
        " <name>_labels.png (class per pixel: a folder dataset's classes.json ids, else the class index) or,"
        " panoptic, <name>_panoptic.png (COCO-panoptic id PNG) with"
        " one predictions.json in COCO-panoptic format for all images (category ids as the dataset writes them;"
        " an earlier run's entries for other images in OUTPUT_DIR are kept);"
        " a video (.mp4 .avi .mov .mkv .webm .m4v, or an animated .gif) gives <name>_overlay.mp4 with the same frames"
        " and rate. Folders are searched for images and videos (with --recursive also in their subfolders, whose"
        " layout the outputs keep). An unreadable image or video, or one too large for the memory, is named"
        " and skipped; the exit code is 2 at the end if any was (--strict: stop at once).",
    )
    p.add_argument(
        "checkpoint",
        metavar="MODEL",
        help=MODEL_HELP,
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR_OR_VIDEO", help="images, folders of images, videos")
    p.add_argument("--output-dir", required=True, help="where results go")
    p.add_argument("--task", choices=["semantic", "panoptic"], help="default: panoptic if the config turns it on")
    add_inference_options(p)
    p.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="N",
        help="images per forward pass (default 1, as the original evaluates; images of different sizes are padded"
        " to the largest, which the attention then sees; with --bf16 batched products round differently, so a few"
        " pixels can change even for same-sized images)",
    )
    p.add_argument(
        "--every",
        type=int,
        default=1,
        metavar="N",
        help="videos: run the model on every Nth frame (default 1: every frame)",
    )
    p.add_argument("--no-audio", action="store_true", help="videos: leave the sound out of the overlay video")
    p.add_argument(
        "--recursive",
        action="store_true",
        help="folders: also read their subfolders (hidden ones and OUTPUT_DIR left out); DIR/city/x.png gives"
        " OUTPUT_DIR/city/x_overlay.png",
    )
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.set_defaults(func=run)


def _collect(inputs: list[str], *, recursive: bool = False, output_dir: str = "") -> tuple[dict, set]:
    """({input file: the name of its outputs without suffix}, the videos among them): a file's name is its stem;
    for a folder's files, their path in it (``city/x`` with ``recursive``, which leaves hidden files and folders and
    ``output_dir`` out)."""
    import sys
    from pathlib import Path

    from maskformer.errors import DataError
    from maskformer.fileio import broken_link, files_in, special_file

    wanted = IMAGE_SUFFIXES | VIDEO_SUFFIXES | {GIF}
    skip = Path(output_dir).resolve() if output_dir.strip() else None
    files: dict[Path, str] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            if skip is not None and path.resolve() == skip:
                raise DataError(f"--output-dir {output_dir} is an input folder too: its results would overwrite its"
                                " images or be read as images next time: choose another folder")  # fmt: skip
            if recursive and skip is not None and path.resolve() in skip.parents and skip.is_dir():
                own = [p for p in files_in(skip, wanted, recursive=True) if not p.name.endswith(_OUTPUT_ENDINGS)]
                if own:  # (the output folder is left out of the inputs: its own images would be left out unsaid)
                    raise DataError(f"--output-dir {output_dir} holds images that are not results ({own[0]}) inside"
                                    f" {path}, which --recursive reads: choose another folder")  # fmt: skip
            everything = files_in(path, wanted, recursive=True, leave_out=skip)  # (one walk, also for the notes)
            found = everything if recursive else [p for p in everything if p.parent == path]
            below = len(everything) - len(found)
            if not found:
                more = f"; its subfolders hold {below}: add --recursive to read them" if below else ""
                raise DataError(f"{path}: no images or videos found (looked for {', '.join(sorted(wanted))}){more}")
            for p in found:
                files.setdefault(p, p.relative_to(path).with_suffix("").as_posix())
            if below > 0:  # (left out without a word before)
                print(f"maskformer predict: note: {path}: its subfolders hold {below} more file(s) to read, left out: "
                      "add --recursive to read them", file=sys.stderr)  # fmt: skip
        elif path.is_file():
            files.setdefault(path, path.stem)
        elif special_file(path) or broken_link(path):  # (named and skipped when read, as in a folder)
            files.setdefault(path, path.stem)
        else:
            raise DataError(f"{path}: no such file or folder")
    # a file named twice (also inside a folder given, or by a symbolic link beside it) is predicted once, under the
    # name of the file itself rather than of a link to it (the first link's when only links name it)
    unique: dict[Path, tuple[Path, str]] = {}
    names: dict[Path, list[str]] = {}
    for path, name in files.items():
        try:
            real = path.resolve()
        except (RuntimeError, OSError):  # a symbolic link loop (named and skipped when read)
            real = path.absolute()
        if real not in unique or (unique[real][0].is_symlink() and not path.is_symlink()):
            unique[real] = (path, name)
        names.setdefault(real, []).append(name)
    for real, given in names.items():
        others = sorted(set(given) - {unique[real][1]})
        if others:
            print(f"maskformer predict: note: {', '.join(others)} and {unique[real][0]} are the same file: "
                  f"predicted once, as {unique[real][1]!r}", file=sys.stderr)  # fmt: skip
    videos = {path for path, _ in unique.values() if _is_video(path)}  # (a GIF is opened to tell)
    for path, _ in unique.values():  # a multi-page TIFF or an animated WebP: read as its first picture, said so
        if path.suffix.lower() in {".tif", ".tiff", ".webp"} and (pages := _frames(path)) > 1:
            print(f"maskformer predict: note: {path} holds {pages} pictures: the first is predicted",
                  file=sys.stderr)  # fmt: skip
    seen: dict[tuple[bool, str], Path] = {}  # two inputs must not write the same files
    clashes = []
    for path, name in unique.values():
        if special_file(path):  # (it writes nothing: it is named and skipped when read)
            continue
        key = (path in videos, name)
        if key in seen:
            clashes.append(f"{seen[key]} and {path}: same name {name!r}")
        seen.setdefault(key, path)
    if clashes:  # (all of them at once, not one per run)
        more = f" (and {len(clashes) - 1} more such pair(s))" if len(clashes) > 1 else ""
        raise DataError(f"{clashes[0]}: their outputs would overwrite{more}")
    if skip is not None:  # an input named like another one's output (photo.jpg, photo_labels.png in --output-dir)
        for path, name in unique.values():
            endings = _OUTPUT_ENDINGS[:1] if path in videos else _OUTPUT_ENDINGS[1:]
            for output in (skip / f"{name}{ending}" for ending in endings):
                if output.resolve() in unique:
                    raise DataError(f"{unique[output.resolve()][0]}: the results of {path} would overwrite it: choose"
                                    " another --output-dir")  # fmt: skip
    return dict(unique.values()), videos


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = Path(args.output_dir).absolute() if args.output_dir.strip() else None
    new = [] if out is None else [p for p in (out, *out.parents) if not p.exists()]  # folders this run may make
    try:
        return _run(args)
    finally:  # a run that wrote nothing leaves no empty folders behind (the writers make them for their first file)
        for folder in new:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _run(args: argparse.Namespace) -> int:
    import contextlib
    import errno
    import json
    import os
    import sys
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from maskformer.engine.checkpoint import load_model
    from maskformer.errors import ConfigError, DataError, interrupts_held, out_of_memory, raise_if_terminated
    from maskformer.fileio import atomic_write_text, folder_lock, not_a_file
    from maskformer.inference.predictor import PANOPTIC_TTA, Predictor
    from maskformer.inference.preprocess import load_image
    from maskformer.inference.render import dataset_ids, label_file_values, render
    from maskformer.inference.visualize import save_png
    from maskformer.zoo import resolve_model

    if args.every < 1 or args.batch_size < 1:
        raise DataError(f"--every and --batch-size must be positive, got {args.every} and {args.batch_size}")
    files, video_files = _collect(args.inputs, recursive=args.recursive, output_dir=args.output_dir)
    check_output_dir(args.output_dir)
    options = predictor_options(args)
    predictor = Predictor(load_model(resolve_model(args.checkpoint), args.device), device=args.device, **options)
    task = args.task or predictor.task_default
    out = Path(args.output_dir)
    videos = [f for f in files if f in video_files]
    images = [f for f in files if f not in video_files]
    if task == "panoptic" and predictor.tta:
        raise ConfigError(PANOPTIC_TTA)
    predictor.check_task(task)  # before any progress bar or output
    table = out / "predictions.json"
    if task == "panoptic" and images and table.exists() and not table.is_file():  # (not after writing the PNGs)
        raise DataError(f"{table}: {not_a_file(table)}: the panoptic results write their segments' table there:"
                        " move it or choose another --output-dir")  # fmt: skip
    if task == "panoptic" and images and table.is_file() and (why := foreign_table(table)):  # (someone else's file)
        raise DataError(f"{table}: {why}, so not the segments' table of an earlier predict; the panoptic results write"
                        " theirs there: move it or choose another --output-dir")  # fmt: skip
    names, colors = predictor.class_names, np.asarray(predictor.colors, dtype=np.uint8)
    thing = predictor.thing_ids
    ids = dataset_ids(predictor)  # predictions.json speaks the dataset's own category ids, as its ground truth does
    label_values = label_file_values(predictor)  # a folder dataset's own ids in _labels.png, as its label files
    annotations, failed, too_large, too_long = [], [], [], []  # (too large: out of memory; too long: output names)
    import importlib.util

    if videos and importlib.util.find_spec("av") is None:  # (said once, before any output; not "unreadable" files)
        more = f" (and {len(videos) - 1} more video(s))" if len(videos) > 1 else ""
        raise DataError(f"{videos[0]}{more}: videos need PyAV: pip install 'maskformer[video]'")
    for video in videos:
        from maskformer.inference.video import predict_video

        try:
            predict_video(predictor, video, out / f"{files[video]}_overlay.mp4", task=task, every=args.every,
                          with_audio=not args.no_audio)  # fmt: skip
        except DataError as e:
            if args.strict or len(files) == 1:
                raise
            print(f"maskformer predict: skipped {e}", file=sys.stderr)
            failed.append(str(video))

    stale: set[str] = set()  # panoptic PNGs of an earlier run whose images this (semantic) run predicts again
    fresh: set[str] = set()  # images whose panoptic PNG this run wrote where there was none

    def write(path, image, result) -> None:
        stem = files[path]
        shown = render(image, result, task, names, colors, title=path.name, label_values=label_values, thing_ids=thing)
        # (a Ctrl-C meanwhile waits: an image's files are all written, or none; another predict into this folder
        # with the other task waits too: it would delete this image's other file between the check and the write)
        with interrupts_held(), folder_lock(out):
            _write(stem, shown)

    def _write(stem, shown) -> None:
        if task != "semantic" and not os.path.lexists(out / f"{stem}_panoptic.png"):
            fresh.add(stem)  # (its outputs are this run's alone: removed again if the table cannot be written)
        save_png(shown.overlay, out / f"{stem}_overlay.png")
        other = out / f"{stem}_{'panoptic' if task == 'semantic' else 'labels'}.png"  # (the other task's, if any)
        stale_file = False
        with contextlib.suppress(OSError):  # (a name too long to exist: NAME_panoptic.png is 2 bytes longer)
            stale_file = other.is_file()
        if stale_file:  # the folder keeps one task's outputs per image, which its overlay shows
            other.unlink()
            stale.add(other.relative_to(out).as_posix())  # (as predictions.json names it: sub/x_panoptic.png)
        if task == "semantic":
            save_png(shown.label, out / f"{stem}_labels.png")
            return
        save_png(shown.label, out / f"{stem}_panoptic.png")
        segments_info = [
            {"id": s["id"], "category_id": ids[s["category_id"]], "isthing": s["isthing"], "area": s["area"],
             "category_name": s["label"]}
            for s in shown.segments
        ]  # fmt: skip
        annotations.append({"image_id": stem, "file_name": f"{stem}_panoptic.png", "segments_info": segments_info})

    batch: list = []  # (path, image) pairs run through the model together (padded to the largest)
    try:
        for i, path in enumerate(tqdm(images, desc="predict", disable=len(images) < 2 or not sys.stderr.isatty())):
            raise_if_terminated()  # (a SIGTERM whose KeyboardInterrupt Python swallowed somewhere inside a library)
            try:
                batch.append((path, load_image(path)))
            except DataError as e:
                if args.strict or len(files) == 1:
                    raise
                tqdm.write(f"maskformer predict: skipped {e}", file=sys.stderr)  # (on its own line, not in the bar)
                failed.append(str(path))
            if batch and (len(batch) == args.batch_size or i == len(images) - 1):
                try:
                    results = predictor([image for _, image in batch], task=task)
                    for (p, image), result in zip(batch, results):
                        try:
                            write(p, image, result)
                        except OSError as e:  # (an input whose output names the file system cannot hold: the
                            if e.errno != errno.ENAMETOOLONG or args.strict or len(files) == 1:  # others go on)
                                raise
                            for ending in _OUTPUT_ENDINGS[1:]:  # (a shorter ending's file may have been written)
                                with contextlib.suppress(OSError):
                                    (out / f"{files[p]}{ending}").unlink(missing_ok=True)
                            tqdm.write(
                                f"maskformer predict: skipped {p}: its output name is too long for the file"
                                f" system ({Path(e.filename or '').name[:40]}...): rename it",
                                file=sys.stderr,
                            )
                            too_long.append(str(p))
                except (RuntimeError, MemoryError) as e:  # (a picture too large for this machine: the others go on)
                    if (why := out_of_memory(e)) is None:
                        raise
                    sizes = ", ".join(f"{p} ({image.shape[1]}x{image.shape[0]})" for p, image in batch)
                    them = "it" if len(batch) == 1 else "them (or lower --batch-size)"
                    error = DataError(f"{sizes}: {why}: downscale {them}, or free memory")
                    if args.strict or len(files) == 1:
                        raise error from None
                    tqdm.write(f"maskformer predict: skipped {error}", file=sys.stderr)
                    too_large.extend(str(p) for p, _ in batch)
                batch = []
    finally:  # (also when stopped by --strict or an interrupt: the panoptic PNGs written need their segments' table)
        # (read, merge and write under a lock: another predict into this folder may do the same at the same time)
        if annotations:  # (videos alone write none)
            categories = [{"id": ids[i], "name": n, "isthing": int(i in thing)} for i, n in enumerate(names)]
            try:
                with interrupts_held(), folder_lock(out):
                    table, note = panoptic_table(out, annotations, categories)  # (with an earlier run's entries)
                    atomic_write_text(out / "predictions.json", json.dumps(table))
            except BaseException:  # (no table: this run's new panoptic PNGs would have no entry, their overlays go
                for a in [a for a in annotations if a["image_id"] in fresh]:  # too; an earlier image's stay listed)
                    for ending in ("_panoptic.png", "_overlay.png"):
                        (out / f"{a['image_id']}{ending}").unlink(missing_ok=True)
                raise
            if note:
                print(f"maskformer predict: note: {note}", file=sys.stderr)
        elif stale or (out / "predictions.json").is_file():  # (entries of PNGs gone, also from a killed run)
            with interrupts_held(), folder_lock(out):
                drop_panoptic_entries(out, stale)
    done = len(files) - len(failed) - len(too_large) - len(too_long)
    print(f"wrote results for {done} file(s) to {out}")
    if failed:
        print(f"maskformer predict: error: {len(failed)} of {len(files)} file(s) unreadable: {', '.join(failed)}",
              file=sys.stderr)  # fmt: skip
    if too_large:  # (after the line above: one summary line per reason)
        print(f"maskformer predict: error: {len(too_large)} of {len(files)} file(s) ran out of memory: "
              f"{', '.join(too_large)}", file=sys.stderr)  # fmt: skip
    if too_long:
        print(f"maskformer predict: error: {len(too_long)} of {len(files)} file(s) have names too long for their "
              f"outputs: {', '.join(too_long)}", file=sys.stderr)  # fmt: skip
    if failed or too_large or too_long:
        return 2
    return 0
