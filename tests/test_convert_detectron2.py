"""Original (detectron2) checkpoints: the 16 official key lists, the old/new layouts, safe unpickling, the CLI, and
backbone-only ImageNet files (torchvision ResNet-50 checked against torchvision itself)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import maskformer
from maskformer.cli import main
from maskformer.config import save_config
from maskformer.convert.detectron2 import (
    FULL_MODEL_RULES,
    convert_detectron2_state,
    detectron2_name,
    load_backbone_weights,
    load_detectron2_weights,
    zoo_file_configs,
)
from maskformer.convert.pickle_io import save_pkl
from maskformer.convert.rename import convert_state
from maskformer.engine.checkpoint import load_model_and_config, save_checkpoint
from maskformer.engine.conversion import convert_detectron2
from maskformer.errors import CheckpointError, UserError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
KEYS = ROOT.parent / "shared" / "reference" / "official_keys"

# official key list -> the config of the model it belongs to (written from OFFICIAL_SPEC §2.5 / §7)
VARIANTS = {
    "R50_ade150": "ade20k-150/maskformer_R50_bs16_160k.yaml",
    "R101_ade150": "ade20k-150/maskformer_R101_bs16_160k.yaml",
    "R101c_ade150": "ade20k-150/maskformer_R101c_bs16_160k.yaml",
    "swinT_ade150": "ade20k-150/swin/maskformer_swin_tiny_bs16_160k.yaml",
    "swinS_ade150": "ade20k-150/swin/maskformer_swin_small_bs16_160k.yaml",
    "swinB_ade150": "ade20k-150/swin/maskformer_swin_base_IN21k_384_bs16_160k_res640.yaml",
    "swinL_ade150": "ade20k-150/swin/maskformer_swin_large_IN21k_384_bs16_160k_res640.yaml",
    "R50_cocopan133_6enc": "coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml",
    "R101_cocopan133_6enc": "coco-panoptic/maskformer_panoptic_R101_bs64_554k.yaml",
    "swinT_cocopan133": "coco-panoptic/swin/maskformer_panoptic_swin_tiny_bs64_554k.yaml",
    "swinB_cocopan133": "coco-panoptic/swin/maskformer_panoptic_swin_base_IN21k_384_bs64_554k.yaml",
    "swinL_cocopan133": "coco-panoptic/swin/maskformer_panoptic_swin_large_IN21k_384_bs64_554k.yaml",
    "R50_ade847": "ade20k-full-847/maskformer_R50_bs16_200k.yaml",
    "R50_cocostuff171": "coco-stuff-10k-171/maskformer_R50_bs32_60k.yaml",
    "R50_mapillary65": "mapillary-vistas/maskformer_R50_bs16_300k.yaml",
    "R101_city19": "cityscapes/maskformer_R101_bs16_90k.yaml",
}


def _key_list(variant: str) -> list[tuple[str, tuple[int, ...]]]:
    if not KEYS.is_dir():
        pytest.skip(f"{KEYS} is absent: the official key lists live in ../shared")
    from parity_recipe import read_key_list

    return read_key_list(variant)


def _old_layout(key: str) -> str:
    prefix = "sem_seg_head.pixel_decoder."
    return "sem_seg_head." + key[len(prefix) :] if key.startswith(prefix) else key


def _meta_target(config: str) -> dict[str, torch.Tensor]:
    cfg = maskformer.load_config(CONFIGS / config)
    with torch.device("meta"):
        return maskformer.build_model(cfg).state_dict()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_official_key_loads_into_its_config(variant):
    """A model-zoo file holds the official keys in the old layout without criterion.empty_weight (OFFICIAL_SPEC
    §2.5). Names and shapes only: zero-stride tensors against a meta-device model."""
    keys = _key_list(variant)
    source = {
        _old_layout(k): torch.zeros(()).expand(shape) for k, shape in keys if k != "criterion.empty_weight"
    }  # fmt: skip
    assert any(k.startswith("sem_seg_head.layer_") for k in source)  # really the old layout
    target = _meta_target(VARIANTS[variant])
    converted = convert_state(source, FULL_MODEL_RULES, target, source_name=variant)
    assert converted.keys() == target.keys()
    assert len(converted) == len(source)  # every file key lands on exactly one model key


def test_variants_configs_are_the_model_zoo_ones():
    assert set(VARIANTS.values()) <= set(zoo_file_configs().values())
    assert all((CONFIGS / c).is_file() for c in zoo_file_configs().values())


def _tiny_cfg(**extra: str) -> maskformer.Config:
    overrides = ["model.backbone.blocks=[1,1,1,1]", "model.backbone.width_per_group=8", "model.num_classes=3",
                 "model.num_queries=4", "model.hidden_dim=32", "model.nheads=2", "model.dim_feedforward=32",
                 "model.dec_layers=2", "model.convs_dim=32", "model.mask_dim=32"]  # fmt: skip
    return maskformer.load_config(None, overrides + [f"{k}={v}" for k, v in extra.items()])


def _tiny_zoo_state(cfg: maskformer.Config, *, old_layout: bool = True) -> dict[str, np.ndarray]:
    """What a released .pkl of this model would hold: numpy arrays under the original's names."""
    torch.manual_seed(0)
    state = maskformer.build_model(cfg).state_dict()
    out = {}
    g = np.random.default_rng(0)
    for k, v in state.items():
        name = "sem_seg_head." + k if k.startswith(("pixel_decoder.", "predictor.")) else k
        if old_layout:
            name = _old_layout(name)
        out[name] = v.numpy() if v.dtype == torch.int64 else g.standard_normal(v.shape).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> tuple[maskformer.Config, dict[str, np.ndarray], Path]:
    cfg = _tiny_cfg()
    state = _tiny_zoo_state(cfg)
    path = tmp_path_factory.mktemp("zoo") / "model_final_tiny.pkl"
    save_pkl({"model": state, "__author__": "test"}, path)
    return cfg, state, path


