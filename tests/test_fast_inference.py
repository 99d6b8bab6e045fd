"""accelerate.fast_model (folded FrozenBN, channels-last, bf16) and accelerate.labels (labels in strips).

References are the unoptimised model and the unfused post-processing (tests/test_inference.py checks those against
independent transcriptions), plus a hand-computed fold of one layer.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import maskformer
import maskformer.inference.accelerate.labels as fused
from conftest import NEEDS_BF16
from maskformer.inference.accelerate import cell_bounds
from maskformer.inference.accelerate.fast_model import FastModel, fold_frozen_batchnorm, prepare_for_inference
from maskformer.inference.postprocess import semantic_from_outputs
from maskformer.modeling.backbone.norm import FrozenBatchNorm2d
from maskformer.modeling.layers import ConvNorm

DEMO_YAML = Path(maskformer.__file__).parent / "resources" / "demo.yaml"
DEMO = ["model.backbone.norm=FrozenBN", "model.num_queries=8", "model.dec_layers=2"]


def _randomize_frozen_bn(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            n = m.num_features
            m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
            m.bias.copy_(0.1 * torch.randn(n, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(torch.exp(0.3 * torch.randn(n, generator=g)))


@pytest.fixture(scope="module")
def demo_model() -> torch.nn.Module:
    cfg = maskformer.load_config(DEMO_YAML, DEMO)
    torch.manual_seed(0)
    model = maskformer.build_model(cfg).eval()
    with torch.no_grad():
        _randomize_frozen_bn(model, 1)
    return model


def test_fold_one_layer_matches_hand_computed_affine():
    conv = ConvNorm(3, 4, 3, padding=1, norm=FrozenBatchNorm2d(4), relu=True)
    with torch.no_grad():
        conv.norm.weight.copy_(torch.tensor([2.0, -1.0, 0.5, 1.0]))
        conv.norm.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.0]))
        conv.norm.running_mean.copy_(torch.tensor([1.0, 0.0, -2.0, 0.5]))
        conv.norm.running_var.copy_(torch.tensor([4.0, 1.0, 0.25, 9.0]) - conv.norm.eps)
    x = torch.randn(2, 3, 9, 7)
    # hand: y = relu((conv(x) - mean) / sqrt(var) * weight + bias) with var + eps = 4, 1, 0.25, 9
    raw = F.conv2d(x, conv.weight, None, padding=1)
    scale = torch.tensor([2.0 / 2, -1.0 / 1, 0.5 / 0.5, 1.0 / 3]).view(1, 4, 1, 1)
    mean, bias = (
        torch.tensor([1.0, 0.0, -2.0, 0.5]).view(1, 4, 1, 1),
        torch.tensor([0.1, 0.2, -0.3, 0.0]).view(1, 4, 1, 1),
    )
    expected = torch.relu((raw - mean) * scale + bias)
    folded = copy.deepcopy(conv)
    assert fold_frozen_batchnorm(folded) == 1
    assert folded.norm is None and folded.bias is not None
    with torch.no_grad():
        torch.testing.assert_close(folded(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)


def test_training_batchnorm_and_groupnorm_are_not_folded():
    bn = ConvNorm(3, 4, 1, norm=torch.nn.BatchNorm2d(4))  # train mode: batch statistics, not an affine
    gn = ConvNorm(3, 32, 1, norm=torch.nn.GroupNorm(8, 32))
    assert fold_frozen_batchnorm(torch.nn.Sequential(bn, gn)) == 0
    assert isinstance(bn.norm, torch.nn.BatchNorm2d) and isinstance(gn.norm, torch.nn.GroupNorm)
    bn.eval()
    assert fold_frozen_batchnorm(bn) == 1


def test_prepared_model_matches_and_leaves_the_original_untouched(demo_model):
    before = {k: v.clone() for k, v in demo_model.state_dict().items()}
    n_frozen = sum(isinstance(m, FrozenBatchNorm2d) for m in demo_model.modules())
    fast = prepare_for_inference(demo_model)
    assert isinstance(fast, FastModel) and not fast.training
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in fast.modules()) == 0 < n_frozen
    after = demo_model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in demo_model.modules()) == n_frozen
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, got = demo_model(x, with_aux=False), fast(x)
    assert ref["pred_masks"].std() > 0.1  # the comparison means something
    for key in ("pred_logits", "pred_masks"):
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(got[key], ref[key], atol=1e-4, rtol=1e-4)
    assert got["pred_logits"].is_contiguous()
    assert got["pred_masks"].is_contiguous(memory_format=torch.channels_last)  # as the convolution wrote them
    assert fast.size_divisibility == demo_model.size_divisibility
    assert torch.equal(fast.pixel_mean, demo_model.pixel_mean)


def test_identity_blocks_accumulate_into_their_input_only_inside_a_stage(monkeypatch):
    """Stages of 2-3 blocks: the 2nd/3rd block write relu(conv + x) into x (its input, the previous block's output);
    the stage outputs (features) and the final outputs equal the unfused path bit for bit."""
    import maskformer.inference.accelerate.fast_model as fast_module
    from maskformer.inference.accelerate import onednn

    cfg = maskformer.load_config(DEMO_YAML, [*DEMO, "model.backbone.blocks=[2,3,1,2]"])
    torch.manual_seed(3)
    model = maskformer.build_model(cfg).eval()
    with torch.no_grad():
        _randomize_frozen_bn(model, 4)
    fused = prepare_for_inference(model)
    backbone = fused.model.backbone
    flags = [[b.reuse_input for b in getattr(backbone, s)] for s in backbone.stage_names]
    assert flags == [[False, True], [False, True, True], [False], [False, True]]
    assert all(isinstance(b, onednn.Bottleneck) for s in backbone.stage_names for b in getattr(backbone, s))
    monkeypatch.setattr(fast_module, "use_onednn_convolutions", lambda model: 0)
    plain = prepare_for_inference(model)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(5)).contiguous(
        memory_format=torch.channels_last
    )
    with torch.inference_mode():
        got, ref = backbone(x), plain.model.backbone(x)
        again = backbone(x)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-5, rtol=1e-5)
        assert torch.equal(got[name], again[name])


def test_onednn_fused_convolutions_match_the_plain_ones(demo_model, monkeypatch):
    import maskformer.inference.accelerate.fast_model as fast_module
    from maskformer.inference.accelerate import onednn

    fused = prepare_for_inference(demo_model)
    assert sum(isinstance(m, onednn.Bottleneck) for m in fused.modules()) > 0
    assert sum(isinstance(m, onednn.Conv) for m in fused.modules()) > 0
    backbone = fused.model.backbone
    for stage in backbone.stage_names:  # only blocks after the first of a stage accumulate into their input
        blocks = list(getattr(backbone, stage))
        assert [b.reuse_input for b in blocks] == [False] + [True] * (len(blocks) - 1)
    monkeypatch.setattr(fast_module, "use_onednn_convolutions", lambda model: 0)
    plain = prepare_for_inference(demo_model)
    assert not any(isinstance(m, onednn.Conv) for m in plain.modules())
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got, ref = fused(x), plain(x)
    for key in ("pred_logits", "pred_masks"):
        torch.testing.assert_close(got[key], ref[key], atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # inputs are not modified (the identity blocks must not accumulate into them)
        features = fused.model.backbone(x.contiguous(memory_format=torch.channels_last))
        again = fused.model.backbone(x.contiguous(memory_format=torch.channels_last))
    for name in features:
        assert torch.equal(features[name], again[name])


@NEEDS_BF16
def test_bf16_outputs_are_float32_and_close(demo_model):
    fast = prepare_for_inference(demo_model, bf16=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref, got = demo_model(x, with_aux=False), fast(x)
    assert got["pred_masks"].dtype == torch.float32
    err = (got["pred_masks"] - ref["pred_masks"]).abs().max()
    # bf16 keeps 8 mantissa bits: a few percent of the output range after a dozen layers, but not exact
    assert 0 < err < 0.1 * ref["pred_masks"].abs().max()


def _outputs(q: int, k: int, low: tuple[int, int], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, q, max(1, low[0] // 4), max(1, low[1] // 4), generator=g) * 4
    masks = F.interpolate(coarse, size=low, mode="bilinear") + torch.randn(1, q, *low, generator=g)
    return {"pred_logits": torch.randn(1, q, k + 1, generator=g) * 3, "pred_masks": masks}


@pytest.mark.parametrize(
    ("low", "image_size", "output_size", "fast"),
    [
        ((16, 16), (64, 64), (64, 64), False),  # no padding, no resize: the fused exact path
        ((16, 24), (61, 83), (61, 83), False),  # padding cropped, sizes not multiples of 4 or of the strip
        ((16, 24), (61, 83), (40, 50), False),  # a resize: the unfused fallback
        ((16, 24), (61, 83), (70, 90), True),  # the approximate 1/4-resolution path, resampled in strips
    ],
)
def test_fused_labels_equal_argmax_of_unfused_scores(monkeypatch, low, image_size, output_size, fast):
    monkeypatch.setattr(fused, "_STRIP_FLOATS", 7 * 83)  # force many strips (a handful of rows each)
    outputs = _outputs(12, 7, low, seed=sum(image_size))
    padded = (4 * low[0], 4 * low[1])
    expected = semantic_from_outputs(outputs, [image_size], [output_size], input_size=padded, fast=fast)[0].argmax(0)
    got = fused.semantic_labels_from_outputs(outputs, [image_size], [output_size], input_size=padded, fast=fast)[0]
    assert got.shape == output_size and got.dtype == torch.int64
    assert len(torch.unique(expected)) > 3  # labels vary, so equality is informative
    assert torch.equal(got, expected)


def test_strip_rows_are_multiples_of_four_for_the_exact_path():
    rows = fused._strip_rows(150, 512, 4)
    assert rows % 4 == 0 and rows * 150 * 512 <= fused._STRIP_FLOATS and rows >= 4
    assert fused._strip_rows(10_000, 10_000, 4) == 4  # never zero rows


def test_predictor_with_prepared_model_gives_the_same_labels(demo_model):
    g = np.random.default_rng(0)
    image = g.integers(0, 256, (100, 140, 3), dtype=np.uint8)
    kw = {"min_size": 100, "max_size": 1000, "task_default": "semantic"}
    ref = maskformer.Predictor(demo_model, optimize=False, **kw)(image)
    got = maskformer.Predictor(prepare_for_inference(demo_model), **kw)(image)
    assert ref.shape == got.shape == (100, 140)
    # fp32 rounding (~1e-6) can only flip exact near-ties
    assert (ref == got).float().mean() > 0.999
    assert math.isfinite(float(got.float().mean()))


@pytest.mark.parametrize("alpha", [0.25, 0.6])
def test_fused_focal_dice_values_and_gradients_match_unfused(alpha):
    from maskformer.criterion.fused_loss import focal_dice_loss
    from maskformer.criterion.losses import dice_loss, sigmoid_focal_loss

    g = torch.Generator().manual_seed(5)
    x = (torch.randn(4, 257, generator=g, dtype=torch.float64) * 5).requires_grad_()
    t = torch.rand(4, 257, generator=g) > 0.7
    t[1] = False  # a mask with no positive pixel
    focal_ref = sigmoid_focal_loss(x, t.double(), 2.5, alpha=alpha)
    dice_ref = dice_loss(x, t.double(), 2.5)
    (grad_ref,) = torch.autograd.grad(20 * focal_ref + 0.5 * dice_ref, x)
    focal, dice = focal_dice_loss(x, t, 2.5, alpha=alpha)
    (grad,) = torch.autograd.grad(20 * focal + 0.5 * dice, x)
    torch.testing.assert_close(focal, focal_ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(dice, dice_ref, atol=1e-12, rtol=1e-10)
    assert grad_ref.abs().max() > 1e-3
    torch.testing.assert_close(grad, grad_ref, atol=1e-12, rtol=1e-9)


def _confident_outputs(q: int, k: int, low: tuple[int, int], seed: int, ties: bool) -> dict[str, torch.Tensor]:
    """Trained-like outputs: a few queries own smooth regions with peaked class probabilities, the rest say
    no-object. ``ties``: two queries share one class and two classes share one query's probability exactly, so some
    pixels have exactly tied scores (argmax must then pick the first class, as the unfused path does)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, q, max(2, low[0] // 8), max(2, low[1] // 8), generator=g) * 12
    masks = F.interpolate(coarse, size=low, mode="bilinear") + 0.2 * torch.randn(1, q, *low, generator=g)
    logits = torch.full((1, q, k + 1), -4.0)
    logits[0, :, k] = 4.0  # no-object by default
    owners = torch.randperm(q, generator=g)[: max(2, q // 3)]
    logits[0, owners, torch.randint(0, k, (len(owners),), generator=g)] = 6.0
    if ties:
        logits[0, owners[1], :k] = -4.0
        logits[0, owners[1], 0] = logits[0, owners[1], 1] = 6.0  # one query, two classes with equal probability
        masks[0, owners[1]] = 30.0  # that query is certain everywhere: classes 0 and 1 tie wherever it dominates
    return {"pred_logits": logits, "pred_masks": masks}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("low", "image_size"),
    [((32, 32), (128, 128)), ((24, 40), (93, 150)), ((16, 48), (64, 192)), ((2, 9), (7, 33))],
)
def test_certified_labels_equal_the_unfused_argmax(monkeypatch, low, image_size, threads):
    """The certified path (score bounds per 2x2 cell, exact pieces elsewhere) gives the unfused label map exactly, for
    confident outputs (most cells certified), exact ties, padding crops and tiny maps; and it certifies most cells."""
    monkeypatch.setattr(fused, "_MAX_UNCERTAIN", 1.0)  # never fall back to strips (small maps are mostly boundary)
    monkeypatch.setattr(fused, "_MIN_CLASS_QUERY_PAIRS", 0)  # small K x Q too
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        padded = (4 * low[0], 4 * low[1])
        for seed in range(6):
            outputs = _confident_outputs(16, 9, low, seed, ties=seed % 2 == 1)
            expected = semantic_from_outputs(outputs, [image_size], [image_size], input_size=padded)[0].argmax(0)
            got = fused._certified_labels(outputs["pred_logits"][0], outputs["pred_masks"][0], image_size)
            assert got is not None and torch.equal(got, expected), (seed, low, image_size)
            assert len(torch.unique(expected)) >= 2 or low[0] < 4  # (a 2 x 9 map may hold one region)
        probs = F.softmax(outputs["pred_logits"][0], -1)[:, :-1].contiguous()
        masks = outputs["pred_masks"][0]
        candidate, groups = cell_bounds.certain_cells(
            probs, cell_bounds.padded_cell_major(masks), cell_bounds.relative_tolerance(masks)
        )
        uncertain = sum(len(cells) for cells, _ in groups) / len(candidate)
        if low[0] >= 16:  # the certificate does work, and boundaries are left to the block scores
            assert 0.0 < uncertain < 0.5
    finally:
        torch.set_num_threads(previous)


def test_narrow_score_products_equal_the_columns_of_a_wide_one():
    """The exact bands score a few near-tie pixels at a time; their scores must be bit-identical to the same columns
    of the unfused [K, Q] x [Q, pixels] product whatever their number (sgemm switches kernels below 12 columns)."""
    g = torch.Generator().manual_seed(11)
    for k, q in [(40, 16), (150, 100), (7, 3)]:
        probs_t = torch.rand(k, q, generator=g)
        sig = torch.rand(q, 3000, generator=g)
        wide = probs_t @ sig
        for n in [1, 2, 3, 5, 11, 12, 31, 33, 200]:
            cols = torch.randperm(3000, generator=g)[:n]
            assert torch.equal(fused._scores(sig[:, cols], probs_t), wide[:, cols]), (k, q, n)
            assert torch.equal(fused._argmax_scores(sig[:, cols], probs_t), fused._first_argmax(wide[:, cols]))


def _unfused_sigmoid(mask_pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The unfused path's sigmoid of the upsampled, cropped mask logits [Q, h, w] (semantic_from_outputs)."""
    low = mask_pred.shape[-2:]
    up = F.interpolate(mask_pred[None].contiguous(), size=(4 * low[0], 4 * low[1]), mode="bilinear")[0]
    return up[:, : size[0], : size[1]].sigmoid()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("low", "size"),
    [
        ((128, 128), (512, 512)),
        ((20, 72), (80, 285)),
        ((6, 20), (24, 77)),
        ((40, 9), (160, 35)),
        ((10, 8), (37, 32)),
        ((3, 5), (12, 19)),
    ],
)  # (a full-width row whose width is not a multiple of 32 is vectorised otherwise: the certified path declines it)
def test_exact_pieces_are_bit_identical_to_the_unfused_sigmoid(low, size, threads):
    """The exact pieces (full-width row strips, near-tie tiles) give the very sigmoid values of the unfused path at
    their pixels, for maps whose height + width is below the upsample kernel's threshold too (narrow strips of a
    taller map were rounded otherwise: 1 ulp, enough to flip an exact-path label at a near-tie)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(low[0] * 1000 + low[1])
        masks = torch.randn(23, *low, generator=g) * 6
        expected = _unfused_sigmoid(masks, size)
        h, w = size
        for y0 in range(0, h, 8):
            rows = fused._sigmoid_rows(masks, y0, min(h, y0 + 8), w)
            assert torch.equal(rows, expected[:, y0 : y0 + 8].reshape(23, -1)), (low, y0)
        uncertain = torch.rand(size, generator=g) < 0.02
        uncertain[-1, -1] = uncertain[0, 0] = True
        where, columns = fused._near_tie_tiles(masks, uncertain)
        assert torch.equal(torch.sort(where).values, uncertain.view(-1).nonzero()[:, 0])
        assert torch.equal(columns, expected.reshape(23, -1)[:, where]), low
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_certified_labels_with_ties_in_few_pixels_per_band(monkeypatch, seed):
    """Exact ties in a cropped, unaligned output (80 x 285 of 80 x 288) where a band holds only a handful of near-tie
    pixels (seed 5 gave one wrong pixel when narrow products were not padded)."""
    monkeypatch.setattr(fused, "_MAX_UNCERTAIN", 1.0)
    monkeypatch.setattr(fused, "_MIN_CLASS_QUERY_PAIRS", 0)
    outputs = _confident_outputs(16, 40, (20, 72), seed, ties=True)
    size = (80, 285)
    expected = semantic_from_outputs(outputs, [size], [size], input_size=(80, 288))[0].argmax(0)
    got = fused._certified_labels(outputs["pred_logits"][0], outputs["pred_masks"][0], size)
    assert got is not None and torch.equal(got, expected)


def test_certified_labels_decline_when_they_cannot_be_bit_exact(monkeypatch):
    monkeypatch.setattr(fused, "_MIN_CLASS_QUERY_PAIRS", 0)
    outputs = _confident_outputs(8, 5, (16, 17), 1, ties=True)
    # exact ties need the exact bands, and a full-width row of 68 pixels (not a multiple of the alignment) is
    # vectorised differently by the unfused path
    assert fused._certified_labels(outputs["pred_logits"][0], outputs["pred_masks"][0], (64, 68)) is None
    # without near-ties no exact band is needed, so the width does not matter
    calm = _confident_outputs(8, 5, (16, 17), 0, ties=False)
    owner = int(calm["pred_logits"][0, :, :-1].amax(1).argmax())
    calm["pred_masks"][0] = -30.0
    calm["pred_masks"][0, owner] = 30.0  # one query owns every pixel: one class, far from any tie
    expected = semantic_from_outputs(calm, [(64, 68)], [(64, 68)], input_size=(64, 68))[0].argmax(0)
    assert torch.equal(fused._certified_labels(calm["pred_logits"][0], calm["pred_masks"][0], (64, 68)), expected)
    bad = outputs["pred_masks"][0].clone()
    bad[0, 3, 3] = float("nan")
    assert fused._certified_labels(outputs["pred_logits"][0], bad, (64, 60)) is None
    # ... and the public function still returns the unfused labels there
    padded = (64, 68)
    expected = semantic_from_outputs(outputs, [(64, 68)], [(64, 68)], input_size=padded)[0].argmax(0)
    assert torch.equal(fused.semantic_labels_from_outputs(outputs, [(64, 68)], [(64, 68)])[0], expected)


def test_cell_blocks_reproduce_the_bilinear_upsample():
    """The block geometry of cell_bounds (replicate pad, 4 x 4 blocks with weights 1/8 .. 7/8, offset 2) is the 4x
    bilinear upsample of the exact path, edges included."""
    g = torch.Generator().manual_seed(3)
    masks = torch.randn(5, 6, 7, generator=g) * 3
    cm = cell_bounds.padded_cell_major(masks)
    cells = torch.arange(7 * 8)
    weights = cell_bounds._block_weights(masks.device)
    wide = cm.shape[1]
    base = cells // (wide - 1) * wide + cells % (wide - 1)
    corners = cm.view(-1, 5)[torch.stack([base, base + 1, base + wide, base + wide + 1]).view(-1)]
    logits = (weights @ corners.view(4, -1)).view(16, -1, 5)  # [16, cells, Q]
    for q in range(5):
        image = cell_bounds.blocks_to_image(logits[:, :, q].t().contiguous(), (6, 7), (24, 28))
        expected = F.interpolate(masks[None, q : q + 1], size=(24, 28), mode="bilinear")[0, 0]
        torch.testing.assert_close(image, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_groups_scored_together_give_the_labels_and_leads_of_scoring_each_apart(monkeypatch, seed):
    """fill_blocks joins the uncertain cells' groups into a few products against the union of their classes: the
    blocks equal those of one block_top2 per group wherever that settles them, it marks every near-tie that does and
    few more (a class the bounds ruled out never wins a block, as runner-up it can only shorten a lead); another
    chunking of the bounds gives the same candidates; the certified labels stay the unfused ones."""
    outputs = _confident_outputs(24, 60, (24, 40), seed, ties=seed == 1)
    masks, probs = outputs["pred_masks"][0], F.softmax(outputs["pred_logits"][0], -1)[:, :-1].contiguous()
    cm, tol = cell_bounds.padded_cell_major(masks), cell_bounds.relative_tolerance(masks)
    candidate, groups = cell_bounds.certain_cells(probs, cm, tol)
    assert len(groups) >= 3 and len(cell_bounds._merged(groups)) < len(groups)
    blocks, near_tie = cell_bounds.fill_blocks(cm, candidate, groups, probs, tol)
    apart_blocks, apart_near = candidate[:, None].expand(-1, 16).clone(), torch.zeros_like(near_tie)
    for cells, classes in groups:
        best, top, lead = cell_bounds.block_top2(cm, cells, probs[:, classes])
        apart_blocks[cells] = classes[best]
        apart_near[cells] = lead <= tol * top + cell_bounds.ABSOLUTE_TOLERANCE
    assert bool((near_tie >= apart_near).all()) and int(near_tie.sum()) <= int(apart_near.sum()) + 16
    assert torch.equal(blocks[~near_tie], apart_blocks[~near_tie])
    monkeypatch.setattr(cell_bounds, "_CHUNK_BOUNDS", 50)  # one row of cells per chunk
    chunked, chunked_groups = cell_bounds.certain_cells(probs, cm, tol)
    assert torch.equal(chunked, candidate)
    assert torch.equal(
        torch.sort(torch.cat([c for c, _ in chunked_groups])).values,
        torch.sort(torch.cat([c for c, _ in groups])).values,
    )
    expected = semantic_from_outputs(outputs, [(96, 157)], [(96, 157)], input_size=(96, 160))[0].argmax(0)
    monkeypatch.setattr(fused, "_MAX_UNCERTAIN", 1.0)
    monkeypatch.setattr(fused, "_MIN_CLASS_QUERY_PAIRS", 0)
    assert torch.equal(fused._certified_labels(outputs["pred_logits"][0], masks, (96, 157)), expected)


def test_bounds_hold_and_block_leads_match_exact_scores():
    """Certified blocks really have their candidate at every pixel of the exact scores, and block_top2's labels and
    leads agree with the exact scores of the pixels it covers."""
    outputs = _confident_outputs(16, 9, (20, 20), 4, ties=False)
    masks, probs = outputs["pred_masks"][0], F.softmax(outputs["pred_logits"][0], -1)[:, :-1].contiguous()
    scores = semantic_from_outputs(outputs, [(80, 80)], [(80, 80)], input_size=(80, 80))[0]  # [K, 80, 80]
    cm, tol = cell_bounds.padded_cell_major(masks), cell_bounds.relative_tolerance(masks)
    candidate, groups = cell_bounds.certain_cells(probs, cm, tol)
    listed = torch.zeros(len(candidate), dtype=torch.bool)
    settled = 0
    for cells, classes in groups:
        listed[cells] = True
        best, top, lead = cell_bounds.block_top2(cm, cells, probs[:, classes])
        blocks = torch.full((len(candidate), 16), -1)
        blocks[cells] = torch.where(lead > tol * top, classes[best], -2)  # -2: a near-tie, left to the exact path
        image = cell_bounds.blocks_to_image(blocks, (20, 20), (80, 80))
        inside, clear = image != -1, image >= 0
        settled += int(clear.sum())  # (regions owned by no query have exactly tied classes: those stay near-ties)
        assert torch.equal(image[clear], scores.argmax(0)[clear])
        exact_top = scores.topk(2, dim=0).values
        for got, want in ((top, exact_top[0]), (lead, exact_top[0] - exact_top[1])):
            image = torch.full((len(candidate), 16), float("nan"))
            image[cells] = got
            image = cell_bounds.blocks_to_image(image, (20, 20), (80, 80))[inside]
            if got is top:  # the best class is always among the contenders
                torch.testing.assert_close(image, want[inside], atol=1e-5, rtol=0)
            else:  # the lead over the contenders: at least the lead over all classes (the others are beaten anyway)
                assert bool((image >= want[inside] - 1e-5).all())
    assert settled > 100
    certain = cell_bounds.blocks_to_image(candidate[:, None].expand(-1, 16).contiguous(), (20, 20), (80, 80))
    mask = ~cell_bounds.blocks_to_image(listed[:, None].expand(-1, 16).contiguous(), (20, 20), (80, 80))
    assert mask.float().mean() > 0.5
    assert torch.equal(certain[mask], scores.argmax(0)[mask])


@pytest.mark.parametrize("encoder", [False, True])
def test_folded_mask_features_equal_the_model_outputs(encoder):
    """mask_features conv folded into the mask embeddings: same lean outputs for a batch of 2 (FPN and +Enc decoders),
    channels-last or not; per-pixel baselines are left unfolded."""
    from maskformer.inference.accelerate.fast_model import can_fold_mask_features, folded_mask_forward

    overrides = DEMO + (["model.pixel_decoder=transformer_encoder", "model.transformer_in_feature=transformer_encoder",
                         "model.enc_layers=1"] if encoder else [])  # fmt: skip
    cfg = maskformer.load_config(DEMO_YAML, overrides)
    torch.manual_seed(1)
    model = maskformer.build_model(cfg).eval()
    assert can_fold_mask_features(model)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x, with_aux=False)
        got = folded_mask_forward(model, x)
        cl = folded_mask_forward(
            model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        )
    assert got["pred_masks"].shape == ref["pred_masks"].shape == (2, 8, 16, 24)
    scale = ref["pred_masks"].abs().max()
    assert scale > 0.1
    torch.testing.assert_close(got["pred_logits"], ref["pred_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["pred_masks"], ref["pred_masks"], atol=1e-5 * scale, rtol=1e-4)
    torch.testing.assert_close(cl["pred_masks"], ref["pred_masks"], atol=1e-5 * scale, rtol=1e-4)
    baseline = maskformer.build_model(maskformer.load_config(DEMO_YAML, [*DEMO, "model.meta_arch=per_pixel"]))
    assert not can_fold_mask_features(baseline)
    assert not prepare_for_inference(baseline).fold_mask_features


@pytest.mark.slow
def test_compiled_model_with_freezing_matches_eager(demo_model):
    """torch.compile (inductor, freezing) of the lean forward: same outputs as the eager optimised copy."""
    eager, compiled = prepare_for_inference(demo_model), prepare_for_inference(demo_model, compile=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        ref, got = eager(x), compiled(x)
    scale = ref["pred_masks"].abs().max()
    torch.testing.assert_close(got["pred_masks"], ref["pred_masks"], atol=1e-4 * scale, rtol=1e-4)
    torch.testing.assert_close(got["pred_logits"], ref["pred_logits"], atol=1e-4, rtol=1e-4)


def test_onednn_attention_and_linear_match_torch():
    from maskformer.inference.accelerate import onednn

    g = torch.Generator().manual_seed(2)
    attn = torch.nn.MultiheadAttention(32, 4).eval()
    layer = torch.nn.Linear(32, 48).eval()
    with torch.no_grad():
        attn.in_proj_bias.normal_(generator=g)
        attn.out_proj.bias.normal_(generator=g)
    q, k = torch.randn(7, 2, 32, generator=g), torch.randn(11, 2, 32, generator=g)
    with torch.inference_mode():
        ref = attn(q, k, k, need_weights=False)[0]
        got, weights = onednn.MultiheadAttention(attn)(q, k, k, need_weights=False)
        assert weights is None
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(onednn.Linear(layer)(q), layer(q), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(onednn.linear(q, layer.weight, layer.bias, relu=True), F.relu(layer(q)))
    x = q.clone().requires_grad_()  # with autograd: the plain F.linear (oneDNN's op has no backward)
    onednn.linear(x, layer.weight, layer.bias).sum().backward()
    assert x.grad is not None
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Sequential(attn))
    assert onednn.use_onednn_layers(model) == 2
    assert isinstance(model[0], onednn.Linear) and isinstance(model[1][0], onednn.MultiheadAttention)


@pytest.mark.parametrize(("low", "image_size"), [((32, 32), (128, 128)), ((24, 40), (93, 150)), ((2, 9), (7, 33))])
def test_fast_corner_labels_agree_with_the_exact_labels(low, image_size):
    """``fast`` labels at the input size (corner labels per cell, block scores where corners differ) agree with the
    exact labels almost everywhere, including padding crops and tiny maps."""
    padded = (4 * low[0], 4 * low[1])
    agree = []
    for seed in range(4):
        outputs = _confident_outputs(16, 9, low, seed, ties=False)
        scores = semantic_from_outputs(outputs, [image_size], [image_size], input_size=padded)[0]
        exact, top = scores.argmax(0), scores.topk(2, dim=0).values
        clear = top[0] - top[1] > 1e-3 * top[0]  # (regions no query owns have near-tied classes: fp noise decides)
        got = fused.semantic_labels_from_outputs(outputs, [image_size], [image_size], input_size=padded, fast=True)[0]
        assert got.shape == exact.shape == image_size and got.dtype == torch.int64
        assert clear.float().mean() > 0.2
        agree.append(float((got == exact)[clear].double().mean()))
    assert min(agree) > 0.99, agree


def test_corner_labels_list_exactly_the_mixed_cells():
    g = torch.Generator().manual_seed(9)
    probs = F.softmax(torch.randn(6, 5, generator=g) * 3, -1)
    cm = cell_bounds.padded_cell_major(torch.randn(6, 5, 7, generator=g) * 4)
    label, groups = cell_bounds.corner_labels(probs, cm)
    points = (cm.sigmoid() @ probs).argmax(-1)  # [7, 9] labels at the padded grid points
    corners = torch.stack([points[:-1, :-1], points[:-1, 1:], points[1:, :-1], points[1:, 1:]], -1).view(-1, 4)
    mixed = (corners != corners[:, :1]).any(1)
    assert torch.equal(label, corners[:, 0])
    assert len(groups) == 1 and torch.equal(groups[0][0], mixed.nonzero()[:, 0])
    assert set(groups[0][1].tolist()) == set(corners[mixed].unique().tolist())


@NEEDS_BF16
def test_predictor_uses_corner_labels_by_default_only_for_bf16_models(demo_model):
    # (through the public door, Predictor(model, bf16=True): a copy already prepared in bf16 holds bfloat16 weights,
    # which the Predictor refuses as it refuses any model cast to another dtype)
    kw = {"min_size": 64, "max_size": 256, "task_default": "semantic"}
    assert not maskformer.Predictor(demo_model, **kw).corner_labels
    assert maskformer.Predictor(demo_model, bf16=True, **kw).corner_labels
    assert not maskformer.Predictor(demo_model, bf16=True, corner_labels=False, **kw).corner_labels
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    corner = maskformer.Predictor(demo_model, bf16=True, **kw)(image)
    exact = maskformer.Predictor(demo_model, bf16=True, corner_labels=False, **kw)(image)
    assert corner.shape == exact.shape == (64, 96)
    assert (corner == exact).float().mean() > 0.95


@pytest.mark.parametrize("ties", [False, True])
def test_certified_labels_with_many_classes_equal_the_unfused_argmax(monkeypatch, ties):
    """More classes than cell_bounds keeps as "present": bright cells are bounded against those only, dim cells (no
    query owns them) against all; the labels are still the unfused ones, and the pruning does happen."""
    monkeypatch.setattr(fused, "_MAX_UNCERTAIN", 1.0)
    low, image_size = (24, 32), (96, 125)
    for seed in range(4):
        outputs = _confident_outputs(40, 80, low, seed, ties=ties)
        expected = semantic_from_outputs(outputs, [image_size], [image_size], input_size=(96, 128))[0].argmax(0)
        got = fused._certified_labels(outputs["pred_logits"][0], outputs["pred_masks"][0], image_size)
        assert got is not None and torch.equal(got, expected), seed
    probs = F.softmax(outputs["pred_logits"][0], -1)[:, :-1].contiguous()
    present, tau = cell_bounds._present_classes(probs, cell_bounds.padded_cell_major(outputs["pred_masks"][0]))
    assert len(present) == cell_bounds._PRESENT < 80 and math.isfinite(tau)


def test_packed_weights_give_the_plain_results_for_every_shape_and_follow_weight_changes():
    """Conv / Linear keep their weights in oneDNN's layout after the first call: later calls with other input shapes
    and batch sizes give what the plain weights give, an in-place weight change repacks, deepcopy works."""
    from maskformer.inference.accelerate import onednn
    from maskformer.modeling.layers import ConvNorm

    g = torch.Generator().manual_seed(7)
    layer = ConvNorm(24, 32, 3, padding=1, bias=True, norm=torch.nn.GroupNorm(4, 32), relu=True).eval()
    plain_linear = torch.nn.Linear(24, 40).eval()
    for p in [*layer.parameters(), *plain_linear.parameters()]:  # oneDNN paths are for inference copies
        p.requires_grad_(False)
    with torch.no_grad():
        layer.norm.weight.normal_(generator=g)
        layer.bias.normal_(generator=g)
    conv = onednn.Conv(layer, relu=True, norm=layer.norm).to(memory_format=torch.channels_last)
    linear = onednn.Linear(plain_linear)
    with torch.inference_mode():
        for shape in [(1, 24, 16, 16), (2, 24, 9, 21), (1, 24, 40, 8)]:
            x = torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(conv(x), layer(x), atol=1e-5, rtol=1e-5)
            rows = torch.randn(shape[0] * shape[2], 24, generator=g)
            torch.testing.assert_close(linear(rows), F.linear(rows, linear.weight, linear.bias), atol=1e-5, rtol=1e-5)
        assert conv._packed.weight is not None and linear._packed.weight is not None
        x = torch.randn(1, 24, 12, 12, generator=g).contiguous(memory_format=torch.channels_last)
        before = conv(x)
        layer.weight.mul_(2)  # the same Parameter object: the packed copy must follow
        linear.weight.mul_(2)
        torch.testing.assert_close(conv(x), layer(x), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(conv(x), before)
        rows = torch.randn(5, 24, generator=g)
        torch.testing.assert_close(linear(rows), F.linear(rows, linear.weight, linear.bias), atol=1e-5, rtol=1e-5)
    twin = copy.deepcopy(conv)
    assert twin._packed.weight is None
    with torch.inference_mode():
        torch.testing.assert_close(twin(x), conv(x), atol=0, rtol=0)
        assert twin._packed.weight is not None


def test_prepare_for_inference_under_inference_mode_still_packs_weights(demo_model):
    from maskformer.inference.accelerate import onednn

    with torch.inference_mode():
        fast = prepare_for_inference(demo_model)
        assert not any(p.is_inference() for p in fast.parameters())
        fast(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    convs = [m for m in fast.modules() if isinstance(m, onednn.Conv)]
    assert convs and all(m._packed.weight is not None for m in convs)


def test_fold_weight_equals_the_einsum_in_both_memory_formats():
    from maskformer.inference.accelerate.fast_model import _fold_weight

    g = torch.Generator().manual_seed(3)
    embed, weight = torch.randn(7, 12, generator=g), torch.randn(12, 5, 3, 3, generator=g)
    expected = torch.einsum("qd,dckl->qckl", embed, weight)
    with torch.inference_mode():
        for w in (weight, weight.contiguous(memory_format=torch.channels_last)):
            got = _fold_weight(embed, w)
            assert got.shape == (7, 5, 3, 3)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert _fold_weight(embed, weight.contiguous(memory_format=torch.channels_last)).is_contiguous(
            memory_format=torch.channels_last
        )


@pytest.mark.parametrize(("low", "image_size"), [((32, 32), (128, 128)), ((20, 72), (80, 285)), ((24, 40), (93, 150))])
def test_labels_do_not_depend_on_the_memory_layout_of_the_masks(monkeypatch, low, image_size):
    """FastModel returns channels-last mask logits: the fused labels (certified, exact strips, corner labels) and the
    unfused scores give the same results as for the same values in contiguous memory, exact ties included."""
    monkeypatch.setattr(fused, "_MAX_UNCERTAIN", 1.0)
    monkeypatch.setattr(fused, "_MIN_CLASS_QUERY_PAIRS", 0)
    padded = (4 * low[0], 4 * low[1])
    for seed in (1, 5):
        flat = _confident_outputs(16, 40, low, seed, ties=True)
        cl = {**flat, "pred_masks": flat["pred_masks"].contiguous(memory_format=torch.channels_last)}
        assert not cl["pred_masks"].is_contiguous()
        for y0 in (0, 8, image_size[0] - 8):  # the exact bands' values do not depend on the layout either
            rows = fused._sigmoid_rows(cl["pred_masks"][0], y0, y0 + 8, image_size[1])
            assert torch.equal(rows, fused._sigmoid_rows(flat["pred_masks"][0], y0, y0 + 8, image_size[1]))
        expected = semantic_from_outputs(flat, [image_size], [image_size], input_size=padded)[0]
        torch.testing.assert_close(
            semantic_from_outputs(cl, [image_size], [image_size], input_size=padded)[0], expected, atol=0, rtol=0
        )
        labels = expected.argmax(0)
        for kwargs in ({}, {"certify": False}):
            got = fused.semantic_labels_from_outputs(cl, [image_size], [image_size], input_size=padded, **kwargs)
            assert torch.equal(got[0], labels), (seed, kwargs)
        corner_flat = fused.semantic_labels_from_outputs(flat, [image_size], [image_size], input_size=padded, fast=True)
        corner_cl = fused.semantic_labels_from_outputs(cl, [image_size], [image_size], input_size=padded, fast=True)
        assert torch.equal(corner_flat[0], corner_cl[0])
