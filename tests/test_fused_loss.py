"""The chunked upsampling + focal + dice autograd function against the plain computation: F.interpolate followed by
losses.sigmoid_focal_loss / losses.dice_loss, values and gradients (float64, so only rounding may differ)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maskformer.criterion import fused_loss
from maskformer.criterion.fused_loss import upsampled_focal_dice_loss
from maskformer.criterion.losses import dice_loss, sigmoid_focal_loss


def _plain(src: torch.Tensor, targets: torch.Tensor, num_masks: float, alpha: float):
    up = F.interpolate(src[:, None], size=targets.shape[-2:], mode="bilinear", align_corners=False)[:, 0].flatten(1)
    t = targets.flatten(1).to(src.dtype)
    return sigmoid_focal_loss(up, t, num_masks, alpha=alpha), dice_loss(up, t, num_masks)


@pytest.mark.parametrize(
    ("low", "size", "chunk"),
    [((8, 10), (32, 40), 1 << 20), ((8, 10), (32, 40), 2 * 32 * 40), ((7, 13), (29, 50), 1), ((6, 6), (6, 6), 50)],
)
@pytest.mark.parametrize("alpha", [0.25, 0.6, 1.0])
def test_upsampled_focal_dice_matches_plain(monkeypatch, low, size, chunk, alpha):
    """Exact 4x, non-integer scales and no upsampling; one chunk, chunks of 2 masks, one mask per chunk."""
    monkeypatch.setattr(fused_loss, "_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(3)
    src = (torch.randn(5, *low, generator=g, dtype=torch.float64) * 6).requires_grad_()
    targets = torch.rand(5, *size, generator=g) > 0.6
    targets[2] = False  # a matched target may be empty after cropping
    focal_ref, dice_ref = _plain(src, targets, 2.5, alpha)
    (grad_ref,) = torch.autograd.grad(20 * focal_ref + 0.7 * dice_ref, src)
    focal, dice = upsampled_focal_dice_loss(src, targets, 2.5, alpha=alpha)
    (grad,) = torch.autograd.grad(20 * focal + 0.7 * dice, src)
    torch.testing.assert_close(focal, focal_ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(dice, dice_ref, atol=1e-12, rtol=1e-10)
    assert grad_ref.abs().max() > 1e-3
    torch.testing.assert_close(grad, grad_ref, atol=1e-12, rtol=1e-9)


def test_upsampled_focal_dice_float32_and_saturated_logits():
    """float32 with logits far in both tails (softplus from sigmoid must not overflow or lose the large values)."""
    g = torch.Generator().manual_seed(4)
    src = (torch.randn(3, 16, 16, generator=g) * 40).requires_grad_()
    targets = torch.rand(3, 64, 64, generator=g) > 0.5
    focal_ref, dice_ref = _plain(src, targets, 3.0, 0.25)
    (grad_ref,) = torch.autograd.grad(focal_ref + dice_ref, src)
    focal, dice = upsampled_focal_dice_loss(src, targets, 3.0)
    (grad,) = torch.autograd.grad(focal + dice, src)
    assert torch.isfinite(focal) and focal_ref > 1.0  # many confidently wrong pixels: large softplus values
    torch.testing.assert_close(focal, focal_ref, atol=0, rtol=1e-5)
    torch.testing.assert_close(dice, dice_ref, atol=0, rtol=1e-5)
    torch.testing.assert_close(grad, grad_ref, atol=1e-6 * grad_ref.abs().max().item(), rtol=1e-4)


@pytest.mark.parametrize(
    ("low", "size"),
    [
        ((128, 128), (512, 512)),  # the training crop: both axes by row sums
        ((10, 8), (40, 32)),
        ((3, 5), (24, 10)),  # the fewest rows the row sums take, scale 8 and 2
        ((10, 13), (40, 50)),  # H by row sums, W (non-integer scale) by the dense product
        ((7, 8), (21, 32)),  # scale 3 (not a power of two): H dense, W by row sums
        ((2, 9), (8, 36)),  # 2 rows: dense
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_upsample_and_adjoint_match_interpolate(low, size, dtype):
    """`upsample` equals F.interpolate and `upsample_adjoint` equals its autograd backward, for the sizes that take the
    row sums and for those that fall back to the dense path."""
    from maskformer.criterion import upsample as up

    g = torch.Generator().manual_seed(5)
    src = (torch.randn(3, *low, generator=g, dtype=dtype) * 5).requires_grad_()
    ref = F.interpolate(src[:, None], size=size, mode="bilinear", align_corners=False).flatten(1)
    grad_out = torch.randn(ref.shape, generator=g, dtype=dtype)
    (grad_ref,) = torch.autograd.grad(ref, src, grad_out)
    tol = {"atol": 1e-12, "rtol": 1e-12} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-6}
    torch.testing.assert_close(up.upsample(src.detach(), size), ref.detach(), **tol)
    torch.testing.assert_close(up.upsample_adjoint(grad_out, src.shape, size), grad_ref, **tol)
    banded = [up._band(n_out, n_in, dtype, src.device) is not None for n_out, n_in in zip(size, low)]
    expected = [n_in >= 3 and n_out % n_in == 0 and (n_out // n_in) in (2, 4, 8) for n_out, n_in in zip(size, low)]
    assert banded == expected


def test_fused_loss_without_gradient_gives_the_same_values():
    """Under no_grad (or for a src that needs none) the gradients are not made; the values stay the same."""
    g = torch.Generator().manual_seed(6)
    src = torch.randn(5, 16, 16, generator=g) * 3
    targets = torch.rand(5, 64, 64, generator=g) > 0.5
    with torch.no_grad():
        plain = upsampled_focal_dice_loss(src, targets, 4.0)
    with_grad = upsampled_focal_dice_loss(src.clone().requires_grad_(), targets, 4.0)
    assert with_grad[0].requires_grad and not plain[0].requires_grad
    torch.testing.assert_close(plain[0], with_grad[0].detach(), atol=0, rtol=0)
    torch.testing.assert_close(plain[1], with_grad[1].detach(), atol=0, rtol=0)
