"""The evaluator: ground-truth and results files -> :class:`AVAEvalResult`.

:func:`evaluate` reads the files (:mod:`.io`), runs a protocol's frame-AP (:mod:`.ava_ap`) and
names the classes and the AVA groups; ``python -m stdet eval`` prints its :meth:`~AVAEvalResult.table`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.annotations import read_excluded_timestamps
from ..data.errors import AVADataError
from ..data.io import atomic_write_text
from ..data.labels import OBJECT_MANIPULATION, PERSON_INTERACTION, PERSON_MOVEMENT, action_group, read_label_map
from .ava_ap import IOU_THRESHOLD, PROTOCOLS, ClassCurves, frame_ap, prefilter
from .io import BoxTable, FrameKeys, read_box_csv

GROUP_KEYS = {PERSON_MOVEMENT: "person_movement", OBJECT_MANIPULATION: "object_manipulation",
              PERSON_INTERACTION: "person_interaction"}


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


@dataclass
class AVAEvalResult:
    """Frame-AP per class and its means.

    ``per_class``: DataFrame with ``class_id, name, group, ap, num_gt, num_det`` (``ap`` NaN where
    the protocol leaves the class out of the mean); ``map``: mean AP; ``group_map``: the means over
    person movement (ids <= 14), object manipulation (15-63) and person interaction (>= 64);
    ``curves``: precision/recall per class; ``warnings``: tolerated input problems, counted;
    ``checks``: the counts behind the evaluator's own warnings (``gt_rows``,
    ``duplicate_gt_rows``, ``result_rows``, ``result_videos_not_in_gt``,
    ``result_rows_not_in_gt``).
    """

    protocol: str
    per_class: pd.DataFrame
    map: float
    group_map: dict[str, float]
    curves: dict[int, ClassCurves] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    checks: dict[str, int] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        """``{"mAP": ..., "person_movement": ..., "object_manipulation": ...,
        "person_interaction": ...}``: what a training log's val record holds."""
        return {"mAP": self.map, **self.group_map}

    def to_dict(self) -> dict:
        """The JSON form: ``mAP``, ``per_class_ap`` (``"<id>": float or None``), the three group
        means, ``protocol``, ``checks`` (the input counts: rows, duplicates, result videos absent
        from the ground truth) and ``warnings`` (the messages, empty for clean input), so a JSON
        kept without the log still says whether its numbers came from questionable input;
        NaN becomes ``None``."""
        def clean(v: float):
            return None if v is None or math.isnan(v) else float(v)

        data = {"mAP": clean(self.map),
                "per_class_ap": {str(int(r.class_id)): clean(r.ap) for r in self.per_class.itertuples()},
                **{key: clean(self.group_map[key]) for key in GROUP_KEYS.values()},
                "protocol": self.protocol, "checks": dict(self.checks),
                "warnings": list(self.warnings)}
        return data

    def write_json(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def table(self) -> str:
        """A readable per-class table and the means."""
        df = self.per_class.copy()
        df["AP"] = df["ap"].map(lambda v: "-" if math.isnan(v) else f"{100 * v:.2f}")
        lines = [df[["class_id", "name", "num_gt", "num_det", "AP"]].to_string(index=False), ""]
        lines.append(f"mAP@{IOU_THRESHOLD}IoU ({self.protocol}): {_pct(self.map)}")
        for group, key in GROUP_KEYS.items():
            lines.append(f"  {key.replace('_', ' ')}: {_pct(self.group_map[key])}")
        return "\n".join(lines)


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.2f}"


