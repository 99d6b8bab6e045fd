"""Predictor: preprocessing (PIL resize, normalise, pad), post-processing to the original size, inputs and errors,
checked against an independent transcription of the pipeline on a tiny stand-in model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from maskformer.errors import DataError
from maskformer.inference.predictor import Predictor

MEAN = torch.tensor([123.675, 116.28, 103.53])
STD = torch.tensor([58.395, 57.12, 57.375])


class _Stub(nn.Module):
    """Mask logits = 1x1 conv of the 4x4-average-pooled image: per-pixel local, so padding cannot leak into the valid
    region and batched results must equal single-image ones."""

    def __init__(self, queries=4, classes=3, lean=True, size_divisibility=32):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("pixel_mean", MEAN.clone())
        self.register_buffer("pixel_std", STD.clone())
        self.size_divisibility = size_divisibility
        self.proj = nn.Conv2d(3, queries, 1)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(queries, 3, 1, 1, generator=g) * 3)
            self.proj.bias.copy_(torch.randn(queries, generator=g))
        self.cls = nn.Parameter(torch.randn(queries, classes + 1, generator=g) * 3)
        self.calls: list[tuple[torch.Tensor, object]] = []
        self.lean = lean

    def _out(self, images):
        masks = self.proj(F.avg_pool2d(images, 4))
        return {"pred_logits": self.cls.expand(images.shape[0], -1, -1), "pred_masks": masks}

    def forward(self, images, with_aux=True):
        self.calls.append((images.clone(), with_aux))
        return self._out(images)


class _StubNoAux(_Stub):
    def forward(self, images):  # no with_aux parameter
        self.calls.append((images.clone(), None))
        return self._out(images)


class _Baseline(_Stub):
    def forward(self, images, with_aux=True):
        return {"sem_logits": self.proj(F.avg_pool2d(images, 4))[:, :3], "aux_outputs": []}


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _transcribed_semantic(model, image, min_size, max_size):
    """The original test path, written out: PIL resize, normalise, pad to 32, upsample, einsum, crop, resize."""
    h, w = image.shape[:2]
    scale = min_size / min(h, w)
    nh, nw = (min_size, scale * w) if h < w else (scale * h, min_size)
    if max(nh, nw) > max_size:
        nh, nw = nh * max_size / max(nh, nw), nw * max_size / max(nh, nw)
    nh, nw = int(nh + 0.5), int(nw + 0.5)
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    x = (torch.from_numpy(resized.copy()).permute(2, 0, 1).float() - MEAN[:, None, None]) / STD[:, None, None]
    ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
    x = F.pad(x, (0, pw - nw, 0, ph - nh))[None]
    with torch.no_grad():
        out = model._out(x)
        up = F.interpolate(out["pred_masks"], size=(ph, pw), mode="bilinear", align_corners=False)[0]
        probs = out["pred_logits"][0].softmax(-1)[:, :-1]
        scores = torch.einsum("qc,qhw->chw", probs, up.sigmoid())[:, :nh, :nw]
        scores = F.interpolate(scores[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return scores, resized


def test_semantic_matches_transcription_and_preprocessing():
    model = _Stub()
    image = _image(45, 70)
    labels, scores = Predictor(model, min_size=50, max_size=1000)(image, return_scores=True)
    ref_scores, resized = _transcribed_semantic(model, image, 50, 1000)
    assert labels.dtype == torch.int64 and labels.shape == (45, 70) and scores.shape == (3, 45, 70)
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=1e-5)
    assert torch.equal(labels, scores.argmax(0))
    batch, with_aux = model.calls[-1]
    assert with_aux is False and batch.shape == (1, 3, 64, 96)  # 50 x 78 padded up to multiples of 32
    expected = (torch.from_numpy(resized.copy()).permute(2, 0, 1).float() - MEAN[:, None, None]) / STD[:, None, None]
    torch.testing.assert_close(batch[0, :, :50, :78], expected)
    assert batch[0, :, 50:].abs().sum() == 0 and batch[0, :, :, 78:].abs().sum() == 0  # zeros after normalising


def test_default_task_and_label_map_only():
    labels = Predictor(_Stub(), min_size=32, max_size=64)(_image(20, 30))
    assert isinstance(labels, torch.Tensor) and labels.shape == (20, 30) and labels.dtype == torch.int64


def test_batch_equals_single_images():
    model = _Stub()
    predictor = Predictor(model, min_size=40, max_size=1000)
    images = [_image(40, 40, 1), _image(50, 90, 2), _image(70, 30, 3)]
    batched = predictor(images, return_scores=True)
    assert model.calls[-1][0].shape == (3, 3, 96, 96)  # batch max (40 x 72 / 40 x 40 / 93 x 40) rounded to 32
    for image, (labels, scores) in zip(images, batched):
        single_labels, single_scores = predictor(image, return_scores=True)
        assert labels.shape == image.shape[:2]
        torch.testing.assert_close(scores, single_scores, atol=1e-5, rtol=1e-5)


def test_path_input_and_unreadable_files(tmp_path):
    image = _image(33, 47)
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(image).convert("L").save(tmp_path / "gray.png")
    predictor = Predictor(_Stub(), min_size=33, max_size=1000)
    assert torch.equal(predictor(str(tmp_path / "a.png")), predictor(image))
    assert predictor(tmp_path / "gray.png").shape == (33, 47)  # converted to RGB
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.jpg"):
        predictor(tmp_path / "bad.jpg")
    with pytest.raises(DataError, match="missing.png"):
        predictor(str(tmp_path / "missing.png"))
    with pytest.raises(DataError, match="uint8"):
        predictor(image.astype(np.float32))
    with pytest.raises(DataError, match="uint8"):
        predictor(np.concatenate([image, image[:, :, :1]], axis=2))  # RGBA-like 4 channels
    grey = image[:, :, 0]
    assert torch.equal(predictor(grey), predictor(np.repeat(grey[:, :, None], 3, axis=2)))


def test_pil_tensor_and_list_inputs_equal_the_array():
    image = _image(33, 47)
    predictor = Predictor(_Stub(), min_size=33, max_size=1000)
    want = predictor(image)
    assert torch.equal(predictor(Image.fromarray(image)), want)
    assert torch.equal(predictor(Image.fromarray(image).convert("RGBA")), want)  # any PIL mode -> RGB
    assert torch.equal(predictor(torch.from_numpy(image).permute(2, 0, 1)), want)
    mixed = predictor([image, Image.fromarray(image), torch.from_numpy(image).permute(2, 0, 1)])
    assert all(torch.equal(m, want) for m in mixed)
    with pytest.raises(DataError, match="3xHxW"):
        predictor(torch.from_numpy(image))  # HWC tensor
    with pytest.raises(DataError, match="3xHxW"):
        predictor(torch.from_numpy(image).permute(2, 0, 1).float())


def test_panoptic_output():
    predictor = Predictor(_Stub(), min_size=40, max_size=1000, task_default="panoptic", thing_ids=[0, 1],
                          object_mask_threshold=0.0, overlap_threshold=0.0)  # fmt: skip
    pan, segments = predictor(_image(40, 56))
    assert pan.dtype == torch.int32 and pan.shape == (40, 56)
    ids = sorted(int(i) for i in pan.unique() if i != 0)
    assert ids == [s["id"] for s in segments] == list(range(1, len(segments) + 1)) and segments
    for s in segments:
        assert s["isthing"] == (s["category_id"] in (0, 1))
    with pytest.raises(ValueError):
        predictor(_image(40, 56), return_scores=True)
    with pytest.raises(ValueError):
        predictor(_image(40, 56), task="instance")


def test_model_without_with_aux_and_baseline():
    model = _StubNoAux(size_divisibility=0)
    Predictor(model, min_size=30, max_size=1000)(_image(30, 41))
    assert model.calls[-1][1] is None and model.calls[-1][0].shape == (1, 3, 30, 41)  # no padding at divisibility 0
    baseline = Predictor(_Baseline(), min_size=32, max_size=1000)
    assert baseline(_image(32, 48)).shape == (32, 48)
    with pytest.raises(ValueError):
        baseline(_image(32, 48), task="panoptic")


def test_tta_single_view_equals_plain_scores():
    predictor = Predictor(_Stub(), min_size=40, max_size=1000)
    image = _image(50, 60)
    _, scores = predictor(image, return_scores=True)
    torch.testing.assert_close(predictor.tta_scores(image, min_sizes=[40], max_size=1000, flip=False), scores)
    assert predictor.tta_scores(image, min_sizes=[32, 48], max_size=1000).shape == (3, 50, 60)


def test_a_file_is_read_as_a_viewer_shows_it(tmp_path):
    """A phone photo stores its pixels sideways with an EXIF orientation: the labels must lie over the photo as shown
    (as the dataset reader and detectron2's read_image do), and a 16-bit grey file is scaled, not clipped to white."""
    from maskformer.data.io import read_image

    predictor = Predictor(_Stub(), min_size=33, max_size=1000)
    stored = _image(30, 44)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    shown = np.ascontiguousarray(np.rot90(stored, k=-1))
    labels = predictor(tmp_path / "phone.png")
    assert labels.shape == (44, 30)
    assert torch.equal(labels, predictor(shown))
    np.testing.assert_array_equal(read_image(tmp_path / "phone.png"), shown)  # one reader for data and inference
    deep = (np.arange(30 * 44, dtype=np.uint16).reshape(30, 44) * 40).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    grey = (deep >> 8).astype(np.uint8)
    assert torch.equal(predictor(tmp_path / "deep.png"), predictor(np.repeat(grey[:, :, None], 3, axis=2)))


@pytest.mark.parametrize("optimize", [True, False])
def test_large_outputs_resize_a_few_classes_at_a_time_with_the_same_labels(monkeypatch, optimize):
    """An image far larger than the test size: the labels equal the argmax of the full scores, and no resize to the
    output size holds more than the budget's classes (a 20-megapixel photo with 150 classes took 13 GB before)."""
    import maskformer.inference.postprocess.semantic as semantic

    model = _Stub(queries=5, classes=5)
    image = _image(150, 230, seed=3)
    predictor = Predictor(model, min_size=40, max_size=1000, optimize=optimize)
    want = predictor.semantic_scores(image).argmax(0)
    monkeypatch.setattr(semantic, "_RESIZE_FLOATS", 2 * 150 * 230)
    channels: list[int] = []
    resize = semantic.sem_seg_postprocess

    def counting(x, image_size, output_size):
        channels.append(int(x.shape[0]))
        return resize(x, image_size, output_size)

    monkeypatch.setattr(semantic, "sem_seg_postprocess", counting)
    labels = predictor(image)
    assert torch.equal(labels, want) and len(labels.unique()) > 1
    assert channels and max(channels) == 2 and sum(channels) == 5  # 2 + 2 + 1 classes


@pytest.mark.parametrize("optimize", [True, False])
def test_a_predictor_leaves_the_models_training_mode_as_it_was(optimize: bool) -> None:
    """Building a Predictor on a model inside a training loop switched the whole model to eval mode for good (dropout
    and BatchNorm statistics silently off for the rest of training); a module kept in eval mode stays so."""
    import maskformer
    from conftest import CONFIGS

    cfg = maskformer.load_config(CONFIGS / "demo.yaml", ["model.dropout=0.1"])
    model = maskformer.build_model(cfg).train()
    model.backbone.eval()  # (a fine-tuning loop may keep some modules in eval mode)
    before = [m.training for m in model.modules()]
    predictor = Predictor(model, optimize=optimize)
    assert [m.training for m in model.modules()] == before
    image = _image(64, 80)
    first = predictor(image, task="semantic")
    assert [m.training for m in model.modules()] == before
    assert torch.equal(predictor(image, task="semantic"), first)  # every forward in eval mode: no dropout


def test_threads_sharing_a_reference_predictor_leave_a_training_models_statistics_alone() -> None:
    """Two threads on one ``optimize=False`` Predictor over a model in training mode: one thread's restore of the
    training flags ran under the other's forward, whose BatchNorms then updated the user's running statistics (24 of
    them changed) and whose labels differed from a single thread's."""
    import threading

    import maskformer
    from conftest import CONFIGS

    cfg = maskformer.load_config(CONFIGS / "demo.yaml", ["model.backbone.norm=BN"])
    torch.manual_seed(0)
    model = maskformer.build_model(cfg).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predictor = Predictor(model, optimize=False)
    image = _image(48, 64)
    want = predictor(image, task="semantic")
    got: list[torch.Tensor] = []

    def work() -> None:
        for _ in range(30):
            got.append(predictor(image, task="semantic"))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == [] and all(torch.equal(g, want) for g in got) and len(got) == 60, changed[:5]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"object_mask_threshold": float("nan")}, "object_mask_threshold: a number between 0 and 1"),
        ({"object_mask_threshold": 2.0}, "object_mask_threshold: a number between 0 and 1"),
        ({"overlap_threshold": -3}, "overlap_threshold: a number between 0 and 1"),
        ({"min_size": 2.5}, "min_size: a positive integer"),
        ({"min_size": "128"}, "min_size: a positive integer"),
        ({"tta": "no"}, "tta: True or False"),
        ({"thing_ids": [99, -1]}, "thing_ids: class ids 0..7"),
        ({"thing_ids": ["disc"]}, "thing_ids: class ids 0..7"),
        ({"meta": {"classes": ["a"]}}, "meta: a class table"),
        ({"task_default": "inst"}, "task_default must be one of"),
    ],
)
def test_predictor_arguments_of_the_wrong_kind_are_one_config_error(kwargs: dict, words: str) -> None:
    """Each was accepted and gave silently wrong results (NaN kept no segment, 2.5 resized to a 2-pixel side, "no"
    switched TTA on) or a bare ValueError / AttributeError."""
    import maskformer
    from conftest import CONFIGS
    from maskformer.errors import ConfigError

    model = maskformer.build_model(maskformer.load_config(CONFIGS / "demo.yaml"))
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        Predictor(model, **kwargs)


