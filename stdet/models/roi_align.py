"""RoIAlign (He et al., Mask R-CNN, 2017) in plain PyTorch, with torchvision's semantics.

Each region of interest is pooled into a fixed ``out_h x out_w`` grid of bins; a bin's value is the
mean of the feature map bilinearly interpolated at a regular grid of sampling points inside it::

    features  (N, C, H, W)
    rois      (K, 5)                   batch_index, x1, y1, x2, y2 in input-image pixels
    output    (K, C, out_h, out_w)

The arithmetic follows torchvision's ``roi_align`` kernel step by step: the box is scaled by
``spatial_scale`` and, with ``aligned=True``, shifted by half a pixel so that a pixel's centre sits
at integer coordinates (``aligned=False`` is the legacy, unshifted version, which also forces
boxes to be at least 1x1); the sampling grid is ``sampling_ratio`` points per side, or
``ceil(roi_size / output_size)`` per RoI when ``sampling_ratio <= 0``; a sampling point more than
one pixel outside the map counts as zero and the others are clamped to the border. The output
therefore equals ``torchvision.ops.roi_align(..., aligned=aligned)`` up to floating-point rounding.

It lives here because torchvision is an optional dependency of this package (its compiled ops have
to match the installed torch build); ``tests/test_roi_align.py`` holds this version to a looped
reference of the same semantics, and to torchvision itself where torchvision imports.

How it is computed: a bin is a weighted sum of at most ``4 * grid_h * grid_w`` feature vectors
(the four bilinear corners of each sampling point). The corner indices into the feature map seen
as a ``(N*H*W, C)`` table, and their weights, are computed for all RoIs at once, and
``F.embedding_bag(mode="sum", per_sample_weights=...)`` gathers and sums them in one kernel,
without materialising the gathered vectors; its backward scatters into the feature gradient.
With an adaptive grid every RoI is padded to the largest grid in the call with zero-weight
samples, or to ``max_grid`` when given (the detector passes the bound of its feature map, so that
the training step never waits for the device to size the grid). Gradients flow to ``features``
only (the box geometry is piecewise constant in the sampling grid and, as in torchvision, is not
differentiated).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RoIAlign", "grid_for_map", "roi_align"]


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    out_h, out_w = (int(s) for s in size)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"output_size must be positive, got {size}")
    return out_h, out_w


def _axis_samples(start: Tensor, bin_size: Tensor, grid: Tensor, grid_max: int, pooled: int,
                  size: int) -> tuple[Tensor, Tensor]:
    """Bilinear corners of the sampling points along one axis (y or x).

    start, bin_size: (K,) in feature-map pixels; grid: (K,) int64 sampling points per bin.
    Returns corner indices (K, pooled, grid_max, 2) int64 (low, high) and their weights, same
    shape. Padding points (index >= grid) and points outside ``[-1, size]`` get zero weight.
    """
    dtype, device = start.dtype, start.device
    p = torch.arange(pooled, dtype=dtype, device=device)[None, :, None]
    i = torch.arange(grid_max, device=device)[None, None, :]
    start, bin_size = start[:, None, None], bin_size[:, None, None]
    grid = grid[:, None, None]
    # Same operation order as torchvision: start + p * bin + (i + 0.5) * bin / grid.
    pos = start + p * bin_size + (i.to(dtype) + 0.5) * bin_size / grid.clamp(min=1).to(dtype)
    # Written as "in range" so that NaN coordinates are invalid too.
    valid = (pos >= -1) & (pos <= size) & (i < grid)
    pos = torch.where(valid, pos, 0).clamp(min=0)
    low = pos.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    high = torch.where(at_edge, low, low + 1)
    pos = torch.where(at_edge, low.to(dtype), pos)
    frac = pos - low.to(dtype)
    weight = torch.stack([1 - frac, frac], dim=-1)
    weight = torch.where(valid[..., None], weight, 0)
    return torch.stack([low, high], dim=-1), weight


def roi_align(features: Tensor, rois: Tensor, output_size: int | tuple[int, int],
              spatial_scale: float, sampling_ratio: int = 0, aligned: bool = True,
              max_grid: tuple[int, int] | None = None) -> Tensor:
    """RoIAlign with average pooling, as ``torchvision.ops.roi_align``.

    Args:
        features: (N, C, H, W) float64, float32, float16 or bfloat16.
        rois: (K, 5) ``batch_index, x1, y1, x2, y2`` in input-image pixels; ``batch_index`` must be
            in ``[0, N)``.
        output_size: ``out_h, out_w`` (or one int for both).
        spatial_scale: feature-map pixels per input-image pixel, e.g. 1/16.
        sampling_ratio: sampling points per bin side; ``<= 0`` means
            ``ceil(roi_size / output_size)`` for each RoI.
        aligned: shift boxes by -0.5 feature pixel (Detectron2 / torchvision ``aligned=True``).
        max_grid: with ``sampling_ratio <= 0``, at most ``(grid_h, grid_w)`` sampling points per
            bin side. The padded sampling grid then has this fixed size and nothing is read back
            from the device; without it the grid is sized by the largest RoI (one device sync).
            ``grid_for_map`` gives the bound that changes nothing for RoIs inside the map.

    Returns:
        (K, C, out_h, out_w), the dtype of ``features``. Half-precision inputs are accumulated in
        float32. A RoI with no sampling point (e.g. zero size with ``aligned=True``) gives zeros.
    """
    if features.dim() != 4:
        raise ValueError(f"features must be (N, C, H, W), got shape {tuple(features.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must be (K, 5), got shape {tuple(rois.shape)}")
    out_h, out_w = _pair(output_size)
    n, c, h, w = features.shape
    k = rois.shape[0]
    # Geometry in the input's precision (as the torchvision kernel does), but never below float32.
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32

    with torch.no_grad():
        rois = rois.detach().to(device=features.device, dtype=dtype)
        batch = rois[:, 0].long()
        offset = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (rois[:, j] * spatial_scale - offset for j in range(1, 5))
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:  # legacy behaviour: malformed RoIs are forced to 1x1
            roi_w, roi_h = roi_w.clamp(min=1), roi_h.clamp(min=1)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        if sampling_ratio > 0:
            grid_h = torch.full((k,), sampling_ratio, dtype=torch.long, device=rois.device)
            grid_w = grid_h
            grid_h_max = grid_w_max = sampling_ratio
        else:
            # Negative (flipped) or non-finite RoIs have an empty grid, as in the kernel's loops.
            grid_h = torch.ceil(roi_h / out_h).nan_to_num(0, 0, 0).clamp(min=0).long()
            grid_w = torch.ceil(roi_w / out_w).nan_to_num(0, 0, 0).clamp(min=0).long()
            # The padded grid, at least 1 so that no bag is empty.
            grid_h_max, grid_w_max = 1, 1
            if max_grid is not None:
                grid_h_max, grid_w_max = max(int(max_grid[0]), 1), max(int(max_grid[1]), 1)
                grid_h, grid_w = grid_h.clamp(max=grid_h_max), grid_w.clamp(max=grid_w_max)
            elif k:  # sized by the largest RoI: one device sync
                grid_h_max, grid_w_max = torch.stack([grid_h.max(), grid_w.max()]).tolist()
                grid_h_max, grid_w_max = max(grid_h_max, 1), max(grid_w_max, 1)
        count = (grid_h * grid_w).clamp(min=1).to(dtype)

        y_idx, y_wt = _axis_samples(y1, bin_h, grid_h, grid_h_max, out_h, h)  # (K, oh, gh, 2)
        x_idx, x_wt = _axis_samples(x1, bin_w, grid_w, grid_w_max, out_w, w)  # (K, ow, gw, 2)
        # Every (bin, sample, corner) combination: (K, oh, ow, gh, gw, 2, 2).
        index = (batch[:, None, None, None, None, None, None] * (h * w)
                 + y_idx[:, :, None, :, None, :, None] * w
                 + x_idx[:, None, :, None, :, None, :])
        weight = y_wt[:, :, None, :, None, :, None] * x_wt[:, None, :, None, :, None, :]
        bag = grid_h_max * grid_w_max * 4
        index = index.reshape(k * out_h * out_w, bag)
        weight = weight.reshape(k * out_h * out_w, bag)

    # (N*H*W, C) table; one copy at most (none for channels-last input of the compute dtype).
    table = features.to(dtype=dtype, memory_format=torch.channels_last).permute(0, 2, 3, 1)
    table = table.reshape(n * h * w, c)
    out = F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")  # (K*oh*ow, C)
    out = out.view(k, out_h, out_w, c) / count[:, None, None, None]
    return out.permute(0, 3, 1, 2).contiguous().to(features.dtype)


def grid_for_map(features: Tensor, output_size: int | tuple[int, int]) -> tuple[int, int]:
    """The ``max_grid`` of :func:`roi_align` that no RoI inside ``features``' map (N, C, H, W)
    reaches: such a RoI spans at most H x W feature pixels, so ``ceil(H / out_h)`` points per bin
    side. Only a RoI reaching outside the map would be sampled more sparsely than torchvision."""
    out_h, out_w = _pair(output_size)
    h, w = features.shape[-2:]
    return math.ceil(h / out_h), math.ceil(w / out_w)


class RoIAlign(nn.Module):
    """:func:`roi_align` as a module: ``(N, C, H, W), (K, 5) -> (K, C, out_h, out_w)``."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float,
                 sampling_ratio: int = 0, aligned: bool = True) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return roi_align(features, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")
