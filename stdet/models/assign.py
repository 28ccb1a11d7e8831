"""Which proposals train the head, and with which labels.

For each training clip (Fast R-CNN style, as in MMAction2's AVA configs):

1. the ground-truth boxes are added to the proposals (so every person is seen at least once),
   each with its own labels;
2. a proposal is *positive* when its IoU with some ground-truth box is >= ``pos_iou`` (0.9) and
   takes that box's labels (the best-overlapping one); every ground-truth box also claims the
   proposals that overlap it most, if that overlap reaches ``pos_iou``;
3. up to ``num_rois`` (32) positives are drawn at random; the rest of the ``num_rois`` are
   negatives (all-zero labels). The loss ignores negatives, but they still pass through the
   network (and through the BN layers of a shared head such as ACRN).
"""
from __future__ import annotations

import torch
from torch import Tensor


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of ``(N, 4)`` and ``(M, 4)`` ``x1, y1, x2, y2`` boxes -> ``(N, M)``; areas ``(x2-x1)*(y2-y1)``."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).eps)


def assign_labels(proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                  pos_iou: float = 0.9) -> Tensor:
    """Labels ``(P, C)`` for ``proposals (P, 4)`` given ``gt_boxes (G, 4)``, ``gt_labels (G, C)``;
    all zeros for a negative proposal."""
    labels = gt_labels.new_zeros((proposals.shape[0], gt_labels.shape[1]))
    if gt_boxes.shape[0] == 0 or proposals.shape[0] == 0:
        return labels
    iou = box_iou(gt_boxes, proposals)                          # (G, P)
    best_iou, best_gt = iou.max(dim=0)
    assigned = torch.where(best_iou >= pos_iou, best_gt, torch.full_like(best_gt, -1))
    gt_best = iou.max(dim=1).values                             # each box's best overlap
    for g in torch.nonzero(gt_best >= pos_iou).flatten().tolist():  # later boxes win ties
        assigned[iou[g] == gt_best[g]] = g
    positive = assigned >= 0
    labels[positive] = gt_labels[assigned[positive]]
    return labels


def sample_rois(proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor, num_rois: int = 32,
                pos_iou: float = 0.9, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
    """Training RoIs of one clip: ``(n, 4)`` boxes and ``(n, C)`` labels, positives first,
    ``n = min(num_rois, P + G)``."""
    gt_boxes = gt_boxes.to(proposals.dtype)
    boxes = torch.cat([gt_boxes, proposals])
    # as mmdet's add_gt_as_proposals: the proposals are matched among themselves (a ground-truth
    # box would otherwise be every box's best match) and each added box keeps its own labels
    labels = torch.cat([gt_labels, assign_labels(proposals, gt_boxes, gt_labels, pos_iou)])
    positive = labels.sum(dim=1) > 0
    pos_idx, neg_idx = torch.nonzero(positive).flatten(), torch.nonzero(~positive).flatten()

    def draw(idx: Tensor, n: int) -> Tensor:
        order = torch.randperm(idx.numel(), generator=generator).to(idx.device)
        return idx[order[:n]]

    pos_idx = draw(pos_idx, num_rois)
    neg_idx = draw(neg_idx, num_rois - pos_idx.numel())
    keep = torch.cat([pos_idx, neg_idx])
    return boxes[keep], labels[keep]
