"""Focal + dice mask losses for binary targets as one autograd function, computed in cache-sized chunks.

The unfused ``losses.sigmoid_focal_loss`` / ``losses.dice_loss`` on masks upsampled to the full padded input size keep
the upsampled logits and about eight [M, H*W] intermediates per decoder layer (H*W = 512 x 512 at ADE20K crop size,
six layers with deep supervision), and every elementwise step streams a fresh multi-MB tensor through memory. This
function saves only the 1/4-resolution logits and the targets (bool), and walks over a few masks at a time: upsample,
loss terms and their per-mask sums, and in backward the recomputed upsampling, the closed-form gradient and its
adjoint (``upsample_bilinear2d_backward``) on one chunk while it is in cache. No full-resolution float tensor exists.

For binary targets t and upsampled logits x, with z = x (1 - 2t) (so z = x for t = 0 and -x for t = 1), s = sigmoid(z):
  focal  = alpha_t * s^2 * softplus(z),  alpha_t = alpha if t else 1 - alpha   (BCE(x, t) = softplus(z); 1 - p_t = s)
  dfocal/dx = alpha_t * (1 - 2t) * s^2 * (2 (1 - s) softplus(z) + s)
Dice per mask i with p = sigmoid(x): d_i = 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1) =: 1 - (N + 1) / (D + 1),
  dd_i/dx_j = ((N + 1) - 2 t_j (D + 1)) / (D + 1)^2 * p_j (1 - p_j).
Reductions as the originals: focal mean over pixels, both summed over masks and divided by num_masks.
tests/test_fast_inference.py and tests/test_losses.py check values and gradients against the unfused functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["focal_dice_loss", "upsampled_focal_dice_loss"]

# Elements per chunk (masks x pixels): 1M floats = 4 MiB per temporary (4 masks at 512 x 512) keeps the elementwise
# chain in the caches and reuses freed blocks instead of page-faulting a fresh 20+ MB buffer per op; measured faster
# than 1 or 2 masks per chunk (whose upsampling kernels occupy fewer threads). At least one mask per chunk.
_CHUNK_ELEMENTS = 1 << 20


def _chunks(num_masks: int, pixels: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_ELEMENTS // max(pixels, 1))
    return [(start, min(start + step, num_masks)) for start in range(0, num_masks, step)]


def _upsample(src: Tensor, size: tuple[int, int]) -> Tensor:
    """[k, h, w] logits -> [k, H*W], bilinear (align_corners=False) as the original; a no-op when sizes agree."""
    if tuple(src.shape[-2:]) == size:
        return src.flatten(1)
    return F.interpolate(src[:, None], size=size, mode="bilinear", align_corners=False).flatten(1)


def _interpolation_matrix(size_out: int, size_in: int, like: Tensor) -> Tensor:
    """[size_out, size_in] weights of 1-D linear interpolation (align_corners=False), i.e. one axis of `_upsample`:
    the identity upsampled, so the weights and border clamping are F.interpolate's own."""
    eye = torch.eye(size_in, dtype=like.dtype, device=like.device)[None]
    return F.interpolate(eye, size=size_out, mode="linear", align_corners=False)[0].T


def _upsample_adjoint(grad: Tensor, src_shape: torch.Size, size: tuple[int, int]) -> Tensor:
    """Gradient w.r.t. the [k, h, w] input of `_upsample` given the gradient [k, H*W] of its output.

    Bilinear upsampling is separable, up = A_h x A_w^T, so its adjoint is A_h^T g A_w: two matrix products (one large
    GEMM over all rows of the chunk, then a batched one), multithreaded, where upsample_bilinear2d_backward runs one
    thread per mask. Same result up to float rounding."""
    if tuple(src_shape[-2:]) == size:
        return grad.view(src_shape)
    k, h, w = src_shape
    a_h = _interpolation_matrix(size[0], h, grad)
    a_w = _interpolation_matrix(size[1], w, grad)
    return torch.matmul(a_h.T, (grad.view(k * size[0], size[1]) @ a_w).view(k, size[0], w))


