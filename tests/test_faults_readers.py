"""Faults planted in the text inputs of the readers and of the evaluator.

A BOM, a binary file given by mistake, digits of another script, a crowd keyframe, and results or
ground truth that evaluate but deserve a warning: each test writes the fault and checks the exact
error, the result, or the warning and its counts.
"""
from __future__ import annotations

import codecs
import json
import random

import numpy as np
import pytest

import stdet.evaluation.io as eval_io
from stdet.cli import main
from stdet.data import (AVADataError, read_annotations, read_excluded_timestamps, read_label_map)
from stdet.data.io import _first_binary_byte
from stdet.evaluation import FrameKeys, evaluate, read_box_csv

BOM = codecs.BOM_UTF8
ANNOTATIONS = ("vid1,0902,0.100,0.200,0.300,0.400,12,0\n"
               "vid1,0902,0.500,0.200,0.700,0.600,14,1\n"
               "vid1,0902,0.1,0.2,0.3,0.4,80,0\n"
               "-dash,1798,0.000,0.000,1.000,1.000,79,7\n")
EXCLUDED = "vid1,0902\n-dash,1798\n"
LABEL_MAP = 'item {\n  name: "stand"\n  id: 12\n}\nitem {\n  name: "watch (a person)"\n  id: 80\n}\n'
LABELS = {12: "stand", 80: "watch (a person)"}
A = (0.1, 0.1, 0.5, 0.5)
A_08 = (0.1, 0.1, 0.5, 0.45)      # IoU 0.875 with A
A_06 = (0.1, 0.1, 0.5, 0.35)      # IoU 0.625 with A
B = (0.5, 0.5, 0.9, 0.9)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


def error_of(func, *args, **kwargs) -> AVADataError:
    with pytest.raises(AVADataError) as info:
        func(*args, **kwargs)
    return info.value


def gt_text(rows) -> str:
    """Ground-truth rows ``(video, t, box, action, person)``."""
    return "".join(f"{v},{t:04d},{','.join(map(str, b))},{a},{p}\n" for v, t, b, a, p in rows)


def pred_text(rows) -> str:
    """Result rows ``(video, t, box, action, score)``."""
    return "".join(f"{v},{t:04d},{','.join(map(str, b))},{a},{s}\n" for v, t, b, a, s in rows)


def write_case(tmp_path, gt_rows, pred_rows):
    files = {"gt": tmp_path / "gt.csv", "pred": tmp_path / "pred.csv",
             "label_map": tmp_path / "labels.pbtxt"}
    files["gt"].write_text(gt_text(gt_rows))
    files["pred"].write_text(pred_text(pred_rows))
    files["label_map"].write_text(LABEL_MAP)
    return files


def same_annotations(a, b) -> bool:
    return list(a) == list(b) and all(
        np.array_equal(a[k].boxes, b[k].boxes) and a[k].actions == b[k].actions
        and np.array_equal(a[k].entity_ids, b[k].entity_ids) for k in a)


# ---- 1. a UTF-8 BOM reads as if it were not there -----------------------------------------------

def test_bom_annotation_csv_reads_as_without(tmp_path):
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_text(ANNOTATIONS)
    bom.write_bytes(BOM + ANNOTATIONS.encode())
    got = read_annotations(bom)
    assert list(got)[0] == ("vid1", 902)            # not "\ufeffvid1"
    assert same_annotations(got, read_annotations(plain))


def test_bom_excluded_timestamps_read_as_without(tmp_path):
    path = tmp_path / "ex.csv"
    path.write_bytes(BOM + EXCLUDED.encode())
    assert read_excluded_timestamps(path) == {("vid1", 902), ("-dash", 1798)}


def test_bom_label_map_reads_as_without(tmp_path):
    path = tmp_path / "l.pbtxt"
    path.write_bytes(BOM + LABEL_MAP.encode())
    assert read_label_map(path) == LABELS


