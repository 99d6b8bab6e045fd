"""``maskformer predict`` outputs on datasets whose category ids are not 0..K-1 (COCO panoptic: 1..200 with gaps)."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

import maskformer
from conftest import DEMO_YAML
from maskformer.cli import main
from maskformer.data import load_meta
from maskformer.engine.checkpoint import save_checkpoint


def test_panoptic_predictions_json_uses_the_dataset_category_ids(tmp_path: Path) -> None:
    sets = ["model.num_classes=133", "data.dataset=coco_panoptic", "inference.panoptic_on=true", "model.num_queries=12",
            "inference.object_mask_threshold=0.0", "inference.overlap_threshold=0.0"]  # fmt: skip
    cfg = maskformer.load_config(DEMO_YAML, overrides=sets)
    model = maskformer.build_model(cfg)
    coco = load_meta("coco_panoptic")
    assert model.class_meta is not None and model.class_meta.classes == coco.classes
    save_checkpoint(tmp_path / "coco.pt", cfg=cfg, model=model, meta=model.class_meta.to_dict())
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "street.png")
    assert main(["predict", str(tmp_path / "coco.pt"), str(tmp_path / "street.png"), "--output-dir",
                 str(tmp_path / "out")]) == 0  # fmt: skip
    pred = json.loads((tmp_path / "out" / "predictions.json").read_text())
    coco_ids = [coco.contiguous_to_dataset_id[i] for i in range(133)]
    assert coco_ids[:3] == [1, 2, 3] and coco_ids[-1] == 200  # COCO's ids (not contiguous)
    assert [c["id"] for c in pred["categories"]] == coco_ids
    by_id = {c["id"]: c for c in pred["categories"]}
    assert by_id[1]["name"] == "person" and by_id[1]["isthing"] == 1
    segments = pred["annotations"][0]["segments_info"]
    assert segments, "no segments: the test needs at least one to check"
    for s in segments:  # a segment's id, name and thing flag agree with the COCO table
        assert by_id[s["category_id"]]["name"] == s["category_name"]
        assert coco.classes[coco.dataset_id_to_contiguous[s["category_id"]]] == s["category_name"]
        assert bool(by_id[s["category_id"]]["isthing"]) == s["isthing"]
    pan = np.asarray(Image.open(tmp_path / "out" / "street_panoptic.png")).astype(np.int64)
    ids = pan[..., 0] + 256 * pan[..., 1] + 65536 * pan[..., 2]
    assert pan.shape == (96, 128, 3)
    assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in segments}
