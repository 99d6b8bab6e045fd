"""This project vs transformers' MaskFormer on the same CPU, same weights (converted), same run.

R50 MaskFormer (ADE20K-150 config: 150 classes, 100 queries, FrozenBN), random weights (spread out for inference,
see _spread_weights), fp32 unless stated, 512x512, batch 1 for inference. Sides alternate inside every repetition
(load from other processes hits both alike); the figures are ratios of medians (ours / transformers, < 1 = we are
faster) after one warm-up call each.

Parts:
- forward: transformers ``model(pixel_values)`` vs ours: reference ``model(x, with_aux=False)``, optimized
  ``prepare_for_inference`` fp32, bf16 autocast, and both under ``torch.compile`` (inductor, freezing);
- post: transformers ``post_process_semantic_segmentation(target_sizes=[(H, W)])`` + nothing else (it returns labels) vs
  our exact unfused ``semantic_from_outputs(...).argmax`` and the fused ``semantic_labels_from_outputs``;
- predict: uint8 image -> label map. transformers: image processor (resize disabled, rescale + normalize) + forward +
  post-processing; ours: ``Predictor`` with the optimized fp32 / bf16 model, eager or compiled; fp32 with exact
  (certified) labels or ``fast`` (approximate) labels, bf16 with its default block corner labels or exact labels.
  Label agreement with our exact path, with the count of differing pixels.
- train: one training step at batch 2, 512x512, 10 masks per image (forward + loss + backward, no optimizer), deep
  supervision on both sides, each side in a fresh process (peak RSS = VmHWM, reset after model building; both sides
  build both models, then drop one). transformers needs ``use_auxiliary_loss=True`` together with
  ``output_hidden_states=True`` (HF_NOTES §8.2) and then computes 6 auxiliary losses (all 6 decoder layers again)
  on top of the final one; ours computes 1 + 5. Ours: exact loss, point_sample, and exact loss with channels-last.
  transformers' ResNet trains its BatchNorm layers (batch statistics, 154 more parameter tensors); ours keeps FrozenBN
  as the original. Sides: ours_exact (channels-last, or NCHW on AVX2-only CPUs, as ``maskformer train`` decides by
  default), ours_exact_contiguous (NCHW), ours_point_sample (``loss.point_sample=true``), and bf16 autocast
  (``train.amp=bf16``; losses in fp32) for both implementations (ours_bf16, transformers_bf16). Ours run with
  glibc's malloc set to keep freed memory (as ``maskformer train`` does, maskformer/allocator.py); transformers_reuse
  is transformers with the same setting (which transformers itself does not make). ``--train-sides
  ours_exact,transformers`` times a subset. The report gives the median and the least disturbed (min) step per
  side: on a shared machine both are worth reading.
- matcher: benchmarks/bench_matcher.py (its own alternating timing).
- onnx: `maskformer.export.export_onnx` of the R50 lean model, onnxruntime vs PyTorch max |diff|.

The inference parts run both libraries in this one process, so the allocator option of the optimised ``Predictor``
(glibc malloc keeps freed memory, ``maskformer/allocator.py``, process-wide) speeds transformers up too once a
Predictor exists; ``benchmarks/suite.py`` gives the baselines a process of their own, as their users run them.

Run: .venv/bin/python benchmarks/compare_transformers.py [--reps 10] [--train-steps 3] [--parts forward,post,...]
     [--output records.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/ade20k-150/maskformer_R50_bs16_160k.yaml"
PARTS = ("forward", "post", "predict", "train", "matcher", "onnx")


def _spread_weights(model: torch.nn.Module, seed: int) -> None:
    """Trained-like spread of values: freshly initialised models predict nearly one class everywhere, which would make
    label agreement trivially 100 %. FrozenBN statistics and affines, biases and the query embeddings move away from
    their defaults; matrices are rescaled to unit-variance outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            z = torch.randn(t.shape, generator=g)
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                t.copy_(torch.exp(0.2 * z))
            elif leaf == "running_mean" or leaf == "bias":
                t.copy_(0.1 * z)
            elif t.ndim == 1:
                t.copy_(1 + 0.1 * z)
            elif "query_embed" in name:  # large, so cross-attention is peaked and queries do not collapse
                t.copy_(8 * z)
            elif "class_embed" in name:  # amplifies the (small) differences between queries
                t.copy_(10 * z / t[0].numel() ** 0.5)
            elif "relative_position_bias_table" in name:
                t.copy_(0.02 * z)
            else:
                t.copy_(z / t[0].numel() ** 0.5)


