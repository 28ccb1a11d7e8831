"""The AVA action loss and the recall/precision logged with it.

AVA is multi-label: each RoI gets a sigmoid per class. Column 0 is not an action and RoIs without a
positive label (the sampled negatives) are left out, so the loss only teaches *which* actions a
matched person does::

    bce = BCEWithLogits(logit, target)                   per RoI and class
    loss = mean(alpha * (1 - exp(-bce))**gamma * bce)    focal form; alpha=1, gamma=0 is plain BCE
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def positive_rows(targets: Tensor) -> Tensor:
    """Indices ``(P,)`` of the RoIs with an action (class 0 aside). On a GPU this reads a count
    back from the device, so the training step gets it from the targets while they are still on
    the host, where they are made."""
    return (targets[:, 1:].sum(dim=1) > 0).nonzero().flatten()


def _positive_actions(logits: Tensor, targets: Tensor,
                      positive: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Drop class 0 and the RoIs with no action (``positive``: their indices, if known)."""
    if positive is None:
        positive = positive_rows(targets)
    positive = positive.to(logits.device)
    return logits[:, 1:].index_select(0, positive), targets[:, 1:].index_select(0, positive)


def action_loss(logits: Tensor, targets: Tensor, focal_alpha: float = 1.0,
                focal_gamma: float = 0.0, positive: Tensor | None = None) -> Tensor:
    """``logits, targets (K, num_classes)`` -> scalar. A batch without any positive RoI gives a
    zero that still depends on ``logits`` (so backward runs), not NaN. ``positive``: the
    indices :func:`positive_rows` gives, when the caller has them."""
    logits, targets = _positive_actions(logits, targets.to(logits.dtype), positive)
    if logits.numel() == 0:  # a shape: known without reading the device
        return logits.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if focal_alpha == 1.0 and focal_gamma == 0.0:
        return bce.mean()
    return (focal_alpha * (1 - torch.exp(-bce)) ** focal_gamma * bce).mean()


def _recall_precision(predicted: Tensor, actual: Tensor) -> tuple[Tensor, Tensor]:
    """Per-RoI recall and precision of boolean ``(K, C)`` predictions, averaged over RoIs."""
    correct = (predicted & actual).sum(dim=1).float()
    recall = correct / actual.sum(dim=1).float()
    precision = correct / (predicted.sum(dim=1).float() + 1e-6)
    return recall.mean(), precision.mean()


@torch.no_grad()
def recall_precision(logits: Tensor, targets: Tensor, topk: tuple[int, ...] = (3, 5),
                     thr: float = 0.5, positive: Tensor | None = None) -> dict[str, Tensor]:
    """Recall and precision on the positive RoIs: of ``sigmoid > thr`` and of the top k classes.

    Keys: ``recall@thr=0.5``, ``prec@thr=0.5``, ``recall@top3``, ``prec@top3``, ... (MMAction2's
    log names), the same for every batch; the values are NaN when there is no positive RoI.
    """
    logits, targets = _positive_actions(logits, targets, positive)
    actual = targets > 0.5
    probs = logits.sigmoid()
    out = {}
    out[f"recall@thr={thr}"], out[f"prec@thr={thr}"] = _recall_precision(probs > thr, actual)
    for k in topk:
        top = torch.zeros_like(actual).scatter_(1, probs.topk(min(k, probs.shape[1]), dim=1).indices,
                                                True)
        out[f"recall@top{k}"], out[f"prec@top{k}"] = _recall_precision(top, actual)
    return out
