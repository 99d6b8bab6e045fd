"""The only place that turns a Config into objects: model, criterion, optimizer and schedule here, the class table and
datasets in ``datasets.py`` (re-exported).

May import: every folder below it (``modeling``, ``criterion``, ``data``, ``optim``, ``config``, ``errors``); never
``engine``, ``cli``, ``serve`` or ``zoo``, which build through it."""

from __future__ import annotations

from torch import nn

from ..config import BackboneConfig, Config, ModelConfig, config_from_dict, config_to_dict
from ..errors import ConfigError
from ..modeling import (
    FPNPixelDecoder,
    MaskFormer,
    PerPixelBaseline,
    PerPixelBaselinePlus,
    TransformerEncoderPixelDecoder,
    TransformerPredictor,
)
from ..modeling.backbone import DEPTH_BLOCKS, Backbone, ResNet, SwinTransformer, TimmBackbone
from .datasets import build_dataset, build_mapper, build_meta, check_dataset_name, fit_classes

__all__ = [
    "BACKBONES", "build_backbone", "build_criterion", "build_dataset", "build_mapper", "build_meta", "build_model",
    "build_optimizer", "build_pixel_decoder", "build_predictor", "build_scheduler", "check_dataset_name", "fit_classes",
]  # fmt: skip


def _resnet(c: BackboneConfig) -> Backbone:
    blocks = c.blocks or DEPTH_BLOCKS.get(c.depth)
    if not blocks:
        raise ConfigError(f"model.backbone.depth: unsupported ResNet depth {c.depth} (use 50, 101, ... or blocks)")
    if len(blocks) != 4 or min(blocks) < 1:
        raise ConfigError(f"model.backbone.blocks: four stages of at least one block each, got {list(blocks)}")
    return ResNet(
        blocks=list(blocks),
        stem=c.stem,
        stem_out_channels=c.stem_out_channels,
        width_per_group=c.width_per_group,
        res5_multi_grid=c.res5_multi_grid if c.res5_multi_grid and len(c.res5_multi_grid) == blocks[3] else None,
        norm=c.norm,
    )


def _swin(c: BackboneConfig) -> Backbone:
    if len(c.depths) != 4 or len(c.num_heads) != 4:
        raise ConfigError("model.backbone.depths and num_heads must have 4 entries")
    return SwinTransformer(
        embed_dim=c.embed_dim,
        depths=c.depths,
        num_heads=c.num_heads,
        window_size=c.window_size,
        patch_size=c.patch_size,
        mlp_ratio=c.mlp_ratio,
        drop_path_rate=c.drop_path_rate,
    )


def _timm(c: BackboneConfig) -> Backbone:
    if not c.timm_name:
        raise ConfigError("model.backbone.timm_name must name a timm model when model.backbone.type is timm")
    return TimmBackbone(name=c.timm_name, pretrained=c.timm_pretrained)


BACKBONES = {"resnet": _resnet, "swin": _swin, "timm": _timm}


def build_backbone(c: BackboneConfig) -> Backbone:
    if c.type not in BACKBONES:
        raise ConfigError(f"model.backbone.type: unknown '{c.type}' (expected one of {sorted(BACKBONES)})")
    try:
        return BACKBONES[c.type](c)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"model.backbone: {e}") from None


def build_pixel_decoder(m: ModelConfig, backbone: Backbone) -> nn.Module:
    specs = backbone.output_specs
    if m.pixel_decoder == "fpn":
        return FPNPixelDecoder(input_specs=specs, conv_dim=m.convs_dim, mask_dim=m.mask_dim, norm=m.norm)
    if m.pixel_decoder == "transformer_encoder":
        return TransformerEncoderPixelDecoder(
            input_specs=specs,
            conv_dim=m.convs_dim,
            mask_dim=m.mask_dim,
            norm=m.norm,
            enc_layers=m.pixel_decoder_enc_layers,
            nheads=m.nheads,
            dim_feedforward=m.dim_feedforward,
            dropout=m.dropout,
            pre_norm=m.pre_norm,
        )
    raise ConfigError(f"model.pixel_decoder: unknown '{m.pixel_decoder}' (expected fpn or transformer_encoder)")