def test_old_and_new_layouts_load_identically(tiny_zoo, tmp_path):
    cfg, old, path = tiny_zoo
    new = {
        ("sem_seg_head.pixel_decoder." + k[len("sem_seg_head.") :])
        if k.startswith("sem_seg_head.") and not k.startswith("sem_seg_head.predictor.")
        else k: v
        for k, v in old.items()
    }
    assert new.keys() != old.keys()
    new_path = tmp_path / "new.pkl"
    save_pkl({"model": new}, new_path)
    target = maskformer.build_model(cfg).state_dict()
    a, b = convert_detectron2_state(path, target), convert_detectron2_state(new_path, target)
    assert a.keys() == b.keys() == target.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(a["pixel_decoder.layer_4.weight"].numpy(), old["sem_seg_head.layer_4.weight"])
    np.testing.assert_array_equal(
        a["predictor.class_embed.bias"].numpy(), old["sem_seg_head.predictor.class_embed.bias"]
    )


@pytest.mark.parametrize("problem", ["missing", "extra", "shape"])
def test_key_problems_name_the_key(problem, tiny_zoo, tmp_path):
    cfg, state, _ = tiny_zoo
    state = dict(state)
    key = "sem_seg_head.adapter_2.norm.weight"
    if problem == "missing":
        del state[key]
        needle = "not filled: pixel_decoder.adapter_2.norm.weight"
    elif problem == "extra":
        state["sem_seg_head.predictor.extra_head.weight"] = np.zeros(3, np.float32)
        needle = "not consumed: sem_seg_head.predictor.extra_head.weight"
    else:
        state[key] = np.zeros(7, np.float32)
        needle = f"shape mismatches: {key} (7,)"
    path = tmp_path / "bad.pkl"
    save_pkl({"model": state}, path)
    model = maskformer.build_model(cfg)
    with pytest.raises(CheckpointError) as e:
        load_detectron2_weights(model, path)
    assert needle in str(e.value) and str(path) in str(e.value)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/pwned_xyz",))


