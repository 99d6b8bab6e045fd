"""SetCriterion / PerPixelCriterion: parity with the original's loss fixture and with transformers, a float64 loop
transcription of OFFICIAL_SPEC §3 for all 18 terms, fixed matching, point sampling, num_masks, and an overfit run."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from maskformer.criterion.losses import PerPixelCriterion, SetCriterion, dice_loss, sigmoid_focal_loss
from maskformer.criterion.matcher import HungarianMatcher
from maskformer.criterion.point_sampling import point_sample, sample_uncertain_points
from maskformer.inference.postprocess import semantic_from_outputs

PARITY = Path(__file__).resolve().parents[2] / "shared" / "reference" / "parity"
FIXTURE_RECTS = [(0, 80, 0, 112), (40, 160, 100, 224), (10, 70, 150, 220), (90, 150, 20, 90), (0, 30, 0, 224)]
FIXTURE_LABELS = [3, 17, 42, 99, 149]


def _rect_masks(rects, size):
    masks = torch.zeros(len(rects), *size, dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(rects):
        masks[i, y0:y1, x0:x1] = True
    return masks


def _random_layers(g, batch, queries, classes, low, aux):
    def layer():
        return {
            "pred_logits": torch.randn(batch, queries, classes + 1, generator=g) * 2,
            "pred_masks": torch.randn(batch, queries, *low, generator=g) * 4,
        }

    out = layer()
    out["aux_outputs"] = [layer() for _ in range(aux)]
    return out


# ---------------------------------------------------------------- loop transcription of §3 (float64, independent)
def _ref_cost(logits, masks, labels, tmasks):
    t = F.interpolate(tmasks[:, None].double(), size=masks.shape[-2:], mode="nearest")[:, 0].flatten(1)
    prob = logits.double().softmax(-1)
    cost = np.zeros((logits.shape[0], labels.shape[0]))
    for q in range(logits.shape[0]):
        x = masks[q].double().flatten()
        p = x.sigmoid()
        for n in range(labels.shape[0]):
            tt = t[n]
            focal = (0.25 * tt * (1 - p) ** 2 * F.softplus(-x) + 0.75 * (1 - tt) * p**2 * F.softplus(x)).mean()
            dice = 1 - (2 * (p * tt).sum() + 1) / (p.sum() + tt.sum() + 1)
            cost[q, n] = float(20 * focal - prob[q, labels[n]] + dice)
    return cost


def _ref_layer_terms(layer, targets, num_classes, num_masks, matches=None):
    logits, masks = layer["pred_logits"].double(), layer["pred_masks"].double()
    if matches is None:
        matches = []
        for b, t in enumerate(targets):
            if len(t["labels"]):
                matches.append(linear_sum_assignment(_ref_cost(logits[b], masks[b], t["labels"], t["masks"])))
            else:
                matches.append(([], []))
    num, den, focal, dice = 0.0, 0.0, 0.0, 0.0
    for b, t in enumerate(targets):
        assigned = {int(q): int(t["labels"][n]) for q, n in zip(*matches[b])}
        for q in range(logits.shape[1]):
            y = assigned.get(q, num_classes)
            w = 0.1 if y == num_classes else 1.0
            num += w * float(-torch.log_softmax(logits[b, q], -1)[y])
            den += w
        size = t["masks"].shape[-2:]
        for q, n in zip(*matches[b]):
            x = F.interpolate(masks[b, q][None, None], size=size, mode="bilinear", align_corners=False)[0, 0].flatten()
            tt = t["masks"][n].double().flatten()
            p = x.sigmoid()
            ce = F.softplus(-x) * tt + F.softplus(x) * (1 - tt)
            p_t = p * tt + (1 - p) * (1 - tt)
            focal += float(((0.25 * tt + 0.75 * (1 - tt)) * ce * (1 - p_t) ** 2).mean())
            dice += float(1 - (2 * (p * tt).sum() + 1) / (p.sum() + tt.sum() + 1))
    return [num / den, focal / num_masks, dice / num_masks], [
        (list(map(int, r)), list(map(int, c))) for r, c in matches
    ]


def _assert_matches_equal(ours, ref):
    for (r1, c1), (r2, c2) in zip(ours, ref):
        assert r1.tolist() == r2 and c1.tolist() == c2


# ---------------------------------------------------------------- formulas
def test_focal_matches_torchvision():
    tv = pytest.importorskip("torchvision.ops")
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, 50, generator=g) * 3, (torch.rand(4, 50, generator=g) > 0.5).float()
    ref = tv.sigmoid_focal_loss(x, t, alpha=0.25, gamma=2, reduction="none").mean(1).sum() / 3.0
    torch.testing.assert_close(sigmoid_focal_loss(x, t, 3.0), ref)


def test_dice_hand_computed():
    # p = 0.5 everywhere: mask 1 -> 1 - (2*1 + 1) / (2 + 2 + 1) = 0.4; mask 2 (empty) -> 1 - 1 / (2 + 1) = 2/3.
    x = torch.zeros(2, 4)
    t = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(dice_loss(x, t, 2.0), torch.tensor((0.4 + 2 / 3) / 2))


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("variant", ["R50_ade150", "swinT_ade150"])
def test_original_loss_fixture(variant):
    """The official SetCriterion's terms for the final layer and aux layer 0 (whose outputs the fixture stores)."""
    if not (PARITY / f"{variant}_loss.json").exists():
        pytest.skip(f"{PARITY} not available")
    ref = json.loads((PARITY / f"{variant}_loss.json").read_text())
    data = np.load(PARITY / f"{variant}.npz")
    outputs = {
        "pred_logits": torch.from_numpy(data["pred_logits"]),
        "pred_masks": torch.from_numpy(data["pred_masks"]),
        "aux_outputs": [
            {"pred_logits": torch.from_numpy(data["aux0_logits"]), "pred_masks": torch.from_numpy(data["aux0_masks"])}
        ],
    }
    targets = [{"labels": torch.tensor(ref["labels"]), "masks": _rect_masks(ref["rects_y0y1x0x1"], (160, 224))}]
    terms, matches = SetCriterion(num_classes=150, matcher=HungarianMatcher()).compute(outputs, targets)
    assert list(terms) == ["loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0"]
    for name, value in terms.items():
        assert value.item() == pytest.approx(ref["unweighted"][name], rel=1e-5), name
    assert matches[0][0][0].tolist() == ref["matched_final"]["query"]
    assert matches[0][0][1].tolist() == ref["matched_final"]["target"]
    assert matches[1][0][0].tolist() == ref["matched_aux"][0]["query"]
    assert matches[1][0][1].tolist() == ref["matched_aux"][0]["target"]


