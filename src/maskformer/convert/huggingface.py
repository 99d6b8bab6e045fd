"""transformers ``MaskFormerForInstanceSegmentation`` weights <-> this project's state dict.

One rename table (transformers key -> our key) serves both directions. transformers keeps separate q/k/v projections
where this project (like the original) packs them: DETR attention into ``nn.MultiheadAttention.in_proj_weight``
``[3C, C]`` and Swin window attention into ``qkv`` ``[3C, C]``, both in q, k, v order. Reading, the three are
concatenated under a virtual key (``...self_attn.in_proj_weight``, ``...attention.self.qkv.weight``) before renaming;
writing, our packed tensor is split into thirds. Both attention codes scale q.k by head_dim^-0.5 (transformers after
the product, PyTorch before), so no weight rescaling is needed. BatchNorm weights and running statistics become
FrozenBN buffers: in eval mode both compute ``x * w / sqrt(var + 1e-5) + (b - mean * w / sqrt(var + 1e-5))``.

Key names are accepted in both layouts transformers uses: the one ``save_pretrained`` writes (``out_proj``, ``fc1``)
and the in-memory one (``o_proj``, ``mlp.fc1``).
"""

from __future__ import annotations

import re

import torch

from ..errors import CheckpointError
from .rename import DROP, _short, convert_state, rename_keys

_PLM = r"model\.pixel_level_module\."
_ENC = _PLM + r"encoder\."
_SWIN = _ENC + r"model\."
_BLK = _SWIN + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
_FPN = _PLM + r"decoder\.fpn\."
_TM = r"model\.transformer_module\."
_DEC = _TM + r"decoder\.layers\.(\d+)\."
_BN = r"(weight|bias|running_mean|running_var)"
_WB = r"(weight|bias)"
_OB = r"backbone.layers.\1.blocks.\2."
_OD = r"predictor.transformer.decoder.layers.\1."


def _resnet_stage_rules() -> list[tuple[str, str | None]]:
    """stages.{0..3} -> res{2..5}; layer.{0,1,2} -> conv{1,2,3}; BatchNorm "normalization" -> FrozenBN "norm"."""
    rules = []
    for s in range(4):
        hf, ours = _ENC + rf"encoder\.stages\.{s}\.layers\.(\d+)\.", rf"backbone.res{s + 2}.\1."
        rules += [
            (hf + r"shortcut\.convolution\.weight", ours + "shortcut.weight"),
            (hf + r"shortcut\.normalization\." + _BN, ours + r"shortcut.norm.\2"),
        ]
        for k in range(3):
            rules += [
                (hf + rf"layer\.{k}\.convolution\.weight", ours + f"conv{k + 1}.weight"),
                (hf + rf"layer\.{k}\.normalization\." + _BN, ours + rf"conv{k + 1}.norm.\2"),
            ]
    return rules


def _fpn_rules() -> list[tuple[str, str | None]]:
    """FPN ``layers.{0,1,2}`` fuse res4, res3, res2: lateral ``proj`` = ``adapter_{3,2,1}``, ``block`` =
    ``layer_{3,2,1}`` (conv at index 0, GroupNorm at index 1)."""
    rules = []
    for i in range(3):
        n = 3 - i
        rules += [
            (_FPN + rf"layers\.{i}\.proj\.0\.weight", f"pixel_decoder.adapter_{n}.weight"),
            (_FPN + rf"layers\.{i}\.proj\.1\." + _WB, rf"pixel_decoder.adapter_{n}.norm.\1"),
            (_FPN + rf"layers\.{i}\.block\.0\.weight", f"pixel_decoder.layer_{n}.weight"),
            (_FPN + rf"layers\.{i}\.block\.1\." + _WB, rf"pixel_decoder.layer_{n}.norm.\1"),
        ]
    return rules


