"""``maskformer benchmark CONFIG|CHECKPOINT``: inference speed of this project's model alone, on this machine.

Times, interleaved per repetition (so load from other processes hits every variant alike), medians reported:
- ``reference``: the model as built (``forward(with_aux=False)``) + the unfused exact semantic post-processing;
- ``optimized``: ``accelerate.fast_model.prepare_for_inference`` (FrozenBN folded, channels-last, optional bf16 /
  torch.compile) + the fused label post-processing (``--fast``: approximate labels, see accelerate.labels);
- ``predict``: end-to-end ``Predictor`` on a uint8 image of the benchmark size (resize is a no-op), both variants;
- a 3x3 convolution micro-benchmark (256 -> 256 channels, stride 1, 128x128, channels-last) giving the machine's
  convolution ceiling in the same run, in real FLOP/s (2 per multiply-add), fp32 and, with --bf16, bf16.
The forward's achieved FLOP/s uses ``engine.analysis.count_flops`` (fvcore: 1 per multiply-add) x 2.
"""

from __future__ import annotations

import argparse

DESCRIPTION = """\
How fast this project's model runs on this machine (no other library needed; for the comparison with transformers
and onnxruntime see benchmarks/suite.py). Each repetition times every variant in turn, so load from other programs
hits them alike; medians are printed.

  reference   the model as built; its post row is the plain semantic post-processing (full-size score maps per
              class, then argmax), its predict row what --reference runs (the unmodified model with the fused label
              post-processing, whose labels are bit-identical to the plain one's): so post can exceed predict
  optimized   the default: the model's CPU-optimised copy + the fused label post-processing; with --bf16 / --compile
              / --fast as in `maskformer predict`
  forward     the network alone; post = image-sized labels from its outputs; predict = image in, labels out
  ceiling     a 3x3 convolution (256 -> 256 channels at 128x128) measured in the same run: what this CPU can do,
              in FLOP/s, and the lowest time the forward could take at that rate

Every model is timed with semantic labels, also one whose default task is panoptic (panoptic predict against
transformers: benchmarks/suite.py). The report names the CPU, its vector instructions, the date, the load and the
commit, so a figure can be traced to the machine it came from.

Example: maskformer benchmark configs/ade20k-150/maskformer_R50_bs16_160k.yaml --reps 5 --bf16
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "benchmark",
        help="time forward, post-processing and predict; compare with the machine's conv ceiling",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source",
        metavar="CONFIG|CHECKPOINT",
        help="a YAML config (random weights), or a checkpoint (.pt) or model name (see `maskformer models`)",
    )
    p.add_argument(
        "--size", nargs=2, type=int, default=[512, 512], metavar=("H", "W"), help="input size (default 512 512)"
    )
    p.add_argument("--reps", type=int, default=10, help="timed repetitions after one warm-up (default 10)")
    p.add_argument("--fast", action="store_true", help="approximate semantic labels (see predict --help)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast forward in the optimized variant")
    p.add_argument("--compile", action="store_true", help="torch.compile the optimized model (slow first call)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def _load(source: str):
    import maskformer
    from maskformer.engine.checkpoint import load_model_and_config
    from maskformer.zoo import config_file, resolve_model

    path = config_file(source)
    if path.suffix.lower() in (".yaml", ".yml"):  # (not a zoo name: load_config names a missing file)
        import torch

        cfg = maskformer.load_config(path)
        torch.manual_seed(0)  # the same random weights in every run (post-processing time depends on the outputs)
        return maskformer.build_model(cfg), cfg
    model, cfg, _ = load_model_and_config(resolve_model(source))
    return model, cfg


def conv_ceiling(*, bf16: bool = False, reps: int = 5) -> float:
    """Median real FLOP/s of a 3x3 conv 256->256 on [1,256,128,128] channels-last (fp32, or bf16)."""
    import statistics
    import time

    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    x = torch.randn(1, 256, 128, 128, dtype=dtype).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(dtype).to(memory_format=torch.channels_last)
    flops = 2 * 256 * 256 * 9 * 128 * 128
    times = []
    with torch.inference_mode():
        conv(x)
        for _ in range(reps):
            start = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - start)
    return flops / statistics.median(times)


def run_benchmark(
    model,
    *,
    height: int,
    width: int,
    reps: int = 10,
    fast: bool = False,
    bf16: bool = False,
    compile: bool = False,
    progress: bool = False,
) -> dict:
    """The measurements described in the module docstring, as a JSON-able dict (seconds, FLOP/s, ratios, and the
    machine they were measured on). ``progress``: a bar on stderr over the timed calls."""
    import torch

    from maskformer.engine.analysis import count_flops, count_forward_flops
    from maskformer.engine.timing import interleaved_medians, machine
    from maskformer.inference.accelerate.fast_model import folded_mask_forward, prepare_for_inference
    from maskformer.inference.accelerate.labels import semantic_labels_from_outputs
    from maskformer.inference.postprocess import semantic_from_outputs
    from maskformer.inference.predictor import Predictor

    model = model.eval()
    opt = prepare_for_inference(model, bf16=bf16, compile=compile)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, height, width, generator=g)
    image = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8).numpy()
    size = [(height, width)]
    kw = {"min_size": min(height, width), "max_size": 10 * max(height, width), "task_default": "semantic"}
    pred_ref, pred_opt = Predictor(model, optimize=False, **kw), Predictor(opt, fast=fast, **kw)
    with torch.inference_mode():
        out_ref = model(x, with_aux=False)
        out_opt = opt(x)

    def post_ref() -> None:
        semantic_from_outputs(out_ref, size, size)[0].argmax(0)

    def post_opt() -> None:
        semantic_labels_from_outputs(out_opt, size, size, fast=fast)

    variants = {
        "forward_reference": lambda: model(x, with_aux=False),
        "forward_optimized": lambda: opt(x),
        "post_reference": post_ref,
        "post_optimized": post_opt,
        "predict_reference": lambda: pred_ref(image),
        "predict_optimized": lambda: pred_opt(image),
    }
    with torch.inference_mode():
        # (the warm-up call compiles with --compile)
        med = interleaved_medians(variants, reps, progress="benchmark" if progress else "")
        labels_ref = pred_ref(image)
        labels_opt = pred_opt(image)
    macs, _ = count_flops(model, height=height, width=width, lean=True)
    x = torch.zeros(1, 3, height, width)
    reference_flops = 2 * count_forward_flops(model, lambda m, t: m(t, with_aux=False), x)
    folded = getattr(opt, "fold_mask_features", False)
    optimized_flops = 2 * count_forward_flops(model, folded_mask_forward, x) if folded else reference_flops
    ceiling32 = conv_ceiling()
    info = machine()
    result = {
        "machine": info,
        "task": "semantic",  # (panoptic predict is timed by benchmarks/suite.py, against transformers)
        "size": [height, width],
        "reps": reps,
        "threads": torch.get_num_threads(),
        "load_average": info["load_average"],
        "options": {"fast": fast, "bf16": bf16, "compile": compile},
        "median_seconds": med,
        "optimized_over_reference": {
            part: med[f"{part}_optimized"] / med[f"{part}_reference"] for part in ("forward", "post", "predict")
        },
        "predict_label_agreement": float((labels_ref == labels_opt).float().mean()),
        "semantic_inference_gflop_fvcore": macs / 1e9,
        "forward_reference_real_gflop": reference_flops / 1e9,
        "forward_optimized_real_gflop": optimized_flops / 1e9,
        "mask_features_folded": bool(folded),
        "conv_ceiling_gflops_fp32": ceiling32 / 1e9,
        "forward_reference_gflops": reference_flops / med["forward_reference"] / 1e9,
        "forward_optimized_gflops": optimized_flops / med["forward_optimized"] / 1e9,
    }
    ceiling = ceiling32
    if bf16:  # a bf16 forward is compared with the bf16 convolution ceiling
        ceiling = conv_ceiling(bf16=True)
        result["conv_ceiling_gflops_bf16"] = ceiling / 1e9
    result["ceiling_dtype"] = "bf16" if bf16 else "fp32"
    result["forward_optimized_fraction_of_ceiling"] = result["forward_optimized_gflops"] * 1e9 / ceiling
    result["forward_lower_bound_seconds"] = optimized_flops / ceiling  # every FLOP at the conv ceiling
    # (faster than its ceiling: other load slowed the short ceiling measurement more than the timed rounds)
    result["ceiling_disturbed"] = result["forward_optimized_fraction_of_ceiling"] > 1
    return result


def _table(r: dict) -> str:
    from maskformer.engine.timing import machine_line

    med, ratio = r["median_seconds"], r["optimized_over_reference"]
    lines = [
        f"{r['source']}: {r['task']} labels, size {r['size'][0]}x{r['size'][1]}, {r['reps']} "
        f"rep{'s' if r['reps'] != 1 else ''}, options "
        f"{r['options']}",
        f"measured {machine_line(r['machine'])}",
        f"{'':10s} {'reference s':>12s} {'optimized s':>12s} {'ratio':>7s}",
    ]
    for part in ("forward", "post", "predict"):
        lines.append(f"{part:10s} {med[part + '_reference']:12.3f} {med[part + '_optimized']:12.3f} {ratio[part]:7.3f}")
    lines.append(f"label agreement optimized vs reference (predict): {100 * r['predict_label_agreement']:.3f} %")
    lines.append(
        f"forward (network only, 2 FLOP per multiply-add) {r['forward_reference_real_gflop']:.1f} GFLOP reference, "
        f"{r['forward_optimized_real_gflop']:.1f} GFLOP optimized"
        f"{' (mask_features folded)' if r.get('mask_features_folded') else ''}; "
        f"reference {_rate(r['forward_reference_gflops'])} GFLOP/s, optimized {_rate(r['forward_optimized_gflops'])} "
        f"GFLOP/s; 3x3-conv ceiling fp32 {_rate(r['conv_ceiling_gflops_fp32'])} GFLOP/s"
        + (f", bf16 {_rate(r['conv_ceiling_gflops_bf16'])} GFLOP/s" if "conv_ceiling_gflops_bf16" in r else "")
        + f"; optimized = {100 * r['forward_optimized_fraction_of_ceiling']:.0f} % of the {r['ceiling_dtype']} ceiling"
        f" (lower bound for this forward: {r['forward_lower_bound_seconds']:.3f} s)"
    )
    if r["ceiling_disturbed"]:
        lines.append("note: the forward ran above the measured ceiling: other load slowed that short measurement; "
                     "run again on a quiet machine for a true ceiling")  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    import torch

    from maskformer.errors import UserError

    if args.reps < 1:
        raise UserError(f"--reps must be >= 1, got {args.reps}")
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    h, w = args.size
    if h < 32 or w < 32:
        raise UserError(f"--size must be at least 32x32, got {h}x{w}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model, _ = _load(args.source)
    rounds = f"{args.reps} timed round{'s' if args.reps != 1 else ''}"
    print(f"maskformer benchmark: {args.source} at {h}x{w}: 6 variants, one warm-up call and {rounds} each, then "
          "the FLOP count and the convolution ceiling", file=sys.stderr, flush=True)  # fmt: skip
    result = {"source": args.source}
    result |= run_benchmark(
        model, height=h, width=w, reps=args.reps, fast=args.fast, bf16=args.bf16, compile=args.compile, progress=True
    )
    print(json.dumps(result, indent=1) if args.json else _table(result))
    return 0


def _rate(gflops: float) -> str:
    """A GFLOP/s figure: whole numbers, and two significant digits below 10 (a tiny model or a loaded machine
    printed "0 GFLOP/s")."""
    return f"{gflops:.0f}" if gflops >= 10 else f"{gflops:.2g}"
