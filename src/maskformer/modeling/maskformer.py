"""The MaskFormer meta-architecture: backbone -> pixel decoder -> transformer predictor.

``forward`` takes a normalised, padded batch and returns the same dict in train and eval; it never computes losses
and never post-processes (``maskformer.criterion.losses`` and ``maskformer.inference.postprocess`` do).
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone.base import Backbone
from .heads import TransformerPredictor


def set_input_spec(
    module: nn.Module, *, size_divisibility: int, pixel_mean: tuple[float, ...], pixel_std: tuple[float, ...]
) -> None:
    """The input a segmentation model expects: 0..255 RGB statistics ([3], not saved) and the padding multiple."""
    module.size_divisibility = size_divisibility
    module.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32), persistent=False)
    module.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32), persistent=False)


class MaskFormer(nn.Module):
    """``forward(images [B,3,H,W], with_aux=True)`` ->
    ``{"pred_logits": [B,Q,K+1], "pred_masks": [B,Q,H/4,W/4], "aux_outputs": [5 x {"pred_logits", "pred_masks"}]}``.

    ``with_aux=False`` is the lean inference path: only the last decoder layer goes through the heads (the original
    computes all six mask einsums at inference too; the final outputs agree up to float rounding).
    ``pixel_mean``/``pixel_std`` ([3], 0..255 RGB) and ``size_divisibility`` describe the expected input; they are
    used by the Predictor and the data loader, not inside ``forward``.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        pixel_decoder: nn.Module,
        predictor: TransformerPredictor,
        num_classes: int,
        transformer_in_feature: str = "res5",
        size_divisibility: int = 32,
        pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
        pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.num_classes = num_classes
        self.transformer_in_feature = transformer_in_feature
        set_input_spec(self, size_divisibility=size_divisibility, pixel_mean=pixel_mean, pixel_std=pixel_std)

    def forward(self, images: torch.Tensor, *, with_aux: bool = True) -> dict:
        features = self.backbone(images)
        mask_conv = None
        if torch.is_grad_enabled() and hasattr(self.pixel_decoder, "forward_until_mask_features"):
            # training: the pixel decoder's last convolution runs inside the mask product, whose backward then only
            # carries the matched queries' rows through it (same values; see modeling.mask_product)
            mask_features, encoder_out = self.pixel_decoder.forward_until_mask_features(features)
            mask_conv = self.pixel_decoder.mask_features
        else:
            mask_features, encoder_out = self.pixel_decoder(features)
        x = (
            encoder_out
            if self.transformer_in_feature == "transformer_encoder"
            else features[self.transformer_in_feature]
        )
        return self.predictor(x, mask_features, with_aux=with_aux, mask_conv=mask_conv)

    def mask_parts(self, images: torch.Tensor) -> tuple[torch.Tensor, nn.Conv2d, torch.Tensor, torch.Tensor]:
        """The lean forward stopped before its last two linear steps, for inference code that reorders them
        (``inference.accelerate`` folds the ``mask_features`` conv into the mask embeddings). Needs a pixel decoder
        with ``forward_until_mask_features``; frees each feature map once used.

        Returns (y [B, C, H/4, W/4] = the input of ``pixel_decoder.mask_features``, that conv, mask embeddings
        [B, Q, D], pred_logits [B, Q, K+1]); ``pred_masks = einsum("bqd,bdhw->bqhw", embed, conv(y))``.
        """
        features = self.backbone(images)
        x = features.get(self.transformer_in_feature)
        y, encoder_out = self.pixel_decoder.forward_until_mask_features(features, consume=True)
        x = encoder_out if self.transformer_in_feature == "transformer_encoder" else x
        embed, logits = self.predictor.last_layer_embeddings(x)
        return y, self.pixel_decoder.mask_features, embed, logits
