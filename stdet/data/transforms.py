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
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Transform", "Compose", "Resize", "RandomRescale", "RandomCrop", "CenterCrop", "Flip",
    "to_tensor", "train_transforms", "test_transforms", "boxes_to_pixels", "boxes_to_normalized",
    "KINETICS_MEAN", "KINETICS_STD",
]

# Per-channel RGB mean/std in 0-255 units (ImageNet values, as used by Kinetics/MMAction2 models).
KINETICS_MEAN = (123.675, 116.28, 103.53)
KINETICS_STD = (58.395, 57.12, 57.375)

Boxes = list  # list[np.ndarray], each float32 (N, 4)
Transform = Callable[[np.ndarray, list, "np.random.Generator | None"], tuple[np.ndarray, list]]


def _as_boxes(boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes]


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def boxes_to_pixels(norm_boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised ``(N, 4)`` boxes in ``[0, 1]`` -> float32 pixel boxes of a ``width x height`` image."""
    scale = np.array([width, height, width, height], dtype=np.float32)
    return np.asarray(norm_boxes, dtype=np.float32).reshape(-1, 4) * scale


def boxes_to_normalized(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel ``(N, 4)`` boxes of a ``width x height`` image -> normalised ``[0, 1]`` boxes (float32)."""
    scale = np.array([width, height, width, height], dtype=np.float32)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale


def _short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(new_h, new_w)`` with the short side ``short_side`` and the aspect ratio kept."""
    if height <= width:
        return short_side, max(1, int(round(width * short_side / height)))
    return max(1, int(round(height * short_side / width))), short_side


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


def _resize(clip: np.ndarray, boxes: Sequence[np.ndarray], short_side: int):
    h, w = clip.shape[1:3]
    new_h, new_w = _short_side_size(h, w, short_side)
    scale = np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
    return _resize_clip(clip, (new_h, new_w)), [b * scale for b in _as_boxes(boxes)]


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


class Resize:
    """Resize the clip so its short side is ``short_side`` (aspect ratio kept); boxes scale along."""

    def __init__(self, short_side: int = 256) -> None:
        self.short_side = short_side

    def __call__(self, clip, boxes, rng=None):
        return _resize(clip, boxes, self.short_side)

    def __repr__(self) -> str:
        return f"Resize(short_side={self.short_side})"


class RandomRescale:
    """Resize to a short side drawn uniformly from ``short_side_range`` (inclusive integers)."""

    def __init__(self, short_side_range: tuple[int, int] = (256, 320)) -> None:
        lo, hi = short_side_range
        if not 1 <= lo <= hi:
            raise ValueError(f"bad short_side_range {short_side_range}")
        self.short_side_range = (int(lo), int(hi))

    def __call__(self, clip, boxes, rng=None):
        lo, hi = self.short_side_range
        short_side = int(_rng(rng).integers(lo, hi + 1))
        return _resize(clip, boxes, short_side)

    def __repr__(self) -> str:
        return f"RandomRescale(short_side_range={self.short_side_range})"


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
                     flip_p: float = 0.5) -> Compose:
    """Training pipeline: random rescale, random square crop, horizontal flip."""
    return Compose([RandomRescale(short_side_range), RandomCrop(crop_size), Flip(flip_p)])


def test_transforms(short_side: int = 256) -> Compose:
    """Test pipeline: resize the short side, no crop (the whole frame is seen)."""
    return Compose([Resize(short_side)])


# Keep pytest from collecting the builder above as a test when it is imported into a test module.
test_transforms.__test__ = False  # type: ignore[attr-defined]
