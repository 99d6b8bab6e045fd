import pytest

import maskformer
from conftest import CONFIGS
from maskformer.config import ConfigError, config_to_dict, load_config, save_config

ALL_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if not p.name.startswith("Base-"))


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.model.num_classes >= 1
    assert cfg.data.dataset


def test_ade_r50_values_from_the_spec():
    cfg = load_config(CONFIGS / "ade20k-150/maskformer_R50_bs16_160k.yaml")
    assert cfg.model.num_classes == 150 and cfg.model.num_queries == 100
    assert cfg.data.crop_size == [512, 512]
    assert (
        cfg.data.min_size_train[0] == 256 and cfg.data.min_size_train[-1] == 1024 and len(cfg.data.min_size_train) == 16
    )
    assert cfg.solver.base_lr == 1e-4 and cfg.solver.backbone_multiplier == 0.1
    assert cfg.train.batch_size == 16 and cfg.train.max_iters == 160000


def test_swin_inherits_and_overrides_solver():
    cfg = load_config(CONFIGS / "ade20k-150/swin/maskformer_swin_tiny_bs16_160k.yaml")
    assert cfg.model.backbone.type == "swin"
    assert cfg.solver.base_lr == 6e-5 and cfg.solver.weight_decay == 0.01 and cfg.solver.warmup_iters == 1500
    assert cfg.model.num_classes == 150  # from the base


