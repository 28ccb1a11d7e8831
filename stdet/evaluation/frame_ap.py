"""Frame-AP on AVA: the ActivityNet and MMAction2 protocols, vectorized.

A detection is a row ``(keyframe, box, action, score)``. For each action class, detections are
ranked by score over the whole dataset; a detection is a true positive when it matches a
ground-truth box of its class in its keyframe (IoU >= 0.5); the class's AP is the VOC area under
the precision envelope. The two protocols differ in which rows take part:

==============================================  ======================  ======================
rule                                            ``activitynet``         ``mmaction2``
==============================================  ======================  ======================
detections kept per keyframe                    the 50 best-scoring     all
detections on keyframes without ground truth    false positives         ignored
excluded keyframes                              removed                 removed, but their
                                                                        ground truth still
                                                                        counts in the recall
results box with x2 < x1 or y2 < y1             dropped                 kept
class with ground truth but no detection        AP 0, in the mean       left out of the mean
class without ground truth                      left out (NaN)          left out (NaN)
box and score arithmetic                        float64                 float32
==============================================  ======================  ======================

(``activitynet`` is ActivityNet's ``get_ava_performance.py`` with its ``PascalDetectionEvaluator``,
the official AVA protocol; ``mmaction2`` is MMAction2 1.x's ``ava_eval``.) Classes outside the
label map (or the custom classes) are ignored in both.

**Matching.** Within a keyframe and class, detections are taken in descending score; each one is
compared with its *highest-IoU* ground-truth box only (the first one in file order on equal IoU):
if that IoU is >= 0.5 and the box is not matched yet, it is a true positive, otherwise a false
positive. Because a detection never falls back to its second-best box, the true positives are
exactly "the first detection pointing at each box" — no sequential loop is needed: one IoU per
(detection, ground-truth box of its keyframe and class) pair, one segmented argmax, one unique.

**Ties.** Where detections share a score, stdet orders them by their row in the results file
(earlier first) — when ranking a class and when choosing the 50 of a keyframe. The references
leave ties to numpy's unstable sort, so with ties the APs may differ from theirs in the last
digits; without ties they agree to floating-point rounding.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .io import BoxTable

IOU_THRESHOLD = 0.5
DETECTIONS_PER_FRAME = 50
PROTOCOLS = ("activitynet", "mmaction2")


def _pairwise_iou(det: np.ndarray, gt: np.ndarray, float32: bool) -> np.ndarray:
    """IoU of matching rows of ``det`` and ``gt`` ``(P, 4)`` (x1, y1, x2, y2), with the reference's
    arithmetic: areas ``(y2-y1)*(x2-x1)``, intersections clipped at 0, no +1. With ``float32``
    the coordinates, differences and areas are float32 and the products and the division float64,
    exactly as MMAction2's evaluator computes on its float32 boxes."""
    if float32:
        det, gt = det.astype(np.float32), gt.astype(np.float32)
    heights = np.maximum(0.0, np.minimum(det[:, 3], gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1]))
    widths = np.maximum(0.0, np.minimum(det[:, 2], gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0]))
    intersection = heights.astype(np.float64) * widths.astype(np.float64)
    area_det = (det[:, 3] - det[:, 1]) * (det[:, 2] - det[:, 0])
    area_gt = (gt[:, 3] - gt[:, 1]) * (gt[:, 2] - gt[:, 0])
    union = (area_det + area_gt) - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / union


def match_detections(det: BoxTable, gt: BoxTable, float32: bool = False) -> np.ndarray:
    """True-positive flags of ``det`` rows, which must be sorted by (keyframe, class, processing
    order); ``gt`` is matched by (keyframe, class)."""
    if len(det) == 0:
        return np.zeros(0, bool)
    det_key = _group_key(det.frame, det.labels)
    gt_order = np.lexsort((gt.order, _group_key(gt.frame, gt.labels)))
    gt_key = _group_key(gt.frame, gt.labels)[gt_order]
    start = np.searchsorted(gt_key, det_key, side="left")
    count = np.searchsorted(gt_key, det_key, side="right") - start
    has_gt = np.flatnonzero(count > 0)
    tp = np.zeros(len(det), bool)
    if has_gt.size == 0:
        return tp
    # one row per (detection, candidate ground-truth box) pair, grouped by detection
    n = count[has_gt]
    pair_det = np.repeat(has_gt, n)
    seg_start = np.concatenate([[0], np.cumsum(n)[:-1]])
    pair_gt = gt_order[np.repeat(start[has_gt], n) + np.arange(n.sum()) - np.repeat(seg_start, n)]
    iou = _pairwise_iou(det.boxes[pair_det], gt.boxes[pair_gt], float32)
    # numpy's argmax picks the first maximum and treats NaN (0/0 for empty boxes) as the maximum
    ranked = np.where(np.isnan(iou), np.inf, iou)
    best_value = np.maximum.reduceat(ranked, seg_start)
    is_best = ranked == np.repeat(best_value, n)
    first = np.flatnonzero(is_best)
    _, pos = np.unique(pair_det[first], return_index=True)
    best_pair = first[pos]                                    # one per detection in has_gt
    hit = iou[best_pair] >= IOU_THRESHOLD                     # False for NaN
    det_rows, gt_rows = pair_det[best_pair][hit], pair_gt[best_pair][hit]
    _, first_claim = np.unique(gt_rows, return_index=True)    # det_rows ascend: first in order
    tp[det_rows[first_claim]] = True
    return tp


