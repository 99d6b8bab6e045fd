"""accelerate.panoptic: panoptic results in row strips equal the exact post-processing (inference.postprocess)."""

from __future__ import annotations

import pytest
import torch

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