HF_RULES: list[tuple[str, str | None]] = [
    # consumed on purpose, not loaded
    (r".*\.num_batches_tracked", DROP),  # BN step counter: FrozenBN has none
    (r"criterion\.empty_weight", DROP),  # loss constant, rebuilt from loss.no_object_weight
    # transformers' Swin keeps a final LayerNorm after the last stage that only feeds its pooler; MaskFormer reads the
    # four stage outputs through their own norms (hidden_states_norms -> norm0..3) and never uses it
    (_SWIN + r"layernorm\." + _WB, DROP),
    # Swin backbone
    (_SWIN + r"embeddings\.patch_embeddings\.projection\." + _WB, r"backbone.patch_embed.proj.\1"),
    (_SWIN + r"embeddings\.norm\." + _WB, r"backbone.patch_embed.norm.\1"),
    (_BLK + r"layernorm_before\." + _WB, _OB + r"norm1.\3"),
    (_BLK + r"layernorm_after\." + _WB, _OB + r"norm2.\3"),
    (_BLK + r"attention\.self\.(relative_position_bias_table|relative_position_index)", _OB + r"attn.\3"),
    (_BLK + r"attention\.self\.qkv\." + _WB, _OB + r"attn.qkv.\3"),  # virtual: query|key|value concatenated
    (_BLK + r"attention\.output\.dense\." + _WB, _OB + r"attn.proj.\3"),
    (_BLK + r"intermediate\.dense\." + _WB, _OB + r"mlp.fc1.\3"),
    (_BLK + r"output\.dense\." + _WB, _OB + r"mlp.fc2.\3"),
    (
        _SWIN + r"encoder\.layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)",
        r"backbone.layers.\1.downsample.\2.\3",
    ),
    (_ENC + r"hidden_states_norms\.(\d+)\." + _WB, r"backbone.norm\1.\2"),
    # (a ModuleDict keyed by stage name in some transformers versions: stage1..4 -> norm0..3)
    *[(_ENC + rf"hidden_states_norms\.stage{i + 1}\." + _WB, rf"backbone.norm{i}.\1") for i in range(4)],
    # ResNet backbone
    (_ENC + r"embedder\.embedder\.convolution\.weight", "backbone.stem.conv1.weight"),
    (_ENC + r"embedder\.embedder\.normalization\." + _BN, r"backbone.stem.conv1.norm.\1"),
    *_resnet_stage_rules(),
    # FPN pixel decoder: stem = layer_4 on res5
    (_FPN + r"stem\.0\.weight", "pixel_decoder.layer_4.weight"),
    (_FPN + r"stem\.1\." + _WB, r"pixel_decoder.layer_4.norm.\1"),
    *_fpn_rules(),
    (_PLM + r"decoder\.mask_projection\." + _WB, r"pixel_decoder.mask_features.\1"),
    # transformer predictor
    (_TM + r"queries_embedder\.weight", "predictor.query_embed.weight"),
    (_TM + r"input_projection\." + _WB, r"predictor.input_proj.\1"),
    (_DEC + r"self_attn\.in_proj_" + _WB, _OD + r"self_attn.in_proj_\2"),  # virtual: q|k|v_proj concatenated
    (_DEC + r"self_attn\.(?:out_proj|o_proj)\." + _WB, _OD + r"self_attn.out_proj.\2"),
    (_DEC + r"encoder_attn\.in_proj_" + _WB, _OD + r"multihead_attn.in_proj_\2"),
    (_DEC + r"encoder_attn\.(?:out_proj|o_proj)\." + _WB, _OD + r"multihead_attn.out_proj.\2"),
    (_DEC + r"self_attn_layer_norm\." + _WB, _OD + r"norm1.\2"),
    (_DEC + r"encoder_attn_layer_norm\." + _WB, _OD + r"norm2.\2"),
    (_DEC + r"final_layer_norm\." + _WB, _OD + r"norm3.\2"),
    (_DEC + r"(?:mlp\.)?fc1\." + _WB, _OD + r"linear1.\2"),
    (_DEC + r"(?:mlp\.)?fc2\." + _WB, _OD + r"linear2.\2"),
    (_TM + r"decoder\.layernorm\." + _WB, r"predictor.transformer.decoder.norm.\1"),
    # heads
    (r"class_predictor\." + _WB, r"predictor.class_embed.\1"),
    (r"mask_embedder\.(\d+)\.0\." + _WB, r"predictor.mask_embed.layers.\1.\2"),
]

# (pattern, virtual packed name, part names in packing order)
_PACKED: list[tuple[re.Pattern, str, tuple[str, str, str]]] = [
    (re.compile(r"(.*\.(?:self_attn|encoder_attn))\.(q|k|v)_proj\.(weight|bias)"), "{}.in_proj_{}", ("q", "k", "v")),
    (re.compile(r"(.*\.attention\.self)\.(query|key|value)\.(weight|bias)"), "{}.qkv.{}", ("query", "key", "value")),
]


