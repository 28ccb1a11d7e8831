"""Clip + box transforms for AVA.

Conventions:

* A clip is a uint8 array ``(T, H, W, 3)`` (RGB); every frame gets the same geometric transform.
* Boxes are float32 arrays ``(N, 4)`` of ``x1, y1, x2, y2`` in **pixel** coordinates of the
  current clip, continuous: the image spans ``[0, W] x [0, H]`` (a box covering pixel columns
  ``0..w-1`` is ``x1=0, x2=w``). Normalised AVA boxes convert with :func:`boxes_to_pixels`.
* A transform is a callable ``t(clip, boxes, rng) -> (clip, boxes)`` where ``boxes`` is a list of
  any number of box arrays (e.g. ``[proposals, gt_boxes]``, each possibly ``(0, 4)``), so all of
  them move with the pixels. ``rng`` is a :class:`numpy.random.Generator`; deterministic
  transforms ignore it, random ones draw from it (a fresh unseeded generator if ``None``).

Two resizing styles (``preprocess``, the config's ``data.preprocess``):

``"stdet"``
    Short side ``round(S * long / short)``; torch's bilinear resize, antialiased when it shrinks
    (a low-pass, so fine detail does not alias).
``"mmaction2"``
    What MMAction2's ``Resize(scale=(-1, S))`` computes, bit for bit: the size of mmcv's
    ``rescale_size`` (``int(side * S / short + 0.5)``) and OpenCV's ``INTER_LINEAR`` of uint8
    images (``mmcv.imresize``: plain bilinear of the 4 neighbours, no antialiasing), including
    OpenCV's 11-bit fixed-point weights and rounding, reproduced here in torch
    (:func:`resize_clip_opencv`; identical to ``cv2.resize`` 4.5 to 5.1 on every size tried).
    For a model trained by MMAction2, whose inputs were made that way.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "PREPROCESS", "resize_clip_opencv", "short_side_size",
    "Transform", "Compose", "Resize", "RandomRescale", "RandomCrop", "CenterCrop", "Flip",
    "to_tensor", "train_transforms", "test_transforms", "boxes_to_pixels", "boxes_to_normalized",
    "KINETICS_MEAN", "KINETICS_STD",
]

# Per-channel RGB mean/std in 0-255 units (ImageNet values, as used by Kinetics/MMAction2 models).
KINETICS_MEAN = (123.675, 116.28, 103.53)
KINETICS_STD = (58.395, 57.12, 57.375)

# the resizing styles (see the module docstring)
PREPROCESS = ("stdet", "mmaction2")

Boxes = list  # list[np.ndarray], each float32 (N, 4)
Transform = Callable[[np.ndarray, list, "np.random.Generator | None"], tuple[np.ndarray, list]]


def _as_boxes(boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes]


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def boxes_to_pixels(norm_boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised ``(N, 4)`` boxes in ``[0, 1]`` -> float32 pixel boxes of a ``width x height`` image.

    The product is taken in float64 and rounded to float32 once, as MMAction2's ``RawFrameDecode``
    does (for float32 input that is also float32's own correctly rounded product)."""
    scale = np.array([width, height, width, height], dtype=np.float64)
    return (np.asarray(norm_boxes, dtype=np.float64).reshape(-1, 4) * scale).astype(np.float32)


def boxes_to_normalized(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel ``(N, 4)`` boxes of a ``width x height`` image -> normalised ``[0, 1]`` boxes (float32)."""
    scale = np.array([width, height, width, height], dtype=np.float32)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale


def _check_preprocess(preprocess: str) -> str:
    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
    return preprocess


def _short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(new_h, new_w)`` with the short side ``short_side`` and the aspect ratio kept."""
    if height <= width:
        return short_side, max(1, int(round(width * short_side / height)))
    return max(1, int(round(height * short_side / width))), short_side


def _mmcv_short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(new_h, new_w)`` as MMAction2's ``Resize(scale=(-1, short_side))`` gets it from mmcv's
    ``rescale_size((w, h), (inf, short_side))``: the factor ``min(inf / long, short_side /
    short)``, i.e. ``short_side / short``, then ``_scale_size``'s ``int(side * factor + 0.5)``
    for each side (in float64, in that order; halves round up, where ``round`` goes to even)."""
    factor = short_side / min(height, width)
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def short_side_size(height: int, width: int, short_side: int,
                    preprocess: str = "stdet") -> tuple[int, int]:
    """``(new_h, new_w)`` of a ``height x width`` image resized to the short side ``short_side``
    with the aspect ratio kept, rounded as ``preprocess`` does (see the module docstring)."""
    if _check_preprocess(preprocess) == "mmaction2":
        return _mmcv_short_side_size(height, width, short_side)
    return _short_side_size(height, width, short_side)


def _resize_clip(clip: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 ``(T, H, W, 3)`` clip to ``size = (new_h, new_w)``."""
    t, h, w, c = clip.shape
    if (h, w) == tuple(size):
        return clip
    # (T, C, H, W) in channels-last memory: torch's uint8 bilinear kernel resizes it directly,
    # about 15 times faster than a float round trip and within one grey level of it
    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)
    # Antialiasing only matters (and is only defined as a low-pass) when shrinking.
    downscale = size[0] < h or size[1] < w
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=downscale)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


