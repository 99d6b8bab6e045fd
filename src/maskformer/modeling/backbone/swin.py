"""Swin Transformer backbone behaving like the one MaskFormer uses (Swin-T/S/B/L).

Behaviour that matters for parity: the input is padded to a multiple of the patch size; inside every block the
normalised tokens are zero-padded to a multiple of the window and the padded tokens are *not* masked (only the
shifted-window mask, value -100, is applied); odd blocks shift by window//2 even when the map is smaller than the
window; PatchMerging pads odd sizes; each stage output goes through its own LayerNorm ``norm{i}``.
Keys: ``patch_embed.proj``, ``layers.{i}.blocks.{j}.attn.relative_position_bias_table``, ``norm0..norm3``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone, FeatureSpec

SWIN_SIZES: dict[str, dict] = {
    "tiny": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7},
    "small": {"embed_dim": 96, "depths": [2, 2, 18, 2], "num_heads": [3, 6, 12, 24], "window_size": 7},
    "base": {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "window_size": 12},
    "large": {"embed_dim": 192, "depths": [2, 2, 18, 2], "num_heads": [6, 12, 24, 48], "window_size": 12},
}


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample: zero whole residual branches with probability ``p`` (and rescale)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def relative_position_index(window: int) -> torch.Tensor:
    """``[W*W, W*W]`` index into the ``(2W-1)^2`` bias table for every (query, key) token pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias.

    ``x [nW*B, N=W*W, C]``, ``mask [nW, N, N]`` or None -> ``[nW*B, N, C]``.
    """

    def __init__(self, dim: int, *, window_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(bw, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """(Shifted-)window attention block. ``x [B, H*W, C]`` -> same shape."""

    def __init__(
        self, dim: int, *, num_heads: int, window_size: int, shift: int, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.window_size, self.shift, self.drop_path = window_size, shift, drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size=window_size, num_heads=num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None) -> torch.Tensor:
        b, _, c = x.shape
        ws = self.window_size
        y = self.norm1(x).view(b, h, w, c)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws  # (never negative, also where % truncates: ONNX)
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))  # padded tokens take part in attention, unmasked (as the original)
        hp, wp = h + pad_b, w + pad_r
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = y.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        windows = self.attn(windows, mask if self.shift else None)
        y = windows.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        y = y[:, :h, :w].reshape(b, h * w, c)
        x = x + drop_path(y, self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


def shifted_window_mask(hp: int, wp: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """``[nW, W*W, W*W]`` additive mask (0 or -100) keeping attention inside each region of the rolled map."""
    region = torch.zeros(hp, wp, device=device)
    cuts = ((0, -window), (-window, -shift), (-shift, None))
    label = 0
    for hs in cuts:
        for wsl in cuts:
            region[slice(*hs), slice(*wsl)] = label
            label += 1
    win = region.view(hp // window, window, wp // window, window).permute(0, 2, 1, 3).reshape(-1, window * window)
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat (order x00, x10, x01, x11) -> LayerNorm(4C) -> Linear(4C, 2C, no bias)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(
        self, dim: int, *, depth: int, num_heads: int, window_size: int, mlp_ratio: float, dpr: list[float], merge: bool
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads=num_heads,
                window_size=window_size,
                shift=0 if j % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                drop_path=dpr[j],
            )
            for j in range(depth)
        )
        self.downsample = PatchMerging(dim) if merge else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        ws = self.window_size
        hp, wp = (h + ws - 1) // ws * ws, (w + ws - 1) // ws * ws  # (no negative operands: ONNX truncates them)
        mask = shifted_window_mask(hp, wp, ws, ws // 2, x.device).to(x.dtype) if len(self.blocks) > 1 else None
        for blk in self.blocks:
            x = blk(x, h, w, mask)
        return x, (self.downsample(x, h, w) if self.downsample is not None else None)


class SwinTransformer(Backbone):
    """Swin backbone returning ``{"res2": s4, "res3": s8, "res4": s16, "res5": s32}`` (channels C, 2C, 4C, 8C)."""

    size_divisibility = 32

    def __init__(
        self,
        *,
        embed_dim: int = 96,
        depths: list[int] | tuple[int, ...] = (2, 2, 6, 2),
        num_heads: list[int] | tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.3,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.patch_embed.norm = nn.LayerNorm(embed_dim)
        n = sum(depths)
        rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # linear 0 -> rate over all blocks
        self.layers = nn.ModuleList()
        self.output_specs = {}
        for i, depth in enumerate(depths):
            dim = embed_dim * 2**i
            self.layers.append(
                SwinStage(
                    dim,
                    depth=depth,
                    num_heads=num_heads[i],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    dpr=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                    merge=i < len(depths) - 1,
                )
            )
            self.add_module(f"norm{i}", nn.LayerNorm(dim))
            self.output_specs[f"res{i + 2}"] = FeatureSpec(dim, patch_size * 2**i)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x [B,3,H,W] -> {res{i+2}: [B, C*2^i, ceil(H/4)/2^i.., ...]}``."""
        p = self.patch_size
        x = F.pad(x, (0, (p - x.shape[3] % p) % p, 0, (p - x.shape[2] % p) % p))
        x = self.patch_embed.proj(x)
        h, w = x.shape[2:]
        x = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        out = {}
        for i, stage in enumerate(self.layers):
            y, x_next = stage(x, h, w)
            y = getattr(self, f"norm{i}")(y)
            out[f"res{i + 2}"] = self.stage_map(y, h, w)
            if x_next is not None:
                x, h, w = x_next, (h + 1) // 2, (w + 1) // 2
        return out

    def stage_map(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Stage tokens ``[B, h*w, C]`` -> feature map ``[B, C, h, w]`` (NCHW-contiguous)."""
        return tokens.view(-1, h, w, tokens.shape[-1]).permute(0, 3, 1, 2).contiguous()
