"""Non-local block (Wang et al., 2018), embedded-Gaussian form, as used in the AVA NL backbones.

Every position attends to every (spatially sub-sampled) position of the clip::

    x (B, C, T, H, W)
      theta = conv1x1(x)              (B, C/2, T, H,   W)     queries
      phi   = maxpool(conv1x1(x))     (B, C/2, T, H/2, W/2)   keys   (max pool (1, 2, 2))
      g     = maxpool(conv1x1(x))     (B, C/2, T, H/2, W/2)   values
      attention = softmax(theta^T phi / sqrt(C/2))            (B, THW, THW/4)
      y = attention @ g               (B, C/2, T, H, W)
      out = x + BN(conv1x1(y))        (B, C, T, H, W)

The output BN's weight starts at 0, so a freshly added block is the identity.
"""
from __future__ import annotations

import math

from torch import Tensor, nn


class NonLocal3d(nn.Module):
    def __init__(self, in_channels: int, reduction: int = 2, sub_sample: bool = True) -> None:
        super().__init__()
        self.inter_channels = max(in_channels // reduction, 1)
        self.theta = nn.Conv3d(in_channels, self.inter_channels, 1)
        self.phi = nn.Conv3d(in_channels, self.inter_channels, 1)
        self.g = nn.Conv3d(in_channels, self.inter_channels, 1)
        self.out_conv = nn.Conv3d(self.inter_channels, in_channels, 1, bias=False)
        self.out_bn = nn.BatchNorm3d(in_channels)
        self.pool = nn.MaxPool3d((1, 2, 2)) if sub_sample else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.theta, self.phi, self.g):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.out_conv.weight, std=0.01)
        nn.init.zeros_(self.out_bn.weight)
        nn.init.zeros_(self.out_bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, t, h, w = x.shape
        queries = self.theta(x).flatten(2).transpose(1, 2)        # (B, THW, C')
        keys = self.pool(self.phi(x)).flatten(2)                   # (B, C', THW')
        values = self.pool(self.g(x)).flatten(2).transpose(1, 2)   # (B, THW', C')
        attention = (queries @ keys / math.sqrt(self.inter_channels)).softmax(dim=-1)
        y = (attention @ values).transpose(1, 2).reshape(b, self.inter_channels, t, h, w)
        return x + self.out_bn(self.out_conv(y))