# OpenCV's fixed-point bilinear of 8-bit images (imgproc/src/resize.cpp): weights scaled by 2**11
_CV_COEF_BITS = 11
_CV_COEF_SCALE = np.float32(1 << _CV_COEF_BITS)


def _opencv_linear_taps(in_size: int, out_size: int, clamp: bool):
    """Source indices and fixed-point weights of OpenCV's ``INTER_LINEAR`` along one axis:
    ``(i0, i1, w0, w1)``, output ``d = (src[i0] * w0 + src[i1] * w1)`` scaled by 2**11.

    As ``cv::resize`` computes them: the source position ``(d + 0.5) * (in / out) - 0.5`` in
    float64, rounded to float32; its floor and fraction ``f``; weights ``1 - f`` and ``f`` in
    float32, times 2048, rounded half to even. Along x (``clamp``) a position before the first or
    after the last pixel takes that pixel with weight 1; along y the fraction is kept and both
    taps are clamped into the image."""
    scale = 1.0 / (out_size / in_size)
    pos = ((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(pos)
    frac = (pos - first).astype(np.float32)
    first = first.astype(np.int64)
    if clamp:
        frac[(first < 0) | (first >= in_size - 1)] = 0
    w0 = np.rint((np.float32(1) - frac) * _CV_COEF_SCALE).astype(np.int32)
    w1 = np.rint(frac * _CV_COEF_SCALE).astype(np.int32)
    return (torch.from_numpy(np.clip(first, 0, in_size - 1)),
            torch.from_numpy(np.clip(first + 1, 0, in_size - 1)),
            torch.from_numpy(w0), torch.from_numpy(w1))


def resize_clip_opencv(clip: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``(T, H, W, C)`` clip resized to ``size = (new_h, new_w)`` exactly as
    ``cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)`` resizes each frame
    (what ``mmcv.imresize`` and so MMAction2's ``Resize`` call): plain bilinear of the 4 nearest
    pixels with half-pixel centres, no antialiasing when shrinking.

    OpenCV's integer arithmetic is reproduced: a horizontal pass with 11-bit weights into
    int32, then a vertical pass as its SIMD kernel computes it (``(((a >> 4) * wa) >> 16) +
    (((b >> 4) * wb) >> 16) + 2) >> 2``), so the result equals OpenCV's, not only a float
    bilinear rounded (which differs from it by one grey level on about 10% of the pixels)."""
    t, h, w, c = clip.shape
    new_h, new_w = (int(v) for v in size)
    if (h, w) == (new_h, new_w):
        return clip
    x0, x1, a0, a1 = _opencv_linear_taps(w, new_w, clamp=True)
    y0, y1, b0, b1 = _opencv_linear_taps(h, new_h, clamp=False)
    # the rows the vertical pass reads (each output row: two of them), still uint8
    rows = torch.from_numpy(np.ascontiguousarray(clip)).index_select(1, torch.cat([y0, y1]))
    rows = rows.reshape(t * 2 * new_h, w * c)
    channels = torch.arange(c)
    left = rows.index_select(1, (x0[:, None] * c + channels).reshape(-1)).to(torch.int32)
    right = rows.index_select(1, (x1[:, None] * c + channels).reshape(-1)).to(torch.int32)
    # horizontal pass: exact integers, pixel * 2**11 at most 522240
    horizontal = left.mul_(a0.repeat_interleave(c)).add_(right.mul_(a1.repeat_interleave(c)))
    horizontal = horizontal.bitwise_right_shift_(4).view(t, 2 * new_h, new_w * c)
    top, bottom = horizontal[:, :new_h], horizontal[:, new_h:]
    out = top.mul_(b0[:, None]).bitwise_right_shift_(16)
    out = out.add_(bottom.mul_(b1[:, None]).bitwise_right_shift_(16))
    out = out.add_(2).bitwise_right_shift_(2).clamp_(0, 255).to(torch.uint8)
    return out.view(t, new_h, new_w, c).numpy()


def _resize(clip: np.ndarray, boxes: Sequence[np.ndarray], short_side: int,
            preprocess: str = "stdet"):
    h, w = clip.shape[1:3]
    new_h, new_w = short_side_size(h, w, short_side, preprocess)
    # the box scale as MMAction2's Resize has it too: float32 new/old per axis
    scale = np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
    resize = resize_clip_opencv if preprocess == "mmaction2" else _resize_clip
    return resize(clip, (new_h, new_w)), [b * scale for b in _as_boxes(boxes)]


def _crop(clip: np.ndarray, boxes: Sequence[np.ndarray], top: int, left: int, height: int,
          width: int):
    clip = clip[:, top:top + height, left:left + width]
    offset = np.array([left, top, left, top], dtype=np.float32)
    limit = np.array([width, height, width, height], dtype=np.float32)
    out = [np.clip(b - offset, 0, limit) for b in _as_boxes(boxes)]
    return np.ascontiguousarray(clip), out


class Compose:
    """Apply transforms in order, threading the same ``rng`` through them."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, clip: np.ndarray, boxes: Sequence[np.ndarray],
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        boxes = _as_boxes(boxes)
        if rng is None and self.transforms:
            rng = np.random.default_rng()
        for t in self.transforms:
            clip, boxes = t(clip, boxes, rng)
        return clip, boxes

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


def _style(preprocess: str) -> str:
    return "" if preprocess == "stdet" else f", preprocess={preprocess!r}"


class Resize:
    """Resize the clip so its short side is ``short_side`` (aspect ratio kept); boxes scale along.
    ``preprocess``: ``"stdet"`` or ``"mmaction2"`` (MMAction2's ``Resize(scale=(-1, short_side))``
    exactly; see the module docstring)."""

    def __init__(self, short_side: int = 256, preprocess: str = "stdet") -> None:
        self.short_side = short_side
        self.preprocess = _check_preprocess(preprocess)

    def __call__(self, clip, boxes, rng=None):
        return _resize(clip, boxes, self.short_side, self.preprocess)

    def __repr__(self) -> str:
        return f"Resize(short_side={self.short_side}{_style(self.preprocess)})"


class RandomRescale:
    """Resize to a short side drawn uniformly from ``short_side_range`` (inclusive integers);
    ``preprocess`` as in :class:`Resize`."""

    def __init__(self, short_side_range: tuple[int, int] = (256, 320),
                 preprocess: str = "stdet") -> None:
        lo, hi = short_side_range
        if not 1 <= lo <= hi:
            raise ValueError(f"bad short_side_range {short_side_range}")
        self.short_side_range = (int(lo), int(hi))
        self.preprocess = _check_preprocess(preprocess)

    def __call__(self, clip, boxes, rng=None):
        lo, hi = self.short_side_range
        short_side = int(_rng(rng).integers(lo, hi + 1))
        return _resize(clip, boxes, short_side, self.preprocess)

    def __repr__(self) -> str:
        return (f"RandomRescale(short_side_range={self.short_side_range}"
                f"{_style(self.preprocess)})")


class RandomCrop:
    """Random ``size x size`` crop (a side shorter than ``size`` is kept whole).

    Boxes are shifted by the crop offset and clipped to the crop. The number of boxes never
    changes, so boxes stay aligned with their labels; a box entirely outside the crop becomes
    degenerate (zero width or height) and is left for the caller to ignore or drop.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size

    def __call__(self, clip, boxes, rng=None):
        h, w = clip.shape[1:3]
        ch, cw = min(self.size, h), min(self.size, w)
        rng = _rng(rng)
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
        return _crop(clip, boxes, top, left, ch, cw)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"


class CenterCrop:
    """Central ``size x size`` crop; boxes as in :class:`RandomCrop`."""

    def __init__(self, size: int = 256) -> None:
        self.size = size

    def __call__(self, clip, boxes, rng=None):
        h, w = clip.shape[1:3]
        ch, cw = min(self.size, h), min(self.size, w)
        return _crop(clip, boxes, (h - ch) // 2, (w - cw) // 2, ch, cw)

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


class Flip:
    """Horizontal flip of every frame with probability ``p``; boxes become ``W - x2, y1, W - x1, y2``.

    A number is drawn from ``rng`` on every call, whatever ``p``, so the random stream (and thus
    the later transforms) does not depend on ``p``.
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, clip, boxes, rng=None):
        boxes = _as_boxes(boxes)
        if not _rng(rng).random() < self.p:
            return clip, boxes
        w = clip.shape[2]
        clip = np.ascontiguousarray(clip[:, :, ::-1])
        flipped = []
        for b in boxes:
            f = b.copy()
            f[:, 0], f[:, 2] = w - b[:, 2], w - b[:, 0]
            flipped.append(f)
        return clip, flipped

    def __repr__(self) -> str:
        return f"Flip(p={self.p})"


def to_tensor(clip: np.ndarray, mean: Sequence[float] = KINETICS_MEAN,
              std: Sequence[float] = KINETICS_STD) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` RGB clip -> normalised float32 tensor ``(3, T, H, W)``.

    ``mean``/``std`` are per RGB channel in 0-255 units: ``out = (clip - mean) / std``.
    """
    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2).float()
    mean_t = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1, 1)
    return ((x - mean_t) / std_t).contiguous()


def train_transforms(short_side_range: tuple[int, int] = (256, 320), crop_size: int = 256,
                     flip_p: float = 0.5, preprocess: str = "stdet") -> Compose:
    """Training pipeline: random rescale (resized as ``preprocess`` says), random square crop,
    horizontal flip."""
    return Compose([RandomRescale(short_side_range, preprocess), RandomCrop(crop_size),
                    Flip(flip_p)])


def test_transforms(short_side: int = 256, preprocess: str = "stdet") -> Compose:
    """Test pipeline: resize the short side (as ``preprocess`` says), no crop (the whole frame is
    seen)."""
    return Compose([Resize(short_side, preprocess)])


# Keep pytest from collecting the builder above as a test when it is imported into a test module.
test_transforms.__test__ = False  # type: ignore[attr-defined]
