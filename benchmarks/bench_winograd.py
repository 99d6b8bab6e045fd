"""Winograd F(2x2, 3x3) against oneDNN's direct kernel on the 3x3 convolutions of MaskFormer's R50 / Swin models.

Both run as the optimised Predictor runs them (``accelerate/onednn.py``'s ``Conv``: packed weight, channels-last
input, the allocator setting), timed interleaved in one process (median of --reps rounds); the error columns are
the max deviation from a float64 convolution, relative to the output range. Shapes marked "used" pass
``winograd.suits`` (at least ``MIN_CHANNELS`` in and out); the others show why the threshold is there.

With ``--predict r50,swin-t`` it also times the default Predictor (semantic and panoptic, the suite's configs and
weights, ``benchmarks/suite.py``) with Winograd on and off, interleaved, and counts the pixels whose semantic labels
differ from the unmodified model's (``optimize=False``) on the suite's four pictures.

With ``--train`` it times forward + backward at batch 2 instead (``modeling.winograd.conv3x3``, what ``maskformer
train`` runs with ``train.winograd``; ``pays`` decides where).

Run: .venv/bin/python benchmarks/bench_winograd.py [--reps 10] [--threads 2] [--predict r50,swin-t] [--train]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # suite.py

# (Cin, Cout, side): 512x512 input; FPN output convolutions at 1/4..1/32, ResNet stage 3x3s, Swin-T's last stage
SHAPES = [
    (256, 256, 128),
    (256, 256, 64),
    (256, 256, 32),
    (2048, 256, 16),
    (768, 256, 16),
    (512, 512, 16),
    (256, 100, 128),  # the folded mask_features convolution (Q = 100 outputs)
    (128, 128, 64),
    (64, 64, 128),
]


def main() -> int:
    from maskformer.allocator import reuse_freed_memory
    from maskformer.engine.timing import interleaved_medians
    from maskformer.inference.accelerate import onednn, winograd
    from maskformer.modeling.layers import ConvNorm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--predict", default="", help="comma-separated suite models for the whole-Predictor A/B")
    parser.add_argument("--ab", default="", help=argparse.SUPPRESS)  # MODEL:TASK, one A/B (the fresh process)
    parser.add_argument("--train", action="store_true", help="forward + backward at batch 2 (training) instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.ab:
        _ab_main(args.ab, args.reps)
        return 0
    if args.train:
        reuse_freed_memory()
        _train_rows(args.reps)
        return 0
    reuse_freed_memory()
    print(f"{args.threads} thread(s), median of {args.reps}; error = max |y - float64| / max |float64|")
    print(f"{'Cin -> Cout @ side':>20} {'direct ms':>10} {'Winograd ms':>12} {'ratio':>6} {'err direct':>11} "
          f"{'err Winograd':>13}  used")  # fmt: skip
    g = torch.Generator().manual_seed(0)
    for cin, cout, side in SHAPES:
        layer = ConvNorm(cin, cout, 3, padding=1, bias=True, norm=None, relu=False).eval().requires_grad_(False)
        direct = onednn.Conv(layer, relu=False)
        direct.winograd = False
        u = winograd.filters(layer.weight, (side // 2) ** 2)  # packed for this many tiles, as ``Conv`` does
        x = torch.randn(1, cin, side, side, generator=g).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            med = interleaved_medians(
                {
                    "direct": lambda direct=direct, x=x: direct(x),
                    "winograd": lambda x=x, u=u, b=layer.bias: winograd.winograd_conv3x3(x, u, b),
                },
                args.reps,
            )
            exact = F.conv2d(x.double(), layer.weight.double(), layer.bias.double(), padding=1)
            scale = exact.abs().max()
            errors = [
                float((y.double() - exact).abs().max() / scale)
                for y in (direct(x), winograd.winograd_conv3x3(x, u, layer.bias))
            ]
        used = winograd.suits(layer.weight, (1, 1), (1, 1), (1, 1), 1)
        times = f"{med['direct'] * 1e3:10.2f} {med['winograd'] * 1e3:12.2f} {med['winograd'] / med['direct']:6.2f}"
        shape = f"{cin} -> {cout} @ {side}"
        print(f"{shape:>20} {times} {errors[0]:11.1e} {errors[1]:13.1e}  {'yes' if used else 'no'}")
    for model in filter(None, args.predict.split(",")):
        _predict_ab(model, args.reps)
    return 0


TRAIN_SHAPES = [(256, 256, 128), (256, 256, 64), (256, 256, 32), (2048, 256, 16), (512, 512, 16)]


def _train_rows(reps: int) -> None:
    """Forward + backward (input, weight and bias gradients) of conv2d at batch 2, channels-last, against
    ``modeling.winograd.conv3x3``, interleaved; errors of the input gradient against float64."""
    from maskformer.engine.timing import interleaved_medians
    from maskformer.modeling import winograd as training
    from maskformer.modeling.winograd import conv3x3

    print(f"{torch.get_num_threads()} thread(s), batch 2, forward + backward, median of {reps}")
    print(f"{'Cin -> Cout @ side':>20} {'direct ms':>10} {'Winograd ms':>12} {'ratio':>6} {'dx err direct':>14} "
          f"{'dx err Winograd':>16}  used")  # fmt: skip
    g = torch.Generator().manual_seed(0)
    for cin, cout, side in TRAIN_SHAPES:
        x = torch.randn(2, cin, side, side, generator=g).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        w = (torch.randn(cout, cin, 3, 3, generator=g) / (3 * cin**0.5)).contiguous(memory_format=torch.channels_last)
        w.requires_grad_(True)
        b = torch.randn(cout, generator=g, requires_grad=True)
        grad = torch.randn(2, cout, side, side, generator=g).contiguous(memory_format=torch.channels_last)

        def step(conv, x=x, w=w, b=b, grad=grad):
            return torch.autograd.grad(conv(x, w, b), (x, w, b), grad)

        def direct(x, w, b):
            return F.conv2d(x, w, b, padding=1)

        med = interleaved_medians({"direct": lambda: step(direct), "winograd": lambda: step(conv3x3)}, reps)
        x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
        exact = torch.autograd.grad(F.conv2d(x64, w64, b64, padding=1), x64, grad.double())[0]
        errors = [float((step(c)[0].double() - exact).abs().max() / exact.abs().max()) for c in (direct, conv3x3)]
        used = training.pays(x, w, (1, 1), (1, 1), (1, 1), 1)
        times = f"{med['direct'] * 1e3:10.1f} {med['winograd'] * 1e3:12.1f} {med['winograd'] / med['direct']:6.2f}"
        shape = f"{cin} -> {cout} @ {side}"
        print(f"{shape:>20} {times} {errors[0]:14.1e} {errors[1]:16.1e}  {'yes' if used else 'no'}")


def _predict_ab(model: str, reps: int) -> None:
    """The default Predictor with and without Winograd, interleaved, semantic and panoptic, each in a fresh process
    (in a process that had run the other parts, R50 panoptic took three times as long on both sides)."""
    import subprocess

    for task in ("semantic", "panoptic"):
        run = subprocess.run([sys.executable, __file__, "--ab", f"{model}:{task}", "--reps", str(reps), "--threads",
                              str(torch.get_num_threads())],
                             capture_output=True, text=True, check=True)  # fmt: skip
        print(f"{model} {task}: {run.stdout.strip()}", flush=True)


def _ab_main(which: str, reps: int) -> None:
    import suite

    model, task = which.split(":")
    _, ours, _, _ = suite._build(suite.MODELS[model][task == "panoptic"], transformers=False)
    print(_ab_line(ours, task, reps, [suite._image(seed) for seed in range(4)]))


def _ab_line(ours: torch.nn.Module, task: str, reps: int, images: list) -> str:
    from maskformer import Predictor
    from maskformer.engine.timing import interleaved_medians
    from maskformer.inference.accelerate import onednn

    kw = {"min_size": images[0].shape[0], "max_size": 4 * images[0].shape[0]}
    on, off = Predictor(ours, **kw), Predictor(ours, **kw)
    layers = [m for m in off.model.modules() if isinstance(m, onednn.Conv)]
    for m in layers:
        m.winograd = False
    used = sum(m._suits_winograd() for m in layers)
    with torch.inference_mode():
        med = interleaved_medians(
            {"winograd": lambda: on(images[0], task=task), "direct": lambda: off(images[0], task=task)},
            reps,
            pause=0.1,
        )
        if task == "semantic":
            exact = Predictor(ours, optimize=False, **kw)
            differ = [(int((on(im) != exact(im)).sum()), int((off(im) != exact(im)).sum())) for im in images]
            note = f"pixels differing from optimize=False (Winograd, direct) per picture: {differ}"
        else:
            a, b = on(images[0], task=task), off(images[0], task=task)
            note = f"same panoptic map and segments: {bool(torch.equal(a[0], b[0]) and a[1] == b[1])}"
    ratio = med["winograd"] / med["direct"]
    return (f"{used} Winograd layers; predict {med['winograd']:.3f} s with, {med['direct']:.3f} s without "
            f"({ratio:.2f}x); {note}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