def test_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    marker = Path("/tmp/pwned_xyz")
    marker.unlink(missing_ok=True)
    path = tmp_path / "model_final_evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"x": _RunsCode()}}, protocol=2))
    with pytest.raises(CheckpointError, match="unsafe") as e:
        convert_detectron2(path, tmp_path / "out.pt", config=CONFIGS / "ade20k-150/maskformer_R50_bs16_160k.yaml")
    assert str(path) in str(e.value) and "system" in str(e.value)
    argv = ["convert", "detectron2", str(path), str(tmp_path / "o.pt"), "--config", str(CONFIGS / "demo.yaml")]
    assert main(argv) == 2
    assert str(path) in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_cli_converts_a_zoo_file_and_the_checkpoint_loads(tiny_zoo, tmp_path, capsys):
    cfg, state, path = tiny_zoo
    config = tmp_path / "tiny.yaml"
    save_config(cfg, config)
    out = tmp_path / "tiny.pt"
    assert main(["convert", "detectron2", str(path), str(out), "--config", str(config)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and str(out) in printed[0]
    model, loaded_cfg, _ = load_model_and_config(out)
    assert loaded_cfg == cfg
    got = model.state_dict()
    key = "backbone.res3.0.conv2.norm.running_var"
    np.testing.assert_array_equal(got[key].numpy(), state[key])
    np.testing.assert_array_equal(
        got["pixel_decoder.mask_features.bias"].numpy(), state["sem_seg_head.mask_features.bias"]
    )


def test_missing_config_names_the_zoo_config(tmp_path, capsys):
    with pytest.raises(UserError, match="configs/ade20k-150/maskformer_R50_bs16_160k.yaml"):
        convert_detectron2(tmp_path / "model_final_d8dbeb.pkl", tmp_path / "o.pt", config=None)
    assert main(["convert", "detectron2", str(tmp_path / "unknown.pkl"), str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert "--config is required" in err and len(err.strip().splitlines()) == 1


def test_torchvision_resnet50_backbone_matches_torchvision(tmp_path):
    """load_backbone_weights on a torchvision state dict: our backbone's res2..res5 equal torchvision's layer1..4
    in eval mode (FrozenBN = BatchNorm in eval)."""
    import torchvision

    tv = torchvision.models.resnet50().eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in tv.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.exp(0.2 * torch.randn(t.shape, generator=g)))
            elif name.endswith(("running_mean", "bias")):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif t.ndim == 1 and t.is_floating_point():
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    model = maskformer.build_model(_tiny_cfg(**{"model.backbone.blocks": "[]", "model.backbone.width_per_group": "64"}))
    load_backbone_weights(model, path)
    x = torch.randn(1, 3, 96, 128, generator=g)
    with torch.no_grad():
        ours = model.eval().backbone(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for i, name in enumerate(("res2", "res3", "res4", "res5")):
            y = getattr(tv, f"layer{i + 1}")(y)
            assert ours[name].shape == y.shape
            torch.testing.assert_close(ours[name], y, rtol=1e-4, atol=1e-4 * y.abs().max().item())
    # the same weights as detectron2's converted R-50.pkl (tools/convert-torchvision-to-d2.py naming, OFFICIAL_SPEC
    # §7: "stem." before non-layer keys, layerN -> res(N+1), bnK -> convK.norm, downsample.0/1 -> shortcut(.norm))
    d2 = {}
    for k, v in tv.state_dict().items():
        k = k if k.startswith("layer") else "stem." + k
        for a, b in (("layer1", "res2"), ("layer2", "res3"), ("layer3", "res4"), ("layer4", "res5"),
                     ("downsample.0", "shortcut"), ("downsample.1", "shortcut.norm")):  # fmt: skip
            k = k.replace(a, b)
        for i in (1, 2, 3):
            k = k.replace(f"bn{i}", f"conv{i}.norm")
        d2[k] = v.numpy()
    save_pkl({"model": d2, "__author__": "torchvision", "matching_heuristics": True}, tmp_path / "R-50.pkl")
    other = maskformer.build_model(_tiny_cfg(**{"model.backbone.blocks": "[]", "model.backbone.width_per_group": "64"}))
    load_backbone_weights(other, tmp_path / "R-50.pkl")
    a, b = model.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("backbone."))


def test_swin_imagenet_pth_loads_into_the_backbone(tmp_path):
    cfg = _tiny_cfg(**{"model.backbone.type": "swin", "model.backbone.embed_dim": "32",
                       "model.backbone.depths": "[2,2,2,2]", "model.backbone.num_heads": "[1,2,4,8]"})  # fmt: skip
    model = maskformer.build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    # an official Swin ImageNet file: backbone keys without prefix, no per-stage norms, plus the classifier's final
    # norm and head and the attention-mask buffers, all of which MaskFormer does not use
    swin = {k[len("backbone.") :]: torch.randn(v.shape, generator=g) if v.is_floating_point() else v
            for k, v in before.items() if k.startswith("backbone.") and not k.startswith("backbone.norm")}  # fmt: skip
    swin.update({"norm.weight": torch.ones(256), "norm.bias": torch.zeros(256), "head.weight": torch.ones(1000, 256),
                 "head.bias": torch.zeros(1000), "layers.0.blocks.1.attn_mask": torch.zeros(64, 49, 49)})  # fmt: skip
    path = tmp_path / "swin_tiny.pth"
    torch.save({"model": swin}, path)
    load_backbone_weights(model, path)
    after = model.state_dict()
    for k, v in swin.items():
        if f"backbone.{k}" in after:
            assert torch.equal(after[f"backbone.{k}"], v), k
    assert torch.equal(after["backbone.norm0.weight"], before["backbone.norm0.weight"])
    assert torch.equal(after["predictor.class_embed.weight"], before["predictor.class_embed.weight"])
    swin["layers.0.unknown.weight"] = torch.ones(3)
    torch.save({"model": swin}, path)
    with pytest.raises(CheckpointError, match=r"not consumed: layers\.0\.unknown\.weight"):
        load_backbone_weights(model, path)


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_full_zoo_pkl_through_the_cli(variant, tmp_path):
    """End to end with real-sized arrays: recipe .pkl (old layout) -> `maskformer convert detectron2` -> load."""
    from parity_recipe import recipe_state

    _key_list(variant)
    state = recipe_state(variant)
    path = tmp_path / "model_final.pkl"
    save_pkl({"model": state, "__author__": "recipe"}, path)
    out = tmp_path / "model.pt"
    assert main(["convert", "detectron2", str(path), str(out), "--config", str(CONFIGS / VARIANTS[variant])]) == 0
    model, _, meta = load_model_and_config(out)
    got = model.state_dict()
    assert len(got) == len(state)
    key = next(k for k in state if k.startswith("sem_seg_head.layer_"))
    np.testing.assert_array_equal(got["pixel_decoder." + key[len("sem_seg_head.") :]].numpy(), state[key])
    assert len(meta.classes) == model.num_classes


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_to_detectron2_names_are_the_zoo_files_names(variant):
    """Every weight of our model gets the name (and keeps the shape) it has in the released file of that model."""
    official = {_old_layout(k): shape for k, shape in _key_list(variant) if k != "criterion.empty_weight"}
    ours = {detectron2_name(k): tuple(v.shape) for k, v in _meta_target(VARIANTS[variant]).items()}
    assert ours == official


@pytest.mark.parametrize(
    "meta_arch, norm", [("maskformer", "FrozenBN"), ("per_pixel", "FrozenBN"), ("maskformer", "BN")]
)
def test_to_detectron2_and_back_gives_the_same_weights(meta_arch, norm, tmp_path, capsys):
    """Also with BatchNorm, whose 0-d ``num_batches_tracked`` must stay 0-d through numpy."""
    cfg = _tiny_cfg(**{"model.meta_arch": meta_arch, "model.backbone.norm": norm})
    torch.manual_seed(1)
    model = maskformer.build_model(cfg)
    save_checkpoint(tmp_path / "mine.pt", cfg=cfg, model=model)
    config = tmp_path / "mine.yaml"
    save_config(cfg, config)
    assert main(["convert", "to-detectron2", str(tmp_path / "mine.pt"), str(tmp_path / "mine.pkl")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "mine.pkl" in printed[0]
    with open(tmp_path / "mine.pkl", "rb") as f:
        raw = pickle.load(f, encoding="latin1")  # what detectron2's checkpointer does with a .pkl
    assert set(raw) == {"model", "__author__"}
    assert all(isinstance(v, np.ndarray) for v in raw["model"].values())
    assert "criterion.empty_weight" not in raw["model"]
    assert any(k.startswith("sem_seg_head.") and ".pixel_decoder." not in k for k in raw["model"])  # old layout
    assert main(["convert", "detectron2", str(tmp_path / "mine.pkl"), str(tmp_path / "back.pt"), "--config",
                 str(config)]) == 0  # fmt: skip
    back, back_cfg, _ = load_model_and_config(tmp_path / "back.pt")
    assert back_cfg == cfg
    want = model.state_dict()
    got = back.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_to_detectron2_refuses_another_suffix(tmp_path, capsys):
    cfg = _tiny_cfg()
    save_checkpoint(tmp_path / "mine.pt", cfg=cfg, model=maskformer.build_model(cfg))
    assert main(["convert", "to-detectron2", str(tmp_path / "mine.pt"), str(tmp_path / "mine.pth")]) == 2
    err = capsys.readouterr().err
    assert "mine.pth" in err and ".pkl" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mine.pth").exists()


def test_a_file_that_is_no_weights_is_named_without_torchs_unsafe_advice(tmp_path, capsys):
    """An image given as the source: torch's weights-only message says to retry with weights_only=False, which is
    the wrong advice for a user; the line names the file and why."""
    image = tmp_path / "street.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    argv = ["convert", "detectron2", str(image), str(tmp_path / "o.pt"), "--config", str(CONFIGS / "demo.yaml")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(image) in err and "not a torch weight file" in err, err
    assert "weights_only" not in err and not (tmp_path / "o.pt").exists()


def test_text_and_cut_files_are_named_in_words_as_the_checkpoint_loader_names_them(tmp_path, capsys):
    """A text file named .pkl said "unsafe or invalid pickle: Memo value not found at index 101", a .pt cut in
    half printed torch's paragraph of miniz advice, and a .pt with flipped bytes was converted with exit 0 (the
    checkpoint loader refused it: its archive fails its checksums). A transformers weight file likewise."""
    import torch

    torch.save({"model": {"w": torch.zeros(200, 100)}}, tmp_path / "whole.pt")
    whole = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "notes.pkl").write_text("weights from the cluster\nsee the wiki\n")
    (tmp_path / "notes.pt").write_text("weights from the cluster\n")
    flipped = bytearray(whole)  # a few bytes of the weights changed: torch.load reads them as other weights
    middle = slice(len(whole) // 2, len(whole) // 2 + 8)
    flipped[middle] = bytes(255 - b for b in whole[middle])
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    save_pkl({"model": {"w": np.zeros((200, 100), np.float32)}}, tmp_path / "whole.pkl")
    pkl = (tmp_path / "whole.pkl").read_bytes()  # (a download without Content-Length cut short: "unsafe pickle")
    (tmp_path / "cut.pkl").write_bytes(pkl[: len(pkl) // 2])
    for name, why in (("cut.pt", "the file is truncated or corrupt"), ("notes.pkl", "a text file, not a pickle"),
                      ("notes.pt", "a text file"), ("flipped.pt", "fails its checksum"),
                      ("cut.pkl", "the file is cut short")):  # fmt: skip
        argv = ["convert", "detectron2", str(tmp_path / name), str(tmp_path / "o.pt"), "--config",
                str(CONFIGS / "demo.yaml")]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{tmp_path / name}: " in err and why in err, err
        assert "miniz" not in err and "Memo" not in err and not (tmp_path / "o.pt").exists()
    from maskformer.convert.hf_folder import _read_weight_file
    from maskformer.errors import CheckpointError

    (tmp_path / "pytorch_model.bin").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="pytorch_model.bin: the file is damaged"):
        _read_weight_file(tmp_path / "pytorch_model.bin")


def test_a_torch_file_named_pkl_is_read_as_the_torch_file_it_is(tmp_path, capsys):
    """A ``.pth`` of the original code renamed ``.pkl`` was refused as an "unsafe or invalid pickle": the format is
    judged by the file's first bytes (a torch archive), not by its name."""
    import torch

    cfg = maskformer.load_config(CONFIGS / "demo.yaml")
    state = {k: v.clone() for k, v in maskformer.build_model(cfg).state_dict().items()}
    for legacy in (False, True):  # torch's zip archive, and its older pickled format (as older .pth files are)
        weights = {"model": {detectron2_name(k): v for k, v in state.items()}}
        torch.save(weights, tmp_path / "renamed.pkl", _use_new_zipfile_serialization=not legacy)
        argv = ["convert", "detectron2", str(tmp_path / "renamed.pkl"), str(tmp_path / "o.pt"), "--config",
                str(CONFIGS / "demo.yaml"), "--overwrite"]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        model, _, _ = load_model_and_config(tmp_path / "o.pt")
        back = model.state_dict()
        assert all(torch.equal(back[k], v) for k, v in state.items())


def test_the_demo_model_keeps_its_class_table_through_the_original_format(tmp_path, capsys):
    """The demo's synthetic classes (names, thing flags, colours) came back as "class 0..7", all stuff, after
    to-detectron2 and back with the run's config.yaml: only shipped tables and folder data were looked up."""
    from conftest import DEMO_YAML
    from maskformer.build import build_meta

    cfg = maskformer.load_config(DEMO_YAML)
    model = maskformer.build_model(cfg)
    meta = build_meta(cfg)
    assert any(meta.isthing) and not meta.classes[0].startswith("class ")
    save_checkpoint(tmp_path / "demo.pt", cfg=cfg, model=model, meta=meta.to_dict())
    save_config(cfg, tmp_path / "config.yaml")
    assert main(["convert", "to-detectron2", str(tmp_path / "demo.pt"), str(tmp_path / "demo.pkl")]) == 0
    assert main(["convert", "detectron2", str(tmp_path / "demo.pkl"), str(tmp_path / "back.pt"), "--config",
                 str(tmp_path / "config.yaml")]) == 0  # fmt: skip
    _, _, back_meta = load_model_and_config(tmp_path / "back.pt")
    assert back_meta.to_dict() == meta.to_dict()


def test_a_written_pkl_is_about_the_size_of_its_arrays(tmp_path) -> None:
    """Protocol 2 pickled array bytes as latin-1 text (bytes >= 0x80 take two): a 13.8 MB model became 20.6 MB."""
    from maskformer.convert.pickle_io import load_pkl, save_pkl

    w = np.random.default_rng(0).standard_normal(250_000).astype(np.float32)
    save_pkl({"model": {"w": w}}, tmp_path / "m.pkl")
    assert (tmp_path / "m.pkl").stat().st_size < 1.01 * w.nbytes + 1000
    assert np.array_equal(load_pkl(tmp_path / "m.pkl")["model"]["w"], w)


@pytest.mark.parametrize("damage", ["missing", "shape"])
@pytest.mark.parametrize("target", ["to-detectron2", "to-hf"])
def test_weights_that_do_not_fit_their_config_are_not_converted(tmp_path, capsys, damage, target) -> None:
    """to-detectron2 wrote a .pkl from a checkpoint missing a key or holding a wrong shape (exit 0), which the way
    back then refused; every other command refuses such a checkpoint naming the key."""
    if target == "to-hf":
        pytest.importorskip("transformers")
    cfg = _tiny_cfg()
    save_checkpoint(tmp_path / "ok.pt", cfg=cfg, model=maskformer.build_model(cfg))
    obj = torch.load(tmp_path / "ok.pt", weights_only=False)
    key = "predictor.class_embed.weight"
    if damage == "missing":
        del obj["model"][key]
    else:
        obj["model"][key] = torch.zeros(3, obj["model"][key].shape[1])
    torch.save(obj, tmp_path / "bad.pt")
    out = tmp_path / ("bad.pkl" if target == "to-detectron2" else "bad_hf")
    assert main(["convert", target, str(tmp_path / "bad.pt"), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights do not fit its config" in err and key in err, err
    assert str(tmp_path / "bad.pt") in err and not out.exists()


def test_a_folder_given_as_the_pkl_is_named_as_a_folder(tmp_path, capsys) -> None:
    (tmp_path / "weights.pkl").mkdir()
    argv = ["convert", "detectron2", str(tmp_path / "weights.pkl"), str(tmp_path / "o.pt")]
    assert main([*argv, "--config", str(CONFIGS / "demo.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("weights.pkl: a folder, not a file") and len(err.splitlines()) == 1, err


def test_a_checkpoint_saved_without_meta_keeps_its_configs_class_table(tmp_path) -> None:
    """README's ``save_checkpoint("mine.pt", cfg=cfg, model=model)`` with the demo's config loaded as "class 0..7",
    all stuff: the synthetic classes' names, colours and thing flags were only written by training."""
    from conftest import DEMO_YAML
    from maskformer.build import build_meta

    cfg = maskformer.load_config(DEMO_YAML)
    save_checkpoint(tmp_path / "demo.pt", cfg=cfg, model=maskformer.build_model(cfg))
    _, _, meta = load_model_and_config(tmp_path / "demo.pt")
    assert meta.to_dict() == build_meta(cfg).to_dict() and any(meta.isthing)
    # a folder dataset whose classes.json is not at hand: the generic table, as before
    cfg.data.dataset, cfg.data.root = "folder", str(tmp_path / "nowhere")
    save_checkpoint(tmp_path / "folder.pt", cfg=cfg, model=maskformer.build_model(cfg))
    _, _, meta = load_model_and_config(tmp_path / "folder.pt")
    assert meta.classes[0] == "class 0"


def test_a_config_that_differs_from_the_runs_says_which_setting_to_change(tmp_path, capsys) -> None:
    """A run's classes (from its data) and BatchNorm (trained from scratch) are not in the YAML it started from:
    converting its .pkl back with that YAML listed shape mismatches and unconsumed counters, without the fix."""
    cfg = _tiny_cfg(**{"model.backbone.norm": "BN", "model.num_classes": 6})
    save_checkpoint(tmp_path / "run.pt", cfg=cfg, model=maskformer.build_model(cfg))
    assert main(["convert", "to-detectron2", str(tmp_path / "run.pt"), str(tmp_path / "run.pkl")]) == 0
    started = _tiny_cfg(**{"model.backbone.norm": "FrozenBN", "model.num_classes": 3})
    save_config(started, tmp_path / "started.yaml")
    capsys.readouterr()
    argv = ["convert", "detectron2", str(tmp_path / "run.pkl"), str(tmp_path / "back.pt"), "--config"]
    assert main([*argv, str(tmp_path / "started.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "add --set model.num_classes=6" in err, err
    assert "add --set model.backbone.norm=BN; or give the run's own config.yaml" in err, err
    fixed = ["--set", "model.num_classes=6", "--set", "model.backbone.norm=BN"]
    assert main([*argv, str(tmp_path / "started.yaml"), *fixed]) == 0