def _packed_part(key: str) -> tuple[str, int] | None:
    """``...self_attn.k_proj.weight`` -> (``...self_attn.in_proj_weight``, 1); None for other keys."""
    for pattern, fmt, parts in _PACKED:
        m = pattern.fullmatch(key)
        if m:
            return fmt.format(m[1], m[3]), parts.index(m[2])
    return None


def pack_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate every complete, same-shaped q/k/v triple into its virtual packed key; other keys pass through
    (an incomplete triple stays unpacked and is then reported as unconsumed)."""
    groups: dict[str, dict[int, str]] = {}
    for key in state:
        part = _packed_part(key)
        if part:
            groups.setdefault(part[0], {})[part[1]] = key
    out = dict(state)
    for packed, parts in groups.items():
        if sorted(parts) != [0, 1, 2] or len({tuple(state[parts[i]].shape) for i in range(3)}) != 1:
            continue
        out[packed] = torch.cat([state[parts[i]] for i in range(3)], dim=0)
        for i in range(3):
            del out[parts[i]]
    return out


def hf_state_to_ours(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *, source_name: str
) -> dict[str, torch.Tensor]:
    """transformers state dict -> ``target``'s keys (every key consumed or dropped on purpose, every target key
    filled, shapes equal; otherwise CheckpointError listing the keys). A ``target`` with trainable BatchNorm (a BN
    model's config that ``to-hf`` stored) gets its ``num_batches_tracked`` counters at 0: transformers' files do not
    hold them, and eval-mode BatchNorm does not read them."""
    out = convert_state(pack_qkv(state), HF_RULES, {k: v for k, v in target.items() if not _counter(k)},
                        source_name=source_name)  # fmt: skip
    out.update({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in target.items() if _counter(k)})
    return out


def _counter(key: str) -> bool:
    return key.endswith(".num_batches_tracked")


def ours_state_to_hf(
    state: dict[str, torch.Tensor], hf_target: dict[str, torch.Tensor], *, source_name: str
) -> dict[str, torch.Tensor]:
    """Our state dict -> the keys of a transformers model's ``state_dict()`` (``hf_target``).

    Keys the table drops (BN counters, the loss constant, Swin's unused final LayerNorm) are left out: the
    transformers model keeps its own values for them. Every one of our tensors must be used.
    """
    packed = {k: _packed_part(k) for k in hf_target}
    names = rename_keys([p[0] if p else k for k, p in packed.items()], HF_RULES)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, mismatched = [], []
    for hf_key, part in packed.items():
        ours = names[part[0] if part else hf_key]
        if ours is None:
            continue
        if ours not in state:
            missing.append(f"{hf_key} (from {ours})")
            continue
        value = state[ours]
        used.add(ours)
        if part:
            if value.shape[0] % 3:
                mismatched.append(f"{ours} {tuple(value.shape)} cannot be split into q, k, v")
                continue
            value = value.chunk(3, dim=0)[part[1]]
        if tuple(value.shape) != tuple(hf_target[hf_key].shape):
            mismatched.append(f"{ours} {tuple(value.shape)} -> {hf_key} {tuple(hf_target[hf_key].shape)}")
            continue
        out[hf_key] = value.detach().to(hf_target[hf_key].dtype).clone()
    # our BatchNorm (norm: BN) counters have no place in transformers' file: its own counter is kept
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked")]
    problems = []
    if unused:
        problems.append(f"{len(unused)} keys have no transformers equivalent: {_short(unused)}")
    if missing:
        problems.append(f"{len(missing)} transformers keys not filled: {_short(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_short(mismatched)}")
    if problems:
        raise CheckpointError(f"{source_name}: " + "; ".join(problems))
    return out


def dropped_hf_keys(keys: list[str]) -> list[str]:
    """The keys of a transformers state dict that the table consumes without loading."""
    names = rename_keys([p[0] if (p := _packed_part(k)) else k for k in keys], HF_RULES)
    return [k for k in keys if names[p[0] if (p := _packed_part(k)) else k] is None]
