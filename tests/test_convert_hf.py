"""transformers MaskFormer <-> this project: config translation, weight conversion and output parity.

The peer is transformers itself (randomly initialised from a config, no download): its outputs on the same input
are the expected values. Weights are perturbed with a seeded recipe before ``save_pretrained`` so that BN statistics,
LayerNorm affines and biases are far from their defaults and every tensor matters.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation  # noqa: E402

import maskformer  # noqa: E402
from conftest import CONFIGS  # noqa: E402
from maskformer.cli import main  # noqa: E402
from maskformer.convert.hf_config import config_from_hf, hf_config_from_ours  # noqa: E402
from maskformer.convert.huggingface import hf_state_to_ours  # noqa: E402
from maskformer.engine.checkpoint import load_checkpoint, load_model, load_model_and_config, save_checkpoint  # noqa: E402
from maskformer.engine.conversion import backbone_summary, convert_hf, convert_to_hf  # noqa: E402
from maskformer.errors import CheckpointError  # noqa: E402

STAGES = ["stage1", "stage2", "stage3", "stage4"]
SIZES = [(256, 256), (384, 512)]


def _backbone(kind: str, paper: bool) -> dict:
    if kind == "resnet":
        if paper:  # ResNet-50
            return {"model_type": "resnet", "depths": [3, 4, 6, 3], "out_features": STAGES}
        return {"model_type": "resnet", "depths": [1, 1, 2, 1], "hidden_sizes": [64, 128, 256, 512],
                "embedding_size": 32, "out_features": STAGES}  # fmt: skip
    if paper:  # Swin-T as in the paper (MaskFormerSwinConfig defaults are Swin-T's shape)
        return {"model_type": "maskformer-swin", "drop_path_rate": 0.3, "out_features": STAGES}
    return {"model_type": "swin", "embed_dim": 32, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8], "window_size": 7}


def _hf_config(kind: str, *, paper: bool = False, labels: list[str] | None = None) -> MaskFormerConfig:
    if paper:
        decoder, dims = {"model_type": "detr"}, {}  # DETR defaults: 6 layers, d_model 256, 8 heads, 100 queries
    else:
        decoder = {"model_type": "detr", "decoder_layers": 2, "d_model": 64, "decoder_attention_heads": 4,
                   "decoder_ffn_dim": 128, "num_queries": 10}  # fmt: skip
        dims = {"fpn_feature_size": 64, "mask_feature_size": 96}
    labels = labels or [f"thing{i}" for i in range(5)]
    return MaskFormerConfig(
        backbone_config=_backbone(kind, paper), decoder_config=decoder, id2label=dict(enumerate(labels)), **dims
    )


def _perturb(state: dict[str, torch.Tensor], seed: int) -> None:
    """Recipe-like values (as ../shared/reference/parity/README.md): BN stats and affines far from 0/1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in state.items():
            if not t.is_floating_point():
                continue
            z = torch.randn(t.shape, generator=g)
            last = name.rsplit(".", 1)[-1]
            if last == "running_var":
                t.copy_(torch.exp(0.2 * z))
            elif last == "running_mean" or last.endswith("bias"):
                t.copy_(0.1 * z)
            elif t.ndim == 1:
                t.copy_(1 + 0.1 * z)
            elif "relative_position_bias_table" in name:
                t.copy_(0.02 * z)
            elif "queries_embedder" in name or "query_embed" in name:
                t.copy_(z)
            else:
                t.copy_(z / math.sqrt(t[0].numel()))


def _save_hf(kind: str, folder: Path, *, paper: bool = False, seed: int = 0) -> MaskFormerForInstanceSegmentation:
    torch.manual_seed(seed)
    labels = [f"class{i}" for i in range(150)] if paper else None
    hf = MaskFormerForInstanceSegmentation(_hf_config(kind, paper=paper, labels=labels)).eval()
    _perturb(hf.state_dict(), seed)
    hf.save_pretrained(folder)
    return hf


