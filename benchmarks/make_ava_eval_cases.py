"""Make the frame-mAP parity cases of ``tests/fixtures/ava_eval/``: AVA-like inputs and the
reference results for them.

Every case is a folder ``case_<k>/`` with::

    labels.pbtxt      label map, a subset of the AVA ids (every group represented)
    gt.csv            video,timestamp,x1,y1,x2,y2,action_id,person_id  (boxes to 3 decimals)
    pred.csv          video,timestamp,x1,y1,x2,y2,action_id,score      (boxes to 4, scores to 6)
    excluded.csv      video,timestamp
    expected_activitynet.json, expected_mmaction2.json, expected_mmaction2-0.x.json
                      (benchmarks/ava_eval_reference.py, one per protocol)

and, for the cases that have a ``custom_classes.txt`` (ids, comma-separated), also
``expected_<protocol>_custom.json``. ``cases.json`` at the top lists the cases and what each
exercises.

What the inputs contain, on purpose:

* ground-truth and predicted ids that are not in the label map (both references drop them before
  anything else, so they do not count against ActivityNet's 50-a-frame cap);
* a class with ground truth and no prediction, a class predicted and never in the ground truth, a
  class whose only ground truth is on excluded frames, a class with neither;
* predicted boxes jittered from the ground truth to an IoU well above, just above (0.50-0.53) or
  just below (0.47-0.50) 0.5, and false-positive boxes; no IoU between a predicted and a
  ground-truth box of a frame lies within 1e-4 of 0.5, in float64 or float32, so the two
  references' float widths cannot disagree on a match;
* frames with more than 50 rows (ActivityNet keeps the 50 best of each frame, MMAction2 1.x and
  0.x all);
* predictions on frames without ground truth and on excluded frames, ground-truth frames whose
  only actions are outside the label map;
* near-duplicate detections (same box and class, another score) and exact duplicate rows (only
  where both copies are false positives, so their tied scores cannot change an AP);
* zero-width / zero-height predicted boxes (ActivityNet and MMAction2 0.x drop them per frame,
  MMAction2 1.x counts them as false positives) and, in one case, boxes with x2 < x1 or y2 < y1
  (ActivityNet and 0.x drop them, MMAction2 1.x raises ValueError: that case's
  expected_mmaction2.json holds the error);
* timestamps written as 902 and as 0902 (both mean frame key "video,0902");
* (cases 8, 9) custom classes: a subset of the label map's ids, as MMAction2 0.x's
  ``custom_classes`` gives it to ``ava_eval`` (which keeps only those ids, in the ground truth and
  in the results); the subset holds a class without prediction, one without ground truth and one
  whose ground truth is all on excluded keyframes; and boxes narrower than half a thousandth
  (their sides meet once written with 3 decimals: MMAction2 0.x drops them, the others score a
  false positive).

Scores are unique over the whole file (apart from exact duplicate rows), so no result of the
``activitynet`` and ``mmaction2`` protocols depends on how ties are ordered. ``mmaction2-0.x``
evaluates the scores rounded to 3 decimals, where the older cases (0-7) do tie: their
``expected_mmaction2-0.x.json`` lists in ``tied_classes`` the classes whose AP depends on the
order of equal scores (a score shared by a true and a false positive), and the ``numpy`` that
ordered them. The custom-class cases 8 and 9 are tie-free at 3 decimals too (each class's
scores differ in their first 3 decimals, apart from exact duplicate rows, both false positives),
so every protocol's expectation there is independent of any sort.

The inputs need only numpy (and stdet's label names); the expected results need the reference
environments described in ``ava_eval_reference.py`` (one with slowfast 1.0 and MMAction2 1.2.0,
one with MMAction2 0.24.1)::

    python3 -m venv /tmp/evalenv
    /tmp/evalenv/bin/pip install --no-deps slowfast==1.0 mmaction2==1.2.0 numpy
    python3 -m venv /tmp/mm0env
    /tmp/mm0env/bin/pip install --no-deps mmaction2==0.24.1 numpy
    .venv/bin/python benchmarks/make_ava_eval_cases.py            # inputs + expected results
    .venv/bin/python benchmarks/make_ava_eval_cases.py --no-reference   # inputs only

(``--reference-python`` and ``--reference-python-0x`` name other interpreters of the two
environments.) The inputs are deterministic: rerunning rewrites the same bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from stdet.data.labels import ava_label_map  # noqa: E402  (names only; imports no torch)

NAMES = ava_label_map()
IOU_MARGIN = 1e-4  # no predicted/GT IoU of a frame within this distance of 0.5
PROTOCOLS = ("activitynet", "mmaction2", "mmaction2-0.x")
TIE_FREE_DECIMALS = 3  # cases 8, 9: each class's scores differ in their first 3 decimals


# --------------------------------------------------------------------------------------------
# boxes


def iou(a, b, dtype=np.float64) -> float:
    """IoU of two (x1, y1, x2, y2) boxes computed in ``dtype``."""
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    iw = max(dtype(0), min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(dtype(0), min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def clear_of_threshold(box, gt_boxes) -> bool:
    """True when no IoU of ``box`` with ``gt_boxes`` is near 0.5 (float64 or float32)."""
    for g in gt_boxes:
        for dtype in (np.float64, np.float32):
            if abs(iou(box, g, dtype) - 0.5) < IOU_MARGIN:
                return False
    return True


def random_box(rng) -> tuple:
    w, h = rng.uniform(0.08, 0.35), rng.uniform(0.25, 0.6)
    x1, y1 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
    box = np.round([x1, y1, x1 + w, y1 + h], 3)
    return tuple(float(v) for v in np.clip(box, 0, 1))


def jitter_to_iou(rng, gt, lo: float, hi: float, gt_boxes) -> tuple:
    """A box (4 decimals) whose IoU with ``gt`` lies in [lo, hi], clear of 0.5 for all GT boxes."""
    g = np.asarray(gt, dtype=float)
    size = np.array([g[2] - g[0], g[3] - g[1]] * 2)
    for _ in range(500):
        target = rng.uniform(lo, hi)
        d = rng.normal(size=4) * size
        far = 1.0
        while iou(g, np.clip(g + far * d, 0, 1)) > target and far < 64:
            far *= 2
        near = 0.0
        for _ in range(50):  # IoU falls (roughly) as the box moves along d
            mid = (near + far) / 2
            if iou(g, np.clip(g + mid * d, 0, 1)) > target:
                near = mid
            else:
                far = mid
        box = np.round(np.clip(g + near * d, 0, 1), 4)
        if box[2] - box[0] < 0.01 or box[3] - box[1] < 0.01:
            continue
        box = tuple(float(v) for v in box)
        if lo <= iou(g, box) <= hi and clear_of_threshold(box, gt_boxes):
            return box
    raise RuntimeError(f"no box with IoU in [{lo}, {hi}] found for {gt}")


def free_box(rng, gt_boxes) -> tuple:
    """A random box (4 decimals), clear of 0.5 IoU with every GT box of the frame."""
    while True:
        w, h = rng.uniform(0.05, 0.4), rng.uniform(0.15, 0.7)
        x1, y1 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        box = tuple(float(v) for v in np.round([x1, y1, x1 + w, y1 + h], 4))
        if clear_of_threshold(box, gt_boxes):
            return box


# --------------------------------------------------------------------------------------------
# writing


def write_label_map(path: Path, ids, form: str = "item") -> None:
    lines = []
    for i in ids:
        if form == "item":
            lines += ["item {", f'  name: "{NAMES[i]}"', f"  id: {i}", "}"]
        else:
            group = ("PERSON_MOVEMENT" if i <= 14 else "PERSON_INTERACTION" if i >= 64
                     else "OBJECT_MANIPULATION")
            lines += ["label {", f'  name: "{NAMES[i]}"', f"  label_id: {i}",
                      f"  label_type: {group}", "}"]
    path.write_text("\n".join(lines) + "\n")


def ts_text(ts: int, padded: bool) -> str:
    return f"{ts:04d}" if padded else str(ts)


def box_text(box, decimals: int) -> str:
    return ",".join(f"{v:.{decimals}f}" for v in box)


@dataclass
class Pred:
    video: str
    ts: int
    box: tuple
    action: int
    raw: float  # confidence before it is turned into a unique score
    score: float = 0.0
    can_duplicate: bool = False  # an exact copy of this row would be a false positive too


@dataclass
class Case:
    name: str
    about: list
    label_ids: list
    gt: list = field(default_factory=list)          # (video, ts, box, action, person)
    preds: list = field(default_factory=list)       # Pred
    excluded: list = field(default_factory=list)    # (video, ts)
    label_form: str = "item"
    pad_gt: bool = True
    pad_pred: bool = False
    shuffle_preds: bool = False
    custom_classes: list | None = None
    exact_duplicates: int = 0
    tie_free_3dp: bool = False


def assign_scores(rng, case: Case) -> None:
    """Unique 6-decimal scores ordered like the rows' raw confidences."""
    n = len(case.preds)
    values = np.sort(rng.choice(np.arange(1, 1_000_000), size=n, replace=False)) / 1e6
    order = np.argsort([p.raw for p in case.preds], kind="stable")
    for rank, idx in enumerate(order):
        case.preds[idx].score = float(values[rank])