def test_bom_ground_truth_and_results_evaluate_as_without(tmp_path):
    gt = [("v", 902, A, 12, 0), ("v", 902, B, 80, 1)]
    pred = [("v", 902, A_08, 12, 0.9), ("v", 902, B, 80, 0.8), ("v", 902, A_06, 80, 0.7)]
    plain = write_case(tmp_path, gt, pred)
    (tmp_path / "bom").mkdir()
    bom = write_case(tmp_path / "bom", gt, pred)
    for name in ("gt", "pred"):
        bom[name].write_bytes(BOM + bom[name].read_bytes())
    keys = FrameKeys()
    read_box_csv(bom["gt"], keys, scores=False)
    read_box_csv(bom["pred"], keys, scores=True)
    assert list(keys.codes) == ["v"]
    expected, got = evaluate(**plain), evaluate(**bom)
    assert got.to_dict() == expected.to_dict() and got.warnings == []


def test_bom_results_with_a_bad_row_name_its_line(tmp_path):
    """The line-by-line re-read that names a bad row counts lines as pandas does."""
    path = tmp_path / "pred.csv"
    bad_row = b"v,0902,0.1,x,0.5,0.5,12,0.9\n"
    path.write_bytes(BOM + pred_text([("v", 902, A, 12, 0.9)] * 2).encode() + bad_row)
    err = error_of(read_box_csv, path, FrameKeys(), scores=True)
    assert str(err) == f"{path}:3: y1 must be a number, got 'x'"


# ---- 2. a binary file is "not a text file" -------------------------------------------------------

def read_gt(path):
    return read_box_csv(path, FrameKeys(), scores=False)


def read_pred(path):
    return read_box_csv(path, FrameKeys(), scores=True)


READERS = [read_annotations, read_excluded_timestamps, read_label_map, read_gt, read_pred]


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
def test_binary_file_is_not_a_text_file(tmp_path, reader):
    path = tmp_path / "input"
    path.write_bytes(PNG)
    assert str(error_of(reader, path)) == (
        f"{path}: not a text file (byte 0x89 at offset 0 is not UTF-8 text)")