def _assert_parity(hf: MaskFormerForInstanceSegmentation, ours: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for h, w in SIZES:
        x = torch.randn(1, 3, h, w, generator=g)
        with torch.no_grad():
            expected, got = hf(pixel_values=x), ours(x)
        q = hf.config.decoder_config.num_queries
        assert got["pred_masks"].shape == expected.masks_queries_logits.shape == (1, q, h // 4, w // 4)
        # the comparison means something only if the outputs vary
        assert expected.masks_queries_logits.std() > 0.3 and expected.class_queries_logits.std() > 0.1
        torch.testing.assert_close(got["pred_logits"], expected.class_queries_logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(got["pred_masks"], expected.masks_queries_logits, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def small_hf(tmp_path_factory) -> dict[str, tuple[Path, MaskFormerForInstanceSegmentation]]:
    out = {}
    for kind in ("resnet", "swin"):
        folder = tmp_path_factory.mktemp(f"hf_{kind}")
        out[kind] = (folder, _save_hf(kind, folder, seed=3))
    return out


@pytest.fixture(params=["resnet", "swin"])
def hf_folder(request, small_hf) -> tuple[str, Path, MaskFormerForInstanceSegmentation]:
    return (request.param, *small_hf[request.param])


def test_converted_model_matches_transformers(hf_folder, tmp_path):
    kind, folder, hf = hf_folder
    out = tmp_path / "converted.pt"
    summary = convert_hf(folder, out)
    assert str(out) in summary
    model, cfg, meta = load_model_and_config(out)
    _assert_parity(hf, model, seed=11)
    assert meta.classes == [f"thing{i}" for i in range(5)]
    hfc = hf.config
    assert (cfg.model.num_classes, cfg.model.num_queries, cfg.model.hidden_dim) == (5, 10, 64)
    assert (cfg.model.convs_dim, cfg.model.mask_dim, cfg.model.nheads, cfg.model.dec_layers) == (64, 96, 4, 2)
    assert cfg.model.dim_feedforward == 128 and cfg.loss.mask_weight == hfc.mask_weight == 20.0
    b = cfg.model.backbone
    if kind == "swin":
        assert (b.type, b.embed_dim, b.depths, b.num_heads) == ("swin", 32, [2, 2, 2, 2], [1, 2, 4, 8])
        assert b.window_size == 7
    else:
        assert (b.type, b.blocks, b.stem_out_channels, b.width_per_group, b.norm) == (
            "resnet", [1, 1, 2, 1], 32, 16, "FrozenBN")  # fmt: skip


def test_pytorch_model_bin_folder_converts_like_safetensors(hf_folder, tmp_path):
    kind, folder, _ = hf_folder
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    shutil.copy(folder / "config.json", bin_folder / "config.json")
    torch.save(load_file(folder / "model.safetensors"), bin_folder / "pytorch_model.bin")
    convert_hf(folder, tmp_path / "a.pt")
    convert_hf(bin_folder, tmp_path / "b.pt")
    a, b = load_checkpoint(tmp_path / "a.pt")["model"], load_checkpoint(tmp_path / "b.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["resnet", "swin"])
def test_in_memory_key_names_of_paper_sized_models_convert(kind):
    """transformers' in-memory names (o_proj, mlp.fc1) differ from the ones save_pretrained writes (out_proj, fc1):
    both are accepted. Checked on the paper's Swin-T / R50 shapes, on the meta device (names and shapes only)."""
    hf_cfg = _hf_config(kind, paper=True, labels=[f"c{i}" for i in range(150)])
    with torch.device("meta"):
        hf = MaskFormerForInstanceSegmentation(hf_cfg)
    hf_state = hf.state_dict()
    assert any(".o_proj." in k for k in hf_state) and any(".mlp.fc1." in k for k in hf_state)
    tr = config_from_hf(hf_cfg.to_dict(), source="config.json")
    with torch.device("meta"):
        ours = maskformer.build_model(tr.cfg)
    target = ours.state_dict()
    converted = hf_state_to_ours(hf_state, target, source_name="meta")
    assert converted.keys() == target.keys()
    # parameter counts of the original R50 / Swin-T ADE20K-150 models (OFFICIAL_SPEC §2.5, FrozenBN buffers excluded)
    assert sum(p.numel() for p in ours.parameters()) == {"resnet": 41_254_743, "swin": 41_757_009}[kind]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["resnet", "swin"])
def test_paper_sized_models_match_transformers(kind, tmp_path):
    hf = _save_hf(kind, tmp_path / "hf", paper=True, seed=5)
    convert_hf(tmp_path / "hf", tmp_path / "c.pt")
    _assert_parity(hf, load_model(tmp_path / "c.pt"), seed=13)


def _small_ours(kind: str, *extra: str) -> maskformer.Config:
    overrides = ["model.num_classes=5", "model.num_queries=10", "model.hidden_dim=64", "model.nheads=4",
                 "model.dim_feedforward=128", "model.dec_layers=2", "model.convs_dim=64",
                 "model.mask_dim=96"]  # fmt: skip
    if kind == "swin":
        overrides += ["model.backbone.type=swin", "model.backbone.embed_dim=32", "model.backbone.depths=[2,2,2,2]",
                      "model.backbone.num_heads=[1,2,4,8]"]  # fmt: skip
    else:
        overrides += ["model.backbone.blocks=[1,2,1,1]", "model.backbone.width_per_group=16",
                      "model.backbone.stem_out_channels=32"]  # fmt: skip
    return maskformer.load_config(None, [*overrides, *extra])


@pytest.mark.parametrize("kind, extra", [("resnet", ()), ("swin", ()), ("swin", ("model.enforce_input_proj=true",))])
def test_round_trip_ours_to_transformers_and_back(kind, extra, tmp_path):
    """(enforce_input_proj, set by the COCO-panoptic Swin configs, came back false: the same network, another
    config.)"""
    cfg = _small_ours(kind, *extra)
    torch.manual_seed(0)
    model = maskformer.build_model(cfg).eval()
    state = model.state_dict()
    _perturb(state, seed=7)
    classes = ["road", "car", "sky", "tree", "person"]
    save_checkpoint(tmp_path / "ours.pt", cfg=cfg, model=model, meta={"classes": classes})
    summary = convert_to_hf(tmp_path / "ours.pt", tmp_path / "hf")
    assert str(tmp_path / "hf") in summary
    convert_hf(tmp_path / "hf", tmp_path / "back.pt")
    back, back_cfg, meta = load_model_and_config(tmp_path / "back.pt")
    back_state = back.state_dict()
    assert back_state.keys() == state.keys()
    assert all(torch.equal(back_state[k], state[k]) for k in state)
    assert meta.classes == classes
    assert back_cfg.model == cfg.model
    # what transformers' config does not describe comes back from the copy `to-hf` stored in config.json
    assert (back_cfg.data, back_cfg.test, back_cfg.inference) == (cfg.data, cfg.test, cfg.inference)
    x = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = model(x), back(x)
        hf = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path / "hf").eval()
        c = hf(pixel_values=x)
    assert torch.equal(a["pred_masks"], b["pred_masks"]) and torch.equal(a["pred_logits"], b["pred_logits"])
    torch.testing.assert_close(c.masks_queries_logits, a["pred_masks"], atol=1e-4, rtol=0)
    torch.testing.assert_close(c.class_queries_logits, a["pred_logits"], atol=1e-4, rtol=0)
    assert hf.config.id2label == dict(enumerate(classes))
    pre = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    # 123.675 / 255 = 0.485, 58.395 / 255 = 0.229 (ImageNet statistics)
    assert pre["image_mean"] == pytest.approx([0.485, 0.456, 0.406]) and pre["image_std"][0] == pytest.approx(0.229)


def test_round_trip_without_config_keeps_sizes_thresholds_and_class_table(tmp_path, capsys):
    """`to-hf` stores the config and class table in config.json, so `convert hf` without --config gives back the
    same test sizes, panoptic thresholds, dataset and class colours/ids (before, a recognised dataset's defaults:
    e.g. COCO's 800/1333 and 0.8 instead of the run's 128/224 and 0.0); a folder whose classes were edited since
    falls back to the class-name rules, with a note."""
    coco = ["person", "bicycle", "car"]
    overrides = ["test.min_size=128", "test.max_size=224", "inference.object_mask_threshold=0.0",
                 "inference.overlap_threshold=0.3", "inference.panoptic_on=true", "data.dataset=folder"]  # fmt: skip
    cfg = _small_ours("resnet", *overrides, "model.num_classes=3")
    model = maskformer.build_model(cfg).eval()
    meta = {"dataset": "folder", "ignore_label": 255, "classes": [
        {"id": 10 * (i + 1), "name": name, "color": [40 * i, 90, 200], "isthing": i != 2} for i, name in enumerate(coco)
    ]}  # fmt: skip
    save_checkpoint(tmp_path / "ours.pt", cfg=cfg, model=model, meta=meta)
    convert_to_hf(tmp_path / "ours.pt", tmp_path / "hf")
    convert_hf(tmp_path / "hf", tmp_path / "back.pt")
    _, back_cfg, back_meta = load_model_and_config(tmp_path / "back.pt")
    _, _, ours_meta = load_model_and_config(tmp_path / "ours.pt")
    assert (back_cfg.test, back_cfg.inference, back_cfg.data) == (cfg.test, cfg.inference, cfg.data)
    assert back_meta.to_dict() == ours_meta.to_dict()
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["id2label"]["2"] = "bus"  # classes edited in transformers after the export
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    convert_hf(tmp_path / "hf", tmp_path / "edited.pt")
    assert "settings are not used (the classes changed" in capsys.readouterr().err
    _, edited_cfg, edited_meta = load_model_and_config(tmp_path / "edited.pt")
    assert edited_meta.classes == ["person", "bicycle", "bus"] and edited_cfg.data.dataset == "folder"


def test_a_batchnorm_model_comes_back_with_batchnorm(tmp_path):
    """A model training its BatchNorm (norm BN, e.g. from scratch) came back as FrozenBN: fewer parameters, and
    fine-tuning the result froze them. Its counters are not in transformers' files and come back as 0."""
    cfg = _small_ours("resnet", "model.backbone.norm=BN")
    torch.manual_seed(0)
    model = maskformer.build_model(cfg).eval()
    state = model.state_dict()
    _perturb(state, seed=3)
    save_checkpoint(tmp_path / "ours.pt", cfg=cfg, model=model, meta={"classes": list("abcde")})
    convert_to_hf(tmp_path / "ours.pt", tmp_path / "hf")
    convert_hf(tmp_path / "hf", tmp_path / "back.pt")
    back, back_cfg, _ = load_model_and_config(tmp_path / "back.pt")
    assert back_cfg.model == cfg.model and back_cfg.model.backbone.norm == "BN"
    for key, value in back.state_dict().items():
        expected = torch.zeros_like(value) if key.endswith("num_batches_tracked") else state[key]
        assert torch.equal(value, expected), key


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ("ade20k-150/maskformer_R101c_bs16_160k.yaml", "model.backbone.stem"),
        ("coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml", "model.pixel_decoder"),
        ("ade20k-150/per_pixel_baseline_R50_bs16_160k.yaml", "model.meta_arch"),
    ],
)
def test_models_without_transformers_equivalent_are_refused(config, needle):
    from conftest import CONFIGS

    cfg = maskformer.load_config(CONFIGS / config)
    with pytest.raises(CheckpointError, match=needle.replace(".", r"\.")):
        hf_config_from_ours(cfg, [f"c{i}" for i in range(cfg.model.num_classes)])


def _edit_config(folder: Path, dst: Path, edit) -> Path:
    shutil.copytree(folder, dst)
    data = json.loads((dst / "config.json").read_text())
    edit(data)
    (dst / "config.json").write_text(json.dumps(data))
    return dst


@pytest.mark.parametrize(
    ("kind", "key", "value"),
    [
        ("resnet", "downsample_in_bottleneck", True),
        ("resnet", "layer_type", "basic"),
        ("resnet", "hidden_act", "gelu"),
        ("swin", "use_absolute_embeddings", True),
        ("swin", "qkv_bias", False),
        ("swin", "model_type", "convnext"),
    ],
)
def test_unrepresentable_backbone_settings_are_named(kind, key, value, small_hf, tmp_path):
    bad = _edit_config(small_hf[kind][0], tmp_path / "bad", lambda d: d["backbone_config"].update({key: value}))
    with pytest.raises(CheckpointError, match=f"backbone_config.{key}"):
        convert_hf(bad, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_decoder_auxiliary_loss_is_refused(hf_folder, tmp_path):
    _, folder, _ = hf_folder
    bad = _edit_config(folder, tmp_path / "bad", lambda d: d["decoder_config"].update(auxiliary_loss=True))
    with pytest.raises(CheckpointError, match="decoder_config.auxiliary_loss"):
        convert_hf(bad, tmp_path / "out.pt")


def _edit_weights(folder: Path, dst: Path, edit) -> Path:
    shutil.copytree(folder, dst)
    state = load_file(dst / "model.safetensors")
    edit(state)
    save_file(state, dst / "model.safetensors")
    return dst


def test_key_problems_are_listed(hf_folder, tmp_path):
    _, folder, _ = hf_folder
    key = "model.transformer_module.decoder.layers.1.self_attn.q_proj.weight"
    gone = _edit_weights(folder, tmp_path / "gone", lambda s: s.pop("class_predictor.bias"))
    with pytest.raises(CheckpointError, match=r"not filled: predictor\.class_embed\.bias"):
        convert_hf(gone, tmp_path / "o.pt")
    extra = _edit_weights(folder, tmp_path / "extra", lambda s: s.update({"model.extra.weight": torch.ones(2)}))
    with pytest.raises(CheckpointError, match=r"not consumed: model\.extra\.weight"):
        convert_hf(extra, tmp_path / "o.pt")
    shape = _edit_weights(folder, tmp_path / "shape", lambda s: s.update({key: torch.ones(64, 63)}))
    with pytest.raises(CheckpointError, match=r"self_attn\.q_proj\.weight"):  # an incomplete q/k/v triple
        convert_hf(shape, tmp_path / "o.pt")
    head = _edit_weights(folder, tmp_path / "head", lambda s: s.update({"class_predictor.bias": torch.ones(7)}))
    with pytest.raises(CheckpointError, match=r"shape mismatches: class_predictor\.bias \(7,\)"):
        convert_hf(head, tmp_path / "o.pt")


def test_bad_folders_fail_in_one_line_with_exit_code_2(hf_folder, tmp_path, capsys):
    _, folder, _ = hf_folder
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(folder / "config.json", no_weights / "config.json")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(folder, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    bad_json = tmp_path / "bad_json"
    shutil.copytree(folder, bad_json)
    (bad_json / "config.json").write_text("{not json")
    cases = {tmp_path / "missing": "not a folder", no_config: "config.json", no_weights: "no model.safetensors",
             corrupt: "model.safetensors", bad_json: "config.json"}  # fmt: skip
    for src, needle in cases.items():
        assert main(["convert", "hf", str(src), str(tmp_path / "o.pt")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(src) in err and needle in err, err
    assert not (tmp_path / "o.pt").exists()


def test_cli_hf_prints_summary_and_help(hf_folder, tmp_path, capsys):
    _, folder, _ = hf_folder
    assert main(["convert", "hf", str(folder), str(tmp_path / "x.pt")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "converted" in out[0] and str(tmp_path / "x.pt") in out[0]
    b = load_model_and_config(tmp_path / "x.pt")[1].model.backbone
    assert f"({backbone_summary(b)}, 5 classes)" in out[0]
    r50 = maskformer.load_config(CONFIGS / "ade20k-150" / "maskformer_R50_bs16_160k.yaml").model.backbone
    assert backbone_summary(r50) == "ResNet-50"  # (it said "ResNet blocks=50")
    for argv in (["convert", "--help"], ["convert", "hf", "--help"], ["convert", "to-hf", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    assert "save_pretrained" in capsys.readouterr().out


def test_preprocessor_and_known_dataset_are_used(tmp_path):
    from maskformer.data.metadata import load_meta

    coco = load_meta("coco_panoptic")
    torch.manual_seed(0)
    MaskFormerForInstanceSegmentation(_hf_config("resnet", labels=coco.classes)).save_pretrained(tmp_path / "hf")
    pre = {"image_mean": [0.5, 0.25, 0.0], "image_std": [0.5, 0.5, 1.0], "rescale_factor": 1 / 255}
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps(pre))
    convert_hf(tmp_path / "hf", tmp_path / "c.pt")
    _, cfg, meta = load_model_and_config(tmp_path / "c.pt")
    assert cfg.model.pixel_mean == pytest.approx([127.5, 63.75, 0.0])
    assert cfg.model.pixel_std == pytest.approx([127.5, 127.5, 255.0])
    # COCO panoptic recognised from the names: the original's panoptic test settings (OFFICIAL_SPEC §2.7)
    assert cfg.data.dataset == "coco_panoptic" and cfg.inference.panoptic_on and cfg.model.size_divisibility == 0
    assert cfg.inference.object_mask_threshold == 0.8 and (cfg.test.min_size, cfg.test.max_size) == (800, 1333)
    assert meta.isthing[:80] == [True] * 80 and meta.isthing[80:] == [False] * 53


def test_unrecognised_classes_evaluate_on_the_users_folder(tmp_path, capsys):
    """A model of a user's own classes, through the transformers format and back without --config, evaluates on
    the user's folder dataset (it used to become an ADE20K-150 model and ask for annotations_detectron2/)."""
    from test_eval_bad_samples import _folder

    root = _folder(tmp_path / "data", bad=False)  # classes bg, a, b, c
    cfg = _small_ours("resnet")
    cfg.model.num_classes, cfg.data.dataset = 4, "folder"
    cfg.test.min_size, cfg.test.max_size = 96, 384  # kept through preprocessor_config.json (not ADE's 512 / 2048)
    classes = {"classes": ["bg", "a", "b", "c"]}
    save_checkpoint(tmp_path / "ours.pt", cfg=cfg, model=maskformer.build_model(cfg), meta=classes)
    convert_to_hf(tmp_path / "ours.pt", tmp_path / "hf")
    for model in (tmp_path / "hf", tmp_path / "back.pt"):
        if model.suffix == ".pt":
            assert main(["convert", "hf", str(tmp_path / "hf"), str(model)]) == 0
        capsys.readouterr()
        args = ["eval", str(model), "--data-root", str(root), "--json", "--set", "data.num_workers=0"]
        assert main(args) == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["images"] == 3
    _, back_cfg, _ = load_model_and_config(tmp_path / "back.pt")
    assert (back_cfg.test.min_size, back_cfg.test.max_size) == (96, 384)


def test_to_hf_into_a_folder_that_holds_files_is_refused_and_overwrite_replaces_it_whole(tmp_path, capsys):
    """`convert to-hf` wrote into an existing folder file by file: another model's weights written earlier
    (pytorch_model.bin, which transformers may load) stayed beside the new ones. Now such a folder is one line and
    exit 2, untouched; --overwrite replaces it whole, with files readable as a plain write leaves them."""
    cfg = _small_ours("resnet")
    save_checkpoint(tmp_path / "ours.pt", cfg=cfg, model=maskformer.build_model(cfg), meta={"classes": list("abcde")})
    out = tmp_path / "hf"
    out.mkdir()
    (out / "pytorch_model.bin").write_bytes(b"another model")
    capsys.readouterr()
    assert main(["convert", "to-hf", str(tmp_path / "ours.pt"), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["pytorch_model.bin"]
    assert main(["convert", "to-hf", str(tmp_path / "ours.pt"), str(out), "--overwrite"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "pytorch_model.bin" not in names and "model.safetensors" in names and "config.json" in names
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.iterdir())  # (0644 with the usual umask)
    assert out.stat().st_mode & 0o755 == 0o755
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    MaskFormerForInstanceSegmentation.from_pretrained(out)


# each dataset of resources/dataset_settings.json and the Base config of its recipe
_BASES = {
    "coco_panoptic": "coco-panoptic/Base-COCO-PanopticSegmentation.yaml",
    "coco_stuff_10k": "coco-stuff-10k-171/Base-COCOStuff10K-171.yaml",
    "cityscapes": "cityscapes/Base-Cityscapes.yaml",
    "mapillary_vistas": "mapillary-vistas/Base-MapillaryVistas-65.yaml",
    "camvid": "camvid/base.yaml",
    "ade20k_full_847": "ade20k-full-847/Base-ADE20KFull-847.yaml",
}


def test_a_recognised_datasets_settings_are_its_recipes_tta_sizes_included(tmp_path):
    """A Cityscapes (or ADE20K-full, COCO-Stuff, Vistas) transformers model converted without --config got ADE20K-150's
    TTA sizes ([256..896], 3584: all below Cityscapes' single test size 1024); every setting of the table is the
    recipe's, and a Cityscapes-named model converts with them."""
    from importlib import resources

    from conftest import CONFIGS
    from maskformer.config import load_config
    from maskformer.data.metadata import load_meta

    table = json.loads(resources.files("maskformer.resources").joinpath("dataset_settings.json").read_text())
    assert sorted(k for k in table if not k.startswith("_")) == sorted(_BASES)
    for name, base in _BASES.items():
        cfg = load_config(CONFIGS / base)
        assert cfg.data.dataset == name
        for section, values in table[name].items():
            assert {k: getattr(getattr(cfg, section), k) for k in values} == values, (name, section)
    city = load_meta("cityscapes")
    torch.manual_seed(0)
    MaskFormerForInstanceSegmentation(_hf_config("resnet", labels=city.classes)).save_pretrained(tmp_path / "hf")
    convert_hf(tmp_path / "hf", tmp_path / "c.pt")
    _, cfg, _ = load_model_and_config(tmp_path / "c.pt")
    assert cfg.data.dataset == "cityscapes" and (cfg.test.min_size, cfg.test.max_size) == (1024, 2048)
    assert (cfg.test.tta_min_sizes, cfg.test.tta_max_size) == ([512, 768, 1024, 1280, 1536, 1792], 4096)
