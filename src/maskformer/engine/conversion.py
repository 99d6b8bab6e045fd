"""Checkpoint conversion: original model-zoo ``.pkl`` files and transformers folders -> checkpoints, and back.

    maskformer convert detectron2 model_final_d8dbeb.pkl r50.pt \
        --config configs/ade20k-150/maskformer_R50_bs16_160k.yaml
    maskformer convert hf ./maskformer-swin-tiny-ade swin_t.pt
    maskformer convert to-hf run/model_final.pt ./my-maskformer-hf
    maskformer convert to-detectron2 run/model_final.pt model_final.pkl

``convert_detectron2``, ``convert_hf``, ``convert_to_hf`` and ``convert_to_detectron2`` return the summary line;
``maskformer convert`` (cli/convert.py) and the model zoo (``maskformer.zoo``) call them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from ..config import Config
    from ..data.metadata import DatasetMeta


# Dataset-dependent test/inference settings of the original configs (OFFICIAL_SPEC §2.7, TTA sizes included), applied
# to a converted transformers model when its class names identify a shipped dataset and no --config was given.
def _dataset_settings(name: str) -> dict[str, dict]:
    """The test-time and inference settings of a dataset's recipe (``resources/dataset_settings.json``, equal to its
    Base config under configs/), by section; {} for a dataset whose settings are the library defaults (ADE20K-150)."""
    from importlib import resources

    table = json.loads(resources.files("maskformer.resources").joinpath("dataset_settings.json").read_text())
    return table.get(name, {})


def _note(text: str) -> None:
    print(f"maskformer convert: note: {text}", file=sys.stderr)


def _meta_model(cfg: Config) -> nn.Module:
    """The config's model with shapes only (meta device): conversion compares names and shapes, then assigns."""
    import torch

    from ..build import build_model

    with torch.device("meta"):
        return build_model(cfg, class_table=False)


def _fits(cfg: Config, state: object, source: str | Path) -> None:
    """A ``CheckpointError`` naming the key or shape when ``state`` does not load into ``cfg``'s model (strict), as
    loading the checkpoint would say: a converted file must load back."""
    from ..errors import CheckpointError
    from .checkpoint import weights_mismatch

    why = weights_mismatch(_meta_model(cfg), state)
    if why is not None:
        raise CheckpointError(f"{source}: weights do not fit its config ({why})")


def _finite(state: dict, source: str | Path) -> None:
    """Refuse weights holding NaN or infinity (a diverged training, a damaged file) before anything is written: a
    converted copy would fail only where it is loaded, named as that copy (or a cache file)."""
    from ..errors import CheckpointError
    from .checkpoint import non_finite_weights

    bad = non_finite_weights(state)
    if bad is not None:
        raise CheckpointError(f"{source}: weights {bad} hold NaN or infinite values (a diverged training or a damaged "
                              "file): not converted")  # fmt: skip


def _save(output: str | Path, cfg: Config, model: nn.Module, state: dict, meta: dict, source: str | Path) -> None:
    from .checkpoint import save_checkpoint

    _finite(state, source)
    model.load_state_dict(state, strict=True, assign=True)
    assert not any(t.is_meta for t in model.state_dict().values())
    save_checkpoint(output, cfg=cfg, model=model, meta=meta)


def _meta_dict(classes: list[str], table: DatasetMeta | None) -> dict:
    """The checkpoint metadata schema (``DatasetMeta.to_dict()``) for these class names: colours, thing flags and the
    ignore label from the shipped ``table`` when its class count fits, else spread colours and all stuff."""
    from ..data.metadata import DatasetMeta, meta_from_dict

    if table is not None and table.num_classes == len(classes):
        return DatasetMeta(
            name=table.name, classes=list(classes), colors=table.colors, isthing=table.isthing,
            ignore_label=table.ignore_label, dataset_id_to_contiguous=dict(table.dataset_id_to_contiguous),
            label_id_to_train_id=dict(table.label_id_to_train_id), label_divisor=table.label_divisor,
        ).to_dict()  # fmt: skip
    return meta_from_dict({"classes": list(classes)}, name="unknown", where="classes").to_dict()


