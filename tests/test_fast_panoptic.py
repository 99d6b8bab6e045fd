"""accelerate.panoptic: panoptic results in row strips equal the exact post-processing (inference.postprocess)."""

from __future__ import annotations

import pytest
import torch

from conftest import NEEDS_BF16
from maskformer.inference.accelerate.panoptic import panoptic_from_outputs_in_strips
from maskformer.inference.postprocess import panoptic_from_outputs

RULE = {"thing_ids": {0, 1, 2}, "object_mask_threshold": 0.5, "overlap_threshold": 0.8}


def _outputs(q: int, k: int, low: tuple[int, int], seed: int, *, ties: bool = False) -> dict[str, torch.Tensor]:
    """Confident classes and masks that tile the image (each query strong on its own region, smooth edges), so
    several queries pass the overlap test; ``ties``: queries 0 and 1 are identical (the first one must win)."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(1, q, k + 1, generator=g)
    cls[0, torch.arange(q), torch.randint(0, k + 1, (q,), generator=g)] += 8
    field = torch.nn.functional.interpolate(torch.randn(1, q, 3, 3, generator=g), size=low, mode="bilinear")
    region = torch.nn.functional.one_hot(field[0].argmax(0), q).permute(2, 0, 1)[None].float()
    masks = 8 * region - 4 + torch.randn(1, q, *low, generator=g)
    if ties:
        cls[0, 1], masks[0, 1] = cls[0, 0], masks[0, 0]
    return {"pred_logits": cls, "pred_masks": masks}


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "low, image_size, output_size",
    [((16, 16), (64, 64), (64, 64)), ((24, 32), (90, 125), (90, 125)), ((24, 32), (90, 125), (45, 60)),
     ((128, 128), (512, 512), (512, 512))],
)  # fmt: skip
@pytest.mark.parametrize("seed", [0, 1])
def test_strips_give_the_exact_panoptic_map_and_segments(low, image_size, output_size, seed, channels_last):
    out = _outputs(20, 8, low, seed, ties=seed == 1)
    if channels_last:
        out["pred_masks"] = out["pred_masks"].contiguous(memory_format=torch.channels_last)
    (got, got_segments), = panoptic_from_outputs_in_strips(out, [image_size], [output_size], **RULE)  # fmt: skip
    (ref, ref_segments), = panoptic_from_outputs(out, [image_size], [output_size], **RULE)  # fmt: skip
    assert len(ref_segments) >= 2  # a case with several segments (and things and stuff), not a blank map
    assert got.dtype == torch.int32 and got.shape == output_size
    assert torch.equal(got, ref)
    assert got_segments == ref_segments


def test_strips_with_nothing_kept_and_a_batch():
    a, b = _outputs(10, 5, (16, 20), 3), _outputs(10, 5, (16, 20), 4)
    batch = {k: torch.cat([a[k], b[k]]) for k in a}
    sizes = [(64, 80), (60, 77)]
    got = panoptic_from_outputs_in_strips(batch, sizes, sizes, **RULE)
    ref = panoptic_from_outputs(batch, sizes, sizes, **RULE)
    assert len(got) == 2 and all(torch.equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(got, ref))
    assert sum(len(r[1]) for r in ref) >= 2
    strict = {**RULE, "object_mask_threshold": 1.0}
    [(void, none)] = panoptic_from_outputs_in_strips(a, [(64, 80)], [(64, 80)], **strict)
    assert none == [] and void.shape == (64, 80) and int(void.abs().sum()) == 0


def test_predictor_panoptic_uses_the_strips_on_a_supported_machine():
    from maskformer.inference.accelerate import accelerate, supported

    acc = accelerate(torch.nn.Identity(), enabled=False)
    ok, _ = supported()
    assert (acc.panoptic is panoptic_from_outputs_in_strips) == ok


def test_selected_rows_top_up_to_the_minimum_and_none_means_all():
    from maskformer.inference.accelerate.fast_model import _selected_rows

    wanted = torch.zeros(30, dtype=torch.bool)
    assert _selected_rows(wanted, 17).numel() == 0
    wanted[[4, 20]] = True
    assert _selected_rows(wanted, 17).tolist() == [*range(16), 20]  # 4 and 20, then the first 15 others
    wanted[:25] = True
    assert _selected_rows(wanted, 17).tolist() == list(range(25))
    assert _selected_rows(torch.ones(30, dtype=torch.bool), 17) is None
    assert _selected_rows(torch.tensor([True, False]), 17) is None  # topping up reaches every row


def _selecting_model(bf16: bool):
    import maskformer
    from maskformer.inference.accelerate.fast_model import prepare_for_inference

    yaml = __import__("pathlib").Path(maskformer.__file__).parent / "resources" / "demo.yaml"
    cfg = maskformer.load_config(yaml, ["model.num_queries=40", "model.dec_layers=2", "model.backbone.norm=FrozenBN"])
    torch.manual_seed(4)
    model = maskformer.build_model(cfg).eval()
    return model, prepare_for_inference(model, bf16=bf16)


@pytest.mark.parametrize("bf16", [False, pytest.param(True, marks=NEEDS_BF16)])
def test_masks_of_selected_queries_are_the_full_forwards_rows(bf16):
    """FastModel(mask_queries=...): the selected queries' masks equal the unselected forward's bit for bit (few
    selected: topped up to 17 rows, the smallest convolution with the same kernel), the others are zeros."""
    _, fast = _selecting_model(bf16)
    assert fast.fold_mask_features
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = fast(x)
        for chosen in ([], [3], [0, 7, 39], list(range(0, 40, 2)), list(range(40))):
            wanted = torch.zeros(40, dtype=torch.bool)
            wanted[chosen] = True
            got = fast(x, mask_queries=lambda logits, w=wanted: w)
            assert torch.equal(got["pred_logits"], full["pred_logits"])
            assert got["pred_masks"].shape == full["pred_masks"].shape
            assert got["pred_masks"].is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(got["pred_masks"][:, wanted], full["pred_masks"][:, wanted]), chosen
            assert not got["pred_masks"][:, ~wanted].any() or len(chosen) < 17  # topped-up rows may be computed


@pytest.mark.parametrize("threshold", [0.0, 0.05, 1.0])
def test_predictor_panoptic_computes_only_kept_masks_with_the_same_results(threshold):
    import maskformer

    model, _ = _selecting_model(False)
    predictor = maskformer.Predictor(model, object_mask_threshold=threshold, overlap_threshold=0.0)
    plain = maskformer.Predictor(model, object_mask_threshold=threshold, overlap_threshold=0.0)
    if not predictor.accelerated:
        pytest.skip("the optimised copy is not used on this machine (accelerate.supported())")
    assert predictor._selects_masks
    plain._selects_masks = False
    image = (torch.rand(80, 100, 3, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8).numpy()
    calls = []
    forward = predictor.model.forward
    predictor.model.forward = lambda *a, **k: calls.append(k.get("mask_queries")) or forward(*a, **k)
    (got_map, got_segments), (ref_map, ref_segments) = predictor(image, task="panoptic"), plain(image, "panoptic")
    assert calls and calls[0] is not None  # the kept-query rule reached the model
    assert torch.equal(got_map, ref_map) and got_segments == ref_segments
    if threshold == 0.0:
        assert len(ref_segments) > 0