def test_final_layer_matches_transformers():
    hf = pytest.importorskip("transformers.models.maskformer.modeling_maskformer")
    g = torch.Generator().manual_seed(1)
    outputs = _random_layers(g, batch=2, queries=12, classes=9, low=(10, 14), aux=0)
    targets = [
        {"labels": torch.tensor([1, 4, 8]), "masks": torch.rand(3, 40, 56, generator=g) > 0.5},
        {"labels": torch.tensor([0, 4, 4, 2, 7]), "masks": torch.rand(5, 40, 56, generator=g) > 0.7},
    ]
    matcher = hf.MaskFormerHungarianMatcher(cost_class=1.0, cost_mask=20.0, cost_dice=1.0)
    weights = {"loss_cross_entropy": 1.0, "loss_mask": 20.0, "loss_dice": 1.0}
    loss = hf.MaskFormerLoss(num_labels=9, matcher=matcher, weight_dict=weights, eos_coef=0.1)
    theirs = loss(
        outputs["pred_masks"],
        outputs["pred_logits"],
        [t["masks"].float() for t in targets],
        [t["labels"] for t in targets],
    )
    their_matches = matcher(
        outputs["pred_masks"],
        outputs["pred_logits"],
        [t["masks"].float() for t in targets],
        [t["labels"] for t in targets],
    )
    terms, matches = SetCriterion(num_classes=9, deep_supervision=False).compute(outputs, targets)
    assert set(terms) == {"loss_ce", "loss_mask", "loss_dice"}
    torch.testing.assert_close(terms["loss_ce"], theirs["loss_cross_entropy"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms["loss_mask"], theirs["loss_mask"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms["loss_dice"], theirs["loss_dice"], atol=1e-5, rtol=1e-5)
    for (r1, c1), (r2, c2) in zip(matches[0], their_matches):
        assert torch.equal(r1, r2) and torch.equal(c1, c2)


def test_all_18_terms_match_loop_transcription():
    """Fixture geometry (K=150, 160x224 targets, 40x56 masks, 6 layers) on random outputs; a second image too."""
    g = torch.Generator().manual_seed(2)
    outputs = _random_layers(g, batch=2, queries=30, classes=150, low=(40, 56), aux=5)
    targets = [
        {"labels": torch.tensor(FIXTURE_LABELS), "masks": _rect_masks(FIXTURE_RECTS, (160, 224))},
        {"labels": torch.tensor([7, 7]), "masks": _rect_masks([(3, 99, 5, 61), (101, 160, 0, 224)], (160, 224))},
    ]
    criterion = SetCriterion(num_classes=150, matcher=HungarianMatcher())
    terms, matches = criterion.compute(outputs, targets)
    layers = [outputs] + outputs["aux_outputs"]
    assert len(terms) == 18 and len(matches) == 6
    for i, layer in enumerate(layers):
        suffix = "" if i == 0 else f"_{i - 1}"
        (ce, focal, dice), ref_matches = _ref_layer_terms(layer, targets, 150, num_masks=7.0)
        _assert_matches_equal(matches[i], ref_matches)
        assert terms["loss_ce" + suffix].item() == pytest.approx(ce, rel=1e-5)
        assert terms["loss_mask" + suffix].item() == pytest.approx(focal, rel=1e-5)
        assert terms["loss_dice" + suffix].item() == pytest.approx(dice, rel=1e-5)
    weighted = criterion(outputs, targets)
    assert set(weighted) == set(terms) | {"loss"}
    for name, value in terms.items():
        expected = value * (20.0 if name.startswith("loss_mask") else 1.0)
        torch.testing.assert_close(weighted[name], expected)
    torch.testing.assert_close(weighted["loss"], sum(weighted[k] for k in terms))


def test_weight_dict_overrides_and_no_deep_supervision():
    g = torch.Generator().manual_seed(3)
    outputs = _random_layers(g, batch=1, queries=6, classes=4, low=(4, 4), aux=2)
    targets = [{"labels": torch.tensor([1]), "masks": torch.rand(1, 16, 16, generator=g) > 0.5}]
    weights = {"loss_ce": 2.0, "loss_mask": 3.0, "loss_dice": 4.0, "loss_dice_1": 0.0}
    criterion = SetCriterion(num_classes=4, weight_dict=weights)
    terms, _ = criterion.compute(outputs, targets)
    losses = criterion(outputs, targets)
    torch.testing.assert_close(losses["loss_ce_0"], 2.0 * terms["loss_ce_0"])
    torch.testing.assert_close(losses["loss_dice_0"], 4.0 * terms["loss_dice_0"])
    assert losses["loss_dice_1"].item() == 0.0
    assert set(SetCriterion(num_classes=4, deep_supervision=False)(outputs, targets)) == {
        "loss_ce", "loss_mask", "loss_dice", "loss"
    }  # fmt: skip
    with pytest.raises(ValueError):
        SetCriterion(num_classes=4, weight_dict={"loss_ce": 1.0})


def test_no_targets_anywhere():
    g = torch.Generator().manual_seed(4)
    outputs = _random_layers(g, batch=2, queries=5, classes=3, low=(4, 4), aux=1)
    outputs["pred_masks"].requires_grad_(True)
    targets = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 16, 16, dtype=torch.bool)}] * 2
    losses = SetCriterion(num_classes=3)(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice"].item() == 0.0
    # Every query targets no-object: CE weighted mean = plain mean of -log p(no object).
    expected = -torch.log_softmax(outputs["pred_logits"], -1)[..., 3].mean()
    torch.testing.assert_close(losses["loss_ce"], expected)
    losses["loss"].backward()  # the mask branch stays in the graph (zero gradient)
    assert outputs["pred_masks"].grad is not None and outputs["pred_masks"].grad.abs().sum() == 0


@pytest.mark.parametrize("bad", [4, 5, -1])
def test_a_target_class_outside_the_model_is_named(bad: int):
    """With K = 4 classes, a target of class 4 (the "no object" slot) was learnt as no object without a word; 5 or -1
    failed deep inside the loss with an index error."""
    g = torch.Generator().manual_seed(3)
    outputs = _random_layers(g, batch=2, queries=6, classes=4, low=(4, 4), aux=1)
    masks = torch.rand(2, 16, 16, generator=g) > 0.5
    targets = [{"labels": torch.tensor([0, 3]), "masks": masks}, {"labels": torch.tensor([1, bad]), "masks": masks}]
    with pytest.raises(ValueError, match=rf"targets\[1\]\['labels'\] holds \[{bad}\]: class ids 0..3 expected"):
        SetCriterion(num_classes=4)(outputs, targets)
    targets[1]["labels"] = torch.tensor([1, 2])
    assert torch.isfinite(SetCriterion(num_classes=4)(outputs, targets)["loss"])


def test_fixed_matching_criterion():
    g = torch.Generator().manual_seed(5)
    outputs = _random_layers(g, batch=2, queries=6, classes=6, low=(5, 5), aux=1)
    targets = [
        {"labels": torch.tensor([4, 1]), "masks": torch.rand(2, 20, 20, generator=g) > 0.5},
        {"labels": torch.tensor([5]), "masks": torch.rand(1, 20, 20, generator=g) > 0.5},
    ]
    terms, matches = SetCriterion(num_classes=6, matching="fixed").compute(outputs, targets)
    fixed = [([1, 4], [1, 0]), ([5], [0])]
    for layer_matches in matches:
        _assert_matches_equal(layer_matches, fixed)
    (ce, focal, dice), _ = _ref_layer_terms(outputs, targets, 6, num_masks=3.0, matches=fixed)
    assert terms["loss_ce"].item() == pytest.approx(ce, rel=1e-5)
    assert terms["loss_mask"].item() == pytest.approx(focal, rel=1e-5)
    assert terms["loss_dice"].item() == pytest.approx(dice, rel=1e-5)
    with pytest.raises(ValueError):
        SetCriterion(num_classes=6, matching="greedy")


# ---------------------------------------------------------------- distributed num_masks
def _dist_worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    from maskformer.criterion.losses import average_num_masks

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    counts = [[3, 2], [0, 1]][rank]  # 5 and 1 targets -> (5 + 1) / 2 = 3 on both ranks
    targets = [{"labels": torch.zeros(n, dtype=torch.long)} for n in counts]
    queue.put((rank, average_num_masks(targets, torch.device("cpu"))))
    dist.destroy_process_group()


def test_num_masks_averaged_over_processes(monkeypatch):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    procs = [ctx.Process(target=_dist_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert results == {0: 3.0, 1: 3.0}


# ---------------------------------------------------------------- point sampling
def test_point_sample_bilinear_hand_computed():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])  # [1, 1, 2, 2]
    # (x, y) in [0, 1]: pixel centres at 0.25 / 0.75; the image centre averages all four pixels.
    coords = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.5, 0.5], [0.5, 0.25]]])
    torch.testing.assert_close(point_sample(x, coords), torch.tensor([[[0.0, 1.0, 2.0, 1.5, 0.5]]]))


