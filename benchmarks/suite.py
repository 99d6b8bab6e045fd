"""All of the performance figures in one run: this project vs transformers' MaskFormer (and onnxruntime), R50 and
Swin-T, semantic and panoptic, batch 1 and 4, forward and training step. Ratios = ours / theirs (< 1: we are faster).

Each model runs in a fresh process (``--worker``) that builds both libraries' models with the same converted random
weights (``compare_transformers._models``, spread to trained-like values) and times the variants interleaved, one
call each per round, median of ``--reps`` rounds after a warm-up (``engine.timing.interleaved_medians``). The
baselines (transformers, onnxruntime) answer from a process of their own with glibc's default malloc, as their users
run them (``Baselines``; the optimised ``Predictor`` sets a process-wide allocator option, ``maskformer/allocator.py``,
that would speed them up too; ``--same-process`` shows that case):

- ``semantic b1``: uint8 512x512 image -> label map. transformers: image processor (rescale + normalise) + forward +
  ``post_process_semantic_segmentation``; ours: ``Predictor(model)`` (what ``maskformer predict`` and the Python API
  run by default: the optimised copy, exact labels), ``Predictor(model, bf16=True)`` and ``optimize=False``.
- ``semantic b4``: four images as one batch (transformers) vs ours one at a time and as one batch (``Predictor`` on
  a list, ``maskformer predict --batch-size 4``); time per image.
- ``panoptic b1`` (the COCO-panoptic config of the same backbone, 133 classes; for R50 with the FPN pixel decoder,
  as transformers has no "+6 Enc" one): transformers'
  ``post_process_panoptic_segmentation`` with the original's thresholds (0.8 / 0.8) and the stuff classes fused vs
  ``Predictor(model)(image, task="panoptic")`` fp32 and bf16; the segment count of each side is printed.
- ``forward``: the network alone on a normalised 512x512 input: onnxruntime (CPU provider, same thread count) on the
  static graph of ``maskformer export onnx`` vs our optimised copy (fp32, bf16) and transformers' forward.
- ``train`` (``--train``): ``compare_transformers.py --parts train`` for R50 (fresh process per side).

Run: .venv/bin/python benchmarks/suite.py [--models r50,swin-t] [--reps 5] [--train] [--pause 0.1] [--output F]
     [--same-process]        (--models also takes swin-s and swin-b)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "r50": (
        "configs/ade20k-150/maskformer_R50_bs16_160k.yaml",
        # transformers has no "+6 Enc" pixel decoder: the same R50 with the FPN one (the semantic configs' decoder)
        "configs/coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml model.pixel_decoder=fpn "
        "model.transformer_in_feature=res5",
    ),
    "swin-t": (
        "configs/ade20k-150/swin/maskformer_swin_tiny_bs16_160k.yaml",
        "configs/coco-panoptic/swin/maskformer_panoptic_swin_tiny_bs64_554k.yaml",
    ),
    # (not in the default run: --models swin-s,swin-b)
    "swin-s": (
        "configs/ade20k-150/swin/maskformer_swin_small_bs16_160k.yaml",
        "configs/coco-panoptic/swin/maskformer_panoptic_swin_small_bs64_554k.yaml",
    ),
    "swin-b": (
        "configs/ade20k-150/swin/maskformer_swin_base_IN21k_384_bs16_160k_res640.yaml",
        "configs/coco-panoptic/swin/maskformer_panoptic_swin_base_IN21k_384_bs64_554k.yaml",
    ),
}
SIZE = 512
# seconds of sleep before each timed call (--pause): onnxruntime's worker threads spin for a while after its call
# and would otherwise take the cores from the variant timed next (compare a run with --pause 0)
PAUSE = 0.1


def _image(seed: int) -> np.ndarray:
    """A picture of smooth regions (pixel noise gives the network nothing to segment), uint8 [SIZE, SIZE, 3]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=g) * 255
    image = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic").clamp(0, 255)
    return image[0].permute(1, 2, 0).to(torch.uint8).numpy()


