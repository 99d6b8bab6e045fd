"""ResNet in detectron2's layout (keys ``stem.conv1``, ``res2.0.conv1.norm`` ...): R50, R101 and R101c.

Stride sits in the 3x3 conv (torchvision style). R101c ("DeepLab") has a 3-conv stem with 128 output channels and
res5 blocks dilated by the multi-grid ``[1, 2, 4]`` while block 0 keeps stride 2, so the output stride stays 32.
Norm defaults to FrozenBN (buffers only), as every original config; BN/GN are there for training from scratch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvNorm, c2_msra_fill
from .base import Backbone, FeatureSpec
from .norm import make_norm

DEPTH_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1, plus a projection shortcut when shapes change."""

    def __init__(self, in_ch: int, out_ch: int, *, bottleneck: int, stride: int, dilation: int, norm: str) -> None:
        super().__init__()
        self.shortcut = (
            ConvNorm(in_ch, out_ch, 1, stride=stride, norm=make_norm(norm, out_ch)) if in_ch != out_ch else None
        )
        self.conv1 = ConvNorm(in_ch, bottleneck, 1, norm=make_norm(norm, bottleneck), relu=True)
        self.conv2 = ConvNorm(
            bottleneck,
            bottleneck,
            3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            norm=make_norm(norm, bottleneck),
            relu=True,
        )
        self.conv3 = ConvNorm(bottleneck, out_ch, 1, norm=make_norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        # accumulate into conv3's fresh output instead of allocating a third activation-sized tensor
        out = self.conv3(self.conv2(self.conv1(x)))
        return F.relu_(out.add_(identity))


class Stem(nn.Module):
    """Basic stem (7x7/2 conv) or DeepLab stem (3x3/2, 3x3, 3x3), then 3x3/2 max-pool: stride 4 overall."""

    def __init__(self, *, kind: str, out_channels: int, norm: str) -> None:
        super().__init__()
        if kind == "basic":
            self.conv1 = ConvNorm(
                3, out_channels, 7, stride=2, padding=3, norm=make_norm(norm, out_channels), relu=True
            )
        elif kind == "deeplab":
            half = out_channels // 2
            self.conv1 = ConvNorm(3, half, 3, stride=2, padding=1, norm=make_norm(norm, half), relu=True)
            self.conv2 = ConvNorm(half, half, 3, padding=1, norm=make_norm(norm, half), relu=True)
            self.conv3 = ConvNorm(half, out_channels, 3, padding=1, norm=make_norm(norm, out_channels), relu=True)
        else:
            raise ValueError(f"unknown ResNet stem '{kind}' (expected basic or deeplab)")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.kind == "deeplab":
            x = self.conv3(self.conv2(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNet(Backbone):
    """ResNet returning ``{"res2": s4, "res3": s8, "res4": s16, "res5": s32}``.

    Channels: res2 = 4 * width_per_group, doubling per stage (256/512/1024/2048 for R50).
    """

    def __init__(
        self,
        *,
        blocks: list[int],
        stem: str = "basic",
        stem_out_channels: int = 64,
        width_per_group: int = 64,
        res5_multi_grid: list[int] | None = None,
        norm: str = "FrozenBN",
    ) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise ValueError(f"ResNet needs 4 stage block counts, got {blocks}")
        multi_grid = res5_multi_grid or [1] * blocks[3]
        if len(multi_grid) != blocks[3]:
            raise ValueError(f"res5_multi_grid {multi_grid} must have one entry per res5 block ({blocks[3]})")
        self.stem = Stem(kind=stem, out_channels=stem_out_channels, norm=norm)
        in_ch, bottleneck = stem_out_channels, width_per_group
        self.output_specs = {}
        self.stage_names = []
        for i, n in enumerate(blocks):
            name, out_ch = f"res{i + 2}", bottleneck * 4
            layers = []
            for b in range(n):
                layers.append(
                    Bottleneck(
                        in_ch,
                        out_ch,
                        bottleneck=bottleneck,
                        stride=2 if (b == 0 and i > 0) else 1,
                        dilation=multi_grid[b] if i == 3 else 1,
                        norm=norm,
                    )
                )
                in_ch = out_ch
            self.add_module(name, nn.Sequential(*layers))
            self.output_specs[name] = FeatureSpec(out_ch, 4 * 2**i)
            self.stage_names.append(name)
            bottleneck *= 2
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                c2_msra_fill(m)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x [B,3,H,W] -> {res2 [B,C2,H/4,W/4], ..., res5 [B,C5,H/32,W/32]}`` (ceil for odd sizes)."""
        out = {}
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
            out[name] = x
        return out
