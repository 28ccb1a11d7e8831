"""The action detector: backbone -> RoI features -> (shared head) -> per-RoI class logits.

Person boxes come from outside (a person detector's proposals, or the ground truth), as in every
AVA model of the zoo; the detector only classifies what each person does::

    clips (B, 3, T, H, W) --backbone--> pathway maps --RoIExtractor3D--> (K, C, 1, S, S)
      [--shared head (ACRN, LFB)--> (K, C', 1, h, w)] --BBoxHeadAVA--> logits (K, num_classes)
                     ^ LFB: long_term (B, N, C_lt), the clip's features from the feature bank

Boxes are in input pixels; per clip they are a ``(n_i, 4)`` tensor, turned into ``(K, 5)`` RoIs
``(clip_index, x1, y1, x2, y2)`` here. ``long_term`` (``batch["long_term"]``) is needed by LFB
detectors only; the others ignore it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .assign import sample_rois
from .losses import action_loss, recall_precision


def boxes_to_rois(boxes: Sequence[Tensor]) -> Tensor:
    """Per-clip ``(n_i, 4)`` boxes -> ``(sum n_i, 5)`` RoIs with the clip index first."""
    rois = [torch.cat([b.new_full((b.shape[0], 1), float(i)), b[:, :4]], dim=1)
            for i, b in enumerate(boxes)]
    return torch.cat(rois) if rois else torch.zeros(0, 5)


class ActionDetector(nn.Module):
    """Args:
        backbone: ``SlowOnly`` / ``SlowFast`` (a map or a tuple of pathway maps).
        roi_extractor: ``RoIExtractor3D``.
        head: ``BBoxHeadAVA``.
        shared_head: optional module ``(roi_features, context, rois, long_term) -> roi_features``.
        num_rois, pos_iou: RoI sampling for training (see :mod:`stdet.models.assign`).
        focal_alpha, focal_gamma: of the loss (1, 0: binary cross-entropy).
        topk: k of the logged top-k recall/precision.
    """

    def __init__(self, backbone: nn.Module, roi_extractor: nn.Module, head: nn.Module,
                 shared_head: nn.Module | None = None, num_rois: int = 32, pos_iou: float = 0.9,
                 focal_alpha: float = 1.0, focal_gamma: float = 0.0,
                 topk: tuple[int, ...] = (3, 5)) -> None:
        super().__init__()
        self.backbone, self.roi_extractor = backbone, roi_extractor
        self.shared_head, self.head = shared_head, head
        self.num_rois, self.pos_iou = num_rois, pos_iou
        self.focal_alpha, self.focal_gamma, self.topk = focal_alpha, focal_gamma, tuple(topk)

    def forward(self, clips: Tensor, rois: Tensor, long_term: Tensor | None = None) -> Tensor:
        """``clips (B, 3, T, H, W)``, ``rois (K, 5)``, ``long_term (B, N, C_lt)`` (LFB only)
        -> logits ``(K, num_classes)``."""
        roi_features, context = self.roi_extractor(self.backbone(clips), rois)
        if self.shared_head is not None:
            roi_features = self.shared_head(roi_features, context, rois, long_term)
        return self.head(roi_features)

    def training_rois(self, proposals: Sequence[Tensor], gt_boxes: Sequence[Tensor],
                      gt_labels: Sequence[Tensor], generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor]:
        """Sampled RoIs ``(K, 5)`` of a batch and their targets ``(K, num_classes)``."""
        sampled = [sample_rois(p, g, lab, self.num_rois, self.pos_iou, generator)
                   for p, g, lab in zip(proposals, gt_boxes, gt_labels)]
        rois = boxes_to_rois([boxes for boxes, _ in sampled])
        return rois, torch.cat([labels for _, labels in sampled])

    def loss_of(self, logits: Tensor, targets: Tensor,
                positive: Tensor | None = None) -> dict[str, Tensor]:
        """``{"loss": ..., "recall@top3": ...}`` of the logits of sampled RoIs; ``positive``:
        :func:`~stdet.models.losses.positive_rows` of the targets, if the caller has them."""
        out = {"loss": action_loss(logits, targets, self.focal_alpha, self.focal_gamma, positive)}
        out.update(recall_precision(logits.detach(), targets, self.topk, positive=positive))
        return out

    def loss(self, clips: Tensor, proposals: Sequence[Tensor], gt_boxes: Sequence[Tensor],
             gt_labels: Sequence[Tensor], generator: torch.Generator | None = None,
             long_term: Tensor | None = None) -> dict[str, Tensor]:
        """Sample RoIs per clip, classify them, and return ``{"loss": ..., "recall@top3": ...}``.
        (A DistributedDataParallel wrapper calls the three steps itself, so that the forward
        pass goes through the wrapper.)"""
        rois, targets = self.training_rois(proposals, gt_boxes, gt_labels, generator)
        logits = self(clips, rois.to(clips.device, clips.dtype), long_term)
        return self.loss_of(logits, targets.to(clips.device))

    @torch.no_grad()
    def predict(self, clips: Tensor, proposals: Sequence[Tensor],
                long_term: Tensor | None = None) -> list[Tensor]:
        """Per clip, ``(n_i, num_classes)`` sigmoid scores of its ``(n_i, 4)`` proposals."""
        rois = boxes_to_rois(proposals).to(clips.device, clips.dtype)
        if rois.shape[0] == 0:
            return [clips.new_zeros((0, self.head.num_classes)) for _ in proposals]
        scores = self(clips, rois, long_term).sigmoid()
        return list(scores.split([p.shape[0] for p in proposals]))
