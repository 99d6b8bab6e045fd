"""Normalization layers for backbones: detectron2-style FrozenBatchNorm2d and a factory by name."""

from __future__ import annotations

import torch
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed affine and statistics, all stored as buffers (so they are not parameters).

    ``y = x * weight / sqrt(running_var + eps) + (bias - running_mean * weight / sqrt(running_var + eps))``.
    Shapes: ``x [B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def frozen_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale [C], shift [C]) with ``forward(x) == x * scale + shift`` per channel."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.frozen_affine()
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def make_norm(kind: str, channels: int) -> nn.Module:
    """``FrozenBN`` (detectron2 default, no parameters) | ``BN`` | ``SyncBN`` | ``GN`` (32 groups) | ``""`` (none)."""
    if kind == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if kind == "BN":
        return nn.BatchNorm2d(channels)
    if kind == "SyncBN":
        return nn.SyncBatchNorm(channels)
    if kind == "GN":
        return nn.GroupNorm(min(32, channels), channels)
    if kind == "":
        return nn.Identity()
    raise ValueError(f"unknown norm '{kind}' (expected FrozenBN, BN, SyncBN, GN or '')")