def _group_key(frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One int64 per (keyframe, class); labels are below 2**10 after the class filter."""
    return (frame << 10) | labels


@dataclass
class ClassCurves:
    """Precision and recall after each ranked detection of one class."""

    precision: np.ndarray
    recall: np.ndarray


@dataclass
class FrameAPResult:
    """``ap[class_id]`` (NaN where the protocol leaves the class out), ``num_gt``, ``num_det`` per
    class, and the precision/recall curves of the classes with an AP."""

    ap: dict[int, float]
    num_gt: dict[int, int]
    num_det: dict[int, int]
    curves: dict[int, ClassCurves] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _voc_ap(scores: np.ndarray, tp: np.ndarray, labels: np.ndarray, order: np.ndarray,
            classes: np.ndarray, num_gt: np.ndarray, float32: bool
            ) -> tuple[np.ndarray, dict[int, ClassCurves]]:
    """AP per class of ``classes`` (dense indices into ``num_gt``) in one pass over all rows."""
    ranking_scores = scores.astype(np.float32) if float32 else scores
    rank = np.lexsort((order, -ranking_scores.astype(np.float64), labels))
    labels, tp = labels[rank], tp[rank]
    bounds = np.searchsorted(labels, np.arange(len(num_gt) + 1))
    ap = np.full(len(num_gt), np.nan)
    curves: dict[int, ClassCurves] = {}
    cum_tp = np.cumsum(tp)
    for c in classes:  # one slice per class, all vector operations inside
        lo, hi = bounds[c], bounds[c + 1]
        if num_gt[c] == 0:
            continue
        if hi == lo:
            ap[c] = 0.0
            curves[c] = ClassCurves(np.zeros(0), np.zeros(0))
            continue
        tps = cum_tp[lo:hi] - (cum_tp[lo - 1] if lo else 0)
        precision = tps / np.arange(1, hi - lo + 1)
        recall = tps / num_gt[c]
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        steps = np.diff(np.concatenate([[0.0], recall]))
        changed = np.concatenate([[recall[0] != 0.0], recall[1:] != recall[:-1]])
        ap[c] = float(np.sum(steps[changed] * envelope[changed]))
        curves[c] = ClassCurves(precision, recall)
    return ap, curves


def frame_ap(gt: BoxTable, det: BoxTable, class_ids: list[int], excluded: np.ndarray,
             protocol: str = "activitynet") -> FrameAPResult:
    """AP per class of ``class_ids`` given ground truth, results and excluded keyframe keys."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    mm = protocol == "mmaction2"
    ids = np.asarray(sorted(class_ids), dtype=np.int64)
    if len(ids) >= 1 << 10:
        raise ValueError("at most 1023 classes can be evaluated at once")

    def to_dense(table: BoxTable) -> BoxTable:
        keep = np.isin(table.labels, ids)
        out = table.take(np.flatnonzero(keep))
        out.labels = np.searchsorted(ids, out.labels)
        return out

    gt, det = to_dense(gt), to_dense(det)
    gt_excluded = np.isin(gt.frame, excluded)
    num_gt = np.bincount(gt.labels if mm else gt.labels[~gt_excluded], minlength=len(ids))
    gt = gt.take(np.flatnonzero(~gt_excluded))

    # processing order within each keyframe: descending score, then file order (both references
    # sort a keyframe's rows on the scores as parsed, in float64)
    det = det.take(np.lexsort((det.order, -det.scores, det.frame)))
    if mm:
        det = det.take(np.flatnonzero(np.isin(det.frame, gt.frame) & ~np.isin(det.frame, excluded)))
    else:
        first_of_frame = np.searchsorted(det.frame, det.frame, side="left")
        rank_in_frame = np.arange(len(det)) - first_of_frame
        keep = (rank_in_frame < DETECTIONS_PER_FRAME) & ~np.isin(det.frame, excluded)
        x1, y1, x2, y2 = det.boxes.T
        keep &= (x2 >= x1) & (y2 >= y1)
        det = det.take(np.flatnonzero(keep))
    # group by (keyframe, class) keeping the processing order inside each group
    det = det.take(np.argsort(_group_key(det.frame, det.labels), kind="stable"))
    tp = match_detections(det, gt, float32=mm)

    num_det = np.bincount(det.labels, minlength=len(ids))
    if mm:  # classes appear once they have a detection on an evaluated keyframe
        evaluated = np.flatnonzero(num_det > 0)
    else:
        evaluated = np.arange(len(ids))
    ap, curves = _voc_ap(det.scores, tp, det.labels, det.order, evaluated, num_gt, float32=mm)
    return FrameAPResult(
        ap={int(c): float(ap[i]) for i, c in enumerate(ids)},
        num_gt={int(c): int(num_gt[i]) for i, c in enumerate(ids)},
        num_det={int(c): int(num_det[i]) for i, c in enumerate(ids)},
        curves={int(ids[i]): cv for i, cv in curves.items()})
