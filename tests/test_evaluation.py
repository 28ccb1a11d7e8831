"""Frame-AP: hand-computed cases for every rule of the three protocols, bad input, the CLI, the
vectorized matching against a plain loop, the results CSV, parity with the reference evaluators,
and the in-memory API the book uses."""
from __future__ import annotations

import csv
import doctest
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stdet.evaluation
from stdet.cli import main
from stdet.data.errors import AVADataError
from stdet.evaluation import (BoxTable, FrameKeys, box_iou, evaluate, frame_ap, match_detections,
                              read_box_csv, read_results, write_results)
from stdet.evaluation.ava_ap import PROTOCOLS, _pairwise_iou, rank_like_mmaction2_0x, round_as_written

LABELS = {1: "bend/bow (at the waist)", 12: "stand", 17: "carry/hold (an object)", 80: "watch (a person)"}
A = (0.1, 0.1, 0.5, 0.5)          # a ground-truth box
B = (0.5, 0.5, 0.9, 0.9)          # another, disjoint from A
A_08 = (0.1, 0.1, 0.5, 0.45)      # IoU 0.875 with A
A_06 = (0.1, 0.1, 0.5, 0.35)      # IoU 0.625 with A
A_04 = (0.1, 0.1, 0.3, 0.42)      # IoU 0.4 with A


def write_case(tmp_path, gt_rows, pred_rows, excluded=(), labels=LABELS):
    lm = tmp_path / "labels.pbtxt"
    lm.write_text("".join(f'item {{\n  name: "{n}"\n  id: {i}\n}}\n' for i, n in labels.items()))
    gt = tmp_path / "gt.csv"
    gt.write_text("".join(f"{v},{t:04d},{b[0]},{b[1]},{b[2]},{b[3]},{a},{p}\n"
                          for p, (v, t, b, a) in enumerate(gt_rows)))
    pred = tmp_path / "pred.csv"
    pred.write_text("".join(f"{v},{t},{b[0]},{b[1]},{b[2]},{b[3]},{a},{s}\n"
                            for v, t, b, a, s in pred_rows))
    ex = tmp_path / "excluded.csv"
    ex.write_text("".join(f"{v},{t:04d}\n" for v, t in excluded))
    return dict(gt=gt, pred=pred, label_map=lm, exclude=ex)


def ap_of(result, class_id):
    return float(result.per_class.set_index("class_id").loc[class_id, "ap"])


# ---- matching -----------------------------------------------------------------------------------

def test_greedy_matching_in_score_order(tmp_path):
    files = write_case(tmp_path, [("v", 902, A, 12), ("v", 902, B, 12)], [
        ("v", 902, A_08, 12, 0.9),   # TP (A)
        ("v", 902, A_06, 12, 0.8),   # A already matched: FP
        ("v", 902, B, 12, 0.7),      # TP (B)
    ])
    for protocol in PROTOCOLS:
        r = evaluate(**files, protocol=protocol)
        # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> envelope 1, 2/3, 2/3
        assert ap_of(r, 12) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
        curve = r.curves[12]
        np.testing.assert_allclose(curve.precision, [1, 0.5, 2 / 3])
        np.testing.assert_allclose(curve.recall, [0.5, 0.5, 1])


def test_detection_is_compared_with_its_highest_iou_box_only(tmp_path):
    # the second detection overlaps both boxes; its best one is taken by the first detection, so
    # it is a false positive although the other box is still free
    box = (0.1, 0.1, 0.5, 0.5)
    right = (0.2, 0.1, 0.6, 0.5)        # IoU with box 0.6
    between = (0.17, 0.1, 0.57, 0.5)    # IoU 0.70 with box, 0.86 with right
    gt = [("v", 902, box, 12), ("v", 902, right, 12)]
    iou = _pairwise_iou(np.array([between, between]), np.array([box, right]), float32=False)
    assert iou[1] > iou[0] >= 0.5
    files = write_case(tmp_path, gt, [("v", 902, right, 12, 0.9), ("v", 902, between, 12, 0.8)])
    r = evaluate(**files)
    np.testing.assert_allclose(r.curves[12].precision, [1, 0.5])
    assert ap_of(r, 12) == pytest.approx(0.5)


def test_below_threshold_and_duplicates_are_false_positives(tmp_path):
    files = write_case(tmp_path, [("v", 902, A, 12)], [
        ("v", 902, A_04, 12, 0.95),      # IoU 0.4: FP
        ("v", 902, A, 12, 0.9),          # TP
        ("v", 902, A, 12, 0.85),         # duplicate row: FP
    ])
    r = evaluate(**files)
    np.testing.assert_allclose(r.curves[12].precision, [0, 0.5, 1 / 3])
    assert ap_of(r, 12) == pytest.approx(0.5)


