"""Config translation between transformers' ``MaskFormerConfig`` (its ``config.json`` as a plain dict) and ``Config``.

Only what changes the forward pass must match exactly; anything transformers can express that this model cannot
compute the same way is a ``CheckpointError`` naming the setting. Training-only settings that differ (dropouts,
layer drop) are not errors: they are returned as notes, and the converted model keeps the original's behaviour.
No transformers import is needed here: the values are read from / written to plain dicts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..errors import CheckpointError
from ..modeling.backbone.resnet import DEPTH_BLOCKS

# transformers' defaults for keys an older or hand-written config.json may omit (MaskFormerConfig,
# MaskFormerSwinConfig / SwinConfig, ResNetConfig, the DETR decoder config).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "maskformer": {"fpn_feature_size": 256, "mask_feature_size": 256, "no_object_weight": 0.1, "dice_weight": 1.0,
                   "cross_entropy_weight": 1.0, "mask_weight": 20.0},
    "swin": {"image_size": 224, "patch_size": 4, "num_channels": 3, "embed_dim": 96, "depths": [2, 2, 6, 2],
             "num_heads": [3, 6, 12, 24], "window_size": 7, "mlp_ratio": 4.0, "qkv_bias": True,
             "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.1,
             "hidden_act": "gelu", "use_absolute_embeddings": False, "layer_norm_eps": 1e-5},
    "resnet": {"num_channels": 3, "embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
               "layer_type": "bottleneck", "hidden_act": "relu", "downsample_in_first_stage": False,
               "downsample_in_bottleneck": False},
    "detr": {"num_queries": 100, "decoder_layers": 6, "decoder_ffn_dim": 2048, "decoder_attention_heads": 8,
             "d_model": 256, "dropout": 0.1, "attention_dropout": 0.0, "activation_dropout": 0.0,
             "decoder_layerdrop": 0.0, "activation_function": "relu", "auxiliary_loss": False},
}  # fmt: skip
_STAGES = ["stage1", "stage2", "stage3", "stage4"]
# ResNet depths this project names by number (anything else is stored as explicit ``blocks``).
_NAMED_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}


@dataclass
class HFTranslation:
    """The result of reading a transformers config: our ``Config``, the class names and notes for the user."""

    cfg: Config
    classes: list[str]
    notes: list[str] = field(default_factory=list)


class _Reader:
    """Reads one section of config.json with transformers' defaults; errors name ``source`` and the key."""

    def __init__(self, data: dict, section: str, prefix: str, source: str) -> None:
        self.data, self.defaults, self.prefix, self.source = data, _DEFAULTS[section], prefix, source

    def __call__(self, key: str) -> Any:
        return self.data.get(key, self.defaults.get(key))

    def fail(self, key: str, why: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: {self.prefix}{key}={self(key)!r}: {why}")

    def require(self, key: str, expected: Any, why: str) -> None:
        if self(key) != expected:
            raise self.fail(key, f"{why} (only {expected!r} can be converted)")


def _square(value: Any, r: _Reader, key: str) -> int:
    """transformers allows (h, w) pairs for sizes; this model only square ones."""
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise r.fail(key, "only square sizes are supported")


def _classes(hf: dict, source: str) -> list[str]:
    id2label = hf.get("id2label") or {}
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise CheckpointError(f"{source}: id2label keys must be integers") from None
    if not by_id or sorted(by_id) != list(range(len(by_id))):
        raise CheckpointError(f"{source}: id2label must name classes 0..K-1 (found ids {sorted(by_id)[:10]})")
    num_labels = hf.get("num_labels")
    if num_labels is not None and num_labels != len(by_id):
        raise CheckpointError(f"{source}: num_labels={num_labels} but id2label has {len(by_id)} entries")
    return [by_id[i] for i in range(len(by_id))]


def _out_features(bb: dict, r: _Reader, *, forced: bool) -> None:
    # MaskFormer's pixel decoder needs all four stages; transformers forces them only for model_type "swin".
    if forced:
        return
    feats = bb.get("out_features")
    if feats is None and bb.get("out_indices") is not None:
        feats = [f"stage{i}" for i in bb["out_indices"]]
    if list(feats or []) != _STAGES:
        raise CheckpointError(f"{r.source}: {r.prefix}out_features={feats!r}: MaskFormer needs {_STAGES}")


def _swin_from_hf(bb: dict, cfg: Config, notes: list[str], source: str) -> None:
    r = _Reader(bb, "swin", "backbone_config.", source)
    r.require("num_channels", 3, "RGB input")
    r.require("use_absolute_embeddings", False, "MaskFormer's Swin has no absolute position embedding")
    r.require("qkv_bias", True, "the window attention here always has a qkv bias")
    r.require("hidden_act", "gelu", "the Swin MLP here uses GELU")
    if abs(float(r("layer_norm_eps")) - 1e-5) > 1e-12:
        raise r.fail("layer_norm_eps", "the Swin LayerNorms here use eps 1e-5")
    _out_features(bb, r, forced=bb.get("model_type") == "swin")
    depths, heads = list(r("depths")), list(r("num_heads"))
    if len(depths) != 4 or len(heads) != 4:
        raise r.fail("depths", "MaskFormer needs 4 Swin stages")
    b = cfg.model.backbone
    b.type = "swin"
    b.embed_dim = int(r("embed_dim"))
    b.depths, b.num_heads = [int(d) for d in depths], [int(h) for h in heads]
    b.window_size = _square(r("window_size"), r, "window_size")
    b.patch_size = _square(r("patch_size"), r, "patch_size")
    b.pretrain_img_size = _square(r("image_size"), r, "image_size")
    b.mlp_ratio = float(r("mlp_ratio"))
    b.drop_path_rate = float(r("drop_path_rate"))
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if float(r(key)) != 0.0:
            notes.append(f"backbone_config.{key}={r(key)} not carried over (training only; the original Swin has none)")


def _resnet_from_hf(bb: dict, cfg: Config, source: str) -> None:
    r = _Reader(bb, "resnet", "backbone_config.", source)
    r.require("num_channels", 3, "RGB input")
    r.require("layer_type", "bottleneck", "the ResNet here is built from bottleneck blocks")
    r.require("hidden_act", "relu", "the ResNet here uses ReLU")
    r.require("downsample_in_first_stage", False, "res2 has stride 1 after the stem here")
    r.require("downsample_in_bottleneck", False, "the stride sits in the 3x3 conv here, not in the first 1x1")
    _out_features(bb, r, forced=False)
    depths, sizes = [int(d) for d in r("depths")], [int(s) for s in r("hidden_sizes")]
    if len(depths) != 4 or len(sizes) != 4:
        raise r.fail("depths", "MaskFormer needs 4 ResNet stages")
    if sizes[0] % 4 or sizes != [sizes[0] * 2**i for i in range(4)]:
        raise r.fail("hidden_sizes", "channels must double per stage from a multiple of 4 (bottleneck width x4)")
    b = cfg.model.backbone
    # BN in eval mode computes exactly FrozenBN; a base config that trains BN (`to-hf` stores it) keeps its choice
    b.type, b.stem = "resnet", "basic"
    b.norm = b.norm if b.norm in ("BN", "SyncBN") else "FrozenBN"
    b.stem_out_channels = int(r("embedding_size"))
    b.width_per_group = sizes[0] // 4
    if any(g != 1 for g in b.res5_multi_grid):  # a base config's R101c dilation must not survive
        b.res5_multi_grid = [1] * depths[3]
    named = _NAMED_DEPTHS.get(tuple(depths))
    b.depth, b.blocks = (named, []) if named else (50, depths)


def _decoder_from_hf(dec: dict, cfg: Config, notes: list[str], source: str) -> None:
    r = _Reader(dec, "detr", "decoder_config.", source)
    if dec.get("model_type", "detr") != "detr":
        raise r.fail("model_type", "MaskFormer's transformer decoder is DETR's")
    r.require("activation_function", "relu", "the DETR FFN here uses ReLU")
    r.require(
        "auxiliary_loss",
        False,
        "transformers then feeds LayerNorm-ed states into the next decoder layer, which the original does not",
    )
    m = cfg.model
    m.num_queries = int(r("num_queries"))
    m.hidden_dim = int(r("d_model"))
    m.nheads = int(r("decoder_attention_heads"))
    m.dim_feedforward = int(r("decoder_ffn_dim"))
    m.dec_layers = int(r("decoder_layers"))
    m.dropout = float(r("dropout"))
    other = [f"{k}={r(k)}" for k in ("attention_dropout", "activation_dropout") if float(r(k)) != m.dropout]
    if other:
        notes.append(
            f"decoder_config {', '.join(other)} not carried over (training only): this model applies"
            f" dropout={m.dropout} on attention weights and inside the FFN too, as the original"
        )
    if float(r("decoder_layerdrop")) != 0.0:
        notes.append(f"decoder_config.decoder_layerdrop={r('decoder_layerdrop')} not carried over (training only)")


def config_from_hf(hf: dict, *, source: str, base: Config | None = None) -> HFTranslation:
    """``config.json`` of a ``MaskFormerForInstanceSegmentation`` -> our Config (model + loss sections).

    ``base`` supplies everything transformers does not describe (dataset, test sizes, inference); its model section
    is overwritten. Raises CheckpointError naming any setting this model cannot compute identically.
    """
    if hf.get("model_type") != "maskformer":
        raise CheckpointError(f"{source}: model_type={hf.get('model_type')!r}, expected 'maskformer'")
    cfg = copy.deepcopy(base) if base is not None else Config()
    notes: list[str] = []
    top = _Reader(hf, "maskformer", "", source)
    bb = hf.get("backbone_config")
    if not isinstance(bb, dict):
        raise CheckpointError(f"{source}: no backbone_config (a saved MaskFormerConfig always has one)")
    kind = bb.get("model_type")
    if kind in ("swin", "maskformer-swin"):
        _swin_from_hf(bb, cfg, notes, source)
    elif kind == "resnet":
        _resnet_from_hf(bb, cfg, source)
    else:
        raise CheckpointError(f"{source}: backbone_config.model_type={kind!r}: only swin and resnet can be converted")
    cfg.model.backbone.weights = ""
    dec = hf.get("decoder_config")
    _decoder_from_hf(dec if isinstance(dec, dict) else {}, cfg, notes, source)
    m = cfg.model
    classes = _classes(hf, source)
    m.meta_arch, m.num_classes, m.weights = "maskformer", len(classes), ""
    m.pixel_decoder, m.norm, m.transformer_in_feature = "fpn", "GN", "res5"
    m.convs_dim, m.mask_dim = int(top("fpn_feature_size")), int(top("mask_feature_size"))
    # enforce_input_proj is the same network as transformers' whenever the channels differ (it projects then): the
    # config given (or stored by `to-hf`) keeps its value there, so a round trip gives back the same settings
    b = m.backbone
    res5 = b.embed_dim * 8 if b.type == "swin" else b.width_per_group * 32
    keep = base is not None and base.model.enforce_input_proj and res5 != m.hidden_dim
    m.enc_layers, m.pre_norm, m.enforce_input_proj = 0, False, keep
    loss = cfg.loss
    loss.class_weight = float(top("cross_entropy_weight"))
    loss.mask_weight = float(top("mask_weight"))
    loss.dice_weight = float(top("dice_weight"))
    loss.no_object_weight = float(top("no_object_weight"))
    return HFTranslation(cfg=cfg, classes=classes, notes=notes)


def _fail(key: str, value: Any, why: str) -> CheckpointError:
    return CheckpointError(f"{key}={value!r} has no transformers equivalent: {why}")


def hf_config_from_ours(cfg: Config, classes: list[str]) -> dict[str, Any]:
    """Our Config -> keyword arguments of transformers' ``MaskFormerConfig`` (sub-configs as dicts with
    ``model_type``). Raises CheckpointError for models transformers cannot represent (R101c, "+6 Enc", timm, ...)."""
    m, b = cfg.model, cfg.model.backbone
    if m.meta_arch != "maskformer":
        raise _fail("model.meta_arch", m.meta_arch, "transformers only has MaskFormer itself, not the baselines")
    if m.pixel_decoder != "fpn":
        raise _fail("model.pixel_decoder", m.pixel_decoder, 'transformers has only the FPN pixel decoder (no "+6 Enc")')
    if m.transformer_in_feature != "res5":
        why = "transformers' decoder always reads the backbone's last stage (res5)"
        raise _fail("model.transformer_in_feature", m.transformer_in_feature, why)
    if m.norm != "GN":
        raise _fail("model.norm", m.norm, "transformers' FPN always uses GroupNorm(32)")
    if m.enc_layers or m.pre_norm:
        raise _fail("model.enc_layers/pre_norm", (m.enc_layers, m.pre_norm), "transformers has post-norm decoder only")
    if len(classes) != m.num_classes:
        raise CheckpointError(f"meta.classes has {len(classes)} names but model.num_classes is {m.num_classes}")
    if b.type == "swin":
        res5 = b.embed_dim * 8
        backbone: dict[str, Any] = {
            # "swin" as on the Hub; transformers turns it into its MaskFormer Swin with all four stage outputs
            "model_type": "swin",
            "image_size": b.pretrain_img_size,
            "patch_size": b.patch_size,
            "embed_dim": b.embed_dim,
            "depths": list(b.depths),
            "num_heads": list(b.num_heads),
            "window_size": b.window_size,
            "mlp_ratio": b.mlp_ratio,
            "drop_path_rate": b.drop_path_rate,
        }
    elif b.type == "resnet":
        if b.stem != "basic":
            raise _fail("model.backbone.stem", b.stem, "transformers' ResNet has only the 7x7 stem (no R101c)")
        blocks = list(b.blocks) or list(DEPTH_BLOCKS.get(b.depth, []))
        if len(blocks) != 4:
            raise _fail("model.backbone.depth", b.depth, "unknown ResNet depth")
        grid = b.res5_multi_grid if len(b.res5_multi_grid) == blocks[3] else []  # as maskformer.build applies it
        if any(g != 1 for g in grid):
            raise _fail("model.backbone.res5_multi_grid", b.res5_multi_grid, "transformers' ResNet has no dilation")
        if b.norm not in ("FrozenBN", "BN"):
            raise _fail("model.backbone.norm", b.norm, "transformers' ResNet uses BatchNorm")
        res5 = b.width_per_group * 32
        backbone = {
            "model_type": "resnet",
            "embedding_size": b.stem_out_channels,
            "hidden_sizes": [b.width_per_group * 4 * 2**i for i in range(4)],
            "depths": blocks,
            "layer_type": "bottleneck",
            "hidden_act": "relu",
            "downsample_in_first_stage": False,
            "downsample_in_bottleneck": False,
            "out_features": list(_STAGES),
        }
    else:
        raise _fail("model.backbone.type", b.type, "transformers' MaskFormer supports resnet and swin backbones")
    if m.enforce_input_proj and res5 == m.hidden_dim:
        raise _fail("model.enforce_input_proj", True, "transformers projects only when channels differ")
    decoder = {
        "model_type": "detr",
        "num_queries": m.num_queries,
        "d_model": m.hidden_dim,
        "decoder_layers": m.dec_layers,
        "decoder_attention_heads": m.nheads,
        "decoder_ffn_dim": m.dim_feedforward,
        # the original applies the same dropout on attention weights, inside the FFN and on every residual
        "dropout": m.dropout,
        "attention_dropout": m.dropout,
        "activation_dropout": m.dropout,
        "activation_function": "relu",
        "auxiliary_loss": False,
    }
    return {
        "backbone_config": backbone,
        "decoder_config": decoder,
        "fpn_feature_size": m.convs_dim,
        "mask_feature_size": m.mask_dim,
        "no_object_weight": cfg.loss.no_object_weight,
        "dice_weight": cfg.loss.dice_weight,
        "cross_entropy_weight": cfg.loss.class_weight,
        "mask_weight": cfg.loss.mask_weight,
        # transformers' aux path differs from the original (HF_NOTES §8.3) and breaks training without
        # output_hidden_states; keep its default
        "use_auxiliary_loss": False,
        "id2label": {i: name for i, name in enumerate(classes)},
        "label2id": {name: i for i, name in enumerate(classes)},
    }
