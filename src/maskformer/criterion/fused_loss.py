"""Focal + dice mask losses for binary targets as one autograd function, computed in cache-sized chunks.

The unfused ``losses.sigmoid_focal_loss`` / ``losses.dice_loss`` on masks upsampled to the full padded input size keep
the upsampled logits and about eight [M, H*W] intermediates per decoder layer (H*W = 512 x 512 at ADE20K crop size,
six layers with deep supervision), and every elementwise step streams a fresh multi-MB tensor through memory. This
function walks over a few masks at a time: upsample (``upsample.py``), loss terms and their per-mask sums, and (when
src needs a gradient) the closed-form gradients of both losses and their adjoints back to the 1/4 resolution, all on
one chunk while it is in cache. It saves only those two low-resolution gradients, which backward scales by the
upstream gradients and adds. No full-resolution float tensor outlives its chunk.

For binary targets t and upsampled logits x, with z = x (1 - 2t) (so z = x for t = 0 and -x for t = 1), s = sigmoid(z):
  focal  = alpha_t * s^2 * softplus(z),  alpha_t = alpha if t else 1 - alpha   (BCE(x, t) = softplus(z); 1 - p_t = s)
  dfocal/dx = alpha_t * (1 - 2t) * s^2 * (2 (1 - s) softplus(z) + s)
Dice per mask i with p = sigmoid(x): d_i = 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1) =: 1 - (N + 1) / (D + 1),
  dd_i/dx_j = ((N + 1) - 2 t_j (D + 1)) / (D + 1)^2 * p_j (1 - p_j),  p (1 - p) = s (1 - s).
Reductions as the originals: focal mean over pixels, both summed over masks and divided by num_masks.
tests/test_fast_inference.py and tests/test_losses.py check values and gradients against the unfused functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from maskformer.criterion.upsample import upsample, upsample_adjoint

__all__ = ["focal_dice_loss", "upsampled_focal_dice_loss"]

# Elements per chunk (masks x pixels): 1M floats = 4 MiB per temporary (4 masks at 512 x 512) keeps the elementwise
# chain in the caches and reuses freed blocks instead of page-faulting a fresh 20+ MB buffer per op; measured faster
# than 1 or 2 masks per chunk (whose upsampling kernels occupy fewer threads). At least one mask per chunk.
_CHUNK_ELEMENTS = 1 << 20


def _chunks(num_masks: int, pixels: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_ELEMENTS // max(pixels, 1))
    return [(start, min(start + step, num_masks)) for start in range(0, num_masks, step)]


def _chunk_terms(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(s = sigmoid(z), 1 - s, softplus(z)) for z = x (1 - 2t), t 0 / 1 in x's dtype. softplus(z) = max(z, 0) -
    log(max(s, 1 - s)): the same value to ~1e-7 absolute (the log's argument is >= 0.5), several times faster than
    F.softplus on CPU, whose log1p has no vectorised kernel. The targets enter by arithmetic, never torch.where, whose
    CPU kernel is not vectorised (3-4x slower per pass here)."""
    z = torch.addcmul(x, t, x, value=-2)  # x - 2x = -x exactly on target pixels
    s = torch.sigmoid(z)
    u = 1 - s
    return s, u, z.clamp_(min=0).sub_(torch.maximum(s, u).log_())