def _models(*, aux_loss: bool = False, point_sample: bool = False, spread: bool = False):
    """(our cfg, our model, transformers model) with identical weights (seed 0; `spread`: see _spread_weights)."""
    from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation

    import maskformer
    from maskformer.convert.hf_config import hf_config_from_ours
    from maskformer.convert.huggingface import ours_state_to_hf

    overrides = ["loss.point_sample=true"] if point_sample else []
    cfg = maskformer.load_config(CONFIG, overrides)
    torch.manual_seed(0)
    ours = maskformer.build_model(cfg)
    if spread:
        _spread_weights(ours, seed=0)
    kwargs = hf_config_from_ours(cfg, [f"class{i}" for i in range(cfg.model.num_classes)])
    if aux_loss:
        kwargs["use_auxiliary_loss"] = True
    hf = MaskFormerForInstanceSegmentation(MaskFormerConfig(**kwargs))
    state = ours_state_to_hf(ours.state_dict(), hf.state_dict(), source_name="ours")
    hf.load_state_dict(state, strict=False)
    return cfg, ours, hf


def _interleaved(fns: dict, reps: int) -> dict[str, float]:
    from maskformer.engine.timing import interleaved_medians

    return interleaved_medians(fns, reps, pause=0.1)  # (see suite.PAUSE)