def assign_scores_tie_free(rng, case: Case) -> None:
    """Unique 6-decimal scores, ordered like the raw confidences within each class, whose first 3
    decimals differ within each class: ``k/1000 + j/1e6`` with a distinct ``k`` per row of a
    class and ``j < 500`` (so ``'%.3f'`` gives ``k/1000``), ``j`` drawn until the score is unique
    in the file."""
    used = set()
    for action in sorted({p.action for p in case.preds}):
        rows = [p for p in case.preds if p.action == action]
        assert len(rows) < 10 ** TIE_FREE_DECIMALS, f"class {action}: too many rows"
        thousandths = np.sort(rng.choice(np.arange(1, 1000), size=len(rows), replace=False))
        for rank, idx in enumerate(np.argsort([p.raw for p in rows], kind="stable")):
            while True:
                micro = int(thousandths[rank]) * 1000 + int(rng.integers(0, 500))
                if micro not in used:
                    break
            used.add(micro)
            rows[idx].score = micro / 1e6


def write_case(rng, case: Case, out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_label_map(out / "labels.pbtxt", case.label_ids, case.label_form)
    with open(out / "gt.csv", "w") as f:
        for video, ts, box, action, person in case.gt:
            f.write(f"{video},{ts_text(ts, case.pad_gt)},{box_text(box, 3)},{action},{person}\n")
    with open(out / "excluded.csv", "w") as f:
        for video, ts in case.excluded:
            f.write(f"{video},{ts_text(ts, True)}\n")

    rows = [(p.video, p.ts, p.box, p.action, p.score) for p in case.preds]
    scores = [r[4] for r in rows]
    assert len(set(f"{s:.6f}" for s in scores)) == len(scores), "scores are not unique"
    if case.exact_duplicates:
        candidates = [i for i, p in enumerate(case.preds) if p.can_duplicate]
        picks = rng.choice(candidates, size=min(case.exact_duplicates, len(candidates)),
                           replace=False)
        rows += [rows[i] for i in sorted(picks)]
    if case.shuffle_preds:
        rows = [rows[i] for i in rng.permutation(len(rows))]
    else:
        rows.sort(key=lambda r: (r[0], r[1]))
    with open(out / "pred.csv", "w") as f:
        for video, ts, box, action, score in rows:
            f.write(f"{video},{ts_text(ts, case.pad_pred)},{box_text(box, 4)},{action},"
                    f"{score:.6f}\n")
    if case.custom_classes:
        (out / "custom_classes.txt").write_text(",".join(map(str, case.custom_classes)) + "\n")
    return {"case": case.name, "gt_rows": len(case.gt), "pred_rows": len(rows),
            "label_ids": case.label_ids, "custom_classes": case.custom_classes,
            "tie_free_at_3_decimals": case.tie_free_3dp, "exercises": case.about}


# --------------------------------------------------------------------------------------------
# the cases


def hand_case() -> Case:
    """Tiny, checkable by hand (expected values worked out in cases.json's "about")."""
    v = "hand_video01"
    A, B = (0.100, 0.200, 0.400, 0.800), (0.500, 0.100, 0.900, 0.900)
    C, D = (0.200, 0.200, 0.500, 0.900), (0.300, 0.300, 0.600, 0.900)
    case = Case("case_0", [], label_ids=[5, 17, 80])
    case.gt = [(v, 902, A, 17, 1), (v, 902, A, 80, 1), (v, 902, B, 80, 2), (v, 902, B, 2, 2),
               (v, 903, C, 5, 1), (v, 904, D, 17, 1)]
    case.excluded = [(v, 904)]
    a1, a2 = (0.12, 0.21, 0.41, 0.80), (0.205, 0.200, 0.505, 0.800)
    b1 = (0.500, 0.100, 0.900, 0.516)
    c1, zero = (0.21, 0.20, 0.50, 0.88), (0.30, 0.20, 0.30, 0.90)
    assert iou(a1, A) > 0.85 and 0.47 < iou(a2, A) < 0.49 and 0.51 < iou(b1, B) < 0.53
    case.preds = [Pred(v, 902, a1, 17, 0.9), Pred(v, 902, a1, 80, 0.3),
                  Pred(v, 902, b1, 80, 0.8), Pred(v, 902, b1, 80, 0.7),
                  Pred(v, 902, a2, 17, 0.6), Pred(v, 902, b1, 2, 0.95),
                  Pred(v, 903, c1, 5, 0.4), Pred(v, 903, zero, 5, 0.85),
                  Pred(v, 904, D, 17, 0.99), Pred(v, 905, (0.1, 0.1, 0.3, 0.5), 17, 0.5)]
    for p in case.preds:
        p.score = p.raw
    case.about = [
        "hand-checkable; 902: class 17 TP (IoU .89) + FP (IoU .48), class 80 TP at IoU .52 + "
        "near-duplicate FP + TP, id 2 not in the label map (GT and pred)",
        "903: zero-width box (ActivityNet and MMAction2 0.x drop it, MMAction2 1.x counts an FP)",
        "904 excluded (GT + pred), 905 prediction without GT",
        "by hand: activitynet 17=1, 80=5/6, 5=1, mAP=17/18; mmaction2 17=0.5 (gt_count counts "
        "the excluded GT), 80=5/6, 5=0.5, mAP=11/18; mmaction2-0.x as activitynet (no frame over "
        "50 rows, no box or score that 3 decimals change)",
    ]
    return case


@dataclass
class Config:
    seed: int
    n_videos: int
    ts_per_video: int
    label_ids: list
    extra_ids: list            # ids used in GT/pred that are not in the label map
    no_pred_id: int | None     # GT, never predicted
    no_gt_id: int | None       # predicted, never in GT
    excluded_only_id: int | None  # GT only on excluded frames (and predicted elsewhere)
    empty_id: int | None       # in the label map, neither GT nor predicted
    persons: tuple = (1, 5)
    actions: tuple = (1, 3)
    dets_per_person: tuple = (1, 2)
    classes_per_det: tuple = (2, 5)
    fp_boxes: tuple = (0, 2)
    n_dense: int = 0           # frames with > 50 predicted rows
    n_crowded: int = 0         # frames pushed over 50 rows by high-scored ids outside the map
    n_pred_only: int = 2       # frames with predictions and no GT
    n_excluded: int = 2        # GT frames that are excluded (predictions on them too)
    n_extra_excluded: int = 1  # excluded keys with predictions only / nothing at all
    n_outside_only: int = 1    # GT frames whose only actions are outside the label map
    n_near_dups: int = 3
    n_exact_dups: int = 3
    n_zero_width: int = 2
    n_invalid: int = 0
    n_sub_milli: int = 0       # boxes narrower than 0.0005: their sides meet at 3 decimals
    iou_mix: tuple = (0.6, 0.15, 0.15, 0.1)  # high, just above, just below, low
    label_form: str = "item"
    pad_gt: bool = True
    pad_pred: bool = False
    shuffle_preds: bool = False
    custom_classes: list | None = None
    tie_free_3dp: bool = False  # scores distinct at 3 decimals within each class


def video_ids(rng, n: int) -> list:
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"))
    return sorted("".join(rng.choice(alphabet, 11)) for _ in range(n))


def random_case(name: str, cfg: Config, about: list) -> Case:
    rng = np.random.default_rng(cfg.seed)
    case = Case(name, about, label_ids=sorted(cfg.label_ids), label_form=cfg.label_form,
                pad_gt=cfg.pad_gt, pad_pred=cfg.pad_pred, shuffle_preds=cfg.shuffle_preds,
                custom_classes=cfg.custom_classes, exact_duplicates=cfg.n_exact_dups,
                tie_free_3dp=cfg.tie_free_3dp)
    special = {cfg.no_gt_id, cfg.excluded_only_id, cfg.empty_id} - {None}
    gt_pool = [i for i in cfg.label_ids if i not in special] + list(cfg.extra_ids)
    pred_pool = ([i for i in cfg.label_ids if i not in {cfg.no_pred_id, cfg.empty_id}]
                 + list(cfg.extra_ids))
    videos = video_ids(rng, cfg.n_videos)

    frames = []  # (video, ts) with GT
    for v in videos:
        ts = np.sort(rng.choice(np.arange(902, 951), size=cfg.ts_per_video, replace=False))
        frames += [(v, int(t)) for t in ts]
    order = rng.permutation(len(frames))
    excluded = {frames[i] for i in order[:cfg.n_excluded]}
    outside_only = {frames[i] for i in order[cfg.n_excluded:cfg.n_excluded + cfg.n_outside_only]}
    dense = {frames[i] for i in order[cfg.n_excluded + cfg.n_outside_only:][:cfg.n_dense]}

    def pred_rows_for_frame(v, t, persons, gt_boxes, dense_frame):
        """Predictions for one frame: jittered person boxes scored for several classes."""
        out = []
        n_cls = (8, 11) if dense_frame else cfg.classes_per_det
        for box, acts in persons:
            n_det = rng.integers(cfg.dets_per_person[0], cfg.dets_per_person[1] + 1)
            if dense_frame:
                n_det = 2
            for _ in range(n_det):
                kind = rng.choice(4, p=cfg.iou_mix)
                lo, hi = [(0.6, 0.97), (0.5 + 2 * IOU_MARGIN, 0.53),
                          (0.47, 0.5 - 2 * IOU_MARGIN), (0.1, 0.45)][kind]
                dbox = jitter_to_iou(rng, box, lo, hi, gt_boxes)
                k = int(rng.integers(n_cls[0], n_cls[1] + 1))
                classes = [a for a in acts if a in pred_pool and rng.random() < 0.85]
                others = [c for c in pred_pool if c not in classes]
                classes += list(rng.choice(others, size=min(max(k - len(classes), 0),
                                                            len(others)), replace=False))
                for c in classes:
                    c = int(c)
                    raw = rng.normal(1.2 if c in acts and kind < 2 else -0.3, 1.0)
                    out.append(Pred(v, t, dbox, c, raw))
        n_fp = int(rng.integers(cfg.fp_boxes[0], cfg.fp_boxes[1] + 1)) + (4 if dense_frame else 0)
        for _ in range(n_fp):
            fbox = free_box(rng, gt_boxes)
            k = int(rng.integers(n_cls[0], n_cls[1] + 1))
            for c in rng.choice(pred_pool, size=min(k, len(pred_pool)), replace=False):
                out.append(Pred(v, t, fbox, int(c), rng.normal(-0.5, 1.0)))
        return out

    person_id = 0
    for v, t in frames:
        n_persons = int(rng.integers(cfg.persons[0], cfg.persons[1] + 1))
        if (v, t) in dense:
            n_persons = max(n_persons, 4)
        persons = []
        for _ in range(n_persons):
            person_id += 1
            box = random_box(rng)
            if (v, t) in outside_only:
                acts = [int(rng.choice(cfg.extra_ids))]
            else:
                n_act = int(rng.integers(cfg.actions[0], cfg.actions[1] + 1))
                acts = [int(a) for a in rng.choice(gt_pool, size=n_act, replace=False)]
                if (v, t) in excluded and cfg.excluded_only_id is not None:
                    acts.append(cfg.excluded_only_id)
            persons.append((box, acts))
            case.gt += [(v, t, box, a, person_id) for a in acts]
        gt_boxes = [p[0] for p in persons]
        # keep GT boxes of a frame apart from each other's 0.5 (a detection matching one box
        # exactly at IoU ~0.5 of another would be fragile)
        case.preds += pred_rows_for_frame(v, t, persons, gt_boxes, (v, t) in dense)

    # frames with predictions and no GT: later timestamps of the same videos and an unseen video
    unseen = video_ids(rng, 1)[0]
    for k in range(cfg.n_pred_only):
        v, t = (videos[k % len(videos)], 951 + k) if k % 2 == 0 else (unseen, 902 + k)
        persons = [(random_box(rng), [int(rng.choice(gt_pool))]) for _ in range(2)]
        case.preds += pred_rows_for_frame(v, t, persons, [], False)

    # excluded keys besides GT frames: one with predictions only, one with nothing
    case.excluded = sorted(excluded)
    for k in range(cfg.n_extra_excluded):
        v, t = videos[-1], 960 + k
        case.excluded.append((v, t))
        persons = [(random_box(rng), [int(rng.choice(gt_pool))])]
        case.preds += pred_rows_for_frame(v, t, persons, [], False)
        case.excluded.append((videos[0], 970 + k))

    gt_classes = {}
    for v, t, _, a, _ in case.gt:
        gt_classes.setdefault((v, t), set()).add(a)

    # near duplicates: the same box and class again, another (unique) score
    cands = [p for p in case.preds if p.action in gt_classes.get((p.video, p.ts), set())]
    for i in rng.choice(len(cands), size=min(cfg.n_near_dups, len(cands)), replace=False):
        p = cands[int(i)]
        case.preds.append(Pred(p.video, p.ts, p.box, p.action, p.raw + rng.normal(0, 0.5)))

    # degenerate boxes on GT frames: zero width or height (valid for both BoxLists)
    gt_frames = [f for f in frames if f not in excluded and f not in outside_only]
    in_map = [c for c in pred_pool if c not in cfg.extra_ids]
    for k in range(cfg.n_zero_width):
        v, t = gt_frames[int(rng.integers(len(gt_frames)))]
        x, y = float(np.round(rng.uniform(0.1, 0.9), 4)), float(np.round(rng.uniform(0.1, 0.9), 4))
        box = (x, 0.1, x, 0.8) if k % 2 == 0 else (0.1, y, 0.6, y)
        cls = sorted(gt_classes[(v, t)] & set(in_map)) or in_map
        case.preds.append(Pred(v, t, box, int(cls[0]), rng.normal(1.5, 0.5)))
    # inverted boxes (x2 < x1 or y2 < y1): ActivityNet drops them, MMAction2's BoxList raises
    for k in range(cfg.n_invalid):
        v, t = gt_frames[int(rng.integers(len(gt_frames)))]
        g = [b for (vv, tt, b, a, _) in case.gt if (vv, tt) == (v, t)][0]
        box = (g[2], g[1], g[0], g[3]) if k % 2 == 0 else (g[0], g[3], g[2], g[1])
        cls = sorted(gt_classes[(v, t)] & set(in_map)) or in_map
        case.preds.append(Pred(v, t, tuple(float(x) for x in box), int(cls[0]),
                               rng.normal(1.5, 0.5)))
    # boxes 0.0003 wide or high, drawn so their two sides round to the same thousandth
    for k in range(cfg.n_sub_milli):
        v, t = gt_frames[int(rng.integers(len(gt_frames)))]
        lo = float(np.round(rng.uniform(0.1, 0.8), 3)) + 0.0001
        side = (lo, round(lo + 0.0003, 4))
        other = tuple(float(x) for x in np.round(np.sort(rng.uniform(0.05, 0.95, 2)), 4))
        box = (side[0], other[0], side[1], other[1]) if k % 2 == 0 else (
            other[0], side[0], other[1], side[1])
        cls = sorted(gt_classes[(v, t)] & set(in_map)) or in_map
        case.preds.append(Pred(v, t, box, int(cls[0]), rng.normal(1.5, 0.5)))
    # frames with < 50 rows of the label map's classes and, with high-scored rows of other ids,
    # more than 50 in all (capping before the class filter would lose label-map rows)
    in_map_rows = {}
    for p in case.preds:
        if p.action not in cfg.extra_ids:
            in_map_rows[(p.video, p.ts)] = in_map_rows.get((p.video, p.ts), 0) + 1
    crowdable = [f for f in gt_frames if f not in dense and 20 <= in_map_rows.get(f, 0) < 45]
    for i in rng.choice(len(crowdable), size=min(cfg.n_crowded, len(crowdable)), replace=False):
        v, t = crowdable[int(i)]
        frame_gt = [b for (vv, tt, b, _, _) in case.gt if (vv, tt) == (v, t)]
        for _ in range(max(15, 56 - in_map_rows[(v, t)])):
            case.preds.append(Pred(v, t, free_box(rng, frame_gt), int(rng.choice(cfg.extra_ids)),
                                   rng.normal(2.5, 0.5)))

    # rows flagged as safe to duplicate exactly: no GT of that class on that frame
    rows_per_frame = {}
    for p in case.preds:
        rows_per_frame[(p.video, p.ts)] = rows_per_frame.get((p.video, p.ts), 0) + 1
    for p in case.preds:
        if (p.action not in gt_classes.get((p.video, p.ts), set())
                and rows_per_frame[(p.video, p.ts)] + cfg.n_exact_dups <= 50):
            p.can_duplicate = True

    (assign_scores_tie_free if cfg.tie_free_3dp else assign_scores)(rng, case)
    return case


def all_cases() -> list:
    cases = [hand_case()]
    base = dict(extra_ids=[2, 16, 44], no_pred_id=None, no_gt_id=None, excluded_only_id=None,
                empty_id=None)
    specs = [
        ("case_1", Config(seed=101, n_videos=1, ts_per_video=4, label_ids=[3, 8, 11, 27, 64, 80],
                          **{**base, "extra_ids": [2]}, persons=(1, 3), classes_per_det=(1, 3),
                          n_pred_only=1, n_excluded=1, n_outside_only=0, n_near_dups=1,
                          n_exact_dups=1, n_zero_width=1),
         ["small random case, one video, 4 frames; every feature once"]),
        ("case_2", Config(seed=202, n_videos=3, ts_per_video=7,
                          label_ids=[1, 4, 11, 12, 14, 17, 29, 45, 59, 62, 68, 74, 79],
                          **{**base, "no_pred_id": 4, "no_gt_id": 59, "empty_id": 62},
                          iou_mix=(0.3, 0.35, 0.35, 0.0)),
         ["IoU just above / just below 0.5 emphasised", "class with GT and no prediction (4)",
          "class predicted, never in GT (59)", "class with neither (62)"]),
        ("case_3", Config(seed=303, n_videos=2, ts_per_video=8,
                          label_ids=[5, 6, 10, 12, 15, 17, 36, 47, 57, 65, 70, 79, 80],
                          **base, n_dense=6, n_crowded=2, shuffle_preds=True, pad_pred=True),
         ["6 frames with 60-140 rows: ActivityNet's 50-a-frame cap",
          "2 frames with < 50 label-map rows and > 50 rows in all (high-scored ids outside the "
          "map): the class filter comes before the cap",
          "prediction rows in random order, timestamps 0902-style"]),
        ("case_4", Config(seed=404, n_videos=4, ts_per_video=5,
                          label_ids=[1, 3, 8, 11, 12, 20, 26, 30, 48, 61, 64, 66, 74, 78],
                          **{**base, "excluded_only_id": 66, "no_gt_id": 20},
                          n_pred_only=6, n_excluded=4, n_extra_excluded=2, n_outside_only=2,
                          n_zero_width=6, n_exact_dups=6),
         ["many predictions on frames without GT (ActivityNet: false positives; MMAction2: "
          "ignored)", "4 excluded GT frames + excluded keys with predictions only",
          "class 66 has GT only on excluded frames (ActivityNet: no GT, NaN; MMAction2: gt_count "
          "counts them, AP 0)", "GT frames whose only actions are outside the label map",
          "6 zero-width/height boxes"]),
        ("case_5", Config(seed=505, n_videos=6, ts_per_video=18,
                          label_ids=[1, 3, 4, 7, 9, 11, 12, 14, 17, 22, 24, 28, 29, 34, 38, 43, 49,
                                     58, 63, 64, 67, 69, 72, 77, 79, 80],
                          **{**base, "no_pred_id": 9, "no_gt_id": 43, "excluded_only_id": 72,
                             "empty_id": 7},
                          n_dense=4, n_crowded=1, n_pred_only=4, n_excluded=5, n_near_dups=10,
                          n_exact_dups=8,
                          n_zero_width=4, label_form="label"),
         ["large (~3,000 rows), 6 videos, timestamps 902-950",
          "label map in the 'label { name: label_id: label_type: }' form",
          "all special classes: 9 no prediction, 43 no GT, 72 GT only on excluded frames, "
          "7 neither"]),
        ("case_6", Config(seed=606, n_videos=3, ts_per_video=10,
                          label_ids=[3, 6, 10, 11, 12, 17, 27, 45, 61, 64, 74, 79, 80],
                          **{**base, "no_pred_id": 6}, n_dense=2,
                          custom_classes=[3, 6, 10, 17, 27, 74, 80]),
         ["custom classes 3,6,10,17,27,74,80 (expected_*_custom.json): both references restrict "
          "the class whitelist; 6 has GT and no prediction", "also evaluated on the full map"]),
        ("case_7", Config(seed=707, n_videos=2, ts_per_video=6,
                          label_ids=[1, 8, 12, 14, 17, 28, 46, 59, 64, 74, 79],
                          **base, n_invalid=4, pad_gt=False),
         ["4 inverted boxes (x2 < x1 or y2 < y1): ActivityNet drops them; MMAction2's BoxList "
          "raises ValueError (expected_mmaction2.json records the error); MMAction2 0.x drops "
          "them", "GT timestamps written unpadded (902)"]),
        ("case_8", Config(seed=808, n_videos=4, ts_per_video=8,
                          label_ids=[1, 3, 5, 8, 11, 12, 14, 17, 20, 24, 27, 45, 59, 64, 74, 79,
                                     80],
                          **{**base, "extra_ids": [2, 16], "no_pred_id": 5, "no_gt_id": 20,
                             "excluded_only_id": 79, "empty_id": 24},
                          n_dense=3, n_crowded=1, n_excluded=3, n_sub_milli=3,
                          custom_classes=[1, 5, 12, 17, 20, 27, 64, 79, 80], tie_free_3dp=True),
         ["custom classes 1,5,12,17,20,27,64,79,80 of a 17-class label map (expected_*_custom."
          "json), as MMAction2 0.x's AVADataset passes them to ava_eval: (0, *custom), the 0 "
          "dropped; the subset holds 5 (GT, no prediction), 20 (predicted, no GT), 79 (GT only "
          "on excluded frames) and classes of all three groups; the other classes are predicted "
          "too, and ignored", "also evaluated on the full map",
          "3 boxes 0.0003 wide or high: written with 3 decimals they have no area (MMAction2 0.x "
          "drops them; the others count false positives)",
          "scores distinct at 3 decimals within each class: no protocol depends on tie order"]),
        ("case_9", Config(seed=909, n_videos=5, ts_per_video=9,
                          label_ids=[1, 4, 6, 8, 10, 11, 12, 14, 15, 17, 22, 27, 30, 45, 48, 59,
                                     64, 65, 74, 77, 79, 80],
                          **{**base, "extra_ids": [2, 44], "no_pred_id": 6, "no_gt_id": 15,
                             "excluded_only_id": 65, "empty_id": 4},
                          n_dense=4, n_pred_only=4, n_excluded=3, n_zero_width=3, n_sub_milli=4,
                          iou_mix=(0.3, 0.35, 0.35, 0.0), label_form="label",
                          shuffle_preds=True, pad_pred=True,
                          custom_classes=[4, 6, 10, 12, 14, 15, 30, 48, 65, 74, 77, 80],
                          tie_free_3dp=True),
         ["custom classes 4,6,10,12,14,15,30,48,65,74,77,80 of a 22-class label map in the "
          "'label {}' form: 4 has neither GT nor prediction, 6 GT only, 15 predictions only, 65 "
          "GT only on excluded frames", "also evaluated on the full map",
          "IoU just above / just below 0.5 emphasised: 3-decimal boxes move some across 0.5",
          "4 dense frames (> 50 rows before the class filter), prediction rows shuffled, "
          "0902-style timestamps", "4 boxes 0.0003 wide or high, 3 zero-width boxes",
          "scores distinct at 3 decimals within each class: no protocol depends on tie order"]),
    ]
    for name, cfg, about in specs:
        cases.append(random_case(name, cfg, about))
    return cases


# --------------------------------------------------------------------------------------------


def run_reference(python: str, case_dir: Path, protocol: str, custom=None) -> dict:
    """Run the protocol's reference on a case; write and return ``expected_<protocol>[_custom]``."""
    script = ROOT / "benchmarks" / "ava_eval_reference.py"
    suffix = "_custom" if custom else ""
    out = case_dir / f"expected_{protocol}{suffix}.json"
    cmd = [python, str(script), "--protocol", protocol, "--gt", str(case_dir / "gt.csv"),
           "--pred", str(case_dir / "pred.csv"), "--label-map", str(case_dir / "labels.pbtxt"),
           "--exclude", str(case_dir / "excluded.csv"), "--json", str(out)]
    if protocol == "mmaction2":
        cmd.append("--check-ava-eval")
    if custom:
        cmd += ["--custom-classes", ",".join(map(str, custom))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in (0, 3) or not out.exists():
        raise RuntimeError(f"reference failed on {case_dir.name}/{protocol}:\n{proc.stderr}")
    return json.loads(out.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "ava_eval"))
    parser.add_argument("--reference-python", default="/tmp/evalenv/bin/python",
                        help="python with slowfast 1.0 and MMAction2 1.2.0 (activitynet, "
                        "mmaction2)")
    parser.add_argument("--reference-python-0x", default="/tmp/mm0env/bin/python",
                        help="python with MMAction2 0.24.1 (mmaction2-0.x)")
    parser.add_argument("--no-reference", action="store_true", help="write the inputs only")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    python = {"activitynet": args.reference_python, "mmaction2": args.reference_python,
              "mmaction2-0.x": args.reference_python_0x}
    missing = sorted({p for p in python.values() if not os.path.exists(p)})
    if not args.no_reference and missing:
        print(f"{', '.join(missing)} not found: writing the inputs only", file=sys.stderr)
        args.no_reference = True

    index = []
    for k, case in enumerate(all_cases()):
        rng = np.random.default_rng(1000 + k)  # picks the exact duplicates, orders the rows
        info = write_case(rng, case, out / case.name)
        if not args.no_reference:
            info["expected"] = {}
            variants = [None] + ([case.custom_classes] if case.custom_classes else [])
            for custom in variants:
                for protocol in PROTOCOLS:
                    res = run_reference(python[protocol], out / case.name, protocol, custom)
                    key = protocol + ("_custom" if custom else "")
                    info["expected"][key] = res.get("mAP", res.get("error"))
                    if case.tie_free_3dp and res.get("tied_classes"):
                        raise RuntimeError(f"{case.name}/{key}: tied classes "
                                           f"{res['tied_classes']} in a tie-free case")
        index.append(info)
        print(json.dumps({k: info[k] for k in ("case", "gt_rows", "pred_rows")}
                         | {"expected": info.get("expected")}))
    (out / "cases.json").write_text(json.dumps(index, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
