"""ResNet3d: the bottleneck 3D ResNet every zoo backbone is built from.

One :class:`ResNet3d` is one *pathway*: a stem and four stages of bottleneck blocks::

    clip (B, 3, T, H, W)
      stem     conv (kt, 7, 7) stride (1, 2, 2) + BN + ReLU, max pool (1, 3, 3) stride (1, 2, 2)
      layer1   (B,  4c, T, H/4,  W/4)      c = base_channels (64 for a slow pathway)
      layer2   (B,  8c, T, H/8,  W/8)
      layer3   (B, 16c, T, H/16, W/16)
      layer4   (B, 32c, T, H/16, W/16)     spatial stride 1: the last stage keeps the resolution,
                                           so RoIAlign works at stride 16

Time is never strided: AVA models see few frames and pool them only in the RoI extractor.
"Inflated" blocks (stages 3 and 4 of a slow pathway, every stage of a fast one) give their first
conv a (3, 1, 1) kernel; the others are 2D convolutions applied frame by frame.

Names follow torchvision's ResNet (``conv1``/``bn1``..., ``downsample.0``/``.1``) so a reader of
torchvision finds their way; :mod:`stdet.checkpoint` maps MMAction2's names onto these.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from .non_local import NonLocal3d

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def _per_block(flags: int | Sequence[int], blocks: int, what: str) -> tuple[bool, ...]:
    """Expand a stage's flag (one int, or one per block) to one bool per block."""
    if isinstance(flags, int):
        return (bool(flags),) * blocks
    if len(flags) != blocks:
        raise ValueError(f"{what}: {len(flags)} flags for a stage of {blocks} blocks")
    return tuple(bool(f) for f in flags)


class Bottleneck3d(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with a residual, optionally followed by a non-local block.

    ``(B, in_channels, T, H, W) -> (B, 4 * planes, T, H / spatial_stride, W / spatial_stride)``.
    The spatial stride sits on the 3x3 conv (torchvision's "ResNet v1.5").
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, spatial_stride: int = 1,
                 inflate: bool = False, non_local: bool = False) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        kt = 3 if inflate else 1
        self.conv1 = nn.Conv3d(in_channels, planes, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, (1, 3, 3), stride=(1, spatial_stride, spatial_stride),
                               padding=(0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if spatial_stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=(1, spatial_stride, spatial_stride),
                          bias=False),
                nn.BatchNorm3d(out_channels))
        self.non_local = NonLocal3d(out_channels) if non_local else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.relu(self.bn3(self.conv3(out)) + identity)
        return out if self.non_local is None else self.non_local(out)


class Stem(nn.Module):
    """``(B, C, T, H, W) -> (B, out_channels, T, H/4, W/4)``: conv (kt, 7, 7) /2, BN, ReLU, max pool /2."""

    stride = 4  # the conv's 2, then the pool's 2

    def __init__(self, in_channels: int, out_channels: int, kernel_t: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, (kernel_t, 7, 7), stride=(1, 2, 2),
                              padding=((kernel_t - 1) // 2, 3, 3), bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class ResNet3d(nn.Module):
    """One pathway: a stem and four bottleneck stages.

    Args:
        depth: 50, 101 or 152 (sets the blocks per stage) unless ``stage_blocks`` is given.
        base_channels: channels of the stem; stage i has ``base_channels * 2**i`` planes.
        conv1_kernel_t: temporal kernel of the stem conv (1 for a slow pathway, 5 for a fast one).
        spatial_strides: stride of each stage's first block.
        inflate: per stage, 1 to give the blocks a (3, 1, 1) first conv (an int, or one per block).
        non_local: per stage, 1 to follow a block with a non-local block (an int, or one per block).
        lateral_channels: extra input channels of the stem output and of stages 1-3, concatenated
            by a two-pathway network before the next stage (0 for a single pathway).
        stage_blocks: blocks per stage, overriding ``depth`` (small models for a CPU).
        zero_init_residual: start every block as the identity (last BN's weight 0).
    """

    def __init__(self, depth: int = 50, base_channels: int = 64, in_channels: int = 3,
                 conv1_kernel_t: int = 1, spatial_strides: Sequence[int] = (1, 2, 2, 1),
                 inflate: Sequence[int | Sequence[int]] = (0, 0, 1, 1),
                 non_local: Sequence[int | Sequence[int]] = (0, 0, 0, 0),
                 lateral_channels: Sequence[int] = (0, 0, 0, 0),
                 stage_blocks: Sequence[int] | None = None,
                 zero_init_residual: bool = True) -> None:
        super().__init__()
        if stage_blocks is None:
            if depth not in STAGE_BLOCKS:
                raise ValueError(f"depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
            stage_blocks = STAGE_BLOCKS[depth]
        self.stage_blocks = tuple(stage_blocks)
        self.stem = Stem(in_channels, base_channels, conv1_kernel_t)
        in_ch = base_channels
        stages = []
        for i, blocks in enumerate(self.stage_blocks):
            planes = base_channels * 2 ** i
            inflates = _per_block(inflate[i], blocks, f"inflate of stage {i + 1}")
            non_locals = _per_block(non_local[i], blocks, f"non_local of stage {i + 1}")
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck3d(in_ch + (lateral_channels[i] if b == 0 else 0), planes,
                                          spatial_strides[i] if b == 0 else 1,
                                          inflates[b], non_locals[b]))
                in_ch = planes * Bottleneck3d.expansion
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = in_ch
        self.out_stride = Stem.stride * math.prod(spatial_strides)  # input pixels per map cell
        self.reset_parameters(zero_init_residual)

    @property
    def stages(self) -> tuple[nn.Sequential, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def reset_parameters(self, zero_init_residual: bool = True) -> None:
        """Kaiming (fan-out) convs, unit BNs; optionally zero the last BN of each block."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck3d):
                    nn.init.zeros_(m.bn3.weight)
        for m in self.modules():  # after the loop above, which would overwrite their init
            if isinstance(m, NonLocal3d):
                m.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W) -> (B, out_channels, T, H/16, W/16)`` (with strides (1, 2, 2, 1))."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (buffers such as BN running statistics are not counted)."""
    return sum(p.numel() for p in module.parameters())