def test_uncertain_points_concentrate_near_boundary():
    logits = torch.full((2, 1, 16, 16), 10.0)
    logits[:, :, :, 8:] = -10.0
    logits[:, :, :, 7:9] = 0.0  # the decision boundary: columns 7-8 -> x in [7/16, 9/16]
    torch.manual_seed(0)
    coords = sample_uncertain_points(logits, num_points=40, oversample_ratio=20.0, importance_sample_ratio=1.0)
    assert coords.shape == (2, 40, 2)
    assert ((coords[..., 0] > 6.5 / 16) & (coords[..., 0] < 9.5 / 16)).all()
    uniform = sample_uncertain_points(logits, num_points=400, oversample_ratio=1.0, importance_sample_ratio=0.0)
    assert ((uniform[..., 0] < 0.25) | (uniform[..., 0] > 0.75)).float().mean() > 0.35


def test_point_sampled_losses_approximate_full_resolution():
    g = torch.Generator().manual_seed(6)
    outputs = _random_layers(g, batch=1, queries=4, classes=3, low=(16, 16), aux=0)
    targets = [{"labels": torch.tensor([0, 2]), "masks": _rect_masks([(0, 32, 0, 40), (20, 64, 30, 64)], (64, 64))}]
    full = SetCriterion(num_classes=3)(outputs, targets)
    torch.manual_seed(0)
    sampled_crit = SetCriterion(num_classes=3, point_sample=True, num_points=20000, importance_sample_ratio=0.0)
    outputs["pred_masks"].requires_grad_(True)
    sampled = sampled_crit(outputs, targets)
    assert sampled["loss_ce"].item() == full["loss_ce"].item()
    assert sampled["loss_mask"].item() == pytest.approx(full["loss_mask"].item(), rel=0.05)
    assert sampled["loss_dice"].item() == pytest.approx(full["loss_dice"].item(), rel=0.05)
    sampled["loss"].backward()
    grad = outputs["pred_masks"].grad[0].flatten(1).abs().sum(1)
    _, matches = sampled_crit.compute({**outputs, "pred_masks": outputs["pred_masks"].detach()}, targets)
    matched = set(matches[0][0][0].tolist())
    assert all((grad[q] > 0) == (q in matched) for q in range(4))