def _dataset_table(name: str) -> DatasetMeta | None:
    from ..data.metadata import META_NAMES, load_meta

    return load_meta(name) if name in META_NAMES or name == "ade20k_panoptic" else None


def _config_table(cfg: Config) -> DatasetMeta | None:
    """The class table of ``cfg``'s dataset, as training builds it (``build.build_meta``): a shipped one, the
    synthetic set's, or for own data (``data.dataset: folder``, e.g. the ``config.yaml`` that ``maskformer train``
    wrote) the ``classes.json`` under ``data.root`` (a COCO-format panoptic JSON) when it is there."""
    from ..build import build_meta
    from ..errors import DataError

    if cfg.data.dataset not in ("folder", "synthetic", "coco_panoptic"):
        return _dataset_table(cfg.data.dataset)
    try:
        return build_meta(cfg)
    except DataError as e:
        _note(f"class names, colours and thing flags not found ({e}); pass --set data.root=DIR of your data")
        return None


def match_dataset(classes: list[str]) -> DatasetMeta | None:
    """The shipped dataset table whose classes these are (same count and at least 90% of the names agree on their
    first comma-separated word), or None."""
    from ..data.metadata import META_NAMES, load_meta

    def key(name: str) -> str:
        return name.split(",")[0].strip().lower()

    for name in META_NAMES:
        table = load_meta(name)
        if table.num_classes == len(classes):
            if sum(key(a) == key(b) for a, b in zip(table.classes, classes)) >= 0.9 * len(classes):
                return table
    return None


def convert_detectron2(
    source: str | Path, output: str | Path, *, config: str | Path | None, overrides: list[str] | None = None
) -> str:
    """Original checkpoint -> our checkpoint for ``config``. Returns the summary line."""
    from ..build.datasets import check_dataset_name
    from ..config import load_config
    from ..convert.detectron2 import convert_detectron2_state, zoo_file_configs
    from ..errors import CheckpointError, UserError

    if not config:
        hint = zoo_file_configs().get(Path(source).name)
        example = f"configs/{hint}" if hint else "the YAML in configs/ it was trained with"
        raise UserError(f"{source}: --config is required (a .pkl holds no config); pass {example}")
    cfg = load_config(config, overrides)
    check_dataset_name(cfg)  # (its class names go into the checkpoint: a typo gave "class 0", "class 1", ...)
    model = _meta_model(cfg)
    try:
        state = convert_detectron2_state(source, model.state_dict())
    except CheckpointError as e:
        raise CheckpointError(f"{e}{_config_hint(str(e), cfg)}") from None
    table = _config_table(cfg)
    fits = table is not None and table.num_classes == cfg.model.num_classes
    classes = table.classes if fits else [f"class {i}" for i in range(cfg.model.num_classes)]
    _save(output, cfg, model, state, _meta_dict(classes, table), source)
    return f"converted {len(state)} tensors: {source} -> {output} (config {config})"


def _config_hint(problem: str, cfg: Config) -> str:
    """What to change when the weights do not fit the config given: its class count or its backbone's norm (the two
    settings a run changes without changing the YAML it started from)."""
    import re

    hints = []
    counted = re.search(r"class_embed\.weight \((\d+),", problem)
    if counted and int(counted.group(1)) - 1 != cfg.model.num_classes:
        hints.append(f"the weights have {int(counted.group(1)) - 1} classes, the config {cfg.model.num_classes}: add "
                     f"--set model.num_classes={int(counted.group(1)) - 1}")  # fmt: skip
    if "num_batches_tracked" in problem and cfg.model.backbone.norm != "BN":
        hints.append(f"the weights hold BatchNorm counters, the config's backbone norm is {cfg.model.backbone.norm}: "
                     "add --set model.backbone.norm=BN")  # fmt: skip
    if not hints:
        return ""
    return f" ({'; '.join(hints)}; or give the run's own config.yaml, which has both)"


CARRIED = "maskformer"  # config.json key under which `to-hf` stores this project's config and class table


