"""``data.preprocess``: MMAction2's test pipeline (full-size decode, OpenCV's bilinear, mmcv's size
rounding) next to stdet's own (reduced decode, antialiased resize), and the ``auto`` choice."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import JpegImagePlugin

from stdet import zoo
from stdet.configs import ConfigError, apply_overrides
from stdet.data.transforms import (RandomRescale, Resize, resize_clip_opencv, short_side_size,
                                   test_transforms, train_transforms)
from stdet.engine.checkpoint import convert_checkpoint, save_checkpoint
from stdet.engine.data import build_dataset
from stdet.engine.checkpoint import mmaction2_origin, read_checkpoint
from stdet.engine.test import resolve_preprocess

MINI = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb:mini"


def mmcv_rescaled(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(h, w)`` as written in mmcv (``mmcv/image/geometric.py``): ``rescale_size((w, h),
    scale)`` with MMAction2's ``Resize(scale=(-1, S))`` turned into ``scale = (inf, S)``; the
    factor is ``min(max(scale) / max(h, w), min(scale) / min(h, w))`` and ``_scale_size`` makes
    each side ``int(side * float(factor) + 0.5)``."""
    scale = (np.inf, short_side)
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * float(factor) + 0.5), int(width * float(factor) + 0.5)


def plain_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Reference bilinear, float64: output pixel ``d`` samples the source at ``(d + 0.5) *
    in / out - 0.5`` (half-pixel centres), clamped into the image; the 4 nearest pixels weighted
    by distance, no low-pass filter whatever the scale."""
    def taps(n_in, n_out):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    y0, y1, fy = taps(img.shape[0], out_h)
    x0, x1, fx = taps(img.shape[1], out_w)
    img = img.astype(np.float64)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bottom = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def hashed_frame(h: int, w: int, seed: int) -> np.ndarray:
    """A deterministic noise frame (multiplicative hash of the pixel index), no RNG involved."""
    i = np.arange(h * w * 3, dtype=np.uint64) + np.uint64(seed * 1000003)
    mixed = ((i * np.uint64(2654435761)) % np.uint64(2 ** 32)) >> np.uint64(13)
    return (mixed % np.uint64(256)).astype(np.uint8).reshape(h, w, 3)


def smooth_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like frame: smooth colour waves plus fine detail (something to alias)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for scale in (1, 4, 16, 48):
        for c in range(3):
            fx, fy = rng.uniform(0.5, 1.5, 2) * scale * np.pi
            img[..., c] += 50 / scale ** 0.5 * np.sin(fx * xx + rng.uniform(0, 6)) * np.cos(fy * yy)
    return np.clip(img + 128 + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# sizes


@pytest.mark.parametrize("height, width, short_side", [
    (1080, 1920, 256), (720, 1280, 256), (360, 640, 256), (854, 480, 256), (480, 854, 256),
    (512, 601, 256),    # 300.5: mmcv rounds the half up, Python's round() to even
    (257, 999, 256), (241, 383, 256), (97, 31, 17), (33, 1001, 7), (96, 128, 40), (288, 384, 96),
    (4, 3, 256), (1, 1, 5),
])
def test_mmaction2_size_rounding_is_mmcvs(height, width, short_side):
    expected = mmcv_rescaled(height, width, short_side)
    assert short_side_size(height, width, short_side, "mmaction2") == expected
    clip = np.zeros((1, height, width, 3), np.uint8)
    out, _ = Resize(short_side, "mmaction2")(clip, [])
    assert out.shape[1:3] == expected


def test_stdets_rounding_differs_on_a_half():
    assert short_side_size(512, 601, 256, "stdet") == (256, 300)        # round(300.5) == 300
    assert short_side_size(512, 601, 256, "mmaction2") == (256, 301)    # int(300.5 + 0.5)


def test_boxes_scale_by_the_float32_ratio_of_the_sizes():
    """As MMAction2's ``Resize._box_resize``: box * float32([new_w / w, new_h / h] * 2)."""
    box = np.array([[10.25, 20.5, 300.75, 400.125]], np.float32)
    for preprocess in ("stdet", "mmaction2"):
        clip, (out,) = Resize(256, preprocess)(np.zeros((1, 512, 601, 3), np.uint8), [box])
        h, w = clip.shape[1:3]
        ratio = np.array([w / 601, h / 512, w / 601, h / 512], np.float32)
        np.testing.assert_array_equal(out, box * ratio)


# ------------------------------------------------------------------------------------------------
# pixels


# sha256 (first 16 hex digits) of cv2.resize(hashed_frame(45, 75, 1), (w, h),
# interpolation=cv2.INTER_LINEAR).tobytes(), the same with opencv-python-headless 4.5.5.64,
# 4.10.0.84 and 5.1.0.95 (benchmarks/preprocess_parity.py compares whole pipelines)
OPENCV_DIGESTS = {
    (15, 25): "7388cf83a81f245c", (16, 27): "81fce57dd382f5d2", (90, 150): "1cd3ded2b9a07160",
    (31, 52): "4663def1497e1088", (1, 1): "d2ee71be0d6d854c", (100, 9): "2a6f36ab779c2a6f",
    (44, 74): "26bd5052a6dd8e6b", (46, 76): "2bfaed05d156193f",
}