# ---------------------------------------------------------------- per-pixel baselines
def _ref_pixel_ce(logits, labels, ignore):
    up = F.interpolate(logits.double(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    logp = torch.log_softmax(up, 1)
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for y in range(labels.shape[1]):
            for x in range(labels.shape[2]):
                if int(labels[b, y, x]) != ignore:
                    total -= float(logp[b, labels[b, y, x], y, x])
                    count += 1
    return total / count


def test_per_pixel_criterion():
    g = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 5, (2, 12, 16), generator=g)
    labels[0, :3] = 255
    targets = [{"sem_seg": labels[0]}, {"sem_seg": labels[1]}]
    outputs = {"sem_logits": torch.randn(2, 5, 3, 4, generator=g), "aux_outputs": []}
    plain = PerPixelCriterion(ignore_label=255, deep_supervision=False)(outputs, targets)
    assert set(plain) == {"loss_sem_seg", "loss"}
    assert plain["loss_sem_seg"].item() == pytest.approx(_ref_pixel_ce(outputs["sem_logits"], labels, 255), rel=1e-5)
    outputs["aux_outputs"] = [{"sem_logits": torch.randn(2, 5, 3, 4, generator=g)} for _ in range(5)]
    plus = PerPixelCriterion(ignore_label=255)(outputs, targets)
    assert set(plus) == {"loss_sem_seg", "loss"} | {f"loss_sem_seg_{i}" for i in range(5)}
    ref3 = _ref_pixel_ce(outputs["aux_outputs"][3]["sem_logits"], labels, 255)
    assert plus["loss_sem_seg_3"].item() == pytest.approx(ref3, rel=1e-5)
    torch.testing.assert_close(plus["loss"], sum(v for k, v in plus.items() if k != "loss"))
    all_ignored = [{"sem_seg": torch.full((12, 16), 255)}] * 2
    assert PerPixelCriterion(ignore_label=255)(outputs, all_ignored)["loss"].item() == 0.0


# ---------------------------------------------------------------- overfitting
class _Memorizer(nn.Module):
    """Learnable per-image outputs: class logits [B, Q, K+1] and mask logits [B, Q, h, w] for the final and 2 aux
    layers - the smallest thing the criterion can train."""

    def __init__(self, batch, queries, classes, low):
        super().__init__()
        g = torch.Generator().manual_seed(8)
        self.logits = nn.Parameter(torch.randn(3, batch, queries, classes + 1, generator=g) * 0.1)
        self.masks = nn.Parameter(torch.randn(3, batch, queries, *low, generator=g) * 0.1)

    def forward(self):
        layers = [{"pred_logits": self.logits[i], "pred_masks": self.masks[i]} for i in range(3)]
        return {**layers[-1], "aux_outputs": layers[:-1]}


def test_overfit_tiny_problem():
    classes, size = 4, (32, 32)
    sem = torch.zeros(2, *size, dtype=torch.long)
    sem[0, :, 12:] = 1
    sem[0, 20:, :8] = 3
    sem[1, :16] = 2
    sem[1, 16:, 20:] = 0
    sem[1, 16:, :20] = 3
    targets = []
    for b in range(2):
        present = sem[b].unique()
        targets.append({"labels": present, "masks": sem[b][None] == present[:, None, None]})
    model = _Memorizer(batch=2, queries=6, classes=classes, low=(8, 8))
    criterion = SetCriterion(num_classes=classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    history = []
    for _ in range(100):
        loss = criterion(model(), targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.1 * history[0]
    with torch.no_grad():
        scores = semantic_from_outputs(model(), [size, size], [size, size])
    pred = torch.stack([s.argmax(0) for s in scores])
    ious = []
    for c in range(classes):
        inter = ((pred == c) & (sem == c)).sum().item()
        union = ((pred == c) | (sem == c)).sum().item()
        ious.append(inter / union)
    assert sum(ious) / classes > 0.95
