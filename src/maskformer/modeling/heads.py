"""The transformer predictor: N learned queries attend to image features and become (class, mask embedding) pairs."""

from __future__ import annotations

import torch
from torch import nn

from .layers import MLP, c2_xavier_fill
from .mask_product import layer_mask_logits
from .position_encoding import PositionEmbeddingSine
from .transformer import Transformer


class TransformerPredictor(nn.Module):
    """DETR decoder over the transformer input plus the class and mask heads.

    ``forward(x [B,Cin,h,w], mask_features [B,D,H4,W4], with_aux=True)`` returns
    ``{"pred_logits": [B,Q,K+1], "pred_masks": [B,Q,H4,W4], "aux_outputs": [{...} for decoder layers 1..L-1]}``.
    With ``mask_classification=False`` (PerPixelBaseline+) there is no class head and ``pred_logits`` is absent.
    Every layer's output goes through the decoder's shared final LayerNorm before the heads (as the original).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_queries: int = 100,
        hidden_dim: int = 256,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        enc_layers: int = 0,
        dec_layers: int = 6,
        pre_norm: bool = False,
        mask_dim: int = 256,
        enforce_input_proj: bool = False,
        mask_classification: bool = True,
    ) -> None:
        super().__init__()
        self.mask_classification = mask_classification
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer = Transformer(
            d_model=hidden_dim,
            nhead=nheads,
            enc_layers=enc_layers,
            dec_layers=dec_layers,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            pre_norm=pre_norm,
        )
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if in_channels != hidden_dim or enforce_input_proj:
            self.input_proj = nn.Conv2d(in_channels, hidden_dim, 1)
            c2_xavier_fill(self.input_proj)
        else:
            self.input_proj = nn.Sequential()
        if mask_classification:
            self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def last_layer_embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mask embeddings [B, Q, mask_dim], class logits [B, Q, K+1] or None) of the last decoder layer."""
        pos = self.pe_layer(x)
        hs, _ = self.transformer(self.input_proj(x), self.query_embed.weight, pos, last_only=True)
        return self.mask_embed(hs[-1]), (self.class_embed(hs[-1]) if self.mask_classification else None)

    def forward(
        self, x: torch.Tensor, mask_features: torch.Tensor, *, with_aux: bool = True, mask_conv: nn.Conv2d | None = None
    ) -> dict[str, torch.Tensor | list]:
        """``mask_conv``: when given, ``mask_features`` is its input and the per-pixel embeddings are
        ``mask_conv(mask_features)``, computed inside the mask product (see ``mask_product.layer_mask_logits``)."""
        pos = self.pe_layer(x)
        hs, _ = self.transformer(self.input_proj(x), self.query_embed.weight, pos, last_only=not with_aux)
        # hs: [L, B, Q, C]; one product for all layers at once, whose backward multiplies only the gradient rows of
        # supervised (matched) queries
        masks = layer_mask_logits(self.mask_embed(hs), mask_features, mask_conv)
        logits = self.class_embed(hs).unbind(0) if self.mask_classification else None
        out: dict[str, torch.Tensor | list] = {"pred_masks": masks[-1]}
        if logits is not None:
            out["pred_logits"] = logits[-1]
        aux = []
        for i in range(len(masks) - 1):
            layer = {"pred_masks": masks[i]}
            if logits is not None:
                layer["pred_logits"] = logits[i]
            aux.append(layer)
        out["aux_outputs"] = aux
        return out
