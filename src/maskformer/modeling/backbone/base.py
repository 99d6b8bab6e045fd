"""The backbone feature contract: every backbone returns ``{name: [B, C, H/stride, W/stride]}``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureSpec:
    """One output feature map: its channel count and stride relative to the input."""

    channels: int
    stride: int


class Backbone(nn.Module):
    """Base class. Subclasses set ``output_specs`` ({"res2": FeatureSpec(256, 4), ...}) and implement forward.

    ``forward(x: [B,3,H,W]) -> {name: [B, C_name, ceil(H/stride), ceil(W/stride)]}`` (exact rounding depends on the
    backbone's padding; callers pad the input to ``size_divisibility`` first).
    """

    output_specs: dict[str, FeatureSpec]
    size_divisibility: int = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
