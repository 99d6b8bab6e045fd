"""The real tiny model, criterion and inference together: overfitting two images drives the loss down and the
semantic predictions then reproduce the targets."""

from __future__ import annotations

import pytest
import torch

import maskformer
from conftest import CONFIGS
from maskformer.build import build_criterion
from maskformer.data import SyntheticDataset, collate
from maskformer.evaluation import SemanticEvaluator
from maskformer.inference.postprocess import semantic_from_outputs


@pytest.mark.slow  # ~15 s; `make bench`
def test_overfitting_two_images_reaches_near_perfect_miou():
    torch.manual_seed(0)
    overrides = ["model.num_queries=10", "model.dec_layers=3", "model.transformer_in_feature=res3"]
    cfg = maskformer.load_config(CONFIGS / "demo.yaml", overrides)
    model = maskformer.build_model(cfg).train()
    criterion = build_criterion(cfg)
    data = SyntheticDataset(split="train", length=2, num_classes=8, image_size=64, seed=3)
    records = [data[i] for i in range(2)]
    images, targets, _ = collate(records, size_divisibility=32, pixel_mean=cfg.model.pixel_mean,
                                 pixel_std=cfg.model.pixel_std)  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = None
    for _ in range(250):
        losses = criterion(model(images), targets)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        first = first if first is not None else losses["loss"].item()
    assert losses["loss"].item() < 0.15 * first
    model.eval()
    with torch.no_grad():
        out = model(images, with_aux=False)
    sizes = [tuple(r["sem_seg"].shape) for r in records]
    scores = semantic_from_outputs(out, sizes, sizes, input_size=images.shape[-2:])
    evaluator = SemanticEvaluator(num_classes=8, ignore_label=255)
    for s, r in zip(scores, records):
        evaluator.update(s.argmax(0), r["sem_seg"])
    assert evaluator.compute()["mIoU"] > 90.0
