"""``maskformer demo``: the embedded default. With no data and no weights, train a tiny MaskFormer on the synthetic
set for a bounded time, evaluate it (mIoU and PQ), and draw what it sees."""

from __future__ import annotations

import argparse
import contextlib
import glob
import math
import sys
from collections.abc import Iterator
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train, evaluate and draw a tiny model on embedded synthetic data (no downloads)",
        description="Trains the packaged demo config (a ~1.4M-parameter MaskFormer) from scratch on generated scenes"
        " for at most --minutes, evaluates on the synthetic validation split, and writes OUTPUT_DIR/metrics.json,"
        " OUTPUT_DIR/pictures/*.png (image | ground truth | prediction) and the checkpoint.",
    )
    p.add_argument("--minutes", type=float, default=9.0, help="training time budget in minutes (default: 9)")
    p.add_argument("--output-dir", default="demo_output", help="where results go (default: demo_output)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the demo config",
    )
    p.add_argument("--pictures", type=int, default=8, help="validation images to draw (default: 8)")
    p.set_defaults(func=run)


def demo_config_path():
    from importlib import resources

    return resources.files("maskformer").joinpath("resources", "demo.yaml")


def draw_pictures(cfg, model, meta, out_dir, count: int) -> list:
    """Image | ground truth | prediction (semantic), plus the panoptic result, for the first ``count`` val images."""
    import numpy as np
    from PIL import Image

    from maskformer.build import build_dataset
    from maskformer.inference.predictor import Predictor
    from maskformer.inference.visualize import overlay, palette, panoptic_picture, save_png, with_legend

    dataset = build_dataset(cfg, split="val", train=False)
    colors = palette(meta.num_classes, meta.colors)
    predictor = Predictor(model, meta=meta)  # sizes and thresholds from the model's own config
    written = []
    for i in range(min(count, len(dataset))):
        rec = dataset[i]
        image = rec["image"].permute(1, 2, 0).numpy()
        gt = rec["sem_seg"].numpy()
        pred = predictor(image, task="semantic").numpy()
        gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
        row = np.concatenate(
            [image, gap, overlay(image, gt, colors, ignore=meta.ignore_label), gap, overlay(image, pred, colors)],
            axis=1,
        )
        row = row.repeat(2, axis=0).repeat(2, axis=1)  # 128-pixel scenes are small to look at: draw them 2x
        entries = [(meta.classes[c], colors[c]) for c in range(meta.num_classes)]
        canvas = with_legend(row, entries, title="image | truth | prediction")
        if cfg.inference.panoptic_on:
            pan, segments = predictor(image, task="panoptic")
            big = image.repeat(2, axis=0).repeat(2, axis=1)
            pan_big = pan.numpy().repeat(2, axis=0).repeat(2, axis=1)
            pan_img = panoptic_picture(big, pan_big, segments, meta.classes, colors, title="panoptic")
            both = Image.new("RGB", (max(canvas.width, pan_img.width), canvas.height + pan_img.height + 4), "white")
            both.paste(canvas, (0, 0))
            both.paste(pan_img, (0, canvas.height + 4))
            canvas = both
        path = out_dir / "pictures" / f"val_{i:03d}.png"
        save_png(canvas, path)
        written.append(path)
    return written


def _is_demo_run(out: Path) -> bool:
    """Whether the run in ``out`` was trained on the demo's generated scenes (its config.yaml says so)."""
    import maskformer

    try:
        return maskformer.load_config(out / "config.yaml").data.dataset == "synthetic"
    except (maskformer.UserError, OSError):  # no, unreadable or foreign config.yaml: not a demo run
        return False


def _recover_kept_aside(out: Path) -> None:
    """An earlier demo kept aside by a demo that was killed (``kill -9``) before it could put it back or remove it:
    put back when ``out`` holds no run of its own (that demo stopped before its first checkpoint), else removed."""
    import shutil

    if not out.resolve().parent.is_dir():
        return
    for aside in sorted(out.resolve().parent.glob(f".{glob.escape(out.name)}.previous-*")):
        if aside.is_dir() and not any((out / name).exists() for name in ("checkpoint_last.pt", "model_final.pt")):
            _put_back(aside, out)
        shutil.rmtree(aside, ignore_errors=True)


def _put_back(aside: Path, out: Path) -> None:
    """Move the files an earlier demo kept in ``aside`` back into ``out`` (a stopped demo's own half-started files,
    e.g. config.yaml, are replaced)."""
    import shutil

    for kept in aside.iterdir():
        path = out / kept.name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.rmtree(path)
        kept.replace(path)