def build_predictor(m: ModelConfig, in_channels: int, *, mask_classification: bool = True) -> TransformerPredictor:
    return TransformerPredictor(
        in_channels=in_channels,
        num_classes=m.num_classes,
        num_queries=m.num_queries if mask_classification else m.num_classes,
        hidden_dim=m.hidden_dim,
        nheads=m.nheads,
        dim_feedforward=m.dim_feedforward,
        dropout=m.dropout,
        enc_layers=m.enc_layers,
        dec_layers=m.dec_layers if (m.deep_supervision or not mask_classification) else m.dec_layers,
        pre_norm=m.pre_norm,
        mask_dim=m.mask_dim,
        enforce_input_proj=m.enforce_input_proj,
        mask_classification=mask_classification,
    )


def build_model(cfg: Config, *, class_table: bool = True) -> nn.Module:
    """MaskFormer or one of the per-pixel baselines, randomly initialised (load weights separately).

    The model carries its config as ``model.cfg`` (test sizes and thresholds for ``Predictor(model)``) and
    ``model.class_meta``: the shipped class table of ``data.dataset`` when it fits; for a folder dataset
    (``class_table``) the one in ``data.root`` (``classes.json`` / ``.yaml``) when that folder has one, whose class
    count must then be ``model.num_classes`` (else a ``ConfigError`` naming both: ``fit_classes(cfg)`` takes it from
    the data, as ``maskformer train`` does); else None. The checkpoint loader passes ``class_table=False`` and
    attaches the checkpoint's own table.
    """
    from ..data.metadata import shipped_meta

    if not isinstance(cfg, Config):
        raise ConfigError(f"build_model takes a Config, got {type(cfg).__name__}: make one with "
                          "maskformer.load_config(path)")  # fmt: skip
    config_from_dict(config_to_dict(cfg))  # (values set in Python meet load_config's checks: ConfigError)
    meta = _folder_table(cfg) if class_table else None
    model = _build_model(cfg)
    model.cfg = cfg
    model.class_meta = meta if meta is not None else shipped_meta(cfg.data.dataset, cfg.model.num_classes)
    return model


def _folder_table(cfg: Config):
    """The class table of a folder dataset's ``data.root`` when it holds one (checked against the class count)."""
    from pathlib import Path

    from ..data.folder import read_folder_meta

    if cfg.data.dataset != "folder":
        return None
    root = Path(cfg.data.root)
    files = [root / n for n in ("classes.json", "classes.yaml", "classes.yml") if (root / n).exists()]
    if not files:
        return None
    meta = read_folder_meta(root)
    if meta.num_classes != cfg.model.num_classes:
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} but {files[0]} lists {meta.num_classes} classes: set "
            f"model.num_classes={meta.num_classes} (maskformer.build.fit_classes(cfg) takes it from the data, as "
            "`maskformer train` does)"
        )
    return meta


