"""Frame-AP on AVA: the ActivityNet and the two MMAction2 protocols, vectorized.

A detection is a row ``(keyframe, box, action, score)``. For each action class, detections are
ranked by score over the whole dataset; a detection is a true positive when it matches a
ground-truth box of its class in its keyframe (IoU >= 0.5); the class's AP is the VOC area under
the precision envelope. The protocols differ in which rows take part, and how:

======================================  =================  ==================  ====================
rule                                    ``activitynet``    ``mmaction2``       ``mmaction2-0.x``
======================================  =================  ==================  ====================
result boxes and scores                 as read            as read             rounded to 3
                                                                               decimals, as written
detections kept per keyframe            the 50 best        all                 all
rows on keyframes without ground truth  false positives    ignored             false positives
excluded keyframes                      removed            removed, but their  removed
                                                           ground truth still
                                                           counts in recall
results box with x2 <= x1 or y2 <= y1   dropped            error if x2 < x1    dropped
                                                           or y2 < y1, else
                                                           kept
class with ground truth, no detection   AP 0, in the mean  left out of the     AP 0, in the mean
                                                           mean
class without ground truth              left out (NaN)     left out (NaN)      left out (NaN)
box and score arithmetic                float64            float32             float64
equal scores in a class's ranking       file order         file order          numpy's argsort, as
                                                                               in 0.x (see below)
======================================  =================  ==================  ====================

``activitynet`` is ActivityNet's ``get_ava_performance.py`` with its ``PascalDetectionEvaluator``,
the official AVA protocol (the AVA challenge's numbers). ``mmaction2`` is MMAction2 1.x's
``ava_eval`` (its ``AVAMetric``). ``mmaction2-0.x`` is MMAction2 0.x's ``ava_eval`` as its
``AVADataset.evaluate`` runs it, which made the 0.x model zoo's AVA table: the same
``PascalDetectionEvaluator`` (a trimmed copy), fed every row of a keyframe, after ``results2csv``
wrote the model's boxes and scores as ``'%.3f'`` (:func:`round_as_written`); ``ava_eval`` skips the
excluded keyframes on its ``verbose`` path only, and ``verbose=True`` is the default the dataset
keeps. Classes outside the label map (or the custom classes) are ignored in all three.

**Matching.** Within a keyframe and class, detections are taken in descending score; each one is
compared with its *highest-IoU* ground-truth box only (the first one in file order on equal IoU):
if that IoU is >= 0.5 and the box is not matched yet, it is a true positive, otherwise a false
positive. Because a detection never falls back to its second-best box, the true positives are
exactly "the first detection pointing at each box" — no sequential loop is needed: one IoU per
(detection, ground-truth box of its keyframe and class) pair, one segmented argmax, one unique.

**Ties.** Where detections share a score, stdet orders them by their row in the results file
(earlier first) — when ranking a class and when choosing the 50 of a keyframe. The references
leave ties to numpy's unstable sort, so with ties the APs may differ from theirs in the last
digits; without ties they agree to floating-point rounding. ``mmaction2-0.x`` is the exception:
scores with 3 decimals tie all the time, so a class is ranked by the very call 0.x makes, numpy's
``argsort`` of the scores in 0.x's order, reversed (:func:`rank_like_mmaction2_0x`); with the same
numpy the ties fall as in 0.x (another numpy's sort may place them otherwise). Matching within a
keyframe takes ties in file order, as all the references do.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..data.errors import AVADataError
from .io import BoxTable

IOU_THRESHOLD = 0.5
DETECTIONS_PER_FRAME = 50
PROTOCOLS = ("activitynet", "mmaction2", "mmaction2-0.x")
RESULT_DECIMALS = 3  # MMAction2 0.x writes boxes and scores with 3 decimals before evaluating


def _pairwise_iou(a: np.ndarray, b: np.ndarray, float32: bool) -> np.ndarray:
    """IoU of boxes ``a`` and ``b`` ``(..., 4)`` (x1, y1, x2, y2), broadcast against each other,
    with the reference's arithmetic: areas ``(y2-y1)*(x2-x1)``, intersections clipped at 0, no +1.
    With ``float32`` the coordinates, differences and areas are float32 and the products and the
    division float64, exactly as MMAction2's evaluator computes on its float32 boxes. The matching
    calls it on ``(P, 4)`` pairs, :func:`box_iou` on a ``(N, 1, 4)`` and a ``(1, M, 4)`` view."""
    if float32:
        a, b = a.astype(np.float32), b.astype(np.float32)
    heights = np.maximum(0.0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]))
    widths = np.maximum(0.0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]))
    intersection = heights.astype(np.float64) * widths.astype(np.float64)
    area_a = (a[..., 3] - a[..., 1]) * (a[..., 2] - a[..., 0])
    area_b = (b[..., 3] - b[..., 1]) * (b[..., 2] - b[..., 0])
    union = (area_a + area_b) - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / union


def box_iou(a, b, *, float32: bool = False) -> np.ndarray:
    """IoU of every box of ``a`` ``(N, 4)`` with every box of ``b`` ``(M, 4)``: ``(N, M)``.

    Boxes are ``x1, y1, x2, y2``; the arithmetic is the evaluator's (ActivityNet's; MMAction2's
    with ``float32``). Two empty boxes give NaN (0 / 0), as in the references.

    >>> from stdet.evaluation import box_iou
    >>> box_iou([[0.1, 0.1, 0.5, 0.5]], [[0.1, 0.1, 0.5, 0.45], [0.5, 0.5, 0.9, 0.9]])
    array([[0.875, 0.   ]])
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return _pairwise_iou(a[:, None, :], b[None, :, :], float32)


