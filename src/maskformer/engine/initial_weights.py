"""The weights a training run starts from: a whole model's (``model.weights``: a ``.pt`` checkpoint or an original
``.pkl``), the backbone's ImageNet weights (``model.backbone.weights``) or a random initialisation."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..config import Config
from ..errors import CheckpointError, ConfigError
from .checkpoint import load_checkpoint, non_finite_weights, unwrap, weights_mismatch

__all__ = ["load_initial_weights"]


def load_initial_weights(cfg: Config, model: nn.Module) -> str:
    """Full-model weights (``model.weights``) or backbone-only ImageNet weights (``model.backbone.weights``)."""
    from ..convert.detectron2 import load_backbone_weights, load_detectron2_weights

    if cfg.model.weights:
        path = Path(cfg.model.weights)
        if path.is_dir():
            raise ConfigError(f"model.weights: {path} is a folder: give a .pt checkpoint or an original .pkl (a "
                              f"transformers folder: `maskformer convert hf {path} OUT.pt` first)")  # fmt: skip
        if not path.is_file():
            raise ConfigError(f"model.weights: {path} not found")
        if path.suffix == ".pkl":
            load_detectron2_weights(model, path)
        else:
            state = load_checkpoint(path).get("model")
            why = weights_mismatch(unwrap(model), state, ("the file", "this config's model"))
            if why is not None:
                raise CheckpointError(f"model.weights: {path}: {why}")
            unwrap(model).load_state_dict(state, strict=True)
        _check_finite(model, f"model.weights: {path}")
        return f"model weights from {path}"
    if cfg.model.backbone.weights:
        path = Path(cfg.model.backbone.weights)
        if not path.is_file():
            frozen = cfg.model.backbone.type == "resnet" and cfg.model.backbone.norm == "FrozenBN"
            norm = " --set model.backbone.norm=BN" if frozen else ""  # (FrozenBN is identity without the weights)
            raise ConfigError(
                f"model.backbone.weights: {path} not found (download the ImageNet weights the config names, or pass "
                f"--set model.backbone.weights=''{norm} to train from scratch)"
            )
        load_backbone_weights(model, path)
        _check_finite(model, f"model.backbone.weights: {path}")
        return f"backbone weights from {path}"
    bb = cfg.model.backbone
    if bb.type == "resnet" and bb.norm == "FrozenBN":  # fixed statistics of a pretrained net: identity when random
        return (
            "random initialisation (note: the ResNet's FrozenBN layers stay identity without pretrained weights: "
            "give model.backbone.weights, or --set model.backbone.norm=BN to train them from scratch)"
        )
    return "random initialisation"


def _check_finite(model: nn.Module, source: str) -> None:
    """Weights holding NaN or infinity are named here (training from them blamed the learning rate)."""
    bad = non_finite_weights(unwrap(model).state_dict())
    if bad is not None:
        raise CheckpointError(f"{source}: weights {bad} hold NaN or infinite values (a diverged training or a "
                              "damaged file)")  # fmt: skip