class _FocalDice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src: Tensor, targets: Tensor, num_masks: float, alpha: float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        size = (int(targets.shape[-2]), int(targets.shape[-1]))
        t_all = targets.bool().flatten(1).view(torch.uint8)
        m, pixels = t_all.shape
        focal_sum, numer, prob_sum = (src.new_empty(m) for _ in range(3))
        # target pixel counts as bytes summed into int32 (a bool sum converts all of [M, P] to int64 first, ~20x slower)
        counts = t_all.sum(1, dtype=torch.int32).to(src.dtype)
        # the gradients of the focal and the dice loss w.r.t. src, each for an upstream gradient of 1, made here while
        # the chunk's terms are in cache (backward then only scales and adds them); F_t = F_0 + t (F_1 - F_0)
        grads = src.new_empty(2, *src.shape) if ctx.needs_input_grad[0] else None
        focal_0, focal_1 = (1.0 - alpha) / (pixels * num_masks), -alpha / (pixels * num_masks)
        for start, end in _chunks(m, pixels):
            t = t_all[start:end].to(src.dtype)
            s, u, softplus = _chunk_terms(upsample(src[start:end], size), t)
            s2 = s * s
            focal = softplus * s2  # alpha_t = (1 - alpha) + (2 alpha - 1) t
            focal_sum[start:end] = (1.0 - alpha) * focal.sum(1) + (2.0 * alpha - 1.0) * torch.linalg.vecdot(t, focal)
            # p = sigmoid(x) is 1 - s on target pixels and s elsewhere: sum(p t) = sum(u t), sum(p) = sum(s) + sum(t (u
            # - s)) = sum(s) + 2 sum(u t) - sum(t) (as u = 1 - s)
            target_u = torch.linalg.vecdot(t, u)
            numer[start:end] = 2 * target_u
            prob_sum[start:end] = s.sum(1) + 2 * target_u - counts[start:end]
            if grads is None:
                continue
            shape = src[start:end].shape
            # the per-pixel factors F_t and C_t as F_0 (1 + t F_1 / F_0 - t) and C_0 (1 + t (C_1 - C_0) / C_0): the
            # constant F_0 and the per-mask C_0 scale the 16x smaller low-resolution gradients
            grad = torch.addcmul(s, u, softplus, value=2).mul_(s2)
            if focal_0 != 0.0:
                grad.addcmul_(grad, t, value=focal_1 / focal_0 - 1.0)
                grads[0, start:end] = upsample_adjoint(grad, shape, size).mul_(focal_0)
            else:  # alpha = 1: positives only
                grads[0, start:end] = upsample_adjoint(grad.mul_(t), shape, size).mul_(focal_1)
            d1 = (prob_sum[start:end] + counts[start:end] + 1)[:, None]
            n1 = numer[start:end, None] + 1  # >= 1
            grad = torch.mul(s, u)
            grad.addcmul_(grad, t.mul_(-2 * d1 / n1))
            grads[1, start:end] = upsample_adjoint(grad, shape, size).mul_((n1 / (d1.square() * num_masks))[:, :, None])
        denom = prob_sum + counts
        focal_loss = (focal_sum / pixels).sum() / num_masks
        dice = (1 - (numer + 1) / (denom + 1)).sum() / num_masks
        if grads is not None:
            ctx.save_for_backward(grads)
        return focal_loss, dice

    @staticmethod
    def backward(ctx, grad_focal: Tensor, grad_dice: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (grads,) = ctx.saved_tensors
        return grads[0] * grad_focal.to(grads.dtype) + grads[1] * grad_dice.to(grads.dtype), None, None, None


def upsampled_focal_dice_loss(
    src: Tensor, targets: Tensor, num_masks: float, alpha: float = 0.25
) -> tuple[Tensor, Tensor]:
    """(sigmoid focal loss with gamma 2, dice loss) of logits [M, h, w] bilinearly upsampled (align_corners=False) to
    the size of the binary targets [M, H, W] (bool or 0/1 float).

    Equal to ``focal_dice_loss(F.interpolate(src[:, None], size=(H, W), mode="bilinear")[:, 0].flatten(1),
    targets.flatten(1), num_masks, alpha)`` up to float rounding, gradient included, without full-resolution tensors.
    """
    return _FocalDice.apply(src, targets, num_masks, alpha)


def focal_dice_loss(logits: Tensor, targets: Tensor, num_masks: float, alpha: float = 0.25) -> tuple[Tensor, Tensor]:
    """(sigmoid focal loss with gamma 2, dice loss) of logits [M, P] against binary targets [M, P] (bool or 0/1 float).

    Equal to ``(losses.sigmoid_focal_loss(logits, targets, num_masks, alpha), losses.dice_loss(logits, targets,
    num_masks))`` up to float rounding, with less memory. Non-binary targets (point-sampled) need the unfused ones.
    """
    return _FocalDice.apply(logits[:, None], targets[:, None], num_masks, alpha)