def test_classes_are_matched_separately_and_outside_the_label_map_ignored(tmp_path):
    files = write_case(tmp_path, [("v", 902, A, 12), ("v", 902, A, 33)], [
        ("v", 902, A, 17, 0.99),         # right box, wrong class: FP for 17 (17 has no GT -> NaN)
        ("v", 902, A, 33, 0.98),         # 33 is not in the label map: ignored
        ("v", 902, A, 12, 0.5),
    ])
    r = evaluate(**files)
    assert ap_of(r, 12) == 1.0 and math.isnan(ap_of(r, 17))
    assert 33 not in set(r.per_class["class_id"])
    assert r.per_class.set_index("class_id").loc[17, "num_det"] == 1


# ---- per-protocol rules ---------------------------------------------------------------------------

def test_fifty_detections_per_keyframe(tmp_path):
    # 50 false positives score above the one true positive of the keyframe
    preds = [("v", 902, B, 1, 0.9 - i / 1000) for i in range(50)] + [("v", 902, A, 12, 0.1)]
    files = write_case(tmp_path, [("v", 902, A, 12), ("v", 902, B, 80)], preds)
    an = evaluate(**files, protocol="activitynet")
    mm = evaluate(**files, protocol="mmaction2")
    mm0 = evaluate(**files, protocol="mmaction2-0.x")
    assert ap_of(an, 12) == 0.0                  # the 51st detection was dropped
    assert ap_of(mm, 12) == 1.0                  # MMAction2 keeps every detection
    assert ap_of(mm0, 12) == 1.0                 # 0.x too
    assert an.per_class.set_index("class_id").loc[12, "num_det"] == 0


def test_keyframes_without_ground_truth(tmp_path):
    files = write_case(tmp_path, [("v", 902, A, 12)], [
        ("v", 903, A, 12, 0.9),          # keyframe 903 has no ground truth
        ("v", 902, A, 12, 0.8),
    ])
    assert ap_of(evaluate(**files, protocol="activitynet"), 12) == pytest.approx(0.5)
    assert ap_of(evaluate(**files, protocol="mmaction2-0.x"), 12) == pytest.approx(0.5)
    assert ap_of(evaluate(**files, protocol="mmaction2"), 12) == 1.0


def test_excluded_keyframes(tmp_path):
    files = write_case(tmp_path, [("v", 902, A, 12), ("v", 904, A, 12)], [
        ("v", 902, A, 12, 0.9),
        ("v", 904, A, 12, 0.95),         # excluded: ignored
        ("v", 905, A, 12, 0.99),         # no ground truth, excluded: not a false positive
    ], excluded=[("v", 904), ("v", 905)])
    an = evaluate(**files, protocol="activitynet")
    mm = evaluate(**files, protocol="mmaction2")
    mm0 = evaluate(**files, protocol="mmaction2-0.x")   # ava_eval(verbose=True): as ActivityNet
    for r in (an, mm0):
        assert ap_of(r, 12) == 1.0 and r.per_class.set_index("class_id").loc[12, "num_gt"] == 1
    # MMAction2 counts the excluded keyframe's ground truth: recall stops at 1/2
    assert ap_of(mm, 12) == 0.5 and mm.per_class.set_index("class_id").loc[12, "num_gt"] == 2


def test_class_without_detections_and_class_without_ground_truth(tmp_path):
    files = write_case(tmp_path, [("v", 902, A, 12), ("v", 902, B, 80)], [
        ("v", 902, A, 12, 0.9), ("v", 902, B, 17, 0.5)])
    an = evaluate(**files, protocol="activitynet")
    mm = evaluate(**files, protocol="mmaction2")
    mm0 = evaluate(**files, protocol="mmaction2-0.x")
    for r in (an, mm0):
        assert ap_of(r, 80) == 0.0 and r.map == pytest.approx(0.5)     # (1 + 0) / 2
    assert math.isnan(ap_of(mm, 80)) and mm.map == 1.0                  # 80 left out
    for r in (an, mm, mm0):
        assert math.isnan(ap_of(r, 17)) and math.isnan(ap_of(r, 1))
    assert an.group_map["person_movement"] == 1.0 and an.group_map["person_interaction"] == 0.0
    assert math.isnan(an.group_map["object_manipulation"])


