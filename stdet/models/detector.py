"""The action detector: backbone -> RoI features -> (shared head) -> per-RoI class logits.

Person boxes come from outside (a person detector's proposals, or the ground truth), as in every
AVA model of the zoo; the detector only classifies what each person does::

    clips (B, 3, T, H, W) --backbone--> pathway maps --RoIExtractor3D--> (K, C, 1, S, S)
      [--shared head (ACRN, LFB)--> (K, C', 1, h, w)] --BBoxHeadAVA--> logits (K, num_classes)
                     ^ LFB: long_term (B, N, C_lt), the clip's features from the feature bank

Boxes are in input pixels; per clip they are a ``(n_i, 4)`` tensor, turned into ``(K, 5)`` RoIs
``(clip_index, x1, y1, x2, y2)`` here. ``long_term`` (``batch["long_term"]``) is needed by LFB
detectors only; the others ignore it.

The RoI path is written once, here, as methods that everything else calls (training and testing
through ``forward``, the feature bank's extraction through :meth:`ActionDetector.bank_features`,
the FLOP count through :meth:`ActionDetector.roi_logits` on the backbone's output shapes)::

    forward(clips, rois, long_term)        = roi_logits(backbone(clips), rois, long_term)
    roi_logits(features, rois, long_term)  = classify_rois(roi_features(features, rois, long_term))
    bank_features(clips, rois)             = roi_extractor(backbone(clips), rois)[0].amax((2, 3, 4))

Training is the engine's step (:func:`stdet.engine.step.train_step`), not a method here: RoIs are
sampled on the host (:meth:`ActionDetector.training_rois`), the forward pass goes through the
(DistributedDataParallel) module, and :meth:`ActionDetector.loss_of` scores its logits.
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
        return self.roi_logits(self.backbone(clips), rois, long_term)

    def roi_features(self, features: Tensor | tuple[Tensor, ...], rois: Tensor,
                     long_term: Tensor | None = None) -> Tensor:
        """What the classifier reads: the RoI extractor's features, through the shared head if
        there is one.

        ``features``: the backbone's output, one map ``(B, C, T', H', W')`` (SlowOnly) or a tuple
        of pathway maps ``(B, C_p, T_p, H', W')`` (SlowFast: slow, fast); ``rois (K, 5)``;
        ``long_term (B, N, C_lt)`` (LFB only). Returns, with ``C`` the extractor's channels
        (``sum C_p``, twice that ``with_global``) and ``S`` its output size:

        - no shared head: ``(K, C, 1, S, S)``;
        - ACRN: ``(K, C, 1, H', W')``, each actor related to its clip's whole map;
        - LFB: ``(K, C + C_fbo, 1, 1, 1)``, the RoI's pooled feature and the FBO's output.
        """
        roi_features, context = self.roi_extractor(features, rois)
        if self.shared_head is not None:
            roi_features = self.shared_head(roi_features, context, rois, long_term)
        return roi_features

    def classify_rois(self, roi_features: Tensor) -> Tensor:
        """:meth:`roi_features` ``(K, C, T, h, w)`` -> logits ``(K, num_classes)``."""
        return self.head(roi_features)

    def roi_logits(self, features: Tensor | tuple[Tensor, ...], rois: Tensor,
                   long_term: Tensor | None = None) -> Tensor:
        """Everything after the backbone: its ``features`` (as in :meth:`roi_features`),
        ``rois (K, 5)``, ``long_term (B, N, C_lt)`` (LFB only) -> logits ``(K, num_classes)``."""
        return self.classify_rois(self.roi_features(features, rois, long_term))

    def roi_modules(self) -> list[nn.Module]:
        """The modules of :meth:`roi_logits`: RoI extractor, shared head (if any), classifier."""
        return [m for m in (self.roi_extractor, self.shared_head, self.head) if m is not None]

    def bank_features(self, clips: Tensor, rois: Tensor) -> Tensor:
        """A long-term feature bank's features (MMAction2's LFB inference head): ``clips
        (B, 3, T, H, W)``, ``rois (K, 5)`` -> ``(K, C)``, each RoI's extractor feature map
        ``(K, C, 1, S, S)`` (averaged or max-pooled over time by the extractor, before any shared
        head) max-pooled over space."""
        roi_features, _ = self.roi_extractor(self.backbone(clips), rois)
        return roi_features.amax(dim=(2, 3, 4))

    def training_rois(self, proposals: Sequence[Tensor], gt_boxes: Sequence[Tensor],
                      gt_labels: Sequence[Tensor], generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor]:
        """Sampled RoIs ``(K, 5)`` of a batch and their targets ``(K, num_classes)``: per clip,
        ``proposals (n_i, 4+)``, ``gt_boxes (m_i, 4)``, ``gt_labels (m_i, num_classes)``. A
        training step feeds them to ``forward`` and :meth:`loss_of`::

            rois, targets = model.training_rois(proposals, gt_boxes, gt_labels)
            out = model.loss_of(model(clips, rois, long_term), targets)
        """
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

    @torch.no_grad()
    def predict(self, clips: Tensor, proposals: Sequence[Tensor],
                long_term: Tensor | None = None) -> list[Tensor]:
        """Per clip, ``(n_i, num_classes)`` sigmoid scores of its ``(n_i, 4)`` proposals."""
        rois = boxes_to_rois(proposals).to(clips.device, clips.dtype)
        if rois.shape[0] == 0:
            return [clips.new_zeros((0, self.head.num_classes)) for _ in proposals]
        scores = self(clips, rois, long_term).sigmoid()
        return list(scores.split([p.shape[0] for p in proposals]))
