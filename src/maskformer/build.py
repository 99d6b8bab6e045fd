"""The only place that turns a Config into objects: model, criterion, data, optimizer and schedule."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .config import BackboneConfig, Config, ModelConfig
from .errors import ConfigError
from .modeling import (
    FPNPixelDecoder,
    MaskFormer,
    PerPixelBaseline,
    PerPixelBaselinePlus,
    TransformerEncoderPixelDecoder,
    TransformerPredictor,
)
from .modeling.backbone import DEPTH_BLOCKS, Backbone, ResNet, SwinTransformer, TimmBackbone


def _resnet(c: BackboneConfig) -> Backbone:
    blocks = c.blocks or DEPTH_BLOCKS.get(c.depth)
    if not blocks:
        raise ConfigError(f"model.backbone.depth: unsupported ResNet depth {c.depth} (use 50, 101, ... or blocks)")
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


def build_model(cfg: Config) -> nn.Module:
    """MaskFormer or one of the per-pixel baselines, randomly initialised (load weights separately).

    The model carries its config as ``model.cfg`` (test sizes and thresholds for ``Predictor(model)``) and
    ``model.class_meta``: the shipped class table of ``data.dataset`` when it fits, else None (the checkpoint loader
    attaches the checkpoint's own).
    """
    from .data.metadata import shipped_meta

    model = _build_model(cfg)
    model.cfg = cfg
    model.class_meta = shipped_meta(cfg.data.dataset, cfg.model.num_classes)
    return model


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
    from .criterion.losses import PerPixelCriterion, SetCriterion

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


def build_meta(cfg: Config):
    """The dataset's class table (names, colours, thing/stuff, ignore label)."""
    from .data import load_meta
    from .data.folder import read_folder_meta
    from .data.synthetic import synthetic_meta

    d = cfg.data
    if d.dataset == "synthetic":
        return synthetic_meta(num_classes=d.synthetic_num_classes)
    if d.dataset == "folder":
        return read_folder_meta(Path(d.root))
    if d.dataset == "coco_panoptic" and d.panoptic_json:  # COCO-format data of one's own: its JSON's categories
        from .data.panoptic import panoptic_json_meta

        return panoptic_json_meta(_categories_json(cfg))
    return load_meta(d.dataset)


def _categories_json(cfg: Config) -> Path:
    """The panoptic JSON whose categories are the class table: the training split's, or the evaluation split's when
    only that one is at hand (evaluating on one's own validation data)."""
    d = cfg.data
    paths = [Path(d.root) / d.panoptic_json.replace("{split}", split) for split in (d.train_split, d.val_split)]
    return next((p for p in paths if p.is_file()), paths[0])


def fit_classes(cfg: Config, *, explicit: bool = False) -> Config:
    """``cfg`` with ``model.num_classes`` taken from the data's class table (own data: ``classes.json``) when they
    disagree; with ``explicit`` (the user set ``model.num_classes`` on the command line) a disagreement is one
    ``ConfigError`` naming both numbers. Also rejects panoptic training on semantic-only data."""
    import os
    import sys
    from dataclasses import replace

    d = cfg.data
    if d.mapper != "semantic" and d.dataset not in ("coco_panoptic", "ade20k_panoptic", "synthetic"):
        raise ConfigError(
            f"data.mapper={d.mapper}: data.dataset={d.dataset} has semantic labels only; train a semantic config "
            "(e.g. configs/folder/maskformer_R50.yaml) or pass --set data.mapper=semantic"
        )
    if d.dataset == "synthetic":
        return cfg
    meta = build_meta(cfg)
    if meta.num_classes == cfg.model.num_classes:
        return cfg
    source = f"{d.root}/classes.json" if d.dataset == "folder" else f"the {d.dataset} class table"
    if d.dataset == "coco_panoptic" and d.panoptic_json:
        source = f"the categories of {_categories_json(cfg)}"
    if explicit:
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} but {source} lists {meta.num_classes} classes: "
            "drop --set model.num_classes (it is taken from the data) or fix the class table"
        )
    if os.environ.get("RANK", "0") in ("", "0"):  # (under torchrun, every process fits the same table)
        print(f"maskformer: note: model.num_classes {cfg.model.num_classes} -> {meta.num_classes} (from {source})",
              file=sys.stderr)  # fmt: skip
    return replace(cfg, model=replace(cfg.model, num_classes=meta.num_classes))


def build_mapper(cfg: Config, *, train: bool, ignore_label: int):
    from .data import DETRPanopticTrainMapper, PanopticTrainMapper, SemanticTrainMapper, TestMapper

    d = cfg.data
    if not train:
        return TestMapper(min_size=cfg.test.min_size, max_size=cfg.test.max_size, ignore_label=ignore_label)
    kwargs = {
        "min_sizes": d.min_size_train,
        "max_size": d.max_size_train,
        "crop_size": tuple(d.crop_size),
        "single_category_max_area": d.single_category_max_area,
        "ignore_label": ignore_label,
        "color_aug_ssd": d.color_aug_ssd,
        "pad_to_crop": d.pad_to_crop,
    }
    if d.mapper == "semantic":
        return SemanticTrainMapper(**kwargs)
    if d.mapper == "panoptic":
        return PanopticTrainMapper(**kwargs)
    if d.mapper == "detr_panoptic":
        # the original's RandomCrop("absolute_range", (384, 600)): data.crop_size is that [min, max] range
        low, high = (int(v) for v in d.crop_size)
        if not 0 < low <= high:
            raise ConfigError(f"data.crop_size: the detr_panoptic mapper takes a [min, max] range, got {d.crop_size}")
        return DETRPanopticTrainMapper(min_sizes=d.min_size_train, max_size=d.max_size_train, ignore_label=ignore_label,
                                       crop_range=(low, high))  # fmt: skip
    raise ConfigError(f"data.mapper: unknown '{d.mapper}' (expected semantic, panoptic or detr_panoptic)")


def build_dataset(cfg: Config, *, split: str, train: bool, root: str | None = None):
    """A dataset of records: training augmentation when ``train``, else the test-time resize."""
    from .data import DATASETS

    d = cfg.data
    if d.dataset not in DATASETS:
        raise ConfigError(f"data.dataset: unknown '{d.dataset}' (expected one of {sorted(DATASETS)})")
    meta = build_meta(cfg)
    mapper = build_mapper(cfg, train=train, ignore_label=meta.ignore_label)
    kwargs = {"root": root or d.root, "split": split, "mapper": mapper, "skip_bad_samples": d.skip_bad_samples}
    paths = {"json_file": d.panoptic_json, "image_dir": d.panoptic_images, "panoptic_dir": d.panoptic_masks}
    if any(paths.values()):
        if d.dataset != "coco_panoptic":
            raise ConfigError("data.panoptic_json/panoptic_images/panoptic_masks locate COCO-format panoptic data: "
                              f"they need data.dataset=coco_panoptic, not {d.dataset}")  # fmt: skip
        kwargs.update({k: v.replace("{split}", split) or None for k, v in paths.items()}, meta=meta)
    if d.dataset == "synthetic":
        kwargs.update(
            length=d.synthetic_train_size if split == "train" else d.synthetic_val_size,
            num_classes=d.synthetic_num_classes,
            image_size=d.synthetic_image_size,
            seed=d.synthetic_seed,
            task="panoptic" if cfg.inference.panoptic_on else "semantic",
        )
    return DATASETS[d.dataset](**kwargs)


def build_optimizer(cfg: Config, model: nn.Module):
    from .optim import build_optimizer as make

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
    from .optim import build_scheduler as make

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