def _build(config: str, transformers: bool = True):
    """(cfg, our model, transformers' model, transformers' image processor) with the same spread random weights;
    without ``transformers`` the last two are None."""
    import maskformer
    from maskformer.convert.hf_config import hf_config_from_ours
    from maskformer.convert.huggingface import ours_state_to_hf

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compare_transformers import _spread_weights

    path, _, overrides = config.partition(" ")
    cfg = maskformer.load_config(ROOT / path, overrides.split())
    torch.manual_seed(0)
    ours = maskformer.build_model(cfg).eval()
    _spread_weights(ours, seed=0)
    if not transformers:
        return cfg, ours, None, None
    from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation, MaskFormerImageProcessor

    hf = MaskFormerForInstanceSegmentation(
        MaskFormerConfig(**hf_config_from_ours(cfg, [f"class{i}" for i in range(cfg.model.num_classes)]))
    )
    hf.load_state_dict(ours_state_to_hf(ours.state_dict(), hf.state_dict(), source_name="ours"), strict=False)
    processor = MaskFormerImageProcessor(
        do_resize=False,
        do_pad=False,
        image_mean=[v / 255 for v in cfg.model.pixel_mean],
        image_std=[v / 255 for v in cfg.model.pixel_std],
    )
    return cfg, ours, hf.eval(), processor


def _forward_input() -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _baseline_calls(config: str, with_onnx: bool) -> dict:
    """The baselines' zero-argument calls on ``config``: transformers (semantic b1 / b4, panoptic, forward) and, with
    ``with_onnx``, onnxruntime on our exported static graph."""
    from maskformer import Predictor
    from maskformer.inference.export import export_onnx

    cfg, ours, hf, processor = _build(config)
    thing_ids = Predictor(ours, optimize=False).thing_ids  # optimize=False: the allocator stays glibc's
    stuff = set(range(cfg.model.num_classes)) - set(thing_ids)
    images, x = [_image(seed) for seed in range(4)], _forward_input()

    def semantic(batch: list[np.ndarray]) -> list[torch.Tensor]:
        inputs = processor(images=batch, return_tensors="pt")
        return processor.post_process_semantic_segmentation(hf(**inputs), target_sizes=[(SIZE, SIZE)] * len(batch))

    def panoptic() -> int:
        inputs = processor(images=images[:1], return_tensors="pt")
        out = processor.post_process_panoptic_segmentation(
            hf(**inputs),
            threshold=cfg.inference.object_mask_threshold,
            overlap_mask_area_threshold=cfg.inference.overlap_threshold,
            label_ids_to_fuse=stuff,
            target_sizes=[(SIZE, SIZE)],
        )[0]
        return len({s["id"] for s in out["segments_info"]})  # (fused classes repeat an id there)

    calls = {
        "semantic_b1": lambda: semantic(images[:1])[0],
        "semantic_b4": lambda: semantic(images),
        "panoptic_b1": panoptic,
        "forward": lambda: hf(pixel_values=x)["masks_queries_logits"],
    }
    if with_onnx:
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(ours, path, height=SIZE, width=SIZE, dynamic=False, verify=False)
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        calls["onnxruntime"] = lambda: torch.from_numpy(session.run(None, {"images": x.numpy()})[1])
    return calls


def _serve_baselines(conn, config: str, size: int, threads: int, with_onnx: bool) -> None:
    """Child process of ``Baselines``: build the calls, then answer ``(name, keep)`` until ``None``."""
    global SIZE
    SIZE = size
    torch.set_num_threads(threads)
    calls = _baseline_calls(config, with_onnx)
    conn.send("ready")
    with torch.inference_mode():
        while (message := conn.recv()) is not None:
            name, keep = message
            out = calls[name]()
            conn.send(out if keep else None)


class Baselines:
    """transformers and onnxruntime for one config, called by name. By default they run in a process of their own
    (``multiprocessing`` spawn), as their users run them: this project's ``Predictor`` sets a process-wide glibc
    malloc option (``maskformer/allocator.py``) that would otherwise speed them up too. Calls still alternate with
    ours (never concurrent); a call costs one pipe message more (well under a millisecond). ``same_process=True``
    (``--same-process``) runs them here instead, with whatever allocator setting this process has."""

    def __init__(self, config: str, with_onnx: bool = False, same_process: bool = False) -> None:
        self.local = _baseline_calls(config, with_onnx) if same_process else None
        if self.local is None:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            self.conn, child = ctx.Pipe()
            args = (child, config, SIZE, torch.get_num_threads(), with_onnx)
            self.process = ctx.Process(target=_serve_baselines, args=args, daemon=True)
            self.process.start()
            if self.conn.recv() != "ready":
                raise RuntimeError("the baseline process did not start")

    def __call__(self, name: str, keep: bool = False):
        if self.local is not None:
            out = self.local[name]()
            return out if keep else None
        self.conn.send((name, keep))
        return self.conn.recv()

    def close(self) -> None:
        if self.local is None:
            self.conn.send(None)
            self.process.join(timeout=60)