@torch.inference_mode()
def bench_inference(reps: int, size: int, parts: set[str]) -> dict:
    from transformers import MaskFormerImageProcessor

    from maskformer.inference.accelerate.fast_model import prepare_for_inference
    from maskformer.inference.accelerate.labels import semantic_labels_from_outputs
    from maskformer.inference.postprocess import semantic_from_outputs
    from maskformer.inference.predictor import Predictor

    cfg, ours, hf = _models(spread=True)
    ours.eval()
    hf.eval()
    bf16 = _native_bf16()  # (elsewhere bf16 is refused: torch would emulate it, slower than fp32)
    fast32, fast16 = prepare_for_inference(ours), prepare_for_inference(ours, bf16=True) if bf16 else None
    comp32 = prepare_for_inference(ours, compile=True)  # inductor with freezing; compiles in the warm-up call
    comp16 = prepare_for_inference(ours, bf16=True, compile=True) if bf16 else None
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, size, size, generator=g)
    result: dict = {}
    if "forward" in parts:
        forwards = {
            "transformers": lambda: hf(pixel_values=x),
            "ours_reference": lambda: ours(x, with_aux=False),
            "ours_fp32": lambda: fast32(x),
            "ours_bf16": lambda: fast16(x),
            "ours_fp32_compiled": lambda: comp32(x),
            "ours_bf16_compiled": lambda: comp16(x),
        }
        med = _interleaved({k: f for k, f in forwards.items() if bf16 or "bf16" not in k}, reps)
        result["forward"] = med
    processor = MaskFormerImageProcessor(
        do_resize=False,
        do_pad=False,
        image_mean=[v / 255 for v in cfg.model.pixel_mean],
        image_std=[v / 255 for v in cfg.model.pixel_std],
    )
    sizes = [(size, size)]
    if "post" in parts:
        hf_out = hf(pixel_values=x)
        our_out = ours(x, with_aux=False)
        med = _interleaved(
            {
                "transformers": lambda: processor.post_process_semantic_segmentation(hf_out, target_sizes=sizes),
                "ours_exact_unfused": lambda: semantic_from_outputs(our_out, sizes, sizes)[0].argmax(0),
                "ours_exact_fused": lambda: semantic_labels_from_outputs(our_out, sizes, sizes),
                "ours_fast_fused": lambda: semantic_labels_from_outputs(our_out, sizes, sizes, fast=True),
            },
            reps,
        )
        result["post"] = med
    if "predict" in parts:
        # a picture of smooth regions (not pixel noise, which gives the network nothing to segment)
        coarse = torch.rand(1, 3, 6, 6, generator=g) * 255
        image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 255)
        image = image[0].permute(1, 2, 0).to(torch.uint8).numpy()
        kw = {"min_size": size, "max_size": 4 * size}
        # bf16 Predictors use the block corner labels by default; "_exact_post" = certified exact labels
        variants = {
            "ours_exact": Predictor(ours, optimize=False, **kw),
            "ours_default_predictor": Predictor(ours, **kw),  # what `maskformer.Predictor(model)` runs
            "ours_fp32": Predictor(fast32, **kw),
            "ours_fp32_fast_post": Predictor(fast32, fast=True, **kw),
            "ours_fp32_compiled": Predictor(comp32, **kw),
            "ours_fp32_compiled_fast_post": Predictor(comp32, fast=True, **kw),
        }
        if bf16:
            variants |= {
                "ours_bf16": Predictor(fast16, **kw),
                "ours_bf16_exact_post": Predictor(fast16, corner_labels=False, **kw),
                "ours_bf16_compiled": Predictor(comp16, **kw),
                "ours_bf16_compiled_exact_post": Predictor(comp16, corner_labels=False, **kw),
            }

        def hf_predict() -> torch.Tensor:
            inputs = processor(images=[image], return_tensors="pt")
            return processor.post_process_semantic_segmentation(hf(**inputs), target_sizes=sizes)[0]

        med = _interleaved(
            {"transformers": hf_predict, **{k: (lambda p=p: p(image)) for k, p in variants.items()}}, reps
        )
        ref = variants["ours_exact"](image)
        result["predict"] = med
        result["predict_distinct_labels"] = len(torch.unique(ref))
        # Random weights give near-constant semantic maps (one class wins everywhere), so label agreement says little;
        # the per-pixel winning query (argmax over 100 mask logits) is a much harder, varied decision to agree on.
        models = (("fp32", fast32), ("ref", ours), *((("bf16", fast16),) if bf16 else ()))
        owners = {k: m(x)["pred_masks"][0].argmax(0) for k, m in models}
        result["mask_owner_agreement_with_exact"] = {
            f"ours_{k}": float((owners[k] == owners["ref"]).double().mean()) for k in owners if k != "ref"
        }
        result["mask_owner_distinct"] = len(torch.unique(owners["ref"]))
        result["predict_pixels"] = ref.numel()
        result["predict_agreement_with_exact"] = {
            k: float((p(image) == ref).double().mean()) for k, p in variants.items() if k != "ours_exact"
        }
        result["predict_agreement_with_exact"]["transformers"] = float((hf_predict() == ref).double().mean())
    return result


