"""Focal + dice mask losses for binary targets as one autograd function with a closed-form gradient.

The unfused ``losses.sigmoid_focal_loss`` / ``losses.dice_loss`` keep about eight [M, P] intermediates alive for
backward per decoder layer (P = 512 x 512 pixels at ADE20K crop size, six layers with deep supervision). This
function saves only its input logits and the targets as bool, and recomputes sigmoid in backward.

For binary targets t and logits x, with z = x (1 - 2t) (so z = x for t = 0 and -x for t = 1) and s = sigmoid(z):
  focal  = alpha_t * s^2 * softplus(z),  alpha_t = alpha if t else 1 - alpha   (BCE(x, t) = softplus(z); 1 - p_t = s)
  dfocal/dx = alpha_t * (1 - 2t) * s^2 * (2 (1 - s) softplus(z) + s)
Dice per mask i with p = sigmoid(x): d_i = 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1) =: 1 - (N + 1) / (D + 1),
  dd_i/dx_j = ((N + 1) - 2 t_j (D + 1)) / (D + 1)^2 * p_j (1 - p_j).
Reductions as the originals: focal mean over pixels, both summed over masks and divided by num_masks.
tests/test_fast_inference.py checks values and gradients against the unfused functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["focal_dice_loss"]


class _FocalDice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, num_masks: float, alpha: float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        t = targets.bool()
        z = torch.where(t, -logits, logits)
        s = torch.sigmoid(z)
        alpha_t = torch.where(t, logits.new_tensor(alpha), logits.new_tensor(1.0 - alpha))
        focal = (alpha_t * s.square() * F.softplus(z)).mean(1).sum() / num_masks
        p = torch.where(t, 1.0 - s, s)  # sigmoid(x)
        tf = t.to(logits.dtype)
        numer = 2 * (p * tf).sum(-1)
        denom = p.sum(-1) + tf.sum(-1)
        dice = (1 - (numer + 1) / (denom + 1)).sum() / num_masks
        ctx.save_for_backward(logits, t, numer, denom)
        ctx.num_masks, ctx.alpha = num_masks, alpha
        return focal, dice

    @staticmethod
    def backward(ctx, grad_focal: Tensor, grad_dice: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        logits, t, numer, denom = ctx.saved_tensors
        num_pixels = logits.shape[1]
        z = torch.where(t, -logits, logits)
        s = torch.sigmoid(z)
        # alpha_t * (1 - 2t), as tensors of the logits' dtype (a Python float would become float32)
        sign_alpha = torch.where(t, logits.new_tensor(-ctx.alpha), logits.new_tensor(1.0 - ctx.alpha))
        grad = sign_alpha * s.square() * (2 * (1 - s) * F.softplus(z) + s)
        grad.mul_(grad_focal / (num_pixels * ctx.num_masks))
        p = torch.where(t, 1.0 - s, s)
        d1 = (denom + 1)[:, None]
        coeff = ((numer + 1)[:, None] - 2 * t.to(logits.dtype) * d1) / d1.square()
        grad.addcmul_(coeff * p * (1 - p), grad_dice / ctx.num_masks)
        return grad, None, None, None


def focal_dice_loss(logits: Tensor, targets: Tensor, num_masks: float, alpha: float = 0.25) -> tuple[Tensor, Tensor]:
    """(sigmoid focal loss with gamma 2, dice loss) of logits [M, P] against binary targets [M, P] (bool or 0/1 float).

    Equal to ``(losses.sigmoid_focal_loss(logits, targets, num_masks, alpha), losses.dice_loss(logits, targets,
    num_masks))`` up to float rounding, with less memory. Non-binary targets (point-sampled) need the unfused ones.
    """
    return _FocalDice.apply(logits, targets, num_masks, alpha)