def match_detections(det: BoxTable, gt: BoxTable, float32: bool = False) -> np.ndarray:
    """Whether each row of ``det`` is a true positive, as the evaluator decides (flags in the rows'
    order). Within a keyframe and class, detections claim ground-truth boxes in descending score
    (ties: ``order``); each is compared with its highest-IoU box only, and is a true positive when
    that IoU is >= 0.5 and no earlier detection took the box. ``det`` and ``gt`` must share their
    :class:`FrameKeys`.

    >>> from stdet.evaluation import BoxTable, FrameKeys, match_detections
    >>> keys = FrameKeys()
    >>> gt = BoxTable.from_rows([("v", 902, (0.1, 0.1, 0.5, 0.5), 12)], keys)
    >>> det = BoxTable.from_rows([("v", 902, (0.1, 0.1, 0.5, 0.35), 12, 0.8),   # IoU 0.625
    ...                           ("v", 902, (0.1, 0.1, 0.5, 0.45), 12, 0.9)],  # IoU 0.875
    ...                          keys)
    >>> match_detections(det, gt)   # the better-scoring one takes the box first
    array([False,  True])
    """
    order = ranked(det)
    tp = np.empty(len(det), bool)
    tp[order] = _match_ranked(det.take(order), gt, float32)
    return tp


def _match_ranked(det: BoxTable, gt: BoxTable, float32: bool) -> np.ndarray:
    """:func:`match_detections` of ``det`` rows already in processing order (the rows of each
    (keyframe, class) in the order they claim boxes), flags in that order: no sort."""
    if len(det) == 0:
        return np.zeros(0, bool)
    det_key = _group_key(det.frame, det.labels)
    # a keyframe's boxes in the references' order: descending 8th column (person id), file order
    gt_order = np.lexsort((gt.order, -gt.scores, _group_key(gt.frame, gt.labels)))
    gt_key = _group_key(gt.frame, gt.labels)[gt_order]
    groups, group_start, group_count = np.unique(gt_key, return_index=True, return_counts=True)
    # each detection's group of boxes, by hash lookup (the detections are not sorted by group)
    group = pd.Index(groups).get_indexer(det_key)
    start = group_start[group]
    count = np.where(group >= 0, group_count[group], 0)
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
    comparable = np.where(np.isnan(iou), np.inf, iou)
    best_value = np.maximum.reduceat(comparable, seg_start)
    is_best = comparable == np.repeat(best_value, n)
    first = np.flatnonzero(is_best)
    _, pos = np.unique(pair_det[first], return_index=True)
    best_pair = first[pos]                                    # one per detection in has_gt
    hit = iou[best_pair] >= IOU_THRESHOLD                     # False for NaN
    det_rows, gt_rows = pair_det[best_pair][hit], pair_gt[best_pair][hit]
    _, first_claim = np.unique(gt_rows, return_index=True)    # det_rows ascend: first in order
    tp[det_rows[first_claim]] = True
    return tp