@pytest.mark.parametrize("size", sorted(OPENCV_DIGESTS))
def test_resize_is_opencvs_inter_linear_bit_for_bit(size):
    frame = hashed_frame(45, 75, 1)
    out = resize_clip_opencv(frame[None], size)
    assert out.shape == (1, *size, 3) and out.dtype == np.uint8
    assert hashlib.sha256(out[0].tobytes()).hexdigest()[:16] == OPENCV_DIGESTS[size]


def test_each_frame_resized_alone():
    clip = np.stack([hashed_frame(45, 75, s) for s in range(3)])
    out = resize_clip_opencv(clip, (16, 27))
    for frame, resized in zip(clip, out):
        np.testing.assert_array_equal(resize_clip_opencv(frame[None], (16, 27))[0], resized)
    assert resize_clip_opencv(clip, (45, 75)) is clip   # same size: untouched, as cv2 copies


def test_shrink_by_3_is_plain_bilinear_exactly():
    """A 3x shrink samples whole source pixels (position 3d + 1): no weight to round."""
    frame = smooth_frame(90, 150)
    out = resize_clip_opencv(frame[None], (30, 50))[0].astype(np.float64)
    reference = plain_bilinear(frame, 30, 50)
    assert np.abs(out - reference).max() <= 1e-4
    np.testing.assert_array_equal(out, frame[1::3, 1::3])


@pytest.mark.parametrize("size", [(37, 61), (23, 41), (121, 203)])
def test_any_scale_is_plain_bilinear_within_a_grey_level(size):
    frame = smooth_frame(90, 150, seed=1)
    out = resize_clip_opencv(frame[None], size)[0].astype(np.float64)
    diff = np.abs(out - plain_bilinear(frame, *size))
    # 11-bit weights and OpenCV's truncating shifts: below one grey level, mostly by well under
    assert diff.max() < 1.0 and diff.mean() < 0.5


def test_stdet_antialiases_a_shrink_and_mmaction2_does_not():
    frame = smooth_frame(90, 150)
    reference = plain_bilinear(frame, 30, 50)
    stdet, _ = Resize(30, "stdet")(frame[None], [])
    mmaction2, _ = Resize(30, "mmaction2")(frame[None], [])
    assert stdet.shape == mmaction2.shape == (1, 30, 50, 3)
    assert np.abs(mmaction2[0] - reference).max() <= 1e-4
    assert np.abs(stdet[0].astype(np.float64) - reference).mean() > 2   # the low-pass filter
    # torch's antialiased bilinear is what stdet does
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    aa = F.interpolate(x, size=(30, 50), mode="bilinear", align_corners=False, antialias=True)
    assert np.abs(stdet[0] - aa[0].permute(1, 2, 0).numpy()).max() <= 1.0


def test_enlarging_both_styles_agree_within_a_grey_level():
    """Enlarging, both styles are plain bilinear (antialiasing only acts when shrinking)."""
    frame = smooth_frame(48, 64)
    stdet, _ = Resize(96, "stdet")(frame[None], [])
    mmaction2, _ = Resize(96, "mmaction2")(frame[None], [])
    assert np.abs(stdet.astype(int) - mmaction2.astype(int)).max() <= 1


def test_pipelines_carry_the_style():
    assert "mmaction2" in repr(test_transforms(64, "mmaction2"))
    assert repr(test_transforms(64)) == "Compose([\n    Resize(short_side=64),\n])"
    train = train_transforms((40, 50), 32, 0.5, "mmaction2")
    assert train.transforms[0].preprocess == "mmaction2"
    clip, (box,) = RandomRescale((40, 40), "mmaction2")(
        np.zeros((2, 96, 128, 3), np.uint8), [np.array([[0, 0, 128, 96]], np.float32)],
        np.random.default_rng(0))
    assert clip.shape[1:3] == mmcv_rescaled(96, 128, 40)
    with pytest.raises(ValueError, match="preprocess"):
        Resize(64, "opencv")


# ------------------------------------------------------------------------------------------------
# decoding and the config


def cfg_for(root, *options):
    return zoo.resolve(MINI, "data.workers=0", "model.backbone.pretrained=None", *options,
                       data_root=root)


def test_config_field():
    cfg = zoo.resolve(MINI)
    assert cfg.data.preprocess == "auto"
    assert apply_overrides(cfg, ["data.preprocess=mmaction2"]).data.preprocess == "mmaction2"
    with pytest.raises(ConfigError):
        apply_overrides(cfg, ["data.preprocess=cv2"])


@pytest.mark.parametrize("preprocess, draft_allowed", [
    ("auto", True), ("stdet", True), ("mmaction2", False)])