def _bf16() -> bool:
    """Whether the bf16 variants run: only on a CPU with bfloat16 instructions (elsewhere they are refused)."""
    from maskformer.inference.accelerate.onednn import native_bf16

    return native_bf16()


def _semantic(config: str, reps: int, theirs: Baselines) -> dict:
    from maskformer import Predictor
    from maskformer.engine.timing import interleaved_medians

    _, ours, _, _ = _build(config, transformers=False)
    kw = {"min_size": SIZE, "max_size": 4 * SIZE}
    default, reference = Predictor(ours, **kw), Predictor(ours, optimize=False, **kw)
    predictors = {"ours_default": default, **({"ours_bf16": Predictor(ours, bf16=True, **kw)} if _bf16() else {})}
    images = [_image(seed) for seed in range(4)]

    with torch.inference_mode():
        b1 = interleaved_medians(
            {
                "transformers": lambda: theirs("semantic_b1"),
                **{name: (lambda p=p: p(images[0])) for name, p in predictors.items()},
                "ours_reference": lambda: reference(images[0]),
            },
            reps,
            pause=PAUSE,
        )
        b4 = interleaved_medians(
            {
                "transformers": lambda: theirs("semantic_b4"),
                "ours_one_at_a_time": lambda: [default(im) for im in images],
                "ours_batch": lambda: default(images),
            },
            max(1, reps // 2),
            pause=PAUSE,
        )
        ref = reference(images[0])
        agree = {k: int((p(images[0]) != ref).sum()) for k, p in predictors.items()}
        agree["transformers"] = int((theirs("semantic_b1", keep=True) != ref).sum())
    return {"semantic_b1": b1, "semantic_b4": {k: v / 4 for k, v in b4.items()}, "semantic_differing_pixels": agree}


def _panoptic(config: str, reps: int, theirs: Baselines) -> dict:
    from maskformer import Predictor
    from maskformer.engine.timing import interleaved_medians

    _, ours, _, _ = _build(config, transformers=False)
    kw = {"min_size": SIZE, "max_size": 4 * SIZE}
    default = Predictor(ours, **kw)
    predictors = {"ours_default": default, **({"ours_bf16": Predictor(ours, bf16=True, **kw)} if _bf16() else {})}
    image = _image(0)

    with torch.inference_mode():
        med = interleaved_medians(
            {
                "transformers": lambda: theirs("panoptic_b1"),
                **{name: (lambda p=p: p(image, task="panoptic")) for name, p in predictors.items()},
            },
            reps,
            pause=PAUSE,
        )
        segments = {
            "transformers": theirs("panoptic_b1", keep=True),
            "ours_default": len(default(image, task="panoptic")[1]),
        }
    return {"panoptic_b1": med, "panoptic_segments": segments}


def _forward(config: str, reps: int, theirs: Baselines) -> dict:
    from maskformer.engine.timing import interleaved_medians
    from maskformer.inference.accelerate.fast_model import prepare_for_inference
    from maskformer.inference.predictor import Predictor

    _, ours, _, _ = _build(config, transformers=False)
    Predictor(ours)  # the optimised Predictor's process settings (the allocator), as in the parts above
    fast32 = prepare_for_inference(ours)
    fast16 = {"ours_bf16": prepare_for_inference(ours, bf16=True)} if _bf16() else {}
    x = _forward_input()
    with torch.inference_mode():
        med = interleaved_medians(
            {
                "onnxruntime": lambda: theirs("onnxruntime"),
                "ours_fp32": lambda: fast32(x),
                **{name: (lambda m=m: m(x)) for name, m in fast16.items()},
                "transformers": lambda: theirs("forward"),
            },
            reps,
            pause=PAUSE,
        )
        diff = float((theirs("onnxruntime", keep=True) - fast32(x)["pred_masks"]).abs().max())
    return {"forward": med, "forward_max_abs_diff_onnx_vs_ours": diff}


def worker(model: str, reps: int, size: int, pause: float, same_process: bool = False) -> dict:
    global SIZE, PAUSE
    SIZE, PAUSE = size, pause
    semantic, panoptic = MODELS[model]
    results = {}
    theirs = Baselines(semantic, with_onnx=True, same_process=same_process)
    results.update(_semantic(semantic, reps, theirs))
    results.update(_forward(semantic, reps, theirs))
    theirs.close()
    theirs = Baselines(panoptic, same_process=same_process)
    results.update(_panoptic(panoptic, reps, theirs))
    theirs.close()
    return results


def _rows(model: str, r: dict) -> list[str]:
    rows = []
    bases = {"semantic_b1": "transformers", "semantic_b4": "transformers", "panoptic_b1": "transformers"}
    for part, base in {**bases, "forward": "onnxruntime"}.items():
        med = r[part]
        for variant, seconds in med.items():
            if variant != base:
                rows.append(f"| {model} | {part} | {variant} | {seconds:.3f} | {med[base]:.3f} ({base}) | "
                            f"{seconds / med[base]:.2f} |")  # fmt: skip
        if part == "forward":
            ours, theirs = med["ours_fp32"], med["transformers"]
            rows.append(
                f"| {model} | forward | ours_fp32 | {ours:.3f} | {theirs:.3f} (transformers) | {ours / theirs:.2f} |"
            )
    return rows


def report(results: dict, args: argparse.Namespace, load: tuple[float, float], train: str) -> str:
    import transformers

    from maskformer.engine.timing import machine, machine_line

    lines = [
        f"## Suite run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"- Command: `.venv/bin/python benchmarks/suite.py {' '.join(sys.argv[1:])}`",
        f"- Machine: {machine_line(machine(), load=False)}; load average {load[0]:.2f} before, {load[1]:.2f} after; "
        f"transformers {transformers.__version__}; {SIZE}x{SIZE}, random weights, median of {args.reps} interleaved "
        f"rounds with a {args.pause:g} s pause before each call "
        "(batch 4: half as many; seconds per image)",
        "",
        *([] if _bf16() else ["- bf16 rows left out: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX)", ""]),
        "| model | part | variant | median s | baseline s | ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    for model, r in results.items():
        lines += _rows(model, r)
    lines.append("")
    for model, r in results.items():
        lines.append(f"- {model}: differing pixels vs the unmodified model (of {SIZE * SIZE}): "
                     f"{r['semantic_differing_pixels']}; panoptic segments {r['panoptic_segments']}; onnxruntime vs "
                     f"our fp32 mask logits max |diff| {r['forward_max_abs_diff_onnx_vs_ours']:.1e}")  # fmt: skip
    if train:
        lines += ["", "Training step (R50, `compare_transformers.py --parts train`):", "", train]
    return "\n".join(lines) + "\n"


def main() -> int:
    global SIZE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="r50,swin-t", help=f"comma-separated subset of {sorted(MODELS)}")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--size", type=int, default=SIZE, help="image side, a multiple of 32 (default 512)")
    parser.add_argument("--train", action="store_true", help="also the R50 training step (about 5 more minutes)")
    parser.add_argument("--pause", type=float, default=PAUSE, help="seconds of sleep before each timed call")
    parser.add_argument("--output", default="", help="append the markdown report to this file")
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="run transformers and onnxruntime in the timing process (with this project's allocator setting) "
        "instead of a process of their own",
    )
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.reps, args.size, args.pause, args.same_process)))
        return 0
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {sorted(MODELS)}")
    if args.size < 32 or args.size % 32:
        parser.error(f"--size must be a positive multiple of 32, got {args.size}")
    if args.pause < 0:
        parser.error(f"--pause must be >= 0 seconds, got {args.pause}")
    if args.reps < 1:
        parser.error(f"--reps must be at least 1, got {args.reps}")
    if args.output and Path(args.output).is_dir():
        parser.error(f"--output {args.output}: is a folder; give a file name (the report is appended to it)")
    if args.output and not Path(args.output).resolve().parent.is_dir():  # (said now, not after the whole run)
        parser.error(f"--output {args.output}: its folder does not exist")
    for package, extra in (("transformers", "dev"), ("onnxruntime", "onnx")):
        try:
            __import__(package)
        except ModuleNotFoundError:
            parser.error(f"needs {package}: pip install -e '.[{extra}]'")
    SIZE = args.size
    load_before = os.getloadavg()[0]
    results = {}
    for model in models:  # a fresh process per model: no state (threads, caches, memory) carries over
        cmd = [sys.executable, __file__, "--worker", model, "--reps", str(args.reps), "--size", str(args.size)]
        cmd += ["--pause", str(args.pause)] + (["--same-process"] if args.same_process else [])
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            sys.exit(f"suite: the {model} worker failed:\n{out.stderr[-3000:]}")
        results[model] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{model}: {json.dumps(results[model])}", file=sys.stderr, flush=True)
    train = ""
    if args.train:
        cmd = [sys.executable, str(ROOT / "benchmarks/compare_transformers.py"), "--parts", "train"]
        train = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
        train = train[train.find("Training step") :].split("\n", 2)[-1].strip() if "Training step" in train else train
    text = report(results, args, (load_before, os.getloadavg()[0]), train)
    print(text)
    if args.output:
        with open(args.output, "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