def _two_product(a: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    """``a * b`` as ``p + e`` exactly (Dekker's product, each factor split into halves of 26 bits;
    ``b`` a constant)."""
    p = a * b
    split = 134217729.0  # 2**27 + 1
    c = split * a
    a_hi = c - (c - a)
    a_lo = a - a_hi
    b_hi = split * b - (split * b - b)
    b_lo = b - b_hi
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


def round_as_written(values, decimals: int = RESULT_DECIMALS) -> np.ndarray:
    """``float(f"{v:.{decimals}f}")`` of every value, vectorized: what a value becomes once written
    with ``decimals`` decimals and read back (MMAction2 0.x writes its results so).

    Python formats the exact binary value, so a value that prints as ``0.1235`` but is stored just
    below it goes down; ``np.round`` scales first and can land on the other side of a half. Here
    the scaled value is rounded to the nearest integer where it is clearly off a half; near a half
    it is recomputed exactly, as a sum of two doubles, and its distance to the half decides (an
    exact half goes to the even neighbour, as in Python).

    >>> from stdet.evaluation.ava_ap import round_as_written
    >>> round_as_written([0.1235, 0.0625, 0.9996, -0.0001]).tolist()
    [0.123, 0.062, 1.0, -0.0]
    >>> import numpy as np; np.round(0.1235, 3)                 # not what the file would hold
    np.float64(0.124)
    """
    shape = np.shape(values)
    values = np.asarray(values, np.float64).ravel()
    scale = 10.0 ** decimals
    scaled = values * scale
    rounded = np.rint(scaled)  # right unless the product's own rounding reached a half
    off_half = np.abs(scaled - np.floor(scaled) - 0.5)
    near = np.flatnonzero(off_half < 1e-9 * np.maximum(1.0, np.abs(scaled)))
    if near.size:
        exact, error = _two_product(values[near], scale)
        below = np.floor(exact)
        above_half = (exact - (below + 0.5)) + error  # exact this close to the half
        up = (above_half > 0) | ((above_half == 0) & (np.fmod(below, 2) != 0))
        rounded[near] = below + up
    out = rounded / scale
    zero = np.flatnonzero(out == 0)
    out[zero] = np.copysign(0.0, values[zero])  # "-0.000" reads back as -0.0
    return out.reshape(shape)


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


def voc_ap(tp: np.ndarray, labels: np.ndarray, classes: np.ndarray, num_gt: np.ndarray
            ) -> tuple[np.ndarray, dict[int, ClassCurves]]:
    """AP per class of ``classes`` (dense indices into ``num_gt``) from rows already in ranking
    order, in one pass: a stable radix sort by class keeps each class's rows ranked.

    ``tp (N,)``: whether each ranked detection matched a ground-truth box (:func:`match_detections`);
    ``labels (N,)``: its class index. AP is PASCAL VOC's (ActivityNet's evaluator): the area under
    the precision envelope (precision made non-increasing from the right), summed where recall
    steps up; a class with ground truth but no detection gets 0, one without ground truth NaN.

    >>> import numpy as np
    >>> ap, curves = voc_ap(np.array([True, False, True]), np.array([0, 0, 0]), np.array([0]),
    ...                     num_gt=np.array([2]))
    >>> float(ap[0])                     # recall 0.5 at precision 1, then 1.0 at precision 2/3
    0.8333333333333333
    """
    by_class = np.argsort(labels.astype(np.int16), kind="stable")
    labels, tp = labels[by_class], tp[by_class]
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


def ranked(table: BoxTable, float32: bool = False) -> np.ndarray:
    """The permutation putting rows in descending score, ties in file order (scores compared in
    float32 with ``float32``, as MMAction2 ranks a class)."""
    scores = table.scores.astype(np.float32) if float32 else table.scores
    return np.lexsort((table.order, -scores.astype(np.float64)))


def _rank_in_frame(frames: np.ndarray) -> np.ndarray:
    """0 for the first row of each keyframe, 1 for the second, ... (hash-based, no sort)."""
    return pd.Series(frames).groupby(frames, sort=False).cumcount().to_numpy()


def top_per_frame(table: BoxTable, k: int) -> np.ndarray:
    """Indices of the ``k`` best-scoring rows of each keyframe (ties: earlier rows first), in
    ranking order."""
    order = ranked(table)
    return order[_rank_in_frame(table.frame[order]) < k]


def prefilter(protocol: str, class_ids: list[int]) -> Callable[[BoxTable], np.ndarray]:
    """Rows of a chunk of results the protocol can use: those of evaluated classes and, for
    ActivityNet, the 50 best of each keyframe *within the chunk* — a superset of the keyframe's
    50 best overall, so filtering chunk by chunk changes nothing but memory and time."""
    ids = np.asarray(sorted(class_ids), dtype=np.int64)

    def keep(chunk: BoxTable) -> np.ndarray:
        rows = np.flatnonzero(np.isin(chunk.labels, ids))
        if protocol == "activitynet":
            rows = np.sort(rows[top_per_frame(chunk.take(rows), DETECTIONS_PER_FRAME)])
        return rows

    return keep


def as_written(det: BoxTable, decimals: int = RESULT_DECIMALS) -> BoxTable:
    """``det`` with its boxes and scores as MMAction2 0.x's ``results2csv`` leaves them: every
    float written ``'%.3f'`` (:func:`round_as_written`), then read back by its ``ava_eval``."""
    return replace(det, boxes=round_as_written(det.boxes, decimals),
                   scores=round_as_written(det.scores, decimals))


def rank_like_mmaction2_0x(det: BoxTable, first_rows: pd.Series | None = None) -> np.ndarray:
    """The permutation ranking ``det``'s rows class by class as MMAction2 0.x does, ties included.

    0.x's evaluator appends each keyframe's rows of a class, in descending score (a stable sort,
    so ties in file order), keyframe after keyframe in their order in the file, and ranks the
    class with ``np.argsort(scores)[::-1]``: numpy's default sort is not stable, so equal scores
    come out as that call puts them. The same call on the same array here puts them the same way
    (with the same numpy); without ties this is plain descending score. Keyframes come in the
    order of their first row: ``first_rows`` maps a keyframe key to it (default: the smallest
    ``order`` of the keyframe in ``det``), as in a file written keyframe by keyframe.

    >>> from stdet.evaluation import BoxTable, FrameKeys
    >>> box = (0.1, 0.1, 0.5, 0.5)
    >>> det = BoxTable.from_rows([("v", 902, box, 12, 0.5), ("v", 903, box, 12, 0.9),
    ...                           ("v", 903, box, 80, 0.7)], FrameKeys())
    >>> rank_like_mmaction2_0x(det).tolist()      # class by class, each in descending score
    [1, 0, 2]
    """
    if first_rows is None:
        first_rows = pd.Series(det.order).groupby(det.frame).min()
    first_row = first_rows.reindex(det.frame).to_numpy()
    appended = np.lexsort((det.order, -det.scores, first_row))
    by_class = appended[np.argsort(det.labels[appended], kind="stable")]
    starts = np.flatnonzero(np.diff(det.labels[by_class])) + 1
    ranked_parts = [rows[np.argsort(det.scores[rows])[::-1]] for rows in np.split(by_class, starts)]
    return np.concatenate(ranked_parts) if len(det) else np.zeros(0, np.int64)


def frame_ap(gt: BoxTable, det: BoxTable, class_ids: list[int], excluded: np.ndarray | None = None,
             protocol: str = "activitynet") -> FrameAPResult:
    """AP per class of ``class_ids`` given ground truth, results and the keys of the excluded
    keyframes (:meth:`FrameKeys.key`; none by default). ``gt`` and ``det`` share their keys.

    >>> from stdet.evaluation import BoxTable, FrameKeys, frame_ap
    >>> keys = FrameKeys()
    >>> gt = BoxTable.from_rows([("v", 902, (0.1, 0.1, 0.5, 0.5), 12),
    ...                          ("v", 902, (0.5, 0.5, 0.9, 0.9), 12)], keys)
    >>> det = BoxTable.from_rows([("v", 902, (0.1, 0.1, 0.5, 0.45), 12, 0.9),   # TP
    ...                           ("v", 902, (0.1, 0.1, 0.5, 0.35), 12, 0.8),   # FP: box 1 is taken
    ...                           ("v", 902, (0.5, 0.5, 0.9, 0.9), 12, 0.7)],   # TP
    ...                          keys)
    >>> result = frame_ap(gt, det, [12])
    >>> round(result.ap[12], 4), result.curves[12].precision.round(4).tolist()
    (0.8333, [1.0, 0.5, 0.6667])
    """
    excluded = np.zeros(0, np.int64) if excluded is None else np.asarray(excluded, np.int64)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    mm = protocol == "mmaction2"
    mm0 = protocol == "mmaction2-0.x"
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

    # processing order: descending score, then file order (the references rank a keyframe's
    # rows on the scores as parsed, in float64). Every later step keeps this order, so each
    # (keyframe, class) group is met in its processing order without grouping the rows.
    if mm:
        det = det.take(ranked(det))
        det = det.take(np.flatnonzero(np.isin(det.frame, gt.frame) & ~np.isin(det.frame, excluded)))
        x1, y1, x2, y2 = det.boxes.T
        flipped = (x2 < x1) | (y2 < y1)
        if flipped.any():  # MMAction2's evaluator stops on these; say where, instead of a guess
            row = int(det.order[np.argmax(flipped)])
            raise AVADataError(det.path, "box with x2 < x1 or y2 < y1 on an evaluated keyframe "
                               "(MMAction2's protocol cannot score it; ActivityNet's drops it)",
                               line=row + 1)
    else:
        if mm0:  # 0.x evaluates the file it wrote with 3 decimals, every row of it
            first_rows = pd.Series(det.order).groupby(det.frame).min()  # the keyframes' order
            det = as_written(det)
            det = det.take(ranked(det))
        else:
            det = det.take(top_per_frame(det, DETECTIONS_PER_FRAME))
        x1, y1, x2, y2 = det.boxes.T
        # ActivityNet's evaluator (0.x's copy too) drops boxes without area (x1 < x2, y1 < y2)
        det = det.take(np.flatnonzero(~np.isin(det.frame, excluded) & (x1 < x2) & (y1 < y2)))
    tp = _match_ranked(det, gt, float32=mm)

    num_det = np.bincount(det.labels, minlength=len(ids))
    if mm:  # classes appear once they have a detection on an evaluated keyframe; a class is
        # ranked on float32 scores
        evaluated = np.flatnonzero(num_det > 0)
        order = ranked(det, float32=True)
        ap, curves = voc_ap(tp[order], det.labels[order], evaluated, num_gt)
    elif mm0:  # ranked per class with 0.x's own call, so ties (many at 3 decimals) fall alike
        order = rank_like_mmaction2_0x(det, first_rows)
        ap, curves = voc_ap(tp[order], det.labels[order], np.arange(len(ids)), num_gt)
    else:
        ap, curves = voc_ap(tp, det.labels, np.arange(len(ids)), num_gt)
    return FrameAPResult(
        ap={int(c): float(ap[i]) for i, c in enumerate(ids)},
        num_gt={int(c): int(num_gt[i]) for i, c in enumerate(ids)},
        num_det={int(c): int(num_det[i]) for i, c in enumerate(ids)},
        curves={int(ids[i]): cv for i, cv in curves.items()})
