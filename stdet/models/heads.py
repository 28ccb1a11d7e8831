"""RoI heads: the per-RoI classifier (BBoxHeadAVA) and ACRN, the actor-context relation head.

``BBoxHeadAVA``: ``(K, C, T, S, S) -> (K, num_classes)`` logits::

    dropout -> average over T -> max over S x S -> linear

Class 0 is not an action (kept so index i is AVA action i); it is dropped by the loss.

``ACRNHead`` (Sun et al., 2018) relates each actor to everything around it::

    roi_features (K, C, 1, S, S) --max pool--> (K, C, 1, 1, 1) --tile--> (K, C, 1, H, W)
    context of the RoI's clip                                            (K, C, 1, H, W)
      concatenate (K, 2C, 1, H, W) -> conv 1x1x1 + BN + ReLU -> conv (1, 3, 3) + BN + ReLU
      -> (K, C_out, 1, H, W), classified by a BBoxHeadAVA
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class BBoxHeadAVA(nn.Module):
    """Pooling over time and space, dropout and the linear classifier of every RoI.

    ``init``: the classifier's starting weights (bias 0): ``"normal"`` N(0, 0.01) as MMAction2
    0.x's ``BBoxHeadAVA`` (the published runs), ``"xavier"`` xavier-normal as MMAction2 1.x's."""

    def __init__(self, in_channels: int = 2048, num_classes: int = 81, dropout: float = 0.5,
                 temporal_pool: str = "avg", spatial_pool: str = "max",
                 init: str = "normal") -> None:
        super().__init__()
        if temporal_pool not in ("avg", "max") or spatial_pool not in ("avg", "max"):
            raise ValueError("temporal_pool and spatial_pool must be 'avg' or 'max'")
        if init not in ("normal", "xavier"):
            raise ValueError(f"init must be 'normal' or 'xavier', got {init!r}")
        self.temporal_pool, self.spatial_pool = temporal_pool, spatial_pool
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(in_channels, num_classes)
        if init == "normal":
            nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        else:
            nn.init.xavier_normal_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, roi_features: Tensor) -> Tensor:
        x = self.dropout(roi_features)
        x = x.mean(dim=2) if self.temporal_pool == "avg" else x.amax(dim=2)     # (K, C, S, S)
        x = x.mean(dim=(2, 3)) if self.spatial_pool == "avg" else x.amax(dim=(2, 3))  # (K, C)
        return self.classifier(x)


class ACRNHead(nn.Module):
    """Actor-centric relation network; ``in_channels`` is that of the concatenation (2C)."""

    def __init__(self, in_channels: int = 4608, out_channels: int = 2304) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, roi_features: Tensor, context: Tensor, rois: Tensor,
                long_term: Tensor | None = None) -> Tensor:
        """``roi_features (K, C, 1, S, S)``, ``context (B, C, 1, H, W)``, ``rois (K, 5)``
        -> ``(K, out_channels, 1, H, W)``. ``long_term`` (of LFB heads) is ignored."""
        actor = roi_features.amax(dim=(2, 3, 4), keepdim=True)
        # index_select, not context[index]: its backward sums in a fixed order (indexing's
        # scatter-add accumulates in parallel on the CPU, so the gradient varied from run to run)
        around = context.index_select(0, rois[:, 0].long())
        x = torch.cat([actor.expand(-1, -1, *around.shape[2:]), around], dim=1)
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))