def _train_targets(cfg, batch: int, size: int, g: torch.Generator) -> list[dict]:
    targets = []
    for _ in range(batch):
        # 10 non-overlapping masks: label each pixel with one of 10 random classes via a coarse random layout
        layout = torch.nn.functional.interpolate(torch.rand(1, 10, size // 32, size // 32, generator=g), size=size)
        owner = layout[0].argmax(0)
        ids = torch.unique(owner)
        labels = torch.randperm(cfg.model.num_classes, generator=g)[: len(ids)]
        targets.append({"labels": labels, "masks": owner[None] == ids[:, None, None]})
    return targets


def train_worker(side: str, steps: int, size: int) -> dict:
    """One process, one side: warm-up step + `steps` timed steps. Returns seconds per step and peak RSS (MB)."""
    from maskformer.build import build_criterion

    point = side == "ours_point_sample"
    cfg, ours, hf = _models(aux_loss=True, point_sample=point)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, size, size, generator=g)
    targets = _train_targets(cfg, 2, size, g)
    bf16 = side.endswith("_bf16")
    if not side.startswith("transformers") or side == "transformers_reuse":
        # what `maskformer train` does (maskformer/allocator.py); transformers_reuse: transformers with the same
        # process-wide glibc setting, to show how much of the gap is the allocator
        from maskformer.allocator import reuse_freed_memory

        reuse_freed_memory()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    if side.startswith("transformers"):
        del ours
        model = hf.train()
        mask_labels = [t["masks"].float() for t in targets]
        class_labels = [t["labels"] for t in targets]

        def step() -> None:
            with autocast:
                out = model(
                    pixel_values=x, mask_labels=mask_labels, class_labels=class_labels, output_hidden_states=True
                )
            out.loss.backward()
    else:
        del hf
        model = ours.train()
        criterion = build_criterion(cfg)
        from maskformer.engine.runtime import channels_last

        if side != "ours_exact_contiguous" and channels_last(cfg.train.channels_last, "cpu"):  # as `train` decides
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        from maskformer.modeling.layers import set_winograd

        set_winograd(model, cfg.train.winograd)  # Winograd for the wide 3x3 convolutions, as `maskformer train` does

        def step() -> None:
            with autocast:
                outputs = model(x)
            criterion(_float_outputs(outputs), targets)["loss"].backward()

    import gc

    gc.collect()
    reset = _reset_peak_rss()  # so the peak is the training step's, not model building's (both models existed)
    rss_before = _status_mb("VmRSS") if reset else 0.0
    times = []
    for i in range(steps + 1):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step()
        if i:
            times.append(time.perf_counter() - start)
    peak_mb = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"side": side, "seconds": times, "peak_rss_mb": peak_mb, "rss_before_mb": rss_before, "peak_reset": reset}


def _float_outputs(out: object) -> object:
    """Losses in fp32 under autocast, as engine/train.py does."""
    if isinstance(out, torch.Tensor):
        return out.float()
    if isinstance(out, dict):
        return {k: _float_outputs(v) for k, v in out.items()}
    if isinstance(out, list):
        return [_float_outputs(v) for v in out]
    return out


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def bench_onnx(size: int) -> dict:
    """Export our R50 lean model to ONNX and compare onnxruntime with PyTorch (max |diff| per output)."""
    import tempfile

    from maskformer.inference.export import export_onnx

    _, ours, _ = _models()
    with tempfile.TemporaryDirectory() as tmp:
        report = export_onnx(ours.eval(), Path(tmp) / "r50.onnx", height=size, width=size)
        mb = report.path.stat().st_size / 2**20
    return {"dynamic": report.dynamic, "opset": report.opset, "max_abs_diff": report.max_abs_diff, "size_mb": mb}


TRAIN_SIDES = (
    "ours_exact",
    "transformers",
    "ours_point_sample",
    "ours_exact_contiguous",
    "ours_bf16",
    "transformers_bf16",
    "transformers_reuse",
)


def _native_bf16() -> bool:
    from maskformer.inference.accelerate.onednn import native_bf16

    return native_bf16()