def _carried(hf_config: dict, where: str) -> tuple[Config, dict] | None:
    """(config, class table) that `convert to-hf` stored in ``config.json``: test sizes, thresholds, dataset, class
    colours and ids, which transformers' config does not describe. None when absent or when it no longer fits the
    folder's classes (a note says why)."""
    from ..config import config_from_dict
    from ..data.metadata import meta_from_checkpoint
    from ..errors import UserError

    data = hf_config.get(CARRIED)
    if not isinstance(data, dict):
        return None
    classes = [str(name) for _, name in sorted((int(k), v) for k, v in (hf_config.get("id2label") or {}).items())]
    try:
        cfg = config_from_dict(data["config"])
        meta = meta_from_checkpoint(data["meta"], num_classes=len(classes), dataset=cfg.data.dataset, where=where)
    except (UserError, KeyError, TypeError, ValueError) as e:
        _note(f"{where}: the stored {CARRIED!r} settings are not used ({e})")
        return None
    if list(meta.classes) != classes or cfg.model.num_classes != len(classes):
        _note(f"{where}: the stored {CARRIED!r} settings are not used (the classes changed since `to-hf`)")
        return None
    return cfg, meta.to_dict()


def convert_hf(
    source: str | Path, output: str | Path, *, config: str | Path | None = None, same_model: bool = True
) -> str:
    """transformers folder -> our checkpoint. Returns the summary line (notes go to stderr).

    ``config`` supplies what transformers does not describe (dataset, test sizes, solver); the architecture is the
    folder's, and with ``same_model`` a config of another architecture is refused (the zoo's Hub ids pass their
    recipe's config for its test sizes only)."""
    from ..build.datasets import check_dataset_name
    from ..config import load_config
    from ..convert.hf_config import config_from_hf
    from ..convert.hf_folder import apply_preprocessor, read_hf_folder
    from ..convert.huggingface import hf_state_to_ours
    from ..errors import CheckpointError, ConfigError

    hf_config, hf_state, pre = read_hf_folder(source)
    where = str(Path(source) / "config.json")
    carried = None if config else _carried(hf_config, where)
    base = load_config(config) if config else carried[0] if carried else None
    if config:
        check_dataset_name(base)  # (as convert detectron2: its class table goes into the checkpoint)
    tr = config_from_hf(hf_config, source=where, base=base)
    if config and base is not None and base.model.num_classes != len(tr.classes):
        raise CheckpointError(
            f"{config}: model.num_classes is {base.model.num_classes} (data.dataset={base.data.dataset}) but {where} "
            f"has {len(tr.classes)} classes: give the config of the data these weights were trained on"
        )
    try:
        model = _meta_model(tr.cfg)  # (the settings set below are data and test ones: the model is this one)
    except ConfigError as e:
        raise CheckpointError(f"{where}: describes a model this project cannot build ({e})") from None
    if config and base is not None and same_model:  # the weights' architecture is config.json's
        from .checkpoint import weights_mismatch

        why = weights_mismatch(_meta_model(base), model.state_dict())
        if why is not None:
            raise CheckpointError(f"{config}: describes another model than {where} ({why}): give the config these "
                                  "weights were trained with, or no --config")  # fmt: skip
    if pre is not None:
        apply_preprocessor(tr.cfg, pre, source=str(Path(source) / "preprocessor_config.json"))
    table = None if carried else _config_table(tr.cfg) if base is not None else match_dataset(tr.classes)
    if base is None and table is None:  # not a shipped dataset's classes: a folder dataset of the user's (README)
        tr.cfg.data.dataset, tr.cfg.data.root = "folder", ""
        size = (pre or {}).get("size")  # no original test sizes to go by: the processor's (what `to-hf` writes)
        if isinstance(size, dict) and isinstance(size.get("shortest_edge"), int):
            tr.cfg.test.min_size = size["shortest_edge"]
            if isinstance(size.get("longest_edge"), int):
                tr.cfg.test.max_size = size["longest_edge"]
    if base is None and table is not None:
        tr.cfg.data.dataset = table.name
        for section, values in _dataset_settings(table.name).items():
            for key, value in values.items():
                setattr(getattr(tr.cfg, section), key, value)
    state = hf_state_to_ours(hf_state, model.state_dict(), source_name=str(source))
    _save(output, tr.cfg, model, state, carried[1] if carried else _meta_dict(tr.classes, table), source)
    for note in tr.notes:
        _note(note)
    if base is None and table is None:
        _note("dataset not recognised from the class names: data.dataset=folder (eval reads DATA_ROOT/classes.json);"
              " pass --config for test sizes and inference settings")  # fmt: skip
    b = tr.cfg.model.backbone
    arch = backbone_summary(b)
    return f"converted {len(hf_state)} tensors: {source} -> {output} ({arch}, {len(tr.classes)} classes)"