@pytest.mark.parametrize("size", [12_000, 300_000])
@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
def test_binary_tail_after_good_lines_is_found(tmp_path, reader, size):
    """Good text first, longer than the text reader's first buffer (8 KiB; and than pandas'
    first, with 300,000), then a byte that is not UTF-8: the error names its offset, whichever
    reader meets it."""
    if reader is read_label_map:
        good = "".join(f'item {{\n  name: "c{i}"\n  id: {i}\n}}\n' for i in range(1, size // 20))
    else:
        row = {read_annotations: ANNOTATIONS, read_excluded_timestamps: EXCLUDED}.get(
            reader, gt_text([("v", 902, A, 12, 0)]))
        good = row * (size // len(row))
    assert len(good) > 10_000
    path = tmp_path / "input"
    path.write_bytes(good.encode() + b"\xff\xfe" + good.encode())
    assert str(error_of(reader, path)) == (
        f"{path}: not a text file (byte 0xff at offset {len(good)} is not UTF-8 text)")


def test_nul_byte_makes_a_file_binary(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(ANNOTATIONS.encode() + b"vid1,0903\x00,0.1,0.2,0.3,0.4,12,0\n")
    assert str(error_of(read_annotations, path)) == (
        f"{path}: not a text file (byte 0x00 at offset {len(ANNOTATIONS) + 9} is not UTF-8 text)")


@pytest.mark.parametrize("reader", [read_gt, read_pred], ids=lambda r: r.__name__)
def test_nul_in_a_video_id_of_an_evaluation_csv(tmp_path, reader):
    """pandas would read ``v\\0w`` as a video id; the file is binary for pandas too."""
    good = gt_text([("v", 902, A, 12, 0)]) * 20_000
    path = tmp_path / "input.csv"
    path.write_bytes(good.encode() + b"v\0w,0902,0.1,0.1,0.5,0.5,12,0\n")
    assert str(error_of(reader, path)) == (
        f"{path}: not a text file (byte 0x00 at offset {len(good) + 1} is not UTF-8 text)")


def test_first_binary_byte_across_block_boundaries(tmp_path):
    path = tmp_path / "t"
    text = "é,ü,٣\n".encode()                       # 2-byte and 2-byte characters, cut by blocks
    path.write_bytes(text)
    assert [_first_binary_byte(path, block_size=n) for n in (1, 2, 3)] == [None] * 3
    path.write_bytes(text + "é".encode()[:1])          # a character cut by the end of the file
    assert _first_binary_byte(path, block_size=2) == (len(text), 0xc3)
    path.write_bytes(text[:1] + b"\x41" + text[2:])    # a lead byte followed by ASCII
    assert _first_binary_byte(path, block_size=1) == (0, 0xc3)


def test_binary_ground_truth_through_the_cli(tmp_path, capsys):
    files = write_case(tmp_path, [("v", 902, A, 12, 0)], [("v", 902, A, 12, 0.9)])
    files["gt"].write_bytes(PNG)
    assert main(["eval", "--gt", str(files["gt"]), "--pred", str(files["pred"]),
                 "--label-map", str(files["label_map"])]) == 2
    assert capsys.readouterr().err == (
        f"error: {files['gt']}: not a text file (byte 0x89 at offset 0 is not UTF-8 text)\n")


# ---- 3. digits that are not ASCII ----------------------------------------------------------------

@pytest.mark.parametrize("value", ["²", "٣", "1_2", "+3"])
def test_label_map_id_must_be_ascii_digits(tmp_path, value):
    path = tmp_path / "l.pbtxt"
    path.write_text(LABEL_MAP + f'item {{\n  name: "x"\n  id: {value}\n}}\n', encoding="utf-8")
    assert str(error_of(read_label_map, path)) == (
        f"{path}:11: id must be a positive integer, got {value!r}")


@pytest.mark.parametrize("row, message", [
    ("vid1,٠٩٠٣,0.1,0.2,0.3,0.4,12,0", "timestamp must be an integer, got '٠٩٠٣'"),
    ("vid1,0903,0.1,0.2,0.3,0.4,1_2,0", "action_id must be an integer, got '1_2'"),
    ("vid1,0903,0.1,0.2,0.3,0.4,12,²", "person_id must be an integer, got '²'"),
    ("vid1,0903,٠.١,0.2,0.3,0.4,12,0", "x1 must be a number, got '٠.١'"),
    ("vid1,0903,0.1,0.2,0.3,0.4_0,12,0", "y2 must be a number, got '0.4_0'"),
])
def test_annotation_fields_must_be_ascii_numbers(tmp_path, row, message):
    path = tmp_path / "a.csv"
    path.write_text(ANNOTATIONS + row + "\n", encoding="utf-8")
    assert str(error_of(read_annotations, path)) == f"{path}:5: {message}"


def test_excluded_timestamp_must_be_ascii_digits(tmp_path):
    path = tmp_path / "ex.csv"
    path.write_text(EXCLUDED + "vid1,٩٠٣\n", encoding="utf-8")
    assert str(error_of(read_excluded_timestamps, path)) == (
        f"{path}:3: timestamp must be an integer, got '٩٠٣'")


@pytest.mark.parametrize("row, message", [
    ("v,٩٠٣,0.1,0.1,0.5,0.5,12,0.9", "timestamp must be an integer, got '٩٠٣'"),
    ("v,0903,0.1,0.1,0.5,0.5,١٢,0.9", "action must be an integer, got '١٢'"),
    ("v,0903,0.1,0.1,0.5,0.5,12,0_9", "score must be a number, got '0_9'"),
    ("v,0903,0.1,0.1,٠.5,0.5,12,0.9", "x2 must be a number, got '٠.5'"),
])
def test_result_fields_must_be_ascii_numbers(tmp_path, row, message):
    path = tmp_path / "pred.csv"
    path.write_text(pred_text([("v", 902, A, 12, 0.9)] * 2) + row + "\n", encoding="utf-8")
    assert str(error_of(read_pred, path)) == f"{path}:3: {message}"


# ---- 4. merging the rows of a crowded keyframe ---------------------------------------------------

def merge_with_list_index(rows):
    """The former merge: ``list.index`` over a keyframe's boxes (the semantics to keep)."""
    out: dict = {}
    for video, t, box, action, person in rows:
        boxes, actions, persons = out.setdefault((video, t), ([], [], []))
        try:
            i = boxes.index(box)
        except ValueError:
            boxes.append(box)
            actions.append(set())
            persons.append(person)
            i = len(boxes) - 1
        actions[i].add(action)
    return {k: (b, [tuple(sorted(a)) for a in acts], p) for k, (b, acts, p) in out.items()}


def test_merge_matches_the_list_index_semantics(tmp_path):
    rng = random.Random(0)
    pool = [(round(x, 3), 0.2, round(x + 0.1, 3), 0.6) for x in np.linspace(0, 0.8, 12)]
    rows = [(rng.choice(["a", "b"]), rng.choice([902, 903]), rng.choice(pool), rng.randint(1, 80),
             rng.randint(0, 5)) for _ in range(600)]
    path = tmp_path / "a.csv"
    path.write_text("".join(f"{v},{t},{x1},{y1},{x2},{y2},{a},{p}\n"
                            for v, t, (x1, y1, x2, y2), a, p in rows))
    got = read_annotations(path)
    expected = merge_with_list_index(rows)
    assert list(got) == list(expected)
    for key, (boxes, actions, persons) in expected.items():
        np.testing.assert_array_equal(got[key].boxes, np.asarray(boxes, np.float32))
        assert got[key].actions == actions and got[key].entity_ids.tolist() == persons


def test_crowded_keyframe_of_20000_rows_and_5000_boxes(tmp_path):
    boxes = [(i / 10_000, 0.1, i / 10_000 + 0.25, 0.9) for i in range(5000)]
    rng = random.Random(1)
    # each box 4 rows (actions 1..4); the first row of every box in box order, the rest shuffled
    rest = [(b, a) for b in range(5000) for a in (2, 3, 4)]
    rng.shuffle(rest)
    rows = [(b, 1) for b in range(5000)] + rest
    path = tmp_path / "crowd.csv"
    path.write_text("".join(f"v,0902,{boxes[b][0]},{boxes[b][1]},{boxes[b][2]},{boxes[b][3]},{a},{b}\n"
                            for b, a in rows))
    (key,) = read_annotations(path)
    kf = read_annotations(path)[key]
    assert key == ("v", 902) and kf.boxes.shape == (5000, 4)
    np.testing.assert_array_equal(kf.boxes, np.asarray(boxes, np.float32))
    assert kf.actions == [(1, 2, 3, 4)] * 5000
    assert kf.entity_ids.tolist() == list(range(5000))


# ---- 5. evaluator warnings and their counts ------------------------------------------------------

def cli_eval(files, out, *extra):
    return main(["eval", "--gt", str(files["gt"]), "--pred", str(files["pred"]), "--label-map",
                 str(files["label_map"]), "--json", str(out), *extra])


def test_clean_input_has_no_warning_and_its_checks_in_json(tmp_path):
    files = write_case(tmp_path, [("v", 902, A, 12, 0)], [("v", 902, A, 12, 0.9)])
    result = evaluate(**files)
    assert result.warnings == []
    assert result.checks == {"gt_rows": 1, "duplicate_gt_rows": 0, "result_rows": 1,
                             "result_videos_not_in_gt": 0, "result_rows_not_in_gt": 0}
    assert result.to_dict()["checks"] == result.checks and result.to_dict()["warnings"] == []


@pytest.mark.parametrize("protocol, fate, ap12", [
    ("activitynet", "every class with ground truth gets AP 0", 0.0),
    ("mmaction2", "no class gets an AP (the mmaction2 protocol leaves classes without detections "
                  "out)", None)])
def test_empty_results_warn(tmp_path, capsys, protocol, fate, ap12):
    files = write_case(tmp_path, [("v", 902, A, 12, 0)], [])
    out = tmp_path / "out.json"
    assert cli_eval(files, out, "--protocol", protocol) == 0
    message = f"{files['pred']}: no result rows: {fate}"
    assert capsys.readouterr().err == f"warning: {message}\n"
    data = json.loads(out.read_text())
    assert data["per_class_ap"]["12"] == ap12
    assert data["warnings"] == [message]
    assert data["checks"] == {"gt_rows": 1, "duplicate_gt_rows": 0, "result_rows": 0,
                              "result_videos_not_in_gt": 0, "result_rows_not_in_gt": 0}


@pytest.mark.parametrize("protocol, fate, ap12", [
    ("activitynet", "of evaluated classes count as false positives", 1 / 5),
    ("mmaction2", "are ignored (mmaction2 protocol)", 1.0)])
def test_results_of_videos_not_in_ground_truth_warn(tmp_path, protocol, fate, ap12):
    ghosts = [(f"ghost{i}", 902, A, 12, 0.95) for i in range(4)]
    pred = [("v", 902, A, 12, 0.9), *ghosts, ("ghost0", 903, A, 80, 0.5), ("ghost3", 903, A, 1, 0.5)]
    files = write_case(tmp_path, [("v", 902, A, 12, 0)], pred)
    result = evaluate(**files, protocol=protocol)
    assert result.warnings == [
        f"{files['pred']}: 6 result rows of 4 videos not in the ground truth (e.g. ghost0, "
        f"ghost1, ghost2): wrong files or video ids? Those rows {fate}"]
    assert result.checks["result_rows"] == 7
    assert result.checks["result_videos_not_in_gt"] == 4
    assert result.checks["result_rows_not_in_gt"] == 6
    # the numbers are the protocol's: activitynet ranks the 4 ghost false positives before
    # the true positive, mmaction2 drops them
    assert result.per_class.set_index("class_id").loc[12, "ap"] == pytest.approx(ap12)


def test_counts_cover_rows_the_prefilter_drops(tmp_path, monkeypatch):
    """With several chunks the protocol's prefilter drops rows of unevaluated classes before
    they are kept; they still count as rows of the file."""
    monkeypatch.setattr(eval_io, "CHUNK_ROWS", 2)
    pred = [("v", 902, A, 12, 0.9), ("ghost", 902, A, 5, 0.9), ("ghost", 903, A, 6, 0.9),
            ("v", 902, B, 7, 0.9), ("ghost", 904, A, 8, 0.9)]
    files = write_case(tmp_path, [("v", 902, A, 12, 0)], pred)
    result = evaluate(**files)
    assert (result.checks["result_rows"], result.checks["result_videos_not_in_gt"],
            result.checks["result_rows_not_in_gt"]) == (5, 1, 3)
    assert result.per_class.set_index("class_id").loc[12, "ap"] == 1.0


def test_duplicate_ground_truth_rows_warn_and_are_evaluated_as_the_references_do(tmp_path):
    gt = [("v", 902, A, 12, 0), ("v", 902, A, 12, 0),    # a duplicate
          ("v", 902, A, 12, 1),                          # same box, another person: not one
          ("v", 903, B, 80, 0), ("v", 903, B, 80, 0), ("v", 903, B, 80, 0)]
    pred = [("v", 902, A_08, 12, 0.9), ("v", 902, A_06, 12, 0.8), ("v", 903, B, 80, 0.7),
            ("v", 903, B, 80, 0.6)]
    files = write_case(tmp_path, gt, pred)
    for protocol in ("activitynet", "mmaction2"):
        result = evaluate(**files, protocol=protocol)
        assert result.warnings == [
            f"{files['gt']}: 3 duplicate rows (the keyframe, box, action and person id of an "
            "earlier row; e.g. v,0902 action 12): each copy counts as one more ground-truth "
            "box, as in the reference evaluators, that no detection can match, lowering the recall"]
        assert result.checks["duplicate_gt_rows"] == 3 and result.checks["gt_rows"] == 6
        per_class = result.per_class.set_index("class_id")
        assert per_class.loc[12, "num_gt"] == 3 and per_class.loc[80, "num_gt"] == 3
        # each class: the first of the equal boxes takes the first detection; the second
        # detection is compared with that box again and is a false positive, so the other
        # boxes stay unmatched: precision 1, 1/2 at recall 1/3, 1/3
        assert per_class.loc[12, "ap"] == pytest.approx(1 / 3)
        assert per_class.loc[80, "ap"] == pytest.approx(1 / 3)