def _build_model(cfg: Config) -> nn.Module:
    m = cfg.model
    if m.num_classes < 1:
        raise ConfigError(f"model.num_classes must be >= 1, got {m.num_classes}")
    if m.transformer_in_feature not in ("res2", "res3", "res4", "res5", "transformer_encoder"):
        raise ConfigError(
            f"model.transformer_in_feature: unknown '{m.transformer_in_feature}' (res2..res5 or transformer_encoder)"
        )
    if m.transformer_in_feature == "transformer_encoder" and m.pixel_decoder != "transformer_encoder":
        raise ConfigError(
            "model.transformer_in_feature=transformer_encoder needs model.pixel_decoder=transformer_encoder"
        )
    if m.hidden_dim % m.nheads:
        raise ConfigError(f"model.hidden_dim ({m.hidden_dim}) must be divisible by model.nheads ({m.nheads})")
    backbone = build_backbone(m.backbone)
    pixel_decoder = build_pixel_decoder(m, backbone)
    common = {
        "num_classes": m.num_classes,
        "size_divisibility": m.size_divisibility,
        "pixel_mean": tuple(m.pixel_mean),
        "pixel_std": tuple(m.pixel_std),
    }
    res5 = backbone.output_specs["res5"].channels
    if m.meta_arch == "maskformer":
        feature = m.transformer_in_feature
        in_ch = m.convs_dim if feature == "transformer_encoder" else backbone.output_specs[feature].channels
        return MaskFormer(
            backbone=backbone,
            pixel_decoder=pixel_decoder,
            predictor=build_predictor(m, in_ch),
            transformer_in_feature=m.transformer_in_feature,
            **common,
        )
    if m.meta_arch == "per_pixel":
        return PerPixelBaseline(backbone=backbone, pixel_decoder=pixel_decoder, mask_dim=m.mask_dim, **common)
    if m.meta_arch == "per_pixel_plus":
        predictor = build_predictor(m, res5, mask_classification=False)
        return PerPixelBaselinePlus(backbone=backbone, pixel_decoder=pixel_decoder, predictor=predictor, **common)
    raise ConfigError(f"model.meta_arch: unknown '{m.meta_arch}' (expected maskformer, per_pixel or per_pixel_plus)")


# ------------------------------------------------------------------------------------------------ training objects


def build_criterion(cfg: Config, *, ignore_label: int = 255) -> nn.Module:
    """SetCriterion for MaskFormer; per-pixel cross-entropy for the two baselines."""
    from ..criterion.losses import PerPixelCriterion, SetCriterion

    if not isinstance(cfg, Config):
        raise ConfigError(f"build_criterion takes a Config, got {type(cfg).__name__}: make one with "
                          "maskformer.load_config(path)")  # fmt: skip
    m, loss = cfg.model, cfg.loss
    if m.meta_arch == "maskformer":
        if loss.matching == "fixed" and m.num_queries != m.num_classes:
            raise ConfigError(
                f"loss.matching=fixed needs model.num_queries == model.num_classes ({m.num_queries} != {m.num_classes})"
            )
        return SetCriterion(
            num_classes=m.num_classes,
            class_weight=loss.class_weight,
            mask_weight=loss.mask_weight,
            dice_weight=loss.dice_weight,
            eos_coef=loss.no_object_weight,
            deep_supervision=m.deep_supervision,
            matching=loss.matching,
            point_sample=loss.point_sample,
            num_points=loss.num_points,
            oversample_ratio=loss.oversample_ratio,
            importance_sample_ratio=loss.importance_sample_ratio,
        )
    if m.meta_arch == "per_pixel_plus" and loss.matching != "fixed":
        raise ConfigError(
            f"loss.matching={loss.matching}: PerPixelBaseline+ has fixed matching by construction (query i is class i, "
            "per-pixel cross-entropy); set loss.matching: fixed"
        )
    return PerPixelCriterion(ignore_label=ignore_label, deep_supervision=m.meta_arch == "per_pixel_plus")


def build_optimizer(cfg: Config, model: nn.Module):
    from ..optim import build_optimizer as make

    s = cfg.solver
    return make(
        model,
        name=s.optimizer,
        base_lr=s.base_lr,
        weight_decay=s.weight_decay,
        weight_decay_norm=s.weight_decay_norm,
        weight_decay_embed=s.weight_decay_embed,
        backbone_multiplier=s.backbone_multiplier,
    )


def build_scheduler(cfg: Config, optimizer):
    from ..optim import build_scheduler as make

    s = cfg.solver
    return make(
        optimizer,
        max_iters=cfg.train.max_iters,
        schedule=s.lr_scheduler,
        power=s.poly_power,
        warmup_iters=s.warmup_iters,
        warmup_factor=s.warmup_factor,
        steps=tuple(s.steps),
        gamma=s.gamma,
    )