def convert_to_hf(checkpoint: str | Path, output_dir: str | Path, *, overwrite: bool = False) -> str:
    """Our checkpoint -> transformers save_pretrained folder (a folder holding files is an error unless
    ``overwrite``, which replaces it). Returns the summary line."""
    from ..config import config_to_dict
    from ..convert.hf_config import hf_config_from_ours
    from ..convert.hf_folder import hf_preprocessor_from_ours, write_hf_folder
    from ..errors import CheckpointError
    from .checkpoint import config_of, load_checkpoint, meta_of

    obj = load_checkpoint(checkpoint)
    cfg = config_of(obj, checkpoint)
    meta = meta_of(obj, cfg, checkpoint)
    try:
        kwargs = hf_config_from_ours(cfg, list(meta.classes))
    except CheckpointError as e:
        raise CheckpointError(f"{checkpoint}: {e}") from None
    _fits(cfg, obj.get("model"), checkpoint)
    _finite(obj["model"], checkpoint)
    pre = hf_preprocessor_from_ours(cfg, ignore_label=int(meta.ignore_label))
    # for a round trip without --config (transformers keeps keys it does not know in config.json)
    kwargs[CARRIED] = {"config": config_to_dict(cfg), "meta": meta.to_dict()}
    n = write_hf_folder(
        output_dir, kwargs, obj["model"], source_name=str(checkpoint), preprocessor=pre, overwrite=overwrite
    )
    return f"converted {n} tensors: {checkpoint} -> {output_dir} (transformers MaskFormerForInstanceSegmentation)"


def convert_to_detectron2(checkpoint: str | Path, output: str | Path) -> str:
    """Our checkpoint -> a ``.pkl`` laid out like the original's model-zoo files (``{"model": {name: ndarray},
    "__author__": ...}``, old key layout), which the original code loads with its config. Returns the summary line."""
    from ..convert.detectron2 import ours_state_to_detectron2
    from ..convert.pickle_io import save_pkl
    from ..errors import CheckpointError, UserError
    from .checkpoint import config_of, load_checkpoint

    if Path(output).suffix != ".pkl":
        raise UserError(f"{output}: the output must end in .pkl (detectron2 reads numpy weights from .pkl files)")
    obj = load_checkpoint(checkpoint)
    cfg = config_of(obj, checkpoint)
    _fits(cfg, obj.get("model"), checkpoint)
    _finite(obj["model"], checkpoint)
    try:
        weights = ours_state_to_detectron2(obj["model"])
    except CheckpointError as e:
        raise CheckpointError(f"{checkpoint}: {e}") from None
    save_pkl({"model": weights, "__author__": "maskformer"}, output)
    arch = "per-pixel baseline" if cfg.model.meta_arch != "maskformer" else "MaskFormer"
    return (
        f"converted {len(weights)} tensors: {checkpoint} -> {output} (original {arch} layout, "
        f"{cfg.model.num_classes} classes; the original loads it with its config for this model, and `maskformer "
        f"convert detectron2 {output} OUT.pt --config CONFIG` with this model's YAML (a run's config.yaml))"
    )


def backbone_summary(b) -> str:  # noqa: ANN001 - a config's model.backbone section
    """The backbone in a few words for the summary line: Swin C=96 depths=[2, 2, 6, 2], ResNet-50, or ResNet
    blocks=[1, 1, 1, 1] for block counts of its own (it said "blocks=50" for a standard depth)."""
    if b.type == "swin":
        return f"Swin C={b.embed_dim} depths={b.depths}"
    return f"ResNet blocks={b.blocks}" if b.blocks else f"ResNet-{b.depth}"
