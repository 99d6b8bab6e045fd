"""Inference form of the Swin backbone's blocks: same arithmetic per token, less work around it.

``use_fast_swin_blocks(model)`` swaps every ``modeling.backbone.swin.SwinBlock`` of an inference copy for
``SwinBlock`` below and the backbone for one whose stage maps are channels-last views. Per block, compared with
the reference (``modeling/backbone/swin.py``):

- the qkv projection runs on the h*w real tokens only. The reference projects the zero-padded map, and a zero row
  projects to exactly the bias, so the padded positions are the bias row (bit-identical). Window padding costs
  8 % (1/4 resolution) to 72 % (1/32, 16 -> 21 at 512²) more tokens, so this removes that share of the qkv work;
- pad + roll + window partition is one row gather (``index_select`` with a precomputed index) instead of three
  copies, and window reverse + roll back + crop is another;
- the output projection runs after the crop (on h*w tokens, not the padded windows), with the residual addition in
  the same oneDNN call (``_linear_pointwise.binary``, bit-identical to linear + add);
- attention is ``F.scaled_dot_product_attention`` (fp32; bf16: ``baddbmm`` of the mask and the scaled q k^T, softmax,
  ``bmm``, faster at N = 49 there) with the relative-position bias and the shifted-window mask added once into a
  cached [nW, heads, N, N] mask (summation order only, ~1e-6);
- fc1 + GELU (erf) in one oneDNN call; in fp32 also fc2 + residual addition in another (bit-identical here).

In bf16 (autocast) the linear layers hold bf16 weights packed for oneDNN and take their input in bf16, as autocast's
linear would; the residual sums stay fp32. Equality with the reference: tests/test_fast_swin.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskformer.inference.accelerate.onednn import Linear, eager_onednn
from maskformer.modeling.backbone.swin import SwinBlock as ReferenceBlock
from maskformer.modeling.backbone.swin import SwinTransformer, shifted_window_mask

__all__ = ["ChannelsLastSwin", "SwinBlock", "use_fast_swin_blocks", "window_index"]


def window_index(h: int, w: int, window: int, shift: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Row indices for the gathers of a (shifted) window block on an h x w token map.

    Returns (gather [nW * N], scatter [h * w]): ``tokens_ext[gather]`` (tokens_ext = the h*w tokens followed by one
    padding row at index h*w) is the map padded to multiples of ``window``, rolled by -shift and cut into windows,
    window-major (the reference's order); ``windows[scatter]`` puts the window tokens back at the h*w positions.
    """
    hp, wp = -(-h // window) * window, -(-w // window) * window
    rows = (torch.arange(hp, device=device) + shift) % hp  # rolled map row r holds padded-map row (r + shift) % hp
    cols = (torch.arange(wp, device=device) + shift) % wp
    source = rows[:, None] * w + cols[None, :]
    source = torch.where((rows[:, None] < h) & (cols[None, :] < w), source, h * w)  # padding -> the extra row
    gather = source.view(hp // window, window, wp // window, window).permute(0, 2, 1, 3).reshape(-1)
    scatter = torch.empty(h * w, dtype=torch.long, device=device)
    real = gather < h * w
    scatter[gather[real]] = torch.arange(gather.numel(), device=device)[real]
    return gather, scatter


def _linear(layer: nn.Module, x: Tensor, *, post: str = "none", other: Tensor | None = None) -> Tensor:
    """``layer(x)`` followed by GELU (``post="gelu"``) or plus ``other``, fused into one oneDNN call where the layer
    is this folder's oneDNN ``Linear``; the plain ops otherwise. With bf16 weights x is taken in bf16 (what autocast
    does) and GELU is fused; the residual sum stays in fp32, unfused (a bf16 sum would round the residual stream)."""
    if isinstance(layer, Linear) and eager_onednn(x, layer.weight) and layer.weight.dtype == torch.bfloat16:
        x = x.to(torch.bfloat16)
    if isinstance(layer, Linear) and eager_onednn(x, layer.weight) and x.dtype == layer.weight.dtype:
        rows = x.numel() // x.shape[-1]
        weight = layer._packed.get(layer.weight, lambda: torch.ops.mkldnn._reorder_linear_weight(layer.weight, rows))
        if other is not None and other.dtype == x.dtype and other.shape[:-1] == x.shape[:-1]:
            return torch.ops.mkldnn._linear_pointwise.binary(x, other.contiguous(), weight, layer.bias, "add")
        if post == "gelu" and other is None:
            return torch.ops.mkldnn._linear_pointwise.default(x, weight, layer.bias, "gelu", [], "none")
    y = layer(x)
    if post == "gelu":
        y = F.gelu(y)
    return y if other is None else other + y


class SwinBlock(nn.Module):
    """Inference form of ``modeling.backbone.swin.SwinBlock`` (module docstring). ``x [B, h*w, C]`` -> same shape;
    ``mask`` is ignored (the block builds and caches its own bias + shift mask per map size)."""

    def __init__(self, block: ReferenceBlock) -> None:
        super().__init__()
        self.window_size, self.shift = block.window_size, block.shift
        self.norm1, self.norm2, self.mlp = block.norm1, block.norm2, block.mlp
        attn = block.attn
        self.qkv, self.proj, self.num_heads, self.scale = attn.qkv, attn.proj, attn.num_heads, attn.scale
        self.relative_position_bias_table = attn.relative_position_bias_table
        self.relative_position_index = attn.relative_position_index
        self._cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def _plan(self, h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """(gather, scatter, attention mask [nW or 1, heads, N, N]) for an h x w map, cached."""
        key = (h, w, dtype, device)
        if key not in self._cache:
            ws, heads = self.window_size, self.num_heads
            n = ws * ws
            gather, scatter = window_index(h, w, ws, self.shift, device)
            bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
            mask = bias.view(n, n, heads).permute(2, 0, 1)[None].float()  # [1, heads, N, N]
            if self.shift:
                hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
                mask = mask + shifted_window_mask(hp, wp, ws, ws // 2, device)[:, None]  # [nW, heads, N, N]
            if dtype != torch.float32:  # bf16: one mask per window, the input of baddbmm in forward (a view there)
                mask = mask.expand(gather.numel() // n, heads, n, n)
            self._cache = {key: (gather, scatter, mask.to(dtype).contiguous())}  # one map size at a time
        return self._cache[key]

    def forward(self, x: Tensor, h: int, w: int, mask: Tensor | None = None) -> Tensor:
        del mask
        b, _, c = x.shape
        heads, n = self.num_heads, self.window_size**2
        y = self.norm1(x)
        y = torch.cat([y, y.new_zeros(b, 1, c)], dim=1)  # the padding row (zeros after the norm, as the reference)
        qkv = self.qkv(y)  # [B, h*w + 1, 3C]; the last row is the bias, what the reference's padded tokens get
        gather, scatter, attn_mask = self._plan(h, w, qkv.dtype, x.device)
        windows = qkv.index_select(1, gather).view(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        if attn_mask.shape[0] > 1 and b > 1:
            attn_mask = attn_mask.repeat(b, 1, 1, 1)
        q, k, v = windows[0], windows[1], windows[2]  # [B * nW, heads, N, d]
        if q.dtype == torch.float32:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        else:  # bf16: mask + scale * q k^T in one batched product, then softmax and a second product: faster than
            # the fused kernel at N = 49 (benchmarks/profile_predict.py --model swin-t --bf16)
            d = c // heads
            scores = torch.baddbmm(
                attn_mask.reshape(-1, n, n),
                q.reshape(-1, n, d),
                k.reshape(-1, n, d).transpose(1, 2),
                alpha=self.scale,
            )
            out = torch.bmm(scores.softmax(-1), v.reshape(-1, n, d)).view(q.shape)
        out = out.transpose(1, 2).reshape(b, -1, c).index_select(1, scatter)  # [B, h*w, C]
        x = _linear(self.proj, out, other=x)
        return _linear(self.mlp.fc2, _linear(self.mlp.fc1, self.norm2(x), post="gelu"), other=x)


class ChannelsLastSwin(SwinTransformer):
    """A ``SwinTransformer`` whose stage maps are channels-last views of the tokens (same values, no NCHW copy: the
    pixel decoder runs channels-last). Set as the class of an inference copy's backbone."""

    def stage_map(self, tokens: Tensor, h: int, w: int) -> Tensor:
        return tokens.view(-1, h, w, tokens.shape[-1]).permute(0, 3, 1, 2)


def use_fast_swin_blocks(model: nn.Module) -> int:
    """Swap, in place, every reference ``SwinBlock`` for :class:`SwinBlock` and give every ``SwinTransformer`` the
    channels-last stage maps (``ChannelsLastSwin``). Returns the number of swapped blocks. Inference copies only
    (the blocks keep the parameters, not the training behaviour: no drop-path)."""
    swapped = 0
    for module in list(model.modules()):
        if type(module) is SwinTransformer:
            module.__class__ = ChannelsLastSwin
        for name, child in list(module.named_children()):
            if isinstance(child, ReferenceBlock):
                setattr(module, name, SwinBlock(child))
                swapped += 1
    return swapped