def test_a_meta_of_another_class_count_and_unknown_tasks_are_config_errors() -> None:
    import maskformer
    from conftest import CONFIGS
    from maskformer.data.metadata import generic_meta
    from maskformer.errors import ConfigError

    model = maskformer.build_model(maskformer.load_config(CONFIGS / "demo.yaml"))
    with pytest.raises(ConfigError, match="meta: 3 classes for a model of 8"):
        Predictor(model, meta=generic_meta(3))
    predictor = Predictor(model, optimize=False)
    with pytest.raises(ConfigError, match="task must be one of"):
        predictor(_image(32, 32), task="instance")
    with pytest.raises(ConfigError, match="return_scores is only available for task='semantic'"):
        predictor(_image(32, 32), task="panoptic", return_scores=True)


def test_a_path_or_a_config_where_a_model_goes_is_one_config_error(tmp_path) -> None:
    """Predictor("run/model_final.pt") said to pass min_size and max_size, which then failed on 'str'.to;
    build_model("configs/demo.yaml") was an AttributeError."""
    import maskformer
    from maskformer.errors import ConfigError

    for wrong in ("run/model_final.pt", tmp_path, None):
        with pytest.raises(ConfigError, match="Predictor takes a model .*Predictor.from_checkpoint"):
            maskformer.Predictor(wrong, min_size=64, max_size=128)
    with pytest.raises(ConfigError, match="build_model takes a Config, got str: make one with maskformer.load_config"):
        maskformer.build_model("configs/demo.yaml")