def test_overrides_are_type_checked():
    cfg = load_config(
        CONFIGS / "demo.yaml", overrides=["model.num_queries=7", "solver.base_lr=1e-3", "data.crop_size=[64,96]"]
    )
    assert cfg.model.num_queries == 7 and cfg.solver.base_lr == 1e-3 and cfg.data.crop_size == [64, 96]
    with pytest.raises(ConfigError, match="model.num_queries"):
        load_config(CONFIGS / "demo.yaml", overrides=["model.num_queries=abc"])
    with pytest.raises(ConfigError, match="model.no_such_key"):
        load_config(CONFIGS / "demo.yaml", overrides=["model.no_such_key=1"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(CONFIGS / "demo.yaml", overrides=["model.num_queries"])


def test_unknown_key_in_file_names_it(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  backbone:\n    typo_key: 3\n")
    with pytest.raises(ConfigError, match="model.backbone.typo_key"):
        load_config(p)
    p.write_text("train:\n  max_iters: [1, 2]\n")
    with pytest.raises(ConfigError, match="train.max_iters"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_save_load_roundtrip(tmp_path):
    cfg = load_config(CONFIGS / "coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml")
    save_config(cfg, tmp_path / "c.yaml")
    assert config_to_dict(load_config(tmp_path / "c.yaml")) == config_to_dict(cfg)


def test_bad_config_at_cli_is_one_line(tmp_path, capsys):
    from maskformer.cli import main

    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  numm_classes: 3\n")
    (tmp_path / "model_final.pt").write_bytes(bytes(range(256)) * 4)  # info takes models too: this one is damaged
    for args, names in (
        (["info", str(tmp_path / "model_final.pt")], "model_final.pt: not a torch checkpoint file"),
        (["info", str(CONFIGS / "demo.yaml"), "--size", "0", "5"], "--size must be at least 32x32, got 0x5"),
        (["info", str(p)], "model.numm_classes"),
        (["info", str(tmp_path / "missing.yaml")], "missing.yaml"),
        (["info", str(CONFIGS / "demo.yaml"), "--set", "model.hidden_dim=x"], "model.hidden_dim"),
    ):
        assert main(args) == 2, args
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("maskformer info: error:") and names in lines[0], lines
    assert maskformer.__version__


def test_values_out_of_range_are_one_line_errors_before_anything_is_written(tmp_path, capsys):
    """Each was a traceback from deep inside training (or, for max_iters=-1, a 'trained' model after 0 steps)."""
    from maskformer.cli import main

    cases = {
        "solver.base_lr=-1": "solver.base_lr=-1.0: must be at least 0",
        "train.max_iters=0": "train.max_iters=0: must be at least 1",
        "train.max_iters=-1": "train.max_iters=-1: must be at least 1",
        "train.batch_size=0": "train.batch_size=0: must be at least 1",
        "train.log_period=0": "train.log_period=0: must be at least 1",
        "data.min_size_train=[]": "data.min_size_train: must not be empty",
        "data.num_workers=-1": "data.num_workers=-1: must be at least 0",
        "model.num_queries=0": "model.num_queries=0: must be at least 1",
        "model.pixel_std=[58.4,0,57.4]": "model.pixel_std=[58.4, 0.0, 57.4]: must be above 0",
        "inference.overlap_threshold=1.5": "inference.overlap_threshold=1.5: must be between 0 and 1",
        # these were tracebacks (exit 1, config.yaml left behind) or trained on with a negative learning rate
        "solver.optimizer=adam": "solver.optimizer: unknown 'adam' (expected adamw or sgd)",
        "solver.lr_scheduler=cosine": "solver.lr_scheduler: unknown 'cosine' (expected poly or multistep)",
        "loss.matching=Hungarian": "loss.matching: unknown 'Hungarian' (expected hungarian or fixed)",
        "model.norm=BN": "model.norm: unknown 'BN' (expected GN or '')",
        "train.seed=-1": "train.seed=-1: must be at least 0",
        "train.seed=18446744073709551616": "train.seed=18446744073709551616: must be at most 2147483647",
        "solver.poly_power=-0.5": "solver.poly_power=-0.5: must be at least 0",
        "solver.warmup_factor=-1": "solver.warmup_factor=-1.0: must be at least 0",
        "solver.gamma=-0.1": "solver.gamma=-0.1: must be at least 0",
        "solver.backbone_multiplier=-1": "solver.backbone_multiplier=-1.0: must be at least 0",
    }
    for override, message in cases.items():
        out = tmp_path / "run"
        assert main(["train", str(CONFIGS / "demo.yaml"), "--output-dir", str(out), "--set", override]) == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], (override, lines)
        assert not out.exists()


def test_a_section_given_whole_is_merged_into_the_file_s():
    """`--set 'train={"max_iters": 2}'` kept the file's other train keys? It reset them to the library defaults."""
    cfg = load_config(CONFIGS / "demo.yaml")
    merged = load_config(CONFIGS / "demo.yaml", ['train={"max_iters": 2}'])
    assert merged.train.max_iters == 2 and merged.train.batch_size == cfg.train.batch_size != 16
    assert config_to_dict(load_config(CONFIGS / "demo.yaml", ["train={}"])) == config_to_dict(cfg)


def test_an_override_that_replaces_a_section_is_the_one_blamed() -> None:
    """`--set train=5 --set train.max_iters=1` blamed the second, correct override; the first replaced a section."""
    with pytest.raises(maskformer.ConfigError, match=r"^override 'train=5': 'train' is a section, not a value$"):
        maskformer.load_config(CONFIGS / "demo.yaml", ["train=5", "train.max_iters=1"])
    with pytest.raises(maskformer.ConfigError, match=r"^override 'train.max_iters.x=1': 'max_iters' is not a section"):
        maskformer.load_config(CONFIGS / "demo.yaml", ["train.max_iters.x=1"])
    # (an empty part was blamed on the base config file: "camvid/base.yaml: unknown config key 'train.'")
    with pytest.raises(maskformer.ConfigError, match=r"^override 'train..x=1': the key has an empty part"):
        maskformer.load_config(CONFIGS / "demo.yaml", ["train..x=1"])


@pytest.mark.parametrize("value", ["[96]", "[96,128,3]"])
def test_a_crop_size_of_other_than_two_numbers_is_one_line(value: str) -> None:
    """[96] crashed the mapper with a traceback (and `info` too); [96,128,3] trained with the third value dropped."""
    with pytest.raises(ConfigError, match=r"^data.crop_size=\[.*\]: must be 2 numbers \[H, W\]$"):
        load_config(CONFIGS / "demo.yaml", [f"data.crop_size={value}"])


def test_a_key_written_twice_and_non_finite_numbers_are_refused(tmp_path):
    """A YAML key written twice let the last value win without a word; `nan` / `inf` learning rates went on to a
    traceback in the optimizer or the matcher."""
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  max_iters: 5\n  batch_size: 2\n  max_iters: 7\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: .*'max_iters' appears twice .*line 4"):
        load_config(path)
    for value in ("nan", ".nan", "inf", "-inf", "1e999"):
        with pytest.raises(ConfigError, match="loss.dice_weight' must be a finite number"):
            load_config(None, [f"loss.dice_weight={value}"])
    assert load_config(None, "train.max_iters=5").train.max_iters == 5  # (one override as a string)


SMALL_AND_ADE = ["camvid/maskformer.yaml", "folder/small.yaml", "demo.yaml", "synthetic-classes/maskformer.yaml",
                 "ade20k-150/maskformer_R50_bs16_160k.yaml"]  # fmt: skip


@pytest.mark.parametrize("name", SMALL_AND_ADE)
def test_tta_scales_follow_the_configs_test_size(name: str) -> None:
    """CamVid, folder and demo configs inherited ADE20K's TTA sizes (256-896 for a 512 test size): --tta ran them
    at 1.4-5x their trained scale, 40x slower. Each scale list spans 0.5x-1.75x of test.min_size, as ADE20K's."""
    t = maskformer.load_config(CONFIGS / name).test
    assert t.tta_min_sizes == [t.min_size * k // 4 for k in range(2, 8)], (t.min_size, t.tta_min_sizes)
    assert t.tta_max_size == t.max_size * 7 // 4


def test_override_values_are_read_as_a_shell_user_means_them() -> None:
    """YAML 1.1 read `train.max_iters=010` as octal 8 and cut `data.root=/x/my #data` at the '#' (a comment)."""
    from maskformer.config import parse_override

    assert parse_override("train.max_iters=010") == (["train", "max_iters"], 10)
    assert parse_override("data.root=/x/my #data") == (["data", "root"], "/x/my #data")
    assert parse_override("model.pixel_mean=[1, 2, 3]")[1] == [1, 2, 3]
    assert parse_override("solver.base_lr=0.5")[1] == 0.5 and parse_override("a=0")[1] == 0
    cfg = load_config(CONFIGS / "demo.yaml", ["train.max_iters=010", "data.root=/x/my #data"])
    assert cfg.train.max_iters == 10 and cfg.data.root == "/x/my #data"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("model: {num_queries: 5\nfoo: 1\n", "line 2, column 4: expected ',' or '}', but got ':' (while parsing a "
         "flow mapping started at line 1)"),
        ("a: 1\n  b: 2\n", "line 2, column 4: mapping values are not allowed here"),
    ],
)  # fmt: skip
def test_a_yaml_syntax_error_says_where(tmp_path, text: str, words: str) -> None:
    """An unclosed brace said only "not valid YAML (while parsing a flow mapping)": no line, no problem."""
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "c.yaml")
    assert str(e.value) == f"{tmp_path / 'c.yaml'}: not valid YAML ({words})"


def test_a_config_in_another_encoding_is_not_called_binary(tmp_path) -> None:
    """A config saved as Latin-1 or UTF-16 was refused as "binary content; a checkpoint?"."""
    (tmp_path / "latin.yaml").write_bytes("data: {root: /données}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "latin.yaml")
    latin = tmp_path / "latin.yaml"
    assert str(e.value) == f"{latin}: not UTF-8 text (byte 0xe9 at offset 18): save the config as UTF-8"
    (tmp_path / "wide.yaml").write_bytes("model: {}\n".encode("utf-16"))
    with pytest.raises(ConfigError, match="wide.yaml: UTF-16 text: save the config as UTF-8"):
        load_config(tmp_path / "wide.yaml")
    torch = pytest.importorskip("torch")
    torch.save({"model": {}}, tmp_path / "model_final.pt")
    with pytest.raises(ConfigError, match=r"not a YAML config \(binary content; a checkpoint\?\)"):
        load_config(tmp_path / "model_final.pt")
