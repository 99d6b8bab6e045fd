"""Adapter: any timm model created with ``features_only=True`` becomes a backbone with res2..res5."""

from __future__ import annotations

import torch

from ...errors import ConfigError
from .base import Backbone, FeatureSpec


class TimmBackbone(Backbone):
    """Wraps ``timm.create_model(name, features_only=True, pretrained=...)``.

    The feature maps with reductions 4, 8, 16 and 32 become ``res2..res5``; channels are read from timm's
    ``feature_info``. NHWC outputs (some timm models) are permuted to NCHW.
    """

    size_divisibility = 32

    def __init__(self, *, name: str, pretrained: bool = False) -> None:
        super().__init__()
        import timm

        try:
            self.body = timm.create_model(name, features_only=True, pretrained=pretrained)
        except RuntimeError as e:
            raise ConfigError(f"model.backbone.timm_name: timm cannot build '{name}' ({e})") from None
        info = self.body.feature_info
        by_reduction = {r: i for i, r in enumerate(info.reduction())}
        missing = [r for r in (4, 8, 16, 32) if r not in by_reduction]
        if missing:
            raise ConfigError(
                f"model.backbone.timm_name: '{name}' has no feature maps at strides {missing} "
                f"(it offers {info.reduction()})"
            )
        self._indices = [by_reduction[r] for r in (4, 8, 16, 32)]
        channels = info.channels()
        self.output_specs = {f"res{k + 2}": FeatureSpec(channels[i], 4 * 2**k) for k, i in enumerate(self._indices)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.body(x)
        out = {}
        for k, i in enumerate(self._indices):
            f = feats[i]
            c = self.output_specs[f"res{k + 2}"].channels
            if f.shape[1] != c and f.shape[-1] == c:
                f = f.permute(0, 3, 1, 2)
            out[f"res{k + 2}"] = f.contiguous()
        return out