def test_flipped_result_boxes(tmp_path):
    flipped = (0.5, 0.1, 0.1, 0.5)       # x2 < x1
    files = write_case(tmp_path, [("v", 902, A, 12)], [("v", 902, flipped, 12, 0.9), ("v", 902, A, 12, 0.8)])
    an = evaluate(**files, protocol="activitynet")
    assert ap_of(an, 12) == 1.0                   # dropped
    assert ap_of(evaluate(**files, protocol="mmaction2-0.x"), 12) == 1.0
    assert any("x2 < x1" in w for w in an.warnings)
    with pytest.raises(AVADataError, match=r"pred.csv:1:.*x2 < x1"):   # MMAction2 cannot score it
        evaluate(**files, protocol="mmaction2")
    # a box without area (x1 == x2): ActivityNet drops it, MMAction2 counts a false positive
    files = write_case(tmp_path, [("v", 902, A, 12)], [("v", 902, (0.3, 0.1, 0.3, 0.5), 12, 0.9),
                                                       ("v", 902, A, 12, 0.8)])
    assert ap_of(evaluate(**files, protocol="activitynet"), 12) == 1.0
    assert ap_of(evaluate(**files, protocol="mmaction2-0.x"), 12) == 1.0
    assert ap_of(evaluate(**files, protocol="mmaction2"), 12) == pytest.approx(0.5)


def test_mmaction2_0x_evaluates_the_results_as_written_with_3_decimals(tmp_path):
    """0.x writes every box coordinate and score as '%.3f' before its evaluator reads them."""
    gt_box = (0.1, 0.1, 0.5, 0.7003)
    crossing = (0.1, 0.1, 0.5, 0.4004)          # IoU 0.5004 as read, 0.4998 at 3 decimals
    sliver = (0.3001, 0.1, 0.3004, 0.5)         # 0.0003 wide: no width at 3 decimals
    assert box_iou(crossing, gt_box)[0, 0] > 0.5 > box_iou(round_as_written(crossing), gt_box)[0, 0]
    files = write_case(tmp_path, [("v", 902, gt_box, 12), ("v", 902, B, 12)],
                       [("v", 902, crossing, 12, 0.9), ("v", 902, B, 12, 0.8),
                        ("v", 902, sliver, 12, 0.95)])
    an = evaluate(**files, protocol="activitynet")
    mm0 = evaluate(**files, protocol="mmaction2-0.x")
    np.testing.assert_allclose(an.curves[12].precision, [0, 0.5, 2 / 3])    # sliver FP, two TPs
    np.testing.assert_allclose(mm0.curves[12].precision, [0, 0.5])         # crossing FP, B TP
    assert mm0.per_class.set_index("class_id").loc[12, "num_det"] == 2      # the sliver dropped
    assert ap_of(mm0, 12) == pytest.approx(0.25)


def test_round_as_written_is_python_formatting():
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.random(20000), np.round(rng.random(20000), 4),
                             np.round(rng.normal(0, 2, 5000), 4), np.arange(-40, 41) / 16,
                             [0.0, -0.0, 0.0005, 0.0015, 0.1235, 0.9995, 1e-300]])
    got = round_as_written(values)
    expected = np.array([float(f"{v:.3f}") for v in values])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))
    assert (np.round(values, 3) != expected).any()   # scaling first is not the same


def test_mmaction2_0x_ranks_a_class_with_the_references_own_call():
    """Each class's rows appended keyframe by keyframe (first-row order), each keyframe's rows in
    descending score (ties in file order), then np.argsort(scores)[::-1], as 0.x does."""
    rng = np.random.default_rng(7)
    n = 400
    keys = FrameKeys()
    rows = pd.DataFrame({"video": "v", "timestamp": rng.integers(902, 920, n),
                         "x1": 0.1, "y1": 0.1, "x2": 0.5, "y2": 0.5,
                         "action": rng.choice([12, 80], n),
                         "score": rng.integers(0, 30, n) / 1000})          # many ties
    det = BoxTable.from_rows(rows, keys)
    got = rank_like_mmaction2_0x(det)
    expected = []
    for action in (12, 80):
        appended = []
        for frame in dict.fromkeys(det.frame.tolist()):                    # first-row order
            idx = np.flatnonzero((det.frame == frame) & (det.labels == action))
            appended += sorted(idx.tolist(), key=lambda i: -det.scores[i])  # stable, as 0.x
        appended = np.array(appended)
        expected += appended[np.argsort(det.scores[appended])[::-1]].tolist()
    assert got.tolist() == expected


def test_ties_follow_file_order(tmp_path):
    gt = [("v", 902, A, 12), ("v", 903, A, 12)]
    tp, fp = ("v", 902, A, 12, 0.5), ("v", 903, B, 12, 0.5)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = evaluate(**write_case(tmp_path / "a", gt, [tp, fp]))
    second = evaluate(**write_case(tmp_path / "b", gt, [fp, tp]))
    assert ap_of(first, 12) == pytest.approx(0.5)            # TP ranked first
    assert ap_of(second, 12) == pytest.approx(0.25)          # FP ranked first: 1/2 * 1/2


