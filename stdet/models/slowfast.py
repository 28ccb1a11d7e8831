"""The two backbones of the zoo: SlowOnly (one slow pathway) and SlowFast (Feichtenhofer et al., 2019).

SlowFast reads the same clip at two frame rates and feeds the fast pathway into the slow one::

    clip (B, 3, T, H, W)          T = clip_len, e.g. 32 frames at interval 2
      |-- every resample_rate-th frame ---------> slow (B, 3, T/τ, H, W), c = 64 channels
      |-- every (resample_rate/speed_ratio)-th -> fast (B, 3, αT/τ, H, W), c/β = 8 channels
      stem       slow 64 ----------------------------- cat <- lateral conv (k,1,1)/α  <- fast 8
      layer1     slow 256 ---------------------------- cat <- lateral                 <- fast 32
      layer2     slow 512 ---------------------------- cat <- lateral                 <- fast 64
      layer3     slow 1024 --------------------------- cat <- lateral                 <- fast 128
      layer4     slow (B, 2048, T/τ, H/16, W/16)                 fast (B, 256, αT/τ, H/16, W/16)

τ = resample_rate, α = speed_ratio, β = channel_ratio. Each lateral is a (fusion_kernel, 1, 1) conv
with temporal stride α from the fast pathway's c channels to 2c, so its output lines up with the
slow pathway's frames and is concatenated to its channels.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .resnet3d import ResNet3d


def temporal_subsample(clip: Tensor, rate: int) -> Tensor:
    """Every ``rate``-th frame of ``(B, C, T, H, W)``, keeping ``T // rate`` frames (nearest
    resampling by ``1 / rate``, the way MMAction2 resamples the pathways' inputs)."""
    t = clip.shape[2] // rate
    return clip[:, :, : t * rate : rate]


class SlowOnly(ResNet3d):
    """A single slow pathway: ``(B, 3, T, H, W) -> (B, 2048, T, H/16, W/16)``.

    The clip is sampled sparsely by the data pipeline (4x16 or 8x8), so it is used as given.
    """

    def __init__(self, depth: int = 50, base_channels: int = 64,
                 non_local: Sequence[int | Sequence[int]] = (0, 0, 0, 0),
                 stage_blocks: Sequence[int] | None = None,
                 spatial_strides: Sequence[int] = (1, 2, 2, 1)) -> None:
        super().__init__(depth, base_channels, conv1_kernel_t=1, inflate=(0, 0, 1, 1),
                         spatial_strides=spatial_strides, non_local=non_local,
                         stage_blocks=stage_blocks)
        self.feature_channels, self.feature_stride = self.out_channels, self.out_stride


class SlowFast(nn.Module):
    """Slow and fast pathways with lateral connections; returns ``(slow, fast)`` feature maps.

    Args:
        depth, base_channels, stage_blocks, spatial_strides: of the slow pathway; the fast one has
            ``base_channels // channel_ratio`` channels and the same depth.
        resample_rate: τ, the slow pathway reads every τ-th frame of the clip.
        speed_ratio: α, the fast pathway reads α times as many frames.
        channel_ratio: β, the fast pathway has β times fewer channels.
        fusion_kernel: temporal kernel of the lateral convs (5, or 7 in the 8x8 configs).
    """

    def __init__(self, depth: int = 50, base_channels: int = 64, resample_rate: int = 8,
                 speed_ratio: int = 8, channel_ratio: int = 8, fusion_kernel: int = 5,
                 fast_conv1_kernel_t: int = 5, stage_blocks: Sequence[int] | None = None,
                 spatial_strides: Sequence[int] = (1, 2, 2, 1)) -> None:
        super().__init__()
        if resample_rate % speed_ratio:
            raise ValueError(f"resample_rate ({resample_rate}) must be a multiple of "
                             f"speed_ratio ({speed_ratio})")
        self.resample_rate, self.speed_ratio = resample_rate, speed_ratio
        fast_channels = base_channels // channel_ratio
        # fast pathway channels entering each lateral: stem output, then stage 1-3 outputs
        fast_widths = [fast_channels] + [fast_channels * 2 ** i * 4 for i in range(3)]
        self.fast = ResNet3d(depth, fast_channels, conv1_kernel_t=fast_conv1_kernel_t,
                             inflate=(1, 1, 1, 1), spatial_strides=spatial_strides,
                             stage_blocks=stage_blocks)
        self.slow = ResNet3d(depth, base_channels, conv1_kernel_t=1, inflate=(0, 0, 1, 1),
                             spatial_strides=spatial_strides, stage_blocks=stage_blocks,
                             lateral_channels=[2 * c for c in fast_widths])
        self.laterals = nn.ModuleList(
            nn.Conv3d(c, 2 * c, (fusion_kernel, 1, 1), stride=(speed_ratio, 1, 1),
                      padding=((fusion_kernel - 1) // 2, 0, 0), bias=False)
            for c in fast_widths)
        for conv in self.laterals:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.feature_channels = self.slow.out_channels + self.fast.out_channels
        self.feature_stride = self.slow.out_stride

    def forward(self, clip: Tensor) -> tuple[Tensor, Tensor]:
        slow = self.slow.stem(temporal_subsample(clip, self.resample_rate))
        fast = self.fast.stem(temporal_subsample(clip, self.resample_rate // self.speed_ratio))
        for i, (slow_stage, fast_stage) in enumerate(zip(self.slow.stages, self.fast.stages)):
            slow = torch.cat((slow, self.laterals[i](fast)), dim=1)
            slow, fast = slow_stage(slow), fast_stage(fast)
        return slow, fast
