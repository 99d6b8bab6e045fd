"""DETR transformer layers (post-norm by default), sequence-first ``[L, B, C]`` as the original.

Keys follow the original: ``encoder.layers.{i}.self_attn``, ``decoder.layers.{i}.multihead_attn``, ``linear1``,
``norm1..3`` and the decoder's shared final ``decoder.norm`` (applied to every intermediate output).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    """Self-attention + FFN. ``src [L, B, C]``, ``pos [L, B, C]`` -> ``[L, B, C]``."""

    def __init__(self, d_model: int, *, nhead: int, dim_feedforward: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = dropout
        self.pre_norm = pre_norm

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.relu(self.linear1(x)), self.dropout, self.training)
        return F.dropout(self.linear2(h), self.dropout, self.training)

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        drop = lambda t: F.dropout(t, self.dropout, self.training)  # noqa: E731
        if self.pre_norm:
            x = self.norm1(src)
            q = _with_pos(x, pos)
            src = src + drop(self.self_attn(q, q, x, need_weights=False)[0])
            return src + self._ffn(self.norm2(src))
        q = _with_pos(src, pos)
        src = self.norm1(src + drop(self.self_attn(q, q, src, need_weights=False)[0]))
        return self.norm2(src + self._ffn(src))


class DecoderLayer(nn.Module):
    """Self-attention over queries, cross-attention to memory, FFN.

    ``tgt [Q, B, C]``, ``memory [L, B, C]``, ``pos [L, B, C]``, ``query_pos [Q, B, C]`` -> ``[Q, B, C]``.
    """

    def __init__(self, d_model: int, *, nhead: int, dim_feedforward: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = dropout
        self.pre_norm = pre_norm

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor | None, query_pos: torch.Tensor | None
    ) -> torch.Tensor:
        drop = lambda t: F.dropout(t, self.dropout, self.training)  # noqa: E731
        mem_k = _with_pos(memory, pos)
        if self.pre_norm:
            x = self.norm1(tgt)
            q = _with_pos(x, query_pos)
            tgt = tgt + drop(self.self_attn(q, q, x, need_weights=False)[0])
            x = self.norm2(tgt)
            tgt = tgt + drop(self.multihead_attn(_with_pos(x, query_pos), mem_k, memory, need_weights=False)[0])
            x = self.norm3(tgt)
            return tgt + drop(self.linear2(drop(F.relu(self.linear1(x)))))
        q = _with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + drop(self.self_attn(q, q, tgt, need_weights=False)[0]))
        attn = self.multihead_attn(_with_pos(tgt, query_pos), mem_k, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + drop(attn))
        return self.norm3(tgt + drop(self.linear2(drop(F.relu(self.linear1(tgt))))))


class TransformerEncoder(nn.Module):
    """Stack of encoder layers; a final LayerNorm only in the pre-norm variant (as DETR)."""

    def __init__(self, layer: EncoderLayer, num_layers: int, norm: nn.LayerNorm | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return self.norm(src) if self.norm is not None else src


class TransformerDecoder(nn.Module):
    """Stack of decoder layers returning every layer's output through the shared final norm: ``[L, Q, B, C]``."""

    def __init__(self, layer: DecoderLayer, num_layers: int, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = norm

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None,
        query_pos: torch.Tensor | None,
        *,
        last_only: bool = False,
    ) -> torch.Tensor:
        outs = []
        for i, layer in enumerate(self.layers):
            tgt = layer(tgt, memory, pos, query_pos)
            if not last_only or i == len(self.layers) - 1:
                outs.append(self.norm(tgt))
        return torch.stack(outs)


class Transformer(nn.Module):
    """DETR transformer: ``enc_layers`` encoder layers (0 = identity) and ``dec_layers`` decoder layers.

    ``forward(src [B,C,H,W], query_embed [Q,C], pos [B,C,H,W]) -> (hs [L,B,Q,C], memory [B,C,H,W])``.
    Every parameter with dim > 1 is xavier-uniform initialised, as DETR.
    """

    def __init__(
        self,
        *,
        d_model: int = 256,
        nhead: int = 8,
        enc_layers: int = 0,
        dec_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        pre_norm: bool = False,
        with_decoder: bool = True,
    ) -> None:
        super().__init__()
        kw = {"nhead": nhead, "dim_feedforward": dim_feedforward, "dropout": dropout, "pre_norm": pre_norm}
        # DETR (and so the original) keeps the encoder's final LayerNorm in the pre-norm variant even with 0 layers
        enc_norm = nn.LayerNorm(d_model) if pre_norm else None
        self.encoder = TransformerEncoder(EncoderLayer(d_model, **kw), enc_layers, enc_norm)
        self.decoder = (
            TransformerDecoder(DecoderLayer(d_model, **kw), dec_layers, nn.LayerNorm(d_model)) if with_decoder else None
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def encode(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``src, pos [B,C,H,W] -> memory [B,C,H,W]``."""
        b, c, h, w = src.shape
        seq = self.encoder(src.flatten(2).permute(2, 0, 1), pos.flatten(2).permute(2, 0, 1))
        return seq.permute(1, 2, 0).view(b, c, h, w)

    def forward(
        self, src: torch.Tensor, query_embed: torch.Tensor, pos: torch.Tensor, *, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = src.shape
        pos_seq = pos.flatten(2).permute(2, 0, 1)
        memory = self.encoder(src.flatten(2).permute(2, 0, 1), pos_seq)
        query_pos = query_embed.unsqueeze(1).repeat(1, b, 1)
        tgt = torch.zeros_like(query_pos)
        hs = self.decoder(tgt, memory, pos_seq, query_pos, last_only=last_only)
        return hs.transpose(1, 2), memory.permute(1, 2, 0).view(b, c, h, w)
