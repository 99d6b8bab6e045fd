"""The CPU-scale formulation study: configs, the report writer, the many-class generator (tools/*_experiment.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from maskformer.config import config_to_dict, load_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
camvid_experiment = importlib.import_module("camvid_experiment")
synthetic_experiment = importlib.import_module("synthetic_classes_experiment")

FORMULATION_KEYS = {("model", "meta_arch"), ("model", "num_queries"), ("loss", "matching")}


def _flatten(d: dict, prefix: tuple = ()) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


@pytest.mark.parametrize("folder", ["camvid", "synthetic-classes"])
def test_variants_differ_only_in_formulation(folder):
    """Everything but meta_arch / num_queries / matching is identical across the four variants."""
    flats = {}
    for name in ("per_pixel", "per_pixel_plus", "maskformer_fixed", "maskformer"):
        flats[name] = _flatten(config_to_dict(load_config(REPO / "configs" / folder / f"{name}.yaml")))
    ref = flats["maskformer"]
    for name, flat in flats.items():
        differing = {k for k in ref if ref[k] != flat[k]}
        assert differing <= FORMULATION_KEYS, (name, differing)
    assert flats["per_pixel"][("model", "meta_arch")] == "per_pixel"
    assert flats["per_pixel_plus"][("model", "meta_arch")] == "per_pixel_plus"
    assert flats["maskformer_fixed"][("loss", "matching")] == "fixed"
    assert flats["maskformer"][("loss", "matching")] == "hungarian"
    k = flats["maskformer"][("model", "num_classes")]
    assert flats["maskformer_fixed"][("model", "num_queries")] == k
    assert flats["per_pixel_plus"][("model", "num_queries")] == k
    assert flats["maskformer"][("model", "backbone", "norm")] == "BN"  # trainable from scratch, not FrozenBN


def test_camvid_configs_build_and_run_forward():
    import torch

    from maskformer.build import build_criterion, build_model

    for name in ("per_pixel", "per_pixel_plus", "maskformer_fixed", "maskformer"):
        cfg = load_config(REPO / "configs" / "camvid" / f"{name}.yaml")
        model = build_model(cfg).eval()
        build_criterion(cfg, ignore_label=11)  # fixed matching checks num_queries == num_classes here
        with torch.no_grad():
            out = model(torch.zeros(1, 3, 64, 64))
        if name.startswith("maskformer"):
            q = cfg.model.num_queries
            assert out["pred_logits"].shape == (1, q, 12)
            assert out["pred_masks"].shape[:2] == (1, q)
        else:
            assert any(v.shape[1] == 11 for v in out.values() if isinstance(v, torch.Tensor))


def _fake(key: str, miou: float, pq: float, n: int = 11) -> camvid_experiment.RunResult:
    variant = next(v for v in camvid_experiment.CAMVID_VARIANTS if v.key == key)
    final = {
        "mIoU": miou,
        "pACC": 80.0,
        "IoU": [float(i) for i in range(n)],
        "PQ_St": {"PQ": pq, "SQ": 70.0, "RQ": 50.0},
    }
    return camvid_experiment.RunResult(variant=variant, final=final, iterations=100, wall_seconds=12.0,
                                       train_seconds=10.0, parameters=3_400_000, flops=1_000_000_000,
                                       curve=[(5.0, miou / 2), (10.0, miou)])  # fmt: skip


def test_report_writer_on_fake_metrics(tmp_path):
    results = [_fake("per_pixel", 40.0, 30.0), _fake("per_pixel_plus", 42.0, 31.0),
               _fake("maskformer_fixed", 41.0, 33.0), _fake("maskformer", 41.5, 34.5)]  # fmt: skip
    names = [f"c{i}" for i in range(11)]
    report = tmp_path / "RESULTS.md"
    camvid_experiment.plot_curves(results, tmp_path / "plot.png", title="t")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    camvid_experiment.write_report(results, path=report, plot_name="plot.png", class_names=names, command="CMD",
                                   setup="SETUP", discussion="DISC", pending=["X"])  # fmt: skip
    text = report.read_text()
    assert "](plot.png)" in text and "CMD" in text and "Not finished yet" in text
    row = next(line for line in text.splitlines() if line.startswith("| MaskFormer |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:7] == ["41.5", "34.5", "70.0", "50.0", "80.0"]
    assert cells[7] == "3.40 M" and cells[8] == "1.00"
    per_class = [line for line in text.splitlines() if line.startswith("| c") and not line.startswith("| class")]
    assert len(per_class) == 11 and per_class[3].split("|")[2].strip() == "3.0"
    # MaskFormer minus PerPixelBaseline+ = 41.5 - 42.0 = -0.5 mIoU, 34.5 - 31.0 = +3.5 PQ^St (hand computed).
    assert "MaskFormer vs PerPixelBaseline+: mIoU -0.5, PQ^St +3.5" in text
    verdict = camvid_experiment.camvid_verdict(results)
    assert "mIoU -0.5, PQ^St +3.5" in verdict
    assert "+0.0): held" in verdict and "+2.9): held (+3.5)" in verdict
    # Fixed minus PerPixelBaseline+: 41.0 - 42.0, 33.0 - 31.0; bipartite minus fixed: 41.5 - 41.0, 34.5 - 33.0.
    assert "-1.0 mIoU, +2.0 PQ^St" in verdict and "+0.5 mIoU, +1.5 PQ^St" in verdict


def test_verdict_reports_departures():
    results = [_fake("per_pixel", 50.0, 40.0), _fake("per_pixel_plus", 49.0, 41.0),
               _fake("maskformer_fixed", 30.0, 20.0), _fake("maskformer", 31.0, 22.0)]  # fmt: skip
    verdict = camvid_experiment.camvid_verdict(results)
    # MaskFormer minus PerPixelBaseline+: 31 - 49 = -18 mIoU, 22 - 41 = -19 PQ^St.
    assert "did not hold — this run shows a loss in mIoU" in verdict and "+2.9): did not hold (-19.0)" in verdict
    assert "not all four" in camvid_experiment.camvid_verdict(results[:2])


def test_class_table_and_scenes():
    table = synthetic_experiment.class_table(16)
    assert len(table) == 128 and sorted(c["id"] for c in table) == list(range(128))
    assert len({c["name"] for c in table}) == 128
    rng = np.random.default_rng(0)
    for _ in range(5):
        image, label = synthetic_experiment.generate_scene(rng, size=48, classes=table)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        present = np.unique(label)
        assert 3 <= len(present) <= 5 and present.max() < 128


def test_patterns_are_mirror_symmetric():
    """Horizontal flips (training augmentation) must map every pattern to the same pattern at some offset."""
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    for kind in synthetic_experiment.PATTERNS:
        flipped = synthetic_experiment._pattern(kind, yy, xx, 8)[:, ::-1]
        same = any(
            np.array_equal(flipped, synthetic_experiment._pattern(kind, yy, xx + ox, 8)) for ox in np.arange(0, 16, 0.5)
        )
        assert same, kind


def test_written_dataset_loads_with_folder_reader(tmp_path):
    from maskformer.data import folder

    root = synthetic_experiment.write_dataset(tmp_path / "d", num_colors=2, size=32, train=3, val=2, seed=0)
    ds = folder(root=str(root), split="val")
    assert len(ds) == 2 and ds.meta.num_classes == 16 and ds.meta.ignore_label == 255
    raw = ds.load(ds.entries[0]) if hasattr(ds, "entries") else ds[0]
    assert int(np.asarray(raw["sem_seg"]).max()) < 16


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    """The one command in --quick mode trains two variants for a few iterations and writes a report."""
    if not (REPO.parent / "shared" / "datasets" / "camvid").is_dir():
        pytest.skip("../shared/datasets/camvid not present")
    cmd = [sys.executable, str(REPO / "tools" / "camvid_experiment.py"), "--quick", "--output-dir", str(tmp_path),
           "--variants", "per_pixel", "maskformer_fixed"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=REPO, timeout=600)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| PerPixelBaseline |" in text and "| MaskFormer-fixed |" in text
    assert (tmp_path / "camvid_miou_vs_time.png").is_file()