def test_empty_prediction_file(tmp_path):
    files = write_case(tmp_path, [("v", 902, A, 12), ("v", 902, B, 80)], [])
    an = evaluate(**files)
    assert ap_of(an, 12) == 0.0 and ap_of(an, 80) == 0.0 and an.map == 0.0
    mm = evaluate(**files, protocol="mmaction2")
    assert math.isnan(mm.map)
    assert evaluate(**files, protocol="mmaction2-0.x").map == 0.0


def test_custom_classes(tmp_path):
    files = write_case(tmp_path, [("v", 902, A, 12), ("v", 902, B, 80)], [("v", 902, A, 12, 0.9)])
    r = evaluate(**files, custom_classes=[12, 17])
    assert list(r.per_class["class_id"]) == [12, 17] and r.map == 1.0
    with pytest.raises(AVADataError, match="not in the label map"):
        evaluate(**files, custom_classes=[12, 53])


# ---- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ("v,903,0.1,0.1,0.5,0.5,12", "expected 8 columns"),
    ("v,903,0.1,0.1,0.5,0.5,12,0.3,9", "expected 8 columns"),
    ("v,903,0.1,zero,0.5,0.5,12,0.3", "y1 must be a number"),
    ("v,9x3,0.1,0.1,0.5,0.5,12,0.3", "timestamp must be an integer"),
    ("v,903,0.1,0.1,0.5,0.5,12,", "score"),
])
def test_bad_result_rows_name_file_and_line(tmp_path, line, message):
    files = write_case(tmp_path, [("v", 902, A, 12)], [("v", 902, A, 12, 0.9)] * 2)
    with open(files["pred"], "a") as f:
        f.write(line + "\n")
    with pytest.raises(AVADataError, match=message) as info:
        evaluate(**files)
    assert f"{files['pred']}:3" in str(info.value)


def test_ground_truth_box_with_x2_below_x1_is_an_error(tmp_path):
    files = write_case(tmp_path, [("v", 902, A, 12), ("v", 902, (0.5, 0.1, 0.1, 0.5), 12)], [])
    with pytest.raises(AVADataError, match=r"gt.csv:2.*x2 < x1"):
        evaluate(**files)


def test_tolerated_input_is_counted(tmp_path):
    files = write_case(tmp_path, [("v", 902, A, 12)],
                       [("v", 902, (0.1, 0.1, 0.5, 1.02), 12, 0.9), ("v", 902, (-0.01, 0.1, 0.5, 0.5), 12, 0.8)],
                       excluded=[("ghost", 902)])
    r = evaluate(**files)
    assert any("2 boxes outside [0, 1]" in w for w in r.warnings)
    assert any("not in the ground truth" in w and "ghost" in w for w in r.warnings)


def test_missing_file(tmp_path):
    files = write_case(tmp_path, [("v", 902, A, 12)], [])
    with pytest.raises(AVADataError, match="file not found"):
        evaluate(**{**files, "pred": tmp_path / "nope.csv"})


