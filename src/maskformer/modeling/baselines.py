"""The paper's two per-pixel baselines, sharing MaskFormer's backbone and pixel decoder.

* PerPixelBaseline: FPN + 1x1 classifier -> ``{"sem_logits": [B,K,H/4,W/4], "aux_outputs": []}``.
* PerPixelBaseline+: FPN + the transformer predictor with one query per class and no class head; each query's
  mask logits are that class's per-pixel logits -> ``{"sem_logits": [B,K,H/4,W/4], "aux_outputs": [5 x {...}]}``.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone.base import Backbone
from .heads import TransformerPredictor
from .layers import c2_msra_fill
from .maskformer import set_input_spec


class PerPixelBaseline(nn.Module):
    """Per-pixel classification with a 1x1 conv on the stride-4 mask features (keys ``predictor.weight``)."""

    def __init__(
        self,
        *,
        backbone: Backbone,
        pixel_decoder: nn.Module,
        num_classes: int,
        mask_dim: int = 256,
        size_divisibility: int = 32,
        pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
        pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.predictor = nn.Conv2d(mask_dim, num_classes, 1)
        c2_msra_fill(self.predictor)
        self.num_classes = num_classes
        set_input_spec(self, size_divisibility=size_divisibility, pixel_mean=pixel_mean, pixel_std=pixel_std)

    def forward(self, images: torch.Tensor, *, with_aux: bool = True) -> dict:
        mask_features, _ = self.pixel_decoder(self.backbone(images))
        return {"sem_logits": self.predictor(mask_features), "aux_outputs": []}


class PerPixelBaselinePlus(PerPixelBaseline):
    """Per-pixel classification through the transformer decoder: Q = K queries, query i is class i."""

    def __init__(
        self,
        *,
        backbone: Backbone,
        pixel_decoder: nn.Module,
        predictor: TransformerPredictor,
        num_classes: int,
        size_divisibility: int = 32,
        pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
        pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375),
    ) -> None:
        nn.Module.__init__(self)
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.num_classes = num_classes
        set_input_spec(self, size_divisibility=size_divisibility, pixel_mean=pixel_mean, pixel_std=pixel_std)

    def forward(self, images: torch.Tensor, *, with_aux: bool = True) -> dict:
        features = self.backbone(images)
        mask_features, _ = self.pixel_decoder(features)
        out = self.predictor(features["res5"], mask_features, with_aux=with_aux)
        aux = [{"sem_logits": a["pred_masks"]} for a in out["aux_outputs"]]
        return {"sem_logits": out["pred_masks"], "aux_outputs": aux}
