"""Clip + box transforms: boxes must follow the pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stdet.data.transforms import (KINETICS_MEAN, KINETICS_STD, CenterCrop, Compose, Flip,
                                   RandomCrop, RandomRescale, Resize, boxes_to_normalized,
                                   boxes_to_pixels, test_transforms, to_tensor, train_transforms)

T, H, W = 3, 60, 80
BOX = np.array([[10, 20, 30, 50]], dtype=np.float32)  # x1, y1, x2, y2 in pixels


def make_clip(boxes: np.ndarray = BOX, h: int = H, w: int = W) -> np.ndarray:
    """Dark clip with a bright rectangle exactly covering each (integer) box."""
    clip = np.full((T, h, w, 3), 10, dtype=np.uint8)
    for x1, y1, x2, y2 in boxes.astype(int):
        clip[:, y1:y2, x1:x2] = 240
    return clip


def bright_bbox(frame: np.ndarray) -> np.ndarray:
    """Continuous bounding box ``x1, y1, x2, y2`` of the pixels brighter than mid-gray."""
    ys, xs = np.nonzero(frame.mean(axis=-1) > 125)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def check_follows(clip: np.ndarray, box: np.ndarray, tol: float) -> None:
    for frame in clip:
        np.testing.assert_allclose(bright_bbox(frame), box, atol=tol)


# ---------------------------------------------------------------- resize


@pytest.mark.parametrize("short_side", [30, 45, 120, 256])
def test_resize_boxes_follow_content(short_side):
    clip, (boxes,) = Resize(short_side)(make_clip(), [BOX], None)
    assert clip.shape[1] == short_side and clip.dtype == np.uint8
    assert boxes.dtype == np.float32
    check_follows(clip, boxes[0], tol=1.5)


def test_resize_keeps_aspect_ratio_and_scales_boxes():
    clip, (boxes,) = Resize(256)(make_clip(), [BOX], None)
    assert clip.shape == (T, 256, 341, 3)  # 80 * 256 / 60 = 341.3
    np.testing.assert_allclose(boxes, BOX * [341 / 80, 256 / 60, 341 / 80, 256 / 60], rtol=1e-6)
    portrait, _ = Resize(32)(make_clip(h=80, w=60), [BOX], None)
    assert portrait.shape[1:3] == (43, 32)  # the short side is the width here


def test_random_rescale_in_range_and_keeps_aspect():
    transform = RandomRescale((40, 50))
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(30):
        clip, (boxes,) = transform(make_clip(), [BOX], rng)
        h, w = clip.shape[1:3]
        assert 40 <= h <= 50
        assert abs(w - h * W / H) <= 0.5
        seen.add(h)
        check_follows(clip, boxes[0], tol=1.5)
    assert min(seen) == 40 and max(seen) == 50  # inclusive at both ends


# ---------------------------------------------------------------- crop


def test_random_crop_offsets_follow_content():
    box = np.array([[32, 12, 45, 48]], dtype=np.float32)  # inside every 50x50 crop of 60x80
    crop = RandomCrop(50)
    offsets = set()
    for seed in range(10):
        clip, (boxes,) = crop(make_clip(box), [box], np.random.default_rng(seed))
        assert clip.shape == (T, 50, 50, 3)
        check_follows(clip, boxes[0], tol=0)  # integer shifts: exact
        offsets.add(tuple(box[0, :2] - boxes[0, :2]))
    assert len(offsets) > 1


def test_center_crop_clips_boxes_and_keeps_count():
    boxes = np.array([[0, 0, 30, 30],       # partly outside: clipped to the crop edges
                      [25, 15, 50, 45],     # inside
                      [0, 0, 5, 5]],        # entirely outside: degenerate but kept
                     dtype=np.float32)
    clip, (out,) = CenterCrop(40)(make_clip(boxes[:1]), [boxes], None)
    assert clip.shape == (T, 40, 40, 3)  # top = 10, left = 20
    np.testing.assert_array_equal(out, [[0, 0, 10, 20], [5, 5, 30, 35], [0, 0, 0, 0]])
    check_follows(clip, out[0], tol=0)


def test_crop_larger_than_clip_keeps_whole_side():
    clip, (out,) = RandomCrop(70)(make_clip(), [BOX], np.random.default_rng(0))
    assert clip.shape == (T, 60, 70, 3)
    assert 0 <= BOX[0, 0] - out[0, 0] <= 10 and out[0, 1] == BOX[0, 1]
    clip, (out,) = RandomCrop(100)(make_clip(), [BOX], np.random.default_rng(0))
    assert clip.shape == (T, H, W, 3)
    np.testing.assert_array_equal(out, BOX)


# ---------------------------------------------------------------- flip


def test_flip_mirrors_boxes_exactly():
    clip, (out,) = Flip(p=1.0)(make_clip(), [BOX], np.random.default_rng(0))
    np.testing.assert_array_equal(out, [[50, 20, 70, 50]])  # W - x2, y1, W - x1, y2
    check_follows(clip, out[0], tol=0)
    np.testing.assert_array_equal(clip, make_clip()[:, :, ::-1])


def test_flip_probability():
    clip0 = make_clip()
    clip, (out,) = Flip(p=0.0)(clip0, [BOX], np.random.default_rng(0))
    np.testing.assert_array_equal(clip, clip0)
    np.testing.assert_array_equal(out, BOX)
    rng = np.random.default_rng(0)
    flips = sum(Flip(0.5)(clip0, [BOX], rng)[1][0][0, 0] != BOX[0, 0] for _ in range(200))
    assert 60 < flips < 140


# ---------------------------------------------------------------- pipelines


def test_train_pipeline_follows_content_and_is_deterministic():
    box = np.array([[20, 15, 60, 50]], dtype=np.float32)
    transform = train_transforms(short_side_range=(60, 72), crop_size=56)
    for seed in range(8):
        a_clip, a_boxes = transform(make_clip(box), [box, box.copy()], np.random.default_rng(seed))
        b_clip, b_boxes = transform(make_clip(box), [box, box.copy()], np.random.default_rng(seed))
        np.testing.assert_array_equal(a_clip, b_clip)
        np.testing.assert_array_equal(a_boxes[0], b_boxes[0])
        np.testing.assert_array_equal(a_boxes[0], a_boxes[1])  # proposals and gt move together
        assert a_clip.shape == (T, 56, 56, 3)
        check_follows(a_clip, a_boxes[0][0], tol=2)


def test_test_pipeline():
    transform = test_transforms(short_side=48)
    assert isinstance(transform, Compose)
    clip, (boxes,) = transform(make_clip(), [BOX])
    assert clip.shape == (T, 48, 64, 3)
    check_follows(clip, boxes[0], tol=1.5)


@pytest.mark.parametrize("transform", [
    Resize(32), RandomRescale((30, 40)), RandomCrop(40), CenterCrop(40), Flip(1.0),
    train_transforms((30, 40), 32), test_transforms(32),
])
def test_empty_boxes_pass_through(transform):
    empty = np.zeros((0, 4), dtype=np.float32)
    clip, boxes = transform(make_clip(), [empty, BOX, empty], np.random.default_rng(0))
    assert [b.shape for b in boxes] == [(0, 4), (1, 4), (0, 4)]
    assert all(b.dtype == np.float32 for b in boxes)
    clip, boxes = transform(make_clip(), [], np.random.default_rng(0))
    assert boxes == [] and clip.ndim == 4


# ---------------------------------------------------------------- tensors and box helpers


def test_to_tensor_shape_and_normalisation():
    clip = np.zeros((T, 4, 5, 3), dtype=np.uint8)
    clip[..., 0], clip[..., 1], clip[..., 2] = 255, 116, 0
    x = to_tensor(clip)
    assert x.shape == (3, T, 4, 5) and x.dtype == torch.float32 and x.is_contiguous()
    expected = [(255 - KINETICS_MEAN[0]) / KINETICS_STD[0], (116 - KINETICS_MEAN[1]) / KINETICS_STD[1],
                (0 - KINETICS_MEAN[2]) / KINETICS_STD[2]]
    for c in range(3):
        torch.testing.assert_close(x[c], torch.full((T, 4, 5), expected[c]))
    plain = to_tensor(clip, mean=(0, 0, 0), std=(1, 1, 1))
    assert plain[0, 0, 0, 0] == 255 and plain[2].abs().sum() == 0
    # Channel order is kept (RGB in, RGB out) and frames keep their time position.
    clip2 = np.zeros((2, 1, 1, 3), dtype=np.uint8)
    clip2[1, 0, 0, 1] = 200
    assert to_tensor(clip2, (0, 0, 0), (1, 1, 1))[1, 1, 0, 0] == 200


def test_box_unit_conversions():
    norm = np.array([[0.1, 0.2, 0.5, 1.0]], dtype=np.float32)
    pix = boxes_to_pixels(norm, width=200, height=100)
    np.testing.assert_allclose(pix, [[20, 20, 100, 100]])
    np.testing.assert_allclose(boxes_to_normalized(pix, 200, 100), norm, rtol=1e-6)
    assert boxes_to_pixels(np.zeros((0, 4)), 10, 10).shape == (0, 4)
    assert boxes_to_pixels(norm, 200, 100).dtype == np.float32