def test_seven_column_results_score_one(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("v,902,0.1,0.1,0.5,0.5,12\n")
    table = read_box_csv(path, FrameKeys(), scores=True)
    assert table.scores.tolist() == [1.0]


# ---- CLI --------------------------------------------------------------------------------------------

def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    files = write_case(tmp_path, [("v", 902, A, 12), ("v", 902, B, 80)], [("v", 902, A, 12, 0.9)])
    out = tmp_path / "out.json"
    assert main(["eval", "--gt", str(files["gt"]), "--pred", str(files["pred"]), "--label-map",
                 str(files["label_map"]), "--exclude", str(files["exclude"]), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mAP@0.5IoU (activitynet): 50.00" in text and "stand" in text
    data = json.loads(out.read_text())
    assert data == {"mAP": 0.5, "per_class_ap": {"1": None, "12": 1.0, "17": None, "80": 0.0},
                    "person_movement": 1.0, "object_manipulation": None,
                    "person_interaction": 0.0, "protocol": "activitynet",
                    "checks": {"gt_rows": 2, "duplicate_gt_rows": 0, "result_rows": 1,
                               "result_videos_not_in_gt": 0, "result_rows_not_in_gt": 0},
                    "warnings": []}
    assert main(["eval", "--gt", str(files["gt"]), "--pred", str(files["pred"]), "--label-map",
                 str(files["label_map"]), "--protocol", "mmaction2", "--custom-classes", "12,80",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["per_class_ap"] == {"12": 1.0, "80": None}
    assert main(["eval", "--gt", str(files["gt"]), "--pred", str(files["pred"]), "--label-map",
                 str(files["label_map"]), "--protocol", "mmaction2-0.x", "--json", str(out)]) == 0
    assert "mAP@0.5IoU (mmaction2-0.x): 50.00" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["protocol"] == "mmaction2-0.x" and data["per_class_ap"]["80"] == 0.0
    assert main(["eval", "--gt", str(tmp_path / "nope.csv"), "--pred", str(files["pred"]),
                 "--label-map", str(files["label_map"])]) == 2
    assert "nope.csv" in capsys.readouterr().err


# ---- the vectorized matching against a loop --------------------------------------------------------

def _loop_reference(det, gt, float32):
    """Per keyframe and class, in processing order: best-IoU box, first claim wins."""
    tp = np.zeros(len(det), bool)
    taken = set()
    for i in range(len(det)):
        cands = [j for j in range(len(gt)) if gt.frame[j] == det.frame[i] and gt.labels[j] == det.labels[i]]
        cands.sort(key=lambda j: gt.order[j])
        if not cands:
            continue
        ious = [_pairwise_iou(det.boxes[i:i + 1], gt.boxes[j:j + 1], float32)[0] for j in cands]
        best = int(np.argmax(ious))
        if ious[best] >= 0.5 and cands[best] not in taken:
            taken.add(cands[best])
            tp[i] = True
    return tp


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("float32", [False, True])
def test_vectorized_matching_equals_loop(seed, float32):
    rng = np.random.default_rng(seed)
    n_gt, n_det = 40, 300
    frames = rng.integers(0, 6, n_gt + n_det)
    labels = rng.integers(0, 3, n_gt + n_det)
    centres = rng.random((n_gt, 2)) * 0.6 + 0.2
    gt_boxes = np.concatenate([centres - 0.1, centres + 0.1], axis=1)
    src = rng.integers(0, n_gt, n_det)
    det_boxes = gt_boxes[src] + rng.normal(0, 0.04, (n_det, 4))
    gt = BoxTable(frames[:n_gt], gt_boxes, labels[:n_gt], np.ones(n_gt), np.arange(n_gt))
    det = BoxTable(frames[n_gt:], det_boxes, labels[n_gt:], rng.random(n_det), np.arange(n_det))
    det.frame[:] = gt.frame[src] * (rng.random(n_det) < 0.8)   # mostly the source keyframe
    det.labels[:] = np.where(rng.random(n_det) < 0.7, gt.labels[src], det.labels)
    order = np.lexsort((det.order, -det.scores, det.labels, det.frame))
    det = det.take(order)
    expected = _loop_reference(det, gt, float32)
    np.testing.assert_array_equal(match_detections(det, gt, float32), expected)
    # the public matcher ranks the rows itself: any row order gives the same flags, row by row
    shuffled = rng.permutation(n_det)
    np.testing.assert_array_equal(match_detections(det.take(shuffled), gt, float32), expected[shuffled])


def test_float32_iou_follows_the_reference_arithmetic():
    rng = np.random.default_rng(0)
    a = np.sort(rng.random((50, 4)).reshape(50, 2, 2), axis=1).reshape(50, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.random((50, 4)).reshape(50, 2, 2), axis=1).reshape(50, 4)[:, [0, 2, 1, 3]]
    # the reference's order: [y1, x1, y2, x2] float32 arrays, np.maximum with float64 zeros
    ya, yb = a[:, [1, 0, 3, 2]].astype(np.float32), b[:, [1, 0, 3, 2]].astype(np.float32)
    h = np.maximum(np.zeros(50), np.minimum(ya[:, 2], yb[:, 2]) - np.maximum(ya[:, 0], yb[:, 0]))
    w = np.maximum(np.zeros(50), np.minimum(ya[:, 3], yb[:, 3]) - np.maximum(ya[:, 1], yb[:, 1]))
    inter = h * w
    area = lambda y: (y[:, 2] - y[:, 0]) * (y[:, 3] - y[:, 1])  # noqa: E731
    expected = inter / (area(ya) + area(yb) - inter)
    np.testing.assert_array_equal(_pairwise_iou(a, b, float32=True), expected)


def test_reading_in_chunks_changes_nothing(tmp_path, monkeypatch):
    """Results are read chunk by chunk and pre-filtered per chunk (50 per keyframe for
    ActivityNet); tiny chunks that split keyframes give the same APs and error lines."""
    rng = np.random.default_rng(3)
    gt = [("v", 902 + f, (0.1 * b, 0.1, 0.1 * b + 0.08, 0.5), int(rng.choice([1, 12, 80])))
          for f in range(4) for b in range(5)]
    scores = rng.permutation(2000) / 2000
    preds = [("v", 902 + f, (0.1 * b + rng.normal(0, 0.01), 0.1, 0.1 * b + 0.08, 0.5),
              int(rng.choice([1, 12, 17, 80, 33])), float(scores[i]))
             for i, (f, b) in enumerate((f, b) for f in range(4) for b in range(5) for _ in range(20))]
    rng.shuffle(preds)
    files = write_case(tmp_path, gt, preds)
    whole = {p: evaluate(**files, protocol=p) for p in PROTOCOLS}
    monkeypatch.setattr("stdet.evaluation.io.CHUNK_ROWS", 7)
    for protocol, expected in whole.items():
        chunked = evaluate(**files, protocol=protocol)
        np.testing.assert_array_equal(chunked.per_class["ap"], expected.per_class["ap"])
        np.testing.assert_array_equal(chunked.per_class["num_det"], expected.per_class["num_det"])
    with open(files["pred"], "a") as f:
        f.write("v,903,0.1,0.1,0.5,0.5,12\n")
    with pytest.raises(AVADataError, match=f"pred.csv:{len(preds) + 1}:.*expected 8 columns"):
        evaluate(**files)


# ---- parity with the reference evaluators ------------------------------------------------------
# tests/fixtures/ava_eval/case_*: random AVA-like cases made by benchmarks/make_ava_eval_cases.py
# (no tied scores), with the references' results written by benchmarks/ava_eval_reference.py in
# environments holding them (ActivityNet's evaluator as vendored by slowfast 1.0, MMAction2 1.2.0;
# MMAction2 0.24.1 for mmaction2-0.x). At 3 decimals the scores of cases 0-7 tie: the classes where
# that matters are the expectation's "tied_classes", ordered by the numpy it names.
FIXTURES = Path(__file__).parent / "fixtures" / "ava_eval"
CASES = sorted(p.name for p in FIXTURES.glob("case_*"))


def _expected_runs():
    for case in CASES:
        for protocol in PROTOCOLS:
            yield case, protocol, ""
            if (FIXTURES / case / "custom_classes.txt").exists():
                yield case, protocol, "_custom"


def test_every_case_has_every_protocols_expectation():
    assert len(CASES) >= 10
    for case, protocol, suffix in _expected_runs():
        assert (FIXTURES / case / f"expected_{protocol}{suffix}.json").exists(), (case, protocol)
    customs = [c for c in CASES if (FIXTURES / c / "custom_classes.txt").exists()]
    assert len(customs) >= 3
    for case in customs:  # custom classes: a strict subset of the label map
        labels = (FIXTURES / case / "labels.pbtxt").read_text()
        ids = {int(m) for m in re.findall(r"(?:label_)?id: (\d+)", labels)}
        custom = {int(c) for c in (FIXTURES / case / "custom_classes.txt").read_text().split(",")}
        assert custom < ids


@pytest.mark.parametrize("case, protocol, suffix", list(_expected_runs()))
def test_parity_with_the_reference_evaluators(case, protocol, suffix):
    folder = FIXTURES / case
    expected = json.loads((folder / f"expected_{protocol}{suffix}.json").read_text())
    custom = None
    if suffix:
        custom = [int(c) for c in (folder / "custom_classes.txt").read_text().replace("\n", ",").split(",") if c.strip()]
    run = lambda: evaluate(folder / "gt.csv", folder / "pred.csv", folder / "labels.pbtxt",  # noqa: E731
                           exclude=folder / "excluded.csv", protocol=protocol, custom_classes=custom)
    if "error" in expected:  # the reference stops; stdet names the file and line instead
        with pytest.raises(AVADataError, match=r"pred.csv:\d+"):
            run()
        return
    got = run().to_dict()
    assert got["per_class_ap"].keys() == expected["per_class_ap"].keys()
    # classes whose AP depends on the order of equal scores: stdet orders them with the
    # reference's own np.argsort call, which only another numpy could sort otherwise
    tied = set(map(str, expected.get("tied_classes", [])))
    if tied and expected["numpy"] != np.__version__:
        tied_groups = {k for k, lo, hi in (("person_movement", 0, 14), ("object_manipulation", 15, 63),
                                           ("person_interaction", 64, 999))
                       if any(lo <= int(c) <= hi for c in tied)}
        checked = [k for k in ("person_movement", "object_manipulation", "person_interaction")
                   if k not in tied_groups]
        expected["per_class_ap"] = {c: v for c, v in expected["per_class_ap"].items() if c not in tied}
    else:
        checked = ["mAP", "person_movement", "object_manipulation", "person_interaction"]
    for class_id, ap in expected["per_class_ap"].items():
        if ap is None:
            assert got["per_class_ap"][class_id] is None, class_id
        else:
            assert got["per_class_ap"][class_id] == pytest.approx(ap, abs=1e-6), class_id
    for key in checked:
        assert (got[key] is None) == (expected[key] is None)
        if expected[key] is not None:
            assert got[key] == pytest.approx(expected[key], abs=1e-6)


@pytest.mark.parametrize("pids, expected", [((1, 2), 1.0), ((2, 1), 0.5)])
def test_equal_iou_goes_to_the_box_with_the_higher_person_id(tmp_path, pids, expected):
    """The references read the person id as a score and sort a keyframe's boxes by it, so on
    equal IoU the first detection takes the box with the higher person id."""
    g1, g2 = (0.125, 0.0, 0.625, 0.5), (0.375, 0.0, 0.875, 0.5)
    between = (0.25, 0.0, 0.75, 0.5)               # IoU 0.1875 / 0.3125 with both, exactly
    assert box_iou(between, [g1, g2]).tolist() == [[0.6, 0.6]]
    files = write_case(tmp_path, [], [("v", 902, between, 12, 0.9), ("v", 902, g1, 12, 0.8)])
    files["gt"].write_text(f"v,0902,{','.join(map(str, g1))},12,{pids[0]}\n"
                           f"v,0902,{','.join(map(str, g2))},12,{pids[1]}\n")
    for protocol in PROTOCOLS:
        assert ap_of(evaluate(**files, protocol=protocol), 12) == expected


def test_plots_of_a_result(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from stdet.viz import ap_bars, pr_curves

    files = write_case(tmp_path, [("v", 902, A, 12), ("v", 902, B, 12), ("v", 902, B, 80)],
                       [("v", 902, A_08, 12, 0.9), ("v", 902, A_06, 12, 0.8), ("v", 902, B, 12, 0.7),
                        ("v", 902, B, 80, 0.6)])
    result = evaluate(**files)
    ax = pr_curves(result)
    assert len(ax.lines) == 4                                    # a curve and its envelope each
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [1, 2 / 3, 2 / 3])
    assert "stand (AP 83.3)" in [t.get_text() for t in ax.get_legend().get_texts()]
    bars = ap_bars(result)
    assert [round(p.get_width(), 1) for p in bars.patches] == [83.3, 100.0]


# ---- the results CSV: one writer, one reader -------------------------------------------------------

def test_write_results_then_read_them_back(tmp_path):
    rows = pd.DataFrame({
        "video": ["b", "a", "a", "a", "a", "a"],
        "timestamp": [902, 1000, 902, 902, 902, 902],
        "x1": [0.1, 0.2, 0.123456, 0.3, 0.4, 0.5], "y1": [0.1, 0.2, 0.2, 0.3, 0.4, 0.5],
        "x2": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0], "y2": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
        "action": [12, 12, 80, 12, 12, 12],
        "score": [0.9, 0.8, 0.7, 0.25, 0.5, 0.25]})   # rows 3 and 5 tie: they keep their order
    path = tmp_path / "results.csv"
    write_results(rows, path)
    assert path.read_text() == ("a,0902,0.4000,0.4000,0.9000,0.9000,12,0.5000\n"
                                "a,0902,0.3000,0.3000,0.8000,0.8000,12,0.2500\n"
                                "a,0902,0.5000,0.5000,1.0000,1.0000,12,0.2500\n"
                                "a,0902,0.1235,0.2000,0.7000,0.7000,80,0.7000\n"
                                "a,1000,0.2000,0.2000,0.6000,0.6000,12,0.8000\n"
                                "b,0902,0.1000,0.1000,0.5000,0.5000,12,0.9000\n")
    assert not list(tmp_path.glob(".results.csv.*.tmp"))
    with path.open(newline="") as f:
        lines = list(csv.reader(f))
    assert all(len(line) == 8 for line in lines)
    assert all(re.fullmatch(r"\d{4}", line[1]) for line in lines)
    assert all(re.fullmatch(r"\d\.\d{4}", v) for line in lines for v in line[2:6] + line[7:])
    keys = [(v, int(t), int(a), -float(s)) for v, t, *_, a, s in lines]
    assert keys == sorted(keys)
    table = read_results(path)
    assert len(table) == 6 and table.order.tolist() == list(range(6))
    assert table.labels.tolist() == [12, 12, 12, 80, 12, 12]
    np.testing.assert_array_equal(table.scores, [0.5, 0.25, 0.25, 0.7, 0.8, 0.9])
    np.testing.assert_array_equal(table.boxes[3], [0.1235, 0.2, 0.7, 0.7])
    shared = FrameKeys()
    read_results(path, shared)
    assert set(shared.codes) == {"a", "b"}
    with pytest.raises(ValueError, match="score"):
        write_results(rows.drop(columns="score"), path)


def test_an_empty_results_file(tmp_path):
    path = tmp_path / "results.csv"
    write_results(pd.DataFrame(columns=stdet.evaluation.RESULT_COLUMNS), path)
    assert path.read_text() == "" and len(read_results(path)) == 0


# ---- the in-memory API: what the book's worked example calls ---------------------------------------

def test_box_iou_is_the_matching_arithmetic():
    rng = np.random.default_rng(1)
    a = np.sort(rng.random((7, 2, 2)), axis=1).reshape(7, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.random((5, 2, 2)), axis=1).reshape(5, 4)[:, [0, 2, 1, 3]]
    for float32 in (False, True):
        matrix = box_iou(a, b, float32=float32)
        assert matrix.shape == (7, 5)
        for i in range(7):
            np.testing.assert_array_equal(matrix[i], _pairwise_iou(np.repeat(a[i:i + 1], 5, 0), b, float32))
    # a plain IoU, written out
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    np.testing.assert_allclose(box_iou(a, b), inter / (area(a)[:, None] + area(b)[None, :] - inter),
                               rtol=1e-12)
    assert box_iou(A, [A_08, B]).tolist() == [[pytest.approx(0.875), 0.0]]
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 5)


def test_box_table_from_rows_is_what_the_reader_reads(tmp_path):
    gt_rows = [("v1", 902, A, 12), ("v2", 903, B, 80), ("v1", 902, B, 12)]
    det_rows = [("v1", 902, A_08, 12, 0.9), ("v2", 903, B, 80, 0.4)]
    files = write_case(tmp_path, gt_rows, det_rows)
    file_keys = FrameKeys()
    from_file = read_box_csv(files["gt"], file_keys, scores=False)
    from_det_file = read_box_csv(files["pred"], file_keys, scores=True)
    keys = FrameKeys()
    gt = BoxTable.from_rows(gt_rows, keys)
    det = BoxTable.from_rows(pd.DataFrame({
        "video_id": ["v1", "v2"], "timestamp": [902, 903], "x1": [A_08[0], B[0]], "y1": [A_08[1], B[1]],
        "x2": [A_08[2], B[2]], "y2": [A_08[3], B[3]], "action_id": [12, 80], "score": [0.9, 0.4]}), keys)
    assert keys.codes == file_keys.codes
    for got, expected in ((gt, from_file), (det, from_det_file)):
        for name in ("frame", "boxes", "labels", "order"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    np.testing.assert_array_equal(det.scores, from_det_file.scores)
    assert gt.scores.tolist() == [1.0, 1.0, 1.0]           # no 8th column: 1.0, as the reader does
    assert len(BoxTable.from_rows([], keys)) == 0
    with pytest.raises(ValueError, match="a row is"):
        BoxTable.from_rows([("v", 902, A)], keys)
    with pytest.raises(ValueError, match="lack the columns"):
        BoxTable.from_rows(pd.DataFrame({"video": ["v"], "timestamp": [902]}), keys)
    with pytest.raises(ValueError, match="timestamps"):
        BoxTable.from_rows([("v", -1, A, 12)], keys)


def test_a_worked_example_in_memory_equals_the_files(tmp_path):
    """3 ground-truth boxes, 5 detections: the in-memory tables give the evaluator's answer."""
    gt_rows = [("v", 902, A, 12), ("v", 902, B, 12), ("v", 903, A, 12)]
    det_rows = [("v", 902, A_06, 12, 0.6),     # A already taken by the 0.9 detection: FP
                ("v", 902, A_08, 12, 0.9),     # TP (A)
                ("v", 903, A_04, 12, 0.8),     # IoU 0.4: FP
                ("v", 902, B, 12, 0.7),        # TP (B)
                ("v", 904, B, 12, 0.5)]        # a keyframe without ground truth: FP
    keys = FrameKeys()
    gt, det = BoxTable.from_rows(gt_rows, keys), BoxTable.from_rows(det_rows, keys)
    assert match_detections(det, gt).tolist() == [False, True, False, True, False]
    result = frame_ap(gt, det, [12])
    # ranked: TP, FP, TP, FP, FP -> precision 1, 1/2, 2/3, 1/2, 2/5 at recall 1/3, 1/3, 2/3, ...
    np.testing.assert_allclose(result.curves[12].precision, [1, 0.5, 2 / 3, 0.5, 0.4])
    assert result.ap[12] == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)
    from_files = evaluate(**write_case(tmp_path, gt_rows, det_rows))
    assert ap_of(from_files, 12) == result.ap[12]
    np.testing.assert_array_equal(from_files.curves[12].precision, result.curves[12].precision)
    excluded = np.array([keys.key("v", 904)])
    assert frame_ap(gt, det, [12], excluded).num_det[12] == 4


def test_public_names_and_their_examples():
    names = stdet.evaluation.__all__
    assert {"box_iou", "match_detections", "frame_ap", "BoxTable", "FrameKeys", "evaluate",
            "read_results", "write_results", "AVAEvalResult"} <= set(names)
    assert all(hasattr(stdet.evaluation, n) for n in names)
    assert callable(stdet.evaluation.evaluate)
    for obj in (box_iou, match_detections, frame_ap, BoxTable.from_rows, write_results):
        assert ">>>" in obj.__doc__, obj
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        for test in doctest.DocTestFinder().find(obj, globs={}):
            runner.run(test)
        assert runner.failures == 0 and runner.tries > 0, obj