def evaluate(gt: str | os.PathLike, pred: str | os.PathLike, label_map: str | os.PathLike,
             exclude: str | os.PathLike | None = None, protocol: str = "activitynet",
             custom_classes: list[int] | None = None) -> AVAEvalResult:
    """Frame-AP@0.5 of the results CSV ``pred`` against the ground-truth CSV ``gt``.

    ``label_map`` (pbtxt) names the evaluated classes (the 60 of the ActivityNet list on real
    AVA); ``custom_classes`` restricts them further and must all be in the label map (use the
    full action list as label map for classes outside the 60). ``exclude`` lists keyframes left out.
    ``protocol`` (:data:`~stdet.evaluation.PROTOCOLS`): ``"activitynet"``, the official evaluator
    (AVA challenge numbers); ``"mmaction2-0.x"``, MMAction2 0.x's, which made its model zoo's AVA
    table (results rounded to 3 decimals, no 50-per-keyframe cut); ``"mmaction2"``, MMAction2
    1.x's. :mod:`stdet.evaluation.ava_ap` lists how they differ.

    >>> import stdet
    >>> result = stdet.evaluate("ava_val_v2.2.csv", "results.csv",
    ...                         "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
    ...                         exclude="ava_val_excluded_timestamps_v2.2.csv")
    >>> result.map, result.group_map["person_movement"]
    >>> print(result.table())                     # AP per class and the means
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    names = read_label_map(label_map)
    class_ids = list(names)
    if custom_classes is not None:
        missing = sorted(set(custom_classes) - set(names))
        if missing:
            raise AVADataError(label_map, f"custom classes {missing} are not in the label map; "
                               "evaluate them with the full action list as label map")
        class_ids = sorted(set(custom_classes))
    keys = FrameKeys()
    gt_table = read_box_csv(gt, keys, scores=False)
    known_videos = set(keys.codes)
    det_table = read_box_csv(pred, keys, scores=True, prefilter=prefilter(protocol, class_ids))
    warnings = gt_table.warnings + det_table.warnings
    checks = _check_ground_truth(gt_table, keys, warnings)
    checks.update(_check_results(det_table, keys, len(known_videos), protocol, warnings))
    excluded_keys = np.zeros(0, np.int64)
    if exclude is not None:
        excluded = read_excluded_timestamps(exclude)
        unknown = sorted({v for v, _ in excluded if v not in known_videos})
        if unknown:
            warnings.append(f"{exclude}: {len(unknown)} excluded videos are not in the ground "
                            f"truth (e.g. {unknown[0]}); their rows exclude nothing")
        found = [keys.key(v, t) for v, t in excluded]
        excluded_keys = np.array(sorted(k for k in found if k is not None), dtype=np.int64)
    result = frame_ap(gt_table, det_table, class_ids, excluded_keys, protocol)
    per_class = pd.DataFrame({
        "class_id": class_ids,
        "name": [names[c] for c in class_ids],
        "group": [GROUP_KEYS[action_group(c)] for c in class_ids],
        "ap": [result.ap[c] for c in class_ids],
        "num_gt": [result.num_gt[c] for c in class_ids],
        "num_det": [result.num_det[c] for c in class_ids],
    })
    group_map = {key: _nanmean(per_class.loc[per_class["group"] == key, "ap"])
                 for key in GROUP_KEYS.values()}
    return AVAEvalResult(protocol, per_class, _nanmean(per_class["ap"]), group_map,
                         result.curves, warnings, checks)


def _check_ground_truth(gt: BoxTable, keys: FrameKeys, warnings: list[str]) -> dict[str, int]:
    """Count ground-truth rows that repeat an earlier row (keyframe, box, action, person id).

    The numbers are left as the references make them: each copy is one more ground-truth box,
    and since a detection is compared with the first of its equal-IoU boxes only, no detection
    can ever match a copy; it only lowers its class's recall."""
    columns = {"frame": gt.frame, "action": gt.labels, "extra": gt.scores,
               **{f"b{i}": gt.boxes[:, i] for i in range(4)}}
    duplicated = np.flatnonzero(pd.DataFrame(columns).duplicated().to_numpy())
    if duplicated.size:
        videos, timestamps = keys.decode(gt.frame[duplicated[:1]])
        warnings.append(
            f"{gt.path}: {duplicated.size} duplicate rows (the keyframe, box, action and person "
            f"id of an earlier row; e.g. {videos[0]},{int(timestamps[0]):04d} action "
            f"{int(gt.labels[duplicated[0]])}): each copy counts as one more ground-truth box, "
            "as in the reference evaluators, that no detection can match, lowering the recall")
    return {"gt_rows": len(gt), "duplicate_gt_rows": int(duplicated.size)}


def _check_results(det: BoxTable, keys: FrameKeys, gt_videos: int, protocol: str,
                   warnings: list[str]) -> dict[str, int]:
    """Count the result rows and those of videos the ground truth does not have (the video
    codes from ``gt_videos`` on were first met in the results)."""
    rows = int(det.rows_per_video.sum())
    if rows == 0:
        warnings.append(f"{det.path}: no result rows: " + (
            "no class gets an AP (the mmaction2 protocol leaves classes without detections out)"
            if protocol == "mmaction2" else "every class with ground truth gets AP 0"))
    alien = det.rows_per_video[gt_videos:]
    alien_codes = gt_videos + np.flatnonzero(alien)
    alien_rows = int(alien.sum())
    if alien_rows:
        names = sorted(keys.codes, key=keys.codes.get)
        examples = ", ".join(names[c] for c in alien_codes[:3])
        fate = ("are ignored (mmaction2 protocol)" if protocol == "mmaction2"
                else "of evaluated classes count as false positives")
        warnings.append(
            f"{det.path}: {alien_rows} result rows of {alien_codes.size} videos not in the ground "
            f"truth (e.g. {examples}): wrong files or video ids? Those rows {fate}")
    return {"result_rows": rows, "result_videos_not_in_gt": int(alien_codes.size),
            "result_rows_not_in_gt": alien_rows}