def _chunk_terms(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(s = sigmoid(z), 1 - s, softplus(z)) for z = x (1 - 2t). softplus(z) = max(z, 0) - log(max(s, 1 - s)): the same
    value to ~1e-7 absolute (the log's argument is >= 0.5), several times faster than F.softplus on CPU, whose log1p
    has no vectorised kernel."""
    z = torch.where(t, -x, x)
    s = torch.sigmoid(z)
    u = 1 - s
    return s, u, z.clamp_(min=0).sub_(torch.maximum(s, u).log_())


class _FocalDice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src: Tensor, targets: Tensor, num_masks: float, alpha: float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        size = (int(targets.shape[-2]), int(targets.shape[-1]))
        t_all = targets.bool().flatten(1)
        m, pixels = t_all.shape
        focal_sum, numer, prob_sum = (src.new_empty(m) for _ in range(3))
        a, not_a = src.new_tensor(alpha), src.new_tensor(1.0 - alpha)
        for start, end in _chunks(m, pixels):
            t = t_all[start:end]
            s, u, softplus = _chunk_terms(_upsample(src[start:end], size), t)
            focal_sum[start:end] = softplus.mul_(s).mul_(s).mul_(torch.where(t, a, not_a)).sum(1)
            # p = sigmoid(x) is 1 - s on target pixels and s elsewhere
            numer[start:end] = 2 * torch.where(t, u, 0.0).sum(1)
            prob_sum[start:end] = torch.where(t, u, s).sum(1)
        # target pixel counts as bytes summed into int32 (a bool sum converts all of [M, P] to int64 first, ~20x slower)
        denom = prob_sum + t_all.view(torch.uint8).sum(1, dtype=torch.int32).to(src.dtype)
        focal_loss = (focal_sum / pixels).sum() / num_masks
        dice = (1 - (numer + 1) / (denom + 1)).sum() / num_masks
        ctx.save_for_backward(src, targets, numer, denom)
        ctx.num_masks, ctx.alpha = num_masks, alpha
        return focal_loss, dice

    @staticmethod
    def backward(ctx, grad_focal: Tensor, grad_dice: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        src, targets, numer, denom = ctx.saved_tensors
        size = (int(targets.shape[-2]), int(targets.shape[-1]))
        t_all = targets.bool().flatten(1)
        m, pixels = t_all.shape
        grad_src = torch.empty_like(src, memory_format=torch.contiguous_format)
        # dL/dx = s * (s (2 (1 - s) softplus(z) + s) F_t + (1 - s) C_t), since p (1 - p) = s (1 - s), with
        # F_t = alpha_t (1 - 2t) dL/dfocal / (P num_masks),
        # C_t = ((N + 1) - 2 t (D + 1)) / (D + 1)^2 dL/ddice / num_masks
        focal_scale = grad_focal.to(src.dtype) / (pixels * ctx.num_masks)
        focal_t, focal_not_t = -ctx.alpha * focal_scale, (1.0 - ctx.alpha) * focal_scale
        d1 = denom + 1
        dice_scale = grad_dice.to(src.dtype) / ctx.num_masks / d1.square()
        dice_not_t = ((numer + 1) * dice_scale)[:, None]
        dice_t = ((numer + 1 - 2 * d1) * dice_scale)[:, None]
        for start, end in _chunks(m, pixels):
            t = t_all[start:end]
            s, u, softplus = _chunk_terms(_upsample(src[start:end], size), t)
            grad = torch.addcmul(s, u, softplus, value=2).mul_(s).mul_(torch.where(t, focal_t, focal_not_t))
            grad.addcmul_(u, torch.where(t, dice_t[start:end], dice_not_t[start:end])).mul_(s)
            grad_src[start:end] = _upsample_adjoint(grad, src[start:end].shape, size)
        return grad_src, None, None, None


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
