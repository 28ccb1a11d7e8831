"""From backbone feature maps to one feature map per RoI.

::

    pathways [(B, C_p, T_p, H, W)]  --temporal avg/max pool-->  [(B, C_p, 1, H, W)]
      --concatenate channels-->  context (B, C, 1, H, W)        C = sum C_p (2048 + 256 for SlowFast)
      --RoIAlign (S x S, stride 16, aligned)-->  roi_features (K, C, 1, S, S)
      with_global: + the context average-pooled to S x S, of the RoI's clip  (K, 2C, 1, S, S)

Pooling each pathway over its own frames equals MMAction2's nearest-resampling of the pathways
to a common length followed by pooling, whenever the longer length is a multiple of the shorter.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .roi_align import grid_for_map, roi_align


class RoIExtractor3D(nn.Module):
    """Args:
        output_size: RoIAlign output S (8 in the zoo).
        spatial_scale: feature stride as a scale (1/16).
        temporal_pool: ``"avg"`` or ``"max"`` over each pathway's frames.
        with_global: concatenate a global context feature to every RoI feature.
        sampling_ratio: RoIAlign samples per bin (0: adaptive).
    """

    def __init__(self, output_size: int = 8, spatial_scale: float = 1 / 16,
                 temporal_pool: str = "avg", with_global: bool = False,
                 sampling_ratio: int = 0) -> None:
        super().__init__()
        if temporal_pool not in ("avg", "max"):
            raise ValueError(f"temporal_pool must be 'avg' or 'max', got {temporal_pool!r}")
        self.output_size, self.spatial_scale = output_size, spatial_scale
        self.temporal_pool, self.with_global = temporal_pool, with_global
        self.sampling_ratio = sampling_ratio

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"temporal_pool={self.temporal_pool!r}, with_global={self.with_global}")

    def forward(self, features: Tensor | tuple[Tensor, ...], rois: Tensor) -> tuple[Tensor, Tensor]:
        """``features``: one map or a tuple of pathway maps ``(B, C_p, T_p, H, W)``; ``rois``:
        ``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)`` in input pixels.

        Returns ``roi_features (K, C', 1, S, S)`` and ``context (B, C, 1, H, W)``.
        """
        if isinstance(features, Tensor):
            features = (features,)
        if self.temporal_pool == "avg":
            pooled = [f.mean(dim=2, keepdim=True) for f in features]
        else:
            pooled = [f.amax(dim=2, keepdim=True) for f in features]
        context = torch.cat(pooled, dim=1)
        frame = context[:, :, 0]
        # RoIs lie inside the clip, so the map's bound sizes the sampling grid without a sync
        roi_features = roi_align(frame, rois, self.output_size, self.spatial_scale,
                                 self.sampling_ratio, aligned=True,
                                 max_grid=grid_for_map(frame, self.output_size))
        if self.with_global:
            global_features = F.adaptive_avg_pool2d(frame, self.output_size)
            # index_select: a deterministic backward (see ACRNHead.forward)
            roi_features = torch.cat([roi_features, global_features.index_select(0, rois[:, 0].long())],
                                     dim=1)
        return roi_features.unsqueeze(2), context
