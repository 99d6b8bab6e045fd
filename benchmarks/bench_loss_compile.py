"""The fused focal + dice mask loss (``criterion/fused_loss.py``), eager against its per-chunk chain compiled by
torch.compile (inductor, CPU): forward + backward of one decoder layer's matched masks, medians of alternating calls.

An experiment kept for reruns (docs/performance.md, "Tried and not taken"): the library runs the eager chain.

    .venv/bin/python benchmarks/bench_loss_compile.py [--masks 16] [--reps 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from maskformer.criterion import fused_loss as fl


def chunk_sums(x, t, a, not_a):
    s, u, softplus = fl._chunk_terms(x, t)
    focal = softplus.mul_(s).mul_(s).mul_(torch.where(t, a, not_a)).sum(1)
    return focal, 2 * torch.where(t, u, 0.0).sum(1), torch.where(t, u, s).sum(1)


def chunk_grad(x, t, focal_t, focal_not_t, dice_t, dice_not_t):
    s, u, softplus = fl._chunk_terms(x, t)
    grad = torch.addcmul(s, u, softplus, value=2).mul_(s).mul_(torch.where(t, focal_t, focal_not_t))
    return grad.addcmul_(u, torch.where(t, dice_t, dice_not_t)).mul_(s)


SUMS, GRAD = torch.compile(chunk_sums, dynamic=True), torch.compile(chunk_grad, dynamic=True)


class Compiled(torch.autograd.Function):
    """``fused_loss._FocalDice`` with its chunks by the compiled functions above (same formulas)."""

    @staticmethod
    def forward(ctx, src, targets, num_masks, alpha):
        size = tuple(targets.shape[-2:])
        t_all = targets.bool().flatten(1)
        m, pixels = t_all.shape
        focal, numer, prob = (src.new_empty(m) for _ in range(3))
        a, not_a = src.new_tensor(alpha), src.new_tensor(1.0 - alpha)
        for start, end in fl._chunks(m, pixels):
            sums = SUMS(fl._upsample(src[start:end], size), t_all[start:end], a, not_a)
            focal[start:end], numer[start:end], prob[start:end] = sums
        denom = prob + t_all.view(torch.uint8).sum(1, dtype=torch.int32).to(src.dtype)
        ctx.save_for_backward(src, targets, numer, denom)
        ctx.num_masks, ctx.alpha = num_masks, alpha
        return (focal / pixels).sum() / num_masks, (1 - (numer + 1) / (denom + 1)).sum() / num_masks

    @staticmethod
    def backward(ctx, grad_focal, grad_dice):
        src, targets, numer, denom = ctx.saved_tensors
        size = tuple(targets.shape[-2:])
        t_all = targets.bool().flatten(1)
        m, pixels = t_all.shape
        grad_src = torch.empty_like(src)
        focal_scale = grad_focal / (pixels * ctx.num_masks)
        focal_t, focal_not_t = -ctx.alpha * focal_scale, (1.0 - ctx.alpha) * focal_scale
        d1 = denom + 1
        dice_scale = grad_dice / ctx.num_masks / d1.square()
        dice_not_t, dice_t = ((numer + 1) * dice_scale)[:, None], ((numer + 1 - 2 * d1) * dice_scale)[:, None]
        for start, end in fl._chunks(m, pixels):
            x = fl._upsample(src[start:end], size)
            args = (focal_t, focal_not_t, dice_t[start:end], dice_not_t[start:end])
            grad = GRAD(x, t_all[start:end], *args)
            grad_src[start:end] = fl._upsample_adjoint(grad, src[start:end].shape, size)
        return grad_src, None, None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=16)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    src0 = torch.randn(args.masks, 128, 128, generator=g) * 3
    targets = torch.rand(args.masks, 512, 512, generator=g) > 0.7

    def run(fn):
        src = src0.clone().requires_grad_()
        focal, dice = fn(src, targets, float(args.masks), 0.25)
        (focal + dice).backward()
        return focal.item(), dice.item(), src.grad

    start = time.perf_counter()
    run(Compiled.apply)
    print(f"first compiled call (compiles): {time.perf_counter() - start:.1f} s")
    eager, compiled = run(fl._FocalDice.apply), run(Compiled.apply)
    rel = ((eager[2] - compiled[2]).abs().max() / eager[2].abs().max()).item()
    print(f"focal {eager[0]:.7f} / {compiled[0]:.7f}, dice {eager[1]:.7f} / {compiled[1]:.7f}, gradient {rel:.1e}")
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.reps):
        for name, fn in (("eager", fl._FocalDice.apply), ("compiled", Compiled.apply)):
            start = time.perf_counter()
            run(fn)
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    ratio = med["compiled"] / med["eager"]
    print(f"{args.masks} masks 128² -> 512², forward + backward, {args.threads} threads, median of {args.reps}: "
          f"eager {med['eager']:.1f} ms, compiled {med['compiled']:.1f} ms ({ratio:.2f}×)")  # fmt: skip


if __name__ == "__main__":
    main()
