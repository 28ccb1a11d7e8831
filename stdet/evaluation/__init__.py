"""Evaluation: results CSV + ground truth -> frame-AP per class (the ActivityNet protocol and
MMAction2's, 0.x and 1.x: :data:`PROTOCOLS`).

>>> from stdet.evaluation import evaluate
>>> result = evaluate("ava_val_v2.2.csv", "results.csv", "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
...                   exclude="ava_val_excluded_timestamps_v2.2.csv")
>>> result.map, result.per_class          # mAP and a DataFrame, one row per class
>>> result.curves[12].precision           # precision/recall after each ranked detection

The same steps on rows in memory, e.g. a worked example of a few boxes::

    keys = FrameKeys()                                   # keyframe keys shared by both tables
    gt = BoxTable.from_rows([("v", 902, (0.1, 0.1, 0.5, 0.5), 12)], keys)
    det = BoxTable.from_rows([("v", 902, (0.1, 0.1, 0.5, 0.45), 12, 0.9)], keys)
    box_iou(det.boxes, gt.boxes)                         # (N, M) IoU matrix
    match_detections(det, gt)                            # true positive or not, per detection
    frame_ap(gt, det, [12]).ap[12]                       # AP per class

Modules, in the order data flows: :mod:`.results` (the results CSV: its writer and its reader),
:mod:`.io` (fast CSV reading into :class:`BoxTable`), :mod:`.ava_ap` (the protocols, matching and
AP, vectorized; see it for how ties are broken), :mod:`.evaluator` (files -> :class:`AVAEvalResult`).
This package needs numpy and pandas only (no torch).
"""
from __future__ import annotations

from .ava_ap import (DETECTIONS_PER_FRAME, IOU_THRESHOLD, PROTOCOLS, ClassCurves, FrameAPResult, box_iou,
                     frame_ap, match_detections, voc_ap)
from .evaluator import GROUP_KEYS, AVAEvalResult, evaluate
from .io import BoxTable, FrameKeys, read_box_csv
from .results import RESULT_COLUMNS, read_results, write_results

__all__ = ["AVAEvalResult", "BoxTable", "ClassCurves", "DETECTIONS_PER_FRAME", "FrameAPResult",
           "FrameKeys", "GROUP_KEYS", "IOU_THRESHOLD", "PROTOCOLS", "RESULT_COLUMNS", "box_iou",
           "evaluate", "frame_ap", "match_detections", "read_box_csv", "read_results", "voc_ap",
           "write_results"]