def test_mmaction2_decodes_frames_at_full_size(tiny_ava, monkeypatch, preprocess, draft_allowed):
    """mini-AVA's frames are 128x96: a test scale of 32 lets stdet decode them at half size
    (PIL's draft); MMAction2's preprocessing decodes every frame whole."""
    cfg = cfg_for(tiny_ava, "data.test_scale=32", f"data.preprocess={preprocess}")
    dataset = build_dataset(cfg, "val", train=False)
    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, *a, **k: drafts.append(a) or real_draft(self, *a, **k))
    sample = dataset[0]
    if draft_allowed:
        assert dataset.source.min_short_side == 32 and drafts
        assert sample["meta"]["original_shape"] == (48, 64)
    else:
        assert dataset.source.min_short_side is None and not drafts
        assert sample["meta"]["original_shape"] == (96, 128)
    assert sample["meta"]["img_shape"] == (32, 43)   # 128 * 32 / 96 = 42.67 in both roundings


def test_mmaction2_ignores_reduced_decode_for_training_too(tiny_ava):
    cfg = cfg_for(tiny_ava, "data.preprocess=mmaction2", "data.reduced_decode=true")
    dataset = build_dataset(cfg, "train")
    assert dataset.source.min_short_side is None
    assert dataset.transforms.transforms[0].preprocess == "mmaction2"


# ------------------------------------------------------------------------------------------------
# "auto": MMAction2's preprocessing for MMAction2's checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A stdet checkpoint, an MMAction2 0.x and 1.x file, one MMAction2 file without meta, and
    a converted one."""
    from stdet.models import build_detector

    d = tmp_path_factory.mktemp("ckpts")
    model = build_detector(zoo.resolve(MINI, "model.backbone.pretrained=None").model)
    # as stdet's training saves it: meta {"config": NAME}, the config's dict beside
    save_checkpoint(d / "stdet.pth", model, meta={"config": "slowonly_mini"}, config={"x": 1})
    weights = {"backbone.conv1.conv.weight": torch.zeros(2, 3, 1, 1, 1),
               "roi_head.bbox_head.fc_cls.weight": torch.zeros(81, 2)}
    torch.save({"state_dict": weights, "meta": {"mmcv_version": "1.3.16", "config": "x = 1"}},
               d / "mm0.pth")
    torch.save({"state_dict": weights, "meta": {"mmengine_version": "0.7", "cfg": "x = 1"},
                "message_hub": {}}, d / "mm1.pth")
    torch.save({"state_dict": weights}, d / "bare.pth")
    convert_checkpoint(d / "mm0.pth", d / "converted.pth")
    return d


def mmaction2_version(path):
    return mmaction2_origin(read_checkpoint(path)).get("version")


@pytest.mark.parametrize("name, how", [
    ("stdet.pth", None), ("mm0.pth", "0.x"), ("mm1.pth", "1.x"),
    ("bare.pth", "unknown"), ("converted.pth", "0.x")])  # a converted file keeps its source's
def test_which_checkpoints_are_mmaction2s(checkpoints, name, how):
    assert mmaction2_version(checkpoints / name) == how


KEY_LISTS = sorted((Path(__file__).parent / "fixtures" / "mmaction2_keys").glob("*.txt"))


@pytest.mark.parametrize("keys", KEY_LISTS, ids=lambda p: p.stem)
def test_mmaction2_weights_without_meta_are_recognised_by_their_names(tmp_path, keys):
    """A published file stripped of its meta: MMAction2's names (its backbones' and heads' key
    lists) give it away."""
    names = [line.split()[0] for line in keys.read_text().splitlines() if line.strip()]
    prefix = {"bbox": "roi_head.bbox_head.", "fbo": "roi_head.shared_head.",
              "acrn": "roi_head.shared_head."}.get(keys.stem.split("_")[0], "backbone.")
    torch.save({"state_dict": {prefix + n: torch.zeros(1) for n in names}}, tmp_path / "x.pth")
    assert mmaction2_version(tmp_path / "x.pth") == "unknown"


def test_auto_picks_mmaction2_for_a_converted_checkpoint(checkpoints, capsys):
    cfg = zoo.resolve(MINI)
    out = resolve_preprocess(cfg, checkpoints / "converted.pth")
    assert out.data.preprocess == "mmaction2"
    assert out.data.root == cfg.data.root and out.model == cfg.model   # nothing else changes
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MMAction2 checkpoint (0.x)" in err
    assert resolve_preprocess(cfg, checkpoints / "mm1.pth", verbose=False).data.preprocess == \
        "mmaction2"
    assert capsys.readouterr().err == ""


def test_auto_picks_stdet_for_a_stdet_checkpoint_or_model(checkpoints, capsys):
    cfg = zoo.resolve(MINI)
    assert resolve_preprocess(cfg, checkpoints / "stdet.pth").data.preprocess == "stdet"
    assert resolve_preprocess(cfg, torch.nn.Linear(1, 1)).data.preprocess == "stdet"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("chosen", ["stdet", "mmaction2"])
def test_an_explicit_choice_is_kept(checkpoints, chosen):
    cfg = zoo.resolve(MINI, f"data.preprocess={chosen}")
    for name in ("stdet.pth", "converted.pth"):
        assert resolve_preprocess(cfg, checkpoints / name) is cfg