def bench_train(steps: int, size: int, rounds: int, sides: list[str] | None = None) -> dict:
    """Each of `sides` (default TRAIN_SIDES; the ratios need "transformers") in `rounds` fresh processes."""
    sides = list(sides or TRAIN_SIDES)
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:  # alternate the order between rounds
            cmd = [
                sys.executable,
                __file__,
                "--train-worker",
                side,
                "--train-steps",
                str(steps),
                "--size",
                str(size),
                "--config",
                str(CONFIG),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        s: {
            "median_seconds": statistics.median([t for run in runs[s] for t in run["seconds"]]),
            # the least disturbed step: on a shared machine the median can carry other processes' load
            "min_seconds": min(t for run in runs[s] for t in run["seconds"]),
            "seconds": [round(t, 3) for run in runs[s] for t in run["seconds"]],
            "peak_rss_mb": max(run["peak_rss_mb"] for run in runs[s]),
            "rss_before_mb": max(run["rss_before_mb"] for run in runs[s]),
        }
        for s in sides
    }


def bench_matcher(reps: int) -> str:
    cmd = [sys.executable, str(ROOT / "benchmarks/bench_matcher.py"), "--reps", str(reps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return next((line for line in out.splitlines() if "Speed-up" in line), out.strip())


def _report(results: dict, args: argparse.Namespace, load_before: float) -> str:
    import transformers

    from maskformer.engine.timing import machine, machine_line

    cmd = " ".join([".venv/bin/python", "benchmarks/compare_transformers.py", *sys.argv[1:]])
    lines = [
        f"## Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"- Command: `{cmd}`",
        f"- Machine: {machine_line(machine(), load=False)}; load average before {load_before:.2f}, after "
        f"{os.getloadavg()[0]:.2f} (shared machine)",
        f"- Versions: torch {torch.__version__}, transformers {transformers.__version__}",
        f"- {Path(args.config).stem} (ADE20K-150 shape), random weights (same in both), {args.size}x{args.size}; "
        + (
            f"inference: median of {args.reps} interleaved repetitions after 1 warm-up; "
            if "forward" in results or "post" in results or "predict" in results
            else ""
        )
        + "ratio = ours / transformers",
    ]
    if any(part in results for part in ("forward", "post", "predict")):
        lines += ["", "| part | variant | median s | ratio to transformers |", "|---|---|---|---|"]
    for part in ("forward", "post", "predict"):
        if part not in results:
            continue
        med = results[part]
        for k, v in med.items():
            lines.append(f"| {part} | {k} | {v:.3f} | {v / med['transformers']:.2f} |")
    if "predict_agreement_with_exact" in results:
        agree = results["predict_agreement_with_exact"]
        n = results["predict_pixels"]
        shares = ", ".join(f"{k} {100 * v:.3f} % ({round((1 - v) * n)})" for k, v in agree.items())
        lines += ["", f"Label agreement with our exact path (predict; differing pixels of {n}): {shares}"]
    if "mask_owner_agreement_with_exact" in results:
        agree = results["mask_owner_agreement_with_exact"]
        lines += ["", f"Distinct labels in the exact label map: {results['predict_distinct_labels']} (random weights); "
                  f"per-pixel winning query (argmax over queries of the mask logits, {results['mask_owner_distinct']} "
                  "distinct) agreement with the exact model: "
                  + ", ".join(f"{k} {100 * v:.3f} %" for k, v in agree.items())]  # fmt: skip
    if "train" in results:
        tr = results["train"]
        base = tr["transformers"]
        lines += [
            "",
            f"Training step (batch 2, {args.size}x{args.size}, ~10 masks/image, forward + loss + backward, deep "
            f"supervision on both sides; median of {args.train_steps} steps x {args.train_rounds} fresh processes "
            "per side):",
            "",
            "| side | median s / step | time ratio | min s / step | min ratio | peak RSS MB | memory ratio | "
            "RSS before the steps MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for side, r in tr.items():
            lines.append(
                f"| {side} | {r['median_seconds']:.2f} | {r['median_seconds'] / base['median_seconds']:.2f} | "
                f"{r['min_seconds']:.2f} | {r['min_seconds'] / base['min_seconds']:.2f} | "
                f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / base['peak_rss_mb']:.2f} | {r['rss_before_mb']:.0f} |"
            )
    if "matcher" in results:
        lines += ["", f"Matcher (benchmarks/bench_matcher.py, 2 x 100 queries, 20 targets): {results['matcher']}"]
    if "onnx" in results:
        o = results["onnx"]
        shapes = "dynamic H/W" if o["dynamic"] else "static H/W"
        lines += ["", f"ONNX export (opset {o['opset']}, {shapes}, {o['size_mb']:.0f} MB): onnxruntime vs PyTorch max "
                  "|diff| " + ", ".join(f"{k} {v:.1e}" for k, v in o["max_abs_diff"].items())]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    global CONFIG
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="timed rounds of the inference parts (default 10)")
    parser.add_argument("--size", type=int, default=512, help="image side, a multiple of 32 (default 512)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps per process")
    parser.add_argument("--train-rounds", type=int, default=2, help="fresh processes per side")
    parser.add_argument(
        "--train-sides", default=",".join(TRAIN_SIDES), help=f"comma-separated subset of {TRAIN_SIDES} (train part)"
    )
    parser.add_argument("--output", default="", help="append the markdown report to this file")
    parser.add_argument("--config", default=str(CONFIG), help="our config (ResNet or Swin; default: the R50 one)")
    parser.add_argument("--train-worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    CONFIG = Path(args.config)
    if args.train_worker:
        print(json.dumps(train_worker(args.train_worker, args.train_steps, args.size)))
        return 0
    parts = set(args.parts.split(",")) - {""}
    unknown = sorted(parts - set(PARTS))
    if unknown or not parts:
        parser.error(f"--parts: choose from {','.join(PARTS)}, got {args.parts!r}")
    for flag, value in (("--reps", args.reps), ("--train-steps", args.train_steps),
                        ("--train-rounds", args.train_rounds)):  # fmt: skip
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if args.size < 32 or args.size % 32:
        parser.error(f"--size must be a positive multiple of 32, got {args.size}")
    if not CONFIG.is_file():
        parser.error(f"--config {args.config}: no such file")
    if args.output and Path(args.output).is_dir():
        parser.error(f"--output {args.output}: is a folder; give a file name (the report is appended to it)")
    if args.output and not Path(args.output).resolve().parent.is_dir():  # (said now, not after the whole run)
        parser.error(f"--output {args.output}: its folder does not exist")
    try:
        import transformers  # noqa: F401
    except ModuleNotFoundError:
        parser.error("needs transformers (and onnxruntime for --parts onnx): pip install -e '.[dev,onnx]'")
    if "onnx" in parts:
        try:
            import onnxruntime  # noqa: F401
        except ModuleNotFoundError:
            parser.error("--parts onnx needs onnxruntime: pip install -e '.[onnx]'")
    load_before = os.getloadavg()[0]
    results: dict = {}
    if parts & {"forward", "post", "predict"}:
        results.update(bench_inference(args.reps, args.size, parts))
        print(json.dumps(results, indent=1), flush=True)
    if "train" in parts:
        train_sides = args.train_sides.split(",")
        if args.train_sides == ",".join(TRAIN_SIDES) and not _native_bf16():  # (emulated bf16: hours, not minutes)
            train_sides = [side for side in train_sides if not side.endswith("_bf16")]
        unknown = sorted(set(train_sides) - set(TRAIN_SIDES) - {""})
        if unknown or "transformers" not in train_sides:
            parser.error(f"--train-sides: need 'transformers' and names from {TRAIN_SIDES}, got unknown {unknown}")
        results["train"] = bench_train(args.train_steps, args.size, args.train_rounds, train_sides)
        print(json.dumps(results["train"], indent=1), flush=True)
    if "matcher" in parts:
        results["matcher"] = bench_matcher(args.reps)
    if "onnx" in parts:
        results["onnx"] = bench_onnx(args.size)
    report = _report(results, args, load_before)
    print(report)
    if args.output:
        with open(args.output, "a") as f:
            f.write("\n" + report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
