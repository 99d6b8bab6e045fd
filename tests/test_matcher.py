"""HungarianMatcher: costs vs a float64 loop transcription of OFFICIAL_SPEC §3, assignments vs brute force and
transformers, batch == per image, empty targets, legacy-nearest downsampling, fixed matching."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from maskformer.criterion.matcher import HungarianMatcher, fixed_matching, legacy_nearest_resize


def _problem(seed: int, counts: list[int], queries: int, classes: int = 7, low: int = 6, up: int = 4, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    b = len(counts)
    outputs = {
        "pred_logits": torch.randn(b, queries, classes + 1, generator=g) * 2,
        "pred_masks": torch.randn(b, queries, low, low, generator=g) * scale,
    }
    targets = [
        {
            "labels": torch.randint(0, classes, (n,), generator=g),
            "masks": torch.rand(n, low * up, low * up, generator=g) > 0.6,
        }
        for n in counts
    ]
    return outputs, targets


def _reference_cost(logits, masks, labels, tmasks, w_class=1.0, w_mask=20.0, w_dice=1.0) -> torch.Tensor:
    """Loop transcription of the spec, in float64: per (query, target) pair, per-pixel formulas."""
    q_count, n_count = logits.shape[0], labels.shape[0]
    t = F.interpolate(tmasks[:, None].double(), size=masks.shape[-2:], mode="nearest")[:, 0]
    prob = logits.double().softmax(-1)
    cost = torch.zeros(q_count, n_count, dtype=torch.float64)
    for q in range(q_count):
        x = masks[q].double().flatten()
        p = torch.sigmoid(x)
        bce_pos = F.binary_cross_entropy_with_logits(x, torch.ones_like(x), reduction="none")
        bce_neg = F.binary_cross_entropy_with_logits(x, torch.zeros_like(x), reduction="none")
        for n in range(n_count):
            tt = t[n].flatten()
            focal = (0.25 * tt * (1 - p) ** 2 * bce_pos + 0.75 * (1 - tt) * p**2 * bce_neg).mean()
            dice = 1 - (2 * (p * tt).sum() + 1) / (p.sum() + tt.sum() + 1)
            cost[q, n] = w_mask * focal - w_class * prob[q, labels[n]] + w_dice * dice
    return cost


def _brute_force(cost: torch.Tensor) -> set[tuple[int, int]]:
    q_count, n_count = cost.shape
    best, best_pairs = float("inf"), None
    if n_count <= q_count:
        for perm in itertools.permutations(range(q_count), n_count):
            pairs = [(perm[n], n) for n in range(n_count)]
            total = sum(float(cost[q, n]) for q, n in pairs)
            if total < best:
                best, best_pairs = total, pairs
    else:
        for perm in itertools.permutations(range(n_count), q_count):
            pairs = [(q, perm[q]) for q in range(q_count)]
            total = sum(float(cost[q, n]) for q, n in pairs)
            if total < best:
                best, best_pairs = total, pairs
    return set(best_pairs)


def test_costs_match_loop_transcription():
    outputs, targets = _problem(0, [3, 5], queries=6)
    costs = HungarianMatcher().cost_matrices(outputs, targets)
    for b, target in enumerate(targets):
        ref = _reference_cost(outputs["pred_logits"][b], outputs["pred_masks"][b], target["labels"], target["masks"])
        assert costs[b].dtype == torch.float32 and costs[b].shape == ref.shape
        torch.testing.assert_close(costs[b].double(), ref, atol=2e-5, rtol=0)


def test_costs_accurate_for_extreme_logits():
    # Saturated logits (|x| up to 120) exercise the exp/log softplus path where p^2 or (1-p)^2 underflow.
    outputs, targets = _problem(1, [4], queries=5, scale=1.0)
    masks = outputs["pred_masks"]
    masks[0, 0] = 120.0
    masks[0, 1] = -120.0
    masks[0, 2] = torch.linspace(-90, 90, masks[0, 2].numel()).view_as(masks[0, 2])
    costs = HungarianMatcher(cost_class=0.5, cost_mask=7.0, cost_dice=2.0).cost_matrices(outputs, targets)
    ref = _reference_cost(outputs["pred_logits"][0], masks[0], targets[0]["labels"], targets[0]["masks"], 0.5, 7.0, 2.0)
    assert torch.isfinite(costs[0]).all()
    torch.testing.assert_close(costs[0].double(), ref, atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_assignment_equals_brute_force(seed):
    n = 1 + seed % 4  # 1..4 targets for 5 queries
    outputs, targets = _problem(10 + seed, [n], queries=5)
    rows, cols = HungarianMatcher()(outputs, targets)[0]
    ref = _reference_cost(
        outputs["pred_logits"][0], outputs["pred_masks"][0], targets[0]["labels"], targets[0]["masks"]
    )
    assert rows.dtype == torch.int64 and cols.dtype == torch.int64
    assert rows.tolist() == sorted(rows.tolist())  # queries ascending, as scipy returns them
    assert set(zip(rows.tolist(), cols.tolist())) == _brute_force(ref)


def test_more_targets_than_queries_equals_brute_force():
    outputs, targets = _problem(3, [5], queries=3)
    rows, cols = HungarianMatcher()(outputs, targets)[0]
    ref = _reference_cost(
        outputs["pred_logits"][0], outputs["pred_masks"][0], targets[0]["labels"], targets[0]["masks"]
    )
    assert len(rows) == 3
    assert set(zip(rows.tolist(), cols.tolist())) == _brute_force(ref)


def test_batch_equals_per_image_and_empty_targets():
    outputs, targets = _problem(4, [3, 0, 7], queries=9)
    matcher = HungarianMatcher()
    batched = matcher(outputs, targets)
    batched_costs = matcher.cost_matrices(outputs, targets)
    for b in range(3):
        single = {k: v[b : b + 1] for k, v in outputs.items()}
        (rows, cols), cost = matcher(single, [targets[b]])[0], matcher.cost_matrices(single, [targets[b]])[0]
        assert torch.equal(batched[b][0], rows) and torch.equal(batched[b][1], cols)
        torch.testing.assert_close(batched_costs[b], cost, atol=1e-6, rtol=1e-6)
    assert batched[1][0].shape == (0,) and batched[1][1].shape == (0,) and batched[1][0].dtype == torch.int64
    assert len(batched[0][0]) == 3 and len(batched[2][0]) == 7


def test_all_targets_empty():
    outputs, targets = _problem(5, [0, 0], queries=4)
    matches = HungarianMatcher()(outputs, targets)
    assert [(len(r), len(c)) for r, c in matches] == [(0, 0), (0, 0)]


def test_matches_transformers_matcher():
    hf = pytest.importorskip("transformers.models.maskformer.modeling_maskformer")
    reference = hf.MaskFormerHungarianMatcher(cost_class=1.0, cost_mask=20.0, cost_dice=1.0)
    for seed in range(3):
        outputs, targets = _problem(20 + seed, [4, 9], queries=20, classes=30, low=16, up=4)
        ours = HungarianMatcher(cost_class=1.0, cost_mask=20.0, cost_dice=1.0)(outputs, targets)
        theirs = reference(
            outputs["pred_masks"],
            outputs["pred_logits"],
            [t["masks"].float() for t in targets],
            [t["labels"] for t in targets],
        )
        for (r1, c1), (r2, c2) in zip(ours, theirs):
            assert torch.equal(r1, r2) and torch.equal(c1, c2)


@pytest.mark.parametrize(
    ("src", "dst"), [((64, 48), (16, 12)), ((30, 45), (8, 12)), ((20, 20), (20, 20)), ((7, 9), (14, 5))]
)
def test_legacy_nearest_resize(src, dst):
    masks = torch.rand(3, *src, generator=torch.Generator().manual_seed(0)) > 0.5
    ours = legacy_nearest_resize(masks, dst)
    ref = F.interpolate(masks[:, None].float(), size=dst, mode="nearest")[:, 0]
    assert ours.dtype == torch.bool and torch.equal(ours.float(), ref)
    # Legacy nearest picks floor(dst * in / out): for 64 -> 16 rows 0, 4, 8, ... (not nearest-exact's 2, 6, ...).
    if src == (64, 48):
        assert torch.equal(ours, masks[:, ::4, ::4])


def test_fixed_matching():
    rows, cols = fixed_matching(torch.tensor([5, 2, 7]), num_queries=8)
    assert rows.tolist() == [2, 5, 7] and cols.tolist() == [1, 0, 2]
    with pytest.raises(ValueError):
        fixed_matching(torch.tensor([1, 1]), num_queries=8)
    with pytest.raises(ValueError):
        fixed_matching(torch.tensor([8]), num_queries=8)
    assert fixed_matching(torch.zeros(0, dtype=torch.long), num_queries=4)[0].shape == (0,)
