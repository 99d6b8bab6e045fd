"""Pixel decoders: the FPN ("BasePixelDecoder") and the "+6 Enc" variant with a transformer encoder on res5.

Keys as the original: ``adapter_{1..3}`` (1x1 lateral + GN), ``layer_{1..4}`` (3x3 + GN + ReLU), ``mask_features``
(3x3 with bias, no norm); the encoder variant adds ``input_proj`` and ``transformer.encoder.layers.*`` and its
``layer_4`` maps 256 -> 256.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone.base import FeatureSpec
from .layers import ConvNorm, c2_xavier_fill
from .position_encoding import PositionEmbeddingSine
from .transformer import Transformer


def _norm(kind: str, channels: int) -> nn.Module | None:
    if kind == "GN":
        return nn.GroupNorm(32, channels)
    if kind == "":
        return None
    raise ValueError(f"unknown pixel-decoder norm '{kind}' (expected GN or '')")


class FPNPixelDecoder(nn.Module):
    """Top-down FPN over res5..res2 producing stride-4 per-pixel embeddings.

    ``forward(features) -> (mask_features [B, mask_dim, H/4, W/4], transformer_input or None)``.
    """

    def __init__(
        self, *, input_specs: dict[str, FeatureSpec], conv_dim: int = 256, mask_dim: int = 256, norm: str = "GN"
    ) -> None:
        super().__init__()
        names = sorted(input_specs, key=lambda k: input_specs[k].stride)
        if len(names) != 4:
            raise ValueError(f"the pixel decoder expects 4 feature maps, got {names}")
        self.in_features = names
        bias = norm == ""
        for idx, name in enumerate(names):
            cin = input_specs[name].channels
            if idx == len(names) - 1:
                self.add_module(f"layer_{idx + 1}", self._output_conv(cin, conv_dim, norm, bias))
            else:
                self.add_module(f"adapter_{idx + 1}", ConvNorm(cin, conv_dim, 1, bias=bias, norm=_norm(norm, conv_dim)))
                self.add_module(f"layer_{idx + 1}", self._output_conv(conv_dim, conv_dim, norm, bias))
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                c2_xavier_fill(m)

    @staticmethod
    def _output_conv(cin: int, cout: int, norm: str, bias: bool) -> ConvNorm:
        return ConvNorm(cin, cout, 3, padding=1, bias=bias, norm=_norm(norm, cout), relu=True)

    def _top(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.layer_4(features[self.in_features[-1]]), None

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, transformer_input = self.forward_until_mask_features(features)
        return self.mask_features(y), transformer_input

    def forward_until_mask_features(
        self, features: dict[str, torch.Tensor], *, consume: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The FPN output [B, conv_dim, H/4, W/4] before the ``mask_features`` conv, and the transformer input.

        ``consume``: remove each feature map from ``features`` once used, so (without other references) the largest,
        res2, is freed before the stride-4 convolutions allocate their outputs (lower peak memory at inference)."""
        y, transformer_input = self._top(features)
        for idx in (2, 1, 0):
            name = self.in_features[idx]
            lateral = getattr(self, f"adapter_{idx + 1}")(features.pop(name) if consume else features[name])
            y = _add_upsampled(lateral, y)
            del lateral
            y = getattr(self, f"layer_{idx + 1}")(y)
        return y, transformer_input


def _add_upsampled(lateral: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """``lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")``. Without autograd and for an exact 2x
    step (every FPN level of an input divisible by 32) it adds ``top`` broadcast over 2x2 blocks into ``lateral`` in
    place: the same sums, without the upsampled and the summed activation-sized tensors."""
    (b, c, h, w), (th, tw) = lateral.shape, top.shape[-2:]
    if torch.is_grad_enabled() or (h, w) != (2 * th, 2 * tw) or top.dtype != lateral.dtype:
        return lateral + F.interpolate(top, size=(h, w), mode="nearest")
    lateral.view(b, c, th, 2, tw, 2).add_(top[:, :, :, None, :, None])
    return lateral


class TransformerEncoderPixelDecoder(FPNPixelDecoder):
    """FPN whose top is a DETR transformer encoder over res5 ("+6 Enc" in the paper).

    The encoder output ``[B, conv_dim, H/32, W/32]`` is also returned as the transformer decoder's input.
    """

    def __init__(
        self,
        *,
        input_specs: dict[str, FeatureSpec],
        conv_dim: int = 256,
        mask_dim: int = 256,
        norm: str = "GN",
        enc_layers: int = 6,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        pre_norm: bool = False,
    ) -> None:
        super().__init__(input_specs=input_specs, conv_dim=conv_dim, mask_dim=mask_dim, norm=norm)
        top = input_specs[self.in_features[-1]].channels
        del self.layer_4
        self.input_proj = nn.Conv2d(top, conv_dim, 1)
        c2_xavier_fill(self.input_proj)
        self.transformer = Transformer(
            d_model=conv_dim,
            nhead=nheads,
            enc_layers=enc_layers,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            pre_norm=pre_norm,
            with_decoder=False,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.layer_4 = self._output_conv(conv_dim, conv_dim, norm, norm == "")
        c2_xavier_fill(self.layer_4)

    def _top(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.input_proj(features[self.in_features[-1]])
        memory = self.transformer.encode(x, self.pe_layer(x))
        return self.layer_4(memory), memory