@contextlib.contextmanager
def _replacing_previous_demo(out: Path) -> Iterator[None]:
    """A demo starts anew: the files of an earlier demo run in ``out`` (its run, metrics and pictures) are moved
    aside (beside ``out``) while the new one trains, removed when it has finished, and put back when it stops before
    its first checkpoint (an interrupted second demo destroyed the finished first one). An existing ``out`` is held
    (as ``train`` holds its folder) before anything in it is looked at or moved: a second demo into a folder where a
    demo trains stops with one line instead of moving the running one's files away."""
    import os

    from maskformer.engine.run_folder import HELD_BY_LAUNCHER, hold_run_folder

    if not out.is_dir():  # (a new folder: `train` makes and holds it)
        with _moving_previous_demo_aside(out):
            yield
        return
    with hold_run_folder(out, create=False):
        before = os.environ.get(HELD_BY_LAUNCHER)
        os.environ[HELD_BY_LAUNCHER] = str(out.resolve())  # (held here: `train` must not try again)
        try:
            with _moving_previous_demo_aside(out):
                yield
        finally:
            if before is None:
                os.environ.pop(HELD_BY_LAUNCHER, None)
            else:
                os.environ[HELD_BY_LAUNCHER] = before


@contextlib.contextmanager
def _moving_previous_demo_aside(out: Path) -> Iterator[None]:
    import shutil
    import tempfile

    from maskformer.engine.run_folder import RUN_FILES
    from maskformer.errors import ConfigError

    _recover_kept_aside(out)
    old = [out / name for name in (*RUN_FILES, "config.yaml", "metrics.json", "tb") if (out / name).exists()]
    if old and not _is_demo_run(out):  # (a run, or e.g. eval's metrics.json, a config of the user's: not replaced)
        if any(path.name in RUN_FILES for path in old):
            raise ConfigError(f"{out} holds a training run that is not a demo run: pass another --output-dir")
        raise ConfigError(f"{old[0]}: not a demo run's file, and the demo would replace it: pass another --output-dir")
    if old and (out / "pictures").is_dir():  # (its pictures too: a shorter --pictures left some of the earlier ones;
        old += sorted((out / "pictures").glob("val_[0-9][0-9][0-9].png"))  # only the demo's own files)
    if not old:
        yield
        return
    print(f"[maskformer] replacing the earlier demo run in {out}", file=sys.stderr)
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.previous-", dir=out.resolve().parent))
    moved = [(path, aside / str(path.relative_to(out)).replace("/", "__")) for path in old]
    done: list[tuple[Path, Path]] = []
    try:  # (a file that cannot be moved aside, e.g. in a folder not writable: the run is left as it was)
        for path, kept in moved:
            path.rename(kept)
            done.append((path, kept))
    except BaseException:
        for path, kept in reversed(done):
            kept.rename(path)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    try:
        yield
    except BaseException:
        if not any(path.exists() for path, _ in moved):  # the new run left nothing: the earlier one is put back
            _put_back(aside, out)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
        pictures = out / "pictures"
        if pictures.is_dir() and not any(pictures.iterdir()):
            pictures.rmdir()


def run(args: argparse.Namespace) -> int:
    import shlex
    import time

    import maskformer
    from maskformer.build import build_meta
    from maskformer.engine.checkpoint import load_model
    from maskformer.engine.train import train
    from maskformer.fileio import atomic_write_text, json_text

    if not math.isfinite(args.minutes) or args.minutes <= 0:
        raise maskformer.ConfigError(f"--minutes must be a positive number, got {args.minutes}")
    if args.pictures < 0:
        raise maskformer.ConfigError(f"--pictures must be 0 or more, got {args.pictures}")
    cfg = maskformer.load_config(demo_config_path(), [*args.overrides, f"train.max_minutes={args.minutes}"])
    out = Path(args.output_dir)
    t0 = time.monotonic()
    try:
        with _replacing_previous_demo(out):
            metrics = train(cfg, output_dir=out)
    except KeyboardInterrupt as e:  # (in its final evaluation: the model is there, as `train` says)
        if getattr(e, "training_finished", False):
            final = out / "model_final.pt"
            print(f"maskformer demo: training finished ({final}); its final evaluation was stopped: `maskformer eval "
                  f"{shlex.quote(str(final))}` runs it", file=sys.stderr)  # fmt: skip
        raise
    minutes = (time.monotonic() - t0) / 60
    model = load_model(out / "model_final.pt")
    pictures = draw_pictures(cfg, model, build_meta(cfg), out, args.pictures)
    metrics["train_and_eval_minutes"] = round(minutes, 2)
    atomic_write_text(out / "metrics.json", json_text(metrics, indent=1))
    print(
        f"\nmaskformer demo: {minutes:.1f} min; synthetic val mIoU {metrics.get('mIoU', float('nan')):.1f} %, "
        f"PQ {metrics.get('PQ', float('nan')):.1f}; PQ^St {metrics.get('PQ_St', {}).get('PQ', float('nan')):.1f}"
    )
    print(
        f"  metrics: {out / 'metrics.json'}\n  pictures: {pictures[0].parent if pictures else '-'}\n"
        f"  checkpoint: {out / 'model_final.pt'}\n"
        f"  try: maskformer predict {out / 'model_final.pt'} IMAGE --output-dir DIR"
    )
    return 0
