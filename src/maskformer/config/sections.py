"""The configuration's sections: nested dataclasses with the paper's defaults (one YAML per setting in configs/)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "BackboneConfig",
    "Config",
    "DataConfig",
    "InferenceConfig",
    "LossConfig",
    "ModelConfig",
    "SolverConfig",
    "TestConfig",
    "TrainConfig",
]


@dataclass
class BackboneConfig:
    """Which backbone and its shape. ``type``: resnet | swin | timm."""

    type: str = "resnet"
    # ResNet (detectron2 layout): depth 50/101 or explicit ``blocks``; "deeplab" stem for R101c.
    depth: int = 50
    blocks: list[int] = field(default_factory=list)  # overrides depth when set, e.g. [1, 1, 1, 1] for tiny models
    stem: str = "basic"  # basic | deeplab
    stem_out_channels: int = 64
    width_per_group: int = 64  # bottleneck width of res2 (channels of res2 = 4 * this)
    res5_multi_grid: list[int] = field(default_factory=lambda: [1, 1, 1])
    norm: str = "FrozenBN"  # FrozenBN | BN | SyncBN | GN (BN/GN for training from scratch)
    # Swin
    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.3
    pretrain_img_size: int = 224
    # timm: any model with features_only
    timm_name: str = ""
    timm_pretrained: bool = False
    # Path to backbone-only ImageNet weights (torchvision R-50 .pth, converted .pkl, Swin .pth); "" = random init.
    weights: str = ""


@dataclass
class ModelConfig:
    """Architecture. ``meta_arch``: maskformer | per_pixel | per_pixel_plus (the paper's two baselines)."""

    meta_arch: str = "maskformer"
    num_classes: int = 150
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pixel_decoder: str = "fpn"  # fpn | transformer_encoder ("+6 Enc")
    pixel_decoder_enc_layers: int = 6  # encoder layers of the transformer_encoder pixel decoder
    convs_dim: int = 256
    mask_dim: int = 256
    norm: str = "GN"  # pixel-decoder norm: GN | "" (none)
    transformer_in_feature: str = "res5"  # res5 | transformer_encoder
    num_queries: int = 100
    hidden_dim: int = 256
    nheads: int = 8
    dim_feedforward: int = 2048
    dropout: float = 0.1
    enc_layers: int = 0
    dec_layers: int = 6
    pre_norm: bool = False
    deep_supervision: bool = True
    enforce_input_proj: bool = False
    size_divisibility: int = 32  # pad the batch to a multiple of this (0 = no rounding)
    pixel_mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    pixel_std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])
    weights: str = ""  # full-model checkpoint to start from ("" = none)


@dataclass
class LossConfig:
    """Criterion weights and options (OFFICIAL_SPEC §3)."""

    class_weight: float = 1.0
    mask_weight: float = 20.0  # focal
    dice_weight: float = 1.0
    no_object_weight: float = 0.1
    matching: str = "hungarian"  # hungarian | fixed (query i <-> class i; the paper's MaskFormer-fixed)
    point_sample: bool = False  # memory-light mask losses on sampled points (Mask2Former-style)
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75


@dataclass
class DataConfig:
    """Dataset and training-time augmentation (OFFICIAL_SPEC §5)."""

    dataset: str = "ade20k_150"
    root: str = "datasets"
    train_split: str = "train"
    val_split: str = "val"
    aspect_ratio_grouping: bool = True  # batches of one orientation (landscape / other), as detectron2's loader
    mapper: str = "semantic"  # semantic | panoptic | detr_panoptic
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    min_size_train: list[int] = field(default_factory=lambda: [512])
    max_size_train: int = 2048
    single_category_max_area: float = 1.0
    color_aug_ssd: bool = True
    pad_to_crop: bool = True  # pad image (128) and labels (ignore) to exactly crop_size
    num_workers: int = 2
    skip_bad_samples: bool = False
    # coco_panoptic on data in another layout: paths under data.root, "{split}" = the split; "" = COCO's own layout
    panoptic_json: str = ""  # e.g. "annotations/{split}.json"
    panoptic_images: str = ""
    panoptic_masks: str = ""  # the folder of panoptic PNGs (id = R + 256 G + 256^2 B)
    # synthetic dataset (maskformer.data.synthetic)
    synthetic_num_classes: int = 8
    synthetic_image_size: int = 128
    synthetic_train_size: int = 2000
    synthetic_val_size: int = 100
    synthetic_seed: int = 0


@dataclass
class SolverConfig:
    """Optimizer and schedule (OFFICIAL_SPEC §2.7, §10 items 11-12)."""

    optimizer: str = "adamw"
    base_lr: float = 1e-4
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    backbone_multiplier: float = 0.1
    lr_scheduler: str = "poly"  # poly | multistep
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_factor: float = 1.0
    steps: list[int] = field(default_factory=list)
    gamma: float = 0.1
    clip_grad_norm: float = 0.01  # full-model L2 clipping; 0 disables


@dataclass
class TrainConfig:
    """The training loop."""

    max_iters: int = 160000
    batch_size: int = 16  # total over all processes
    grad_accum: int = 1
    checkpoint_period: int = 5000
    eval_period: int = 0  # evaluate every N iterations; 0 = only at the end; < 0 = never
    log_period: int = 20
    seed: int = 0
    amp: str = "none"  # none | bf16 | fp16
    max_minutes: float = 0.0  # stop early after this wall time (0 = no limit); used by the demo
    tf32: bool = False  # TF32 matmuls/convolutions on Ampere+ GPUs; false = exact fp32, as the original trained
    # NHWC weights and batches (same arithmetic); auto: NHWC except on AVX2-only CPUs, where NCHW is the faster
    channels_last: bool | str = "auto"
    winograd: bool = True  # wide 3x3 convolutions by Winograd F(2x2, 3x3) on CPU fp32 (closer to exact; false: direct)


@dataclass
class TestConfig:
    """Test-time resize and TTA."""

    min_size: int = 512
    max_size: int = 2048
    tta: bool = False
    tta_min_sizes: list[int] = field(default_factory=lambda: [256, 384, 512, 640, 768, 896])
    tta_max_size: int = 3584
    tta_flip: bool = True
    fast: bool = False  # combine masks at 1/4 resolution (documented tolerance)


@dataclass
class InferenceConfig:
    """Post-processing switches and thresholds (OFFICIAL_SPEC §4)."""

    semantic_on: bool = True
    panoptic_on: bool = False
    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8
    sem_seg_postprocess_before_inference: bool = False


@dataclass
class Config:
    """The whole configuration; one YAML file per paper setting in ``configs/``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


# ----------------------------------------------------------------------------------------------- conversion
