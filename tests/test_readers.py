"""The AVA readers: label maps, annotation CSVs, excluded timestamps, custom classes, proposals.

Every reader is fed good input (checked against hand-computed values) and bad input (checked for an
:class:`AVADataError` whose message starts with ``path:LINE`` or ``path [KEY]``).
"""
from __future__ import annotations

import builtins
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from stdet.data import (AVA_EVALUATED_IDS, AVADataError, CustomClasses, ava_label_map, img_key,
                        load_proposals, read_annotations, read_excluded_timestamps, read_label_map,
                        save_proposals, select_proposals, write_label_map)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def error_of(func, *args, **kwargs) -> AVADataError:
    with pytest.raises(AVADataError) as info:
        func(*args, **kwargs)
    return info.value


def assert_at_line(err: AVADataError, path: Path, line: int) -> None:
    assert str(err).startswith(f"{path}:{line}: "), str(err)
    assert err.path == str(path) and err.line == line


# ----------------------------------------------------------------------------------------------
# Label maps
# ----------------------------------------------------------------------------------------------

LABEL_FORM = """\
label {
  name: "watch (a person)"
  label_id: 80
  label_type: PERSON_INTERACTION
}
label {
  name: "bend/bow (at the waist)"
  label_id: 1
  label_type: PERSON_MOVEMENT
}
label {
  name: "stand"
  label_id: 12
  label_type: PERSON_MOVEMENT
}
"""

ITEM_FORM = """\
item {
  name: "carry/hold (an object)"
  id: 17
}

item {
  name: "crouch/kneel"
  id: 3
}
"""


def test_label_map_label_form_keeps_file_order(tmp_path):
    labels = read_label_map(write(tmp_path / "l.pbtxt", LABEL_FORM))
    assert list(labels.items()) == [(80, "watch (a person)"), (1, "bend/bow (at the waist)"),
                                    (12, "stand")]


def test_label_map_item_form(tmp_path):
    labels = read_label_map(write(tmp_path / "i.pbtxt", ITEM_FORM))
    assert list(labels.items()) == [(17, "carry/hold (an object)"), (3, "crouch/kneel")]


def test_label_map_one_line_forms(tmp_path):
    text = ('item { name: "x" id: 3 }\n'
            'label { name: "y z" label_id: 7 label_type: PERSON_MOVEMENT }\n'
            'item {name:"w" id:5} item { name: "v" id: 2 }\n')
    labels = read_label_map(write(tmp_path / "one.pbtxt", text))
    assert list(labels.items()) == [(3, "x"), (7, "y z"), (5, "w"), (2, "v")]


@pytest.mark.parametrize("form", ["label", "item"])
def test_write_label_map_round_trip(tmp_path, form):
    labels = {61: "watch (e.g., TV)", 3: "crouch/kneel", 80: "watch (a person)", 14: "walk"}
    path = tmp_path / f"{form}.pbtxt"
    write_label_map(path, labels, form=form)
    text = path.read_text()
    assert text.count(f"{form} {{") == 4
    assert ("label_type: PERSON_INTERACTION" in text) == (form == "label")
    assert list(read_label_map(path).items()) == list(labels.items())


def test_write_label_map_full_list_round_trip(tmp_path):
    path = tmp_path / "full.pbtxt"
    write_label_map(path, ava_label_map())
    labels = read_label_map(path)
    assert len(labels) == 80 and list(labels) == list(range(1, 81))
    assert labels[12] == "stand" and labels[80] == "watch (a person)"


def test_write_label_map_rejects_unknown_form(tmp_path):
    with pytest.raises(ValueError, match="form"):
        write_label_map(tmp_path / "x.pbtxt", {1: "a"}, form="json")


@pytest.mark.parametrize("text, line, fragment", [
    # non-integer id (line of the id)
    ('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: two\n}\n', 7, "integer"),
    ('label {\n  name: "a"\n  label_id: 1.5\n}\n', 3, "integer"),
    ('item {\n  name: "a"\n  id: -4\n}\n', 3, "integer"),
    # missing id / missing name: the line where the entry opens
    ('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n}\n', 5, "no id"),
    ('item {\n  name: "a"\n  id: 1\n}\n\nlabel {\n  label_id: 2\n}\n', 6, "no name"),
    # duplicated id: line of the second id
    ('item {\n  name: "a"\n  id: 4\n}\nitem {\n  name: "b"\n  id: 4\n}\n', 7, "defined twice"),
    ('item { name: "a" id: 4 }\nitem { name: "b" id: 5 }\nitem { name: "c" id: 4 }\n', 3,
     "defined twice"),
    # unclosed entry: the line where it opens (at end of file, or when the next one opens)
    ('item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 2\n', 5, "not closed"),
    ('item {\n  name: "a"\n  id: 1\nitem {\n  name: "b"\n  id: 2\n}\n', 4, "before the previous"),
    # garbage text
    ('item {\n  name: "a"\n  id: 1\n}\nthis is not pbtxt\n', 5, "cannot parse"),
    ('item {\n  name: "a"\n  colour: 1\n}\n', 3, "unexpected text"),
    ('name: "a"\n', 1, "unexpected text"),
    ('item {\n  name: "a"\n  id: 1\n}\n}\n', 5, "without an open entry"),
    # unquoted name
    ('item {\n  name: a\n  id: 1\n}\n', 2, "quoted"),
])
def test_label_map_errors_name_file_and_line(tmp_path, text, line, fragment):
    path = write(tmp_path / "bad.pbtxt", text)
    err = error_of(read_label_map, path)
    assert_at_line(err, path, line)
    assert fragment in str(err)


def test_label_map_missing_file(tmp_path):
    path = tmp_path / "nope.pbtxt"
    err = error_of(read_label_map, path)
    assert str(err).startswith(str(path)) and "not found" in str(err)


@pytest.mark.parametrize("text", ["", "\n\n   \n"])
def test_label_map_empty_file(tmp_path, text):
    path = write(tmp_path / "empty.pbtxt", text)
    err = error_of(read_label_map, path)
    assert str(err).startswith(str(path)) and "no label entries" in str(err)


# ----------------------------------------------------------------------------------------------
# Annotation CSVs
# ----------------------------------------------------------------------------------------------

GOOD_CSV = """\
vid1,0902,0.100,0.200,0.300,0.400,12,0
vid1,0902,0.500,0.200,0.700,0.600,14,1
vid1,0902,0.1,0.2,0.3,0.4,80,0
vid1,0902,0.100,0.200,0.300,0.400,17,0

-dash_id,1798,0.000,0.000,1.000,1.000,79,7
vid1,0902,0.100,0.200,0.300,0.400,80,0
vid1,0903,0.100,0.200,0.300,0.400,12,0
"""


def test_annotations_merge_rows_of_one_box(tmp_path):
    ann = read_annotations(write(tmp_path / "a.csv", GOOD_CSV))
    assert list(ann) == [("vid1", 902), ("-dash_id", 1798), ("vid1", 903)]
    kf = ann["vid1", 902]
    # rows 1, 3, 4, 6 are one box (0.1 and 0.100 parse alike); row 6 repeats row 3
    np.testing.assert_allclose(kf.boxes, [[0.1, 0.2, 0.3, 0.4], [0.5, 0.2, 0.7, 0.6]], rtol=0, atol=1e-7)
    assert kf.boxes.dtype == np.float32 and kf.boxes.shape == (2, 4)
    assert kf.actions == [(12, 17, 80), (14,)]
    assert kf.entity_ids.tolist() == [0, 1] and kf.entity_ids.dtype == np.int64
    assert ann["-dash_id", 1798].actions == [(79,)]
    assert ann["-dash_id", 1798].entity_ids.tolist() == [7]
    # same box at another keyframe is another keyframe's box
    assert ann["vid1", 903].actions == [(12,)]


def test_annotations_seven_columns(tmp_path):
    text = ("v,0905,0.1,0.1,0.2,0.2,12\n"
            "v,0905,0.1,0.1,0.2,0.2,11\n"
            "v,0905,0.3,0.1,0.4,0.2,12\n")
    ann = read_annotations(write(tmp_path / "a7.csv", text))
    assert list(ann) == [("v", 905)]
    assert ann["v", 905].actions == [(11, 12), (12,)]
    assert ann["v", 905].entity_ids.tolist() == [-1, -1]


def test_annotations_keys_are_int_timestamps(tmp_path):
    ann = read_annotations(write(tmp_path / "a.csv", "-x-,0902,0.1,0.1,0.2,0.2,1,0\n"))
    (key,) = ann
    assert key == ("-x-", 902) and type(key[1]) is int


def test_annotations_identical_rows_do_not_duplicate_actions(tmp_path):
    row = "v,0902,0.1,0.1,0.2,0.2,12,0\n"
    ann = read_annotations(write(tmp_path / "a.csv", row * 3))
    assert ann["v", 902].actions == [(12,)] and len(ann["v", 902].boxes) == 1


def test_multi_hot(tmp_path):
    kf = read_annotations(write(tmp_path / "a.csv", GOOD_CSV))["vid1", 902]
    labels = kf.multi_hot(81)
    assert labels.shape == (2, 81) and labels.dtype == np.float32
    expected = np.zeros((2, 81), np.float32)
    expected[0, [12, 17, 80]] = 1
    expected[1, 14] = 1
    np.testing.assert_array_equal(labels, expected)

    index = {12: 1, 80: 2}.get  # 17 and 14 map to None and are dropped
    np.testing.assert_array_equal(kf.multi_hot(3, index), [[0, 1, 1], [0, 0, 0]])


GOOD_ROW = "vid,0902,0.1,0.2,0.3,0.4,12,0"


@pytest.mark.parametrize("bad_row, fragment", [
    ("vid,0902,0.1,0.2,0.3,0.4", "got 6"),
    ("vid,0902,0.1,0.2,0.3,0.4,12,0,1", "got 9"),
    ("vid,09x2,0.1,0.2,0.3,0.4,12,0", "timestamp"),
    ("vid,0902,0.1,abc,0.3,0.4,12,0", "y1"),
    ("vid,0902,0.1,0.2,0.3,0.4,stand,0", "action_id"),
    ("vid,0902,0.1,0.2,0.3,0.4,12,p1", "person_id"),
    ("vid,0902,0.5,0.2,0.4,0.4,12,0", "x2 <= x1"),
    ("vid,0902,0.1,0.3,0.2,0.3,12,0", "y2 <= y1"),
    ("vid,0902,0.1,0.2,1.001,0.4,12,0", "outside [0, 1]"),
    ("vid,0902,-0.01,0.2,0.3,0.4,12,0", "outside [0, 1]"),
    ("vid,0902,0.1,nan,0.3,0.4,12,0", "not finite"),
    ("vid,0902,0.1,0.2,0.3,0.4,81,0", "action id 81"),
    ("vid,0902,0.1,0.2,0.3,0.4,0,0", "action id 0"),
    (",0902,0.1,0.2,0.3,0.4,12,0", "empty video id"),
    ("  ,0902,0.1,0.2,0.3,0.4,12,0", "empty video id"),
])
def test_annotation_errors_name_the_line(tmp_path, bad_row, fragment):
    # line 1 good, line 2 blank (still counted), line 3 good, line 4 bad
    path = write(tmp_path / "bad.csv", f"{GOOD_ROW}\n\n{GOOD_ROW}\n{bad_row}\n{GOOD_ROW}\n")
    err = error_of(read_annotations, path)
    assert_at_line(err, path, 4)
    assert fragment in str(err)


def test_annotation_error_on_first_line(tmp_path):
    path = write(tmp_path / "bad.csv", "vid,0902,0.1,0.2,0.3\n")
    assert_at_line(error_of(read_annotations, path), path, 1)


def test_annotations_valid_ids(tmp_path):
    path = write(tmp_path / "a.csv", f"{GOOD_ROW}\nvid,0902,0.1,0.2,0.3,0.4,53,0\n")
    assert read_annotations(path)["vid", 902].actions == [(12, 53)]
    err = error_of(read_annotations, path, valid_ids=set(AVA_EVALUATED_IDS))
    assert_at_line(err, path, 2)
    assert "53" in str(err)


def test_annotations_missing_file(tmp_path):
    path = tmp_path / "missing.csv"
    err = error_of(read_annotations, path)
    assert str(err).startswith(str(path)) and "not found" in str(err)


# ----------------------------------------------------------------------------------------------
# Excluded timestamps
# ----------------------------------------------------------------------------------------------

def test_excluded_timestamps(tmp_path):
    path = write(tmp_path / "ex.csv", "vid1,0902\n\n-dash,1798\nvid1,0902\n")
    assert read_excluded_timestamps(path) == {("vid1", 902), ("-dash", 1798)}


@pytest.mark.parametrize("bad_row, fragment", [("vid1,0903,1", "expected 2 columns"),
                                               ("vid1,09o3", "timestamp"),
                                               ("vid1", "expected 2 columns")])
def test_excluded_timestamps_errors(tmp_path, bad_row, fragment):
    path = write(tmp_path / "ex.csv", f"vid1,0902\n{bad_row}\n")
    err = error_of(read_excluded_timestamps, path)
    assert_at_line(err, path, 2)
    assert fragment in str(err)


def test_excluded_timestamps_missing_file(tmp_path):
    err = error_of(read_excluded_timestamps, tmp_path / "none.csv")
    assert "not found" in str(err)


# ----------------------------------------------------------------------------------------------
# Custom classes (the SEED recipe)
# ----------------------------------------------------------------------------------------------

SEED_IDS = [3, 6, 10, 27, 29, 38, 41, 48, 51, 53, 54, 59, 61, 64, 70, 72]


@pytest.fixture
def full_label_map(tmp_path):
    path = tmp_path / "ava_action_list_v2.2.pbtxt"
    write_label_map(path, ava_label_map())
    return path, read_label_map(path)


def test_custom_classes_seed_recipe(full_label_map):
    path, labels = full_label_map
    cc = CustomClasses.from_ids(SEED_IDS, labels, path)
    assert cc.ids == tuple(SEED_IDS)
    assert cc.num_classes == 17
    assert cc.to_new(3) == 1
    assert cc.to_new(53) == 10
    assert cc.to_new(72) == 16
    assert cc.to_new(12) is None
    assert cc.to_new(0) is None
    assert [cc.to_original(i) for i in range(1, 17)] == SEED_IDS
    assert all(cc.to_new(cc.to_original(i)) == i for i in range(1, 17))
    for bad in (0, 17):
        with pytest.raises(IndexError):
            cc.to_original(bad)
    cc.check_topk((3, 5))
    with pytest.raises(ValueError, match="17"):
        cc.check_topk((1, 17))


def test_custom_classes_checked_against_label_map(tmp_path):
    path = tmp_path / "eval.pbtxt"
    write_label_map(path, ava_label_map(AVA_EVALUATED_IDS), form="item")
    labels = read_label_map(path)
    assert len(labels) == 60 and 53 not in labels
    err = error_of(CustomClasses.from_ids, SEED_IDS, labels, path)
    assert str(err).startswith(f"{path} [53]: ")
    assert err.key == "53" and "not in the label map" in str(err)


@pytest.mark.parametrize("ids, fragment", [([0, 3], "0"), ([3, 6, 3], "repeat"), ([], "empty"),
                                           ([3, 81], "81")])
def test_custom_classes_rejected(full_label_map, ids, fragment):
    path, labels = full_label_map
    err = error_of(CustomClasses.from_ids, ids, labels, path)
    assert str(err).startswith(str(path)) and fragment in str(err)


def test_custom_classes_topk_must_fit(full_label_map):
    path, labels = full_label_map
    cc = CustomClasses.from_ids([1, 2], labels, path)
    assert cc.num_classes == 3
    cc.check_topk((1, 2))
    with pytest.raises(ValueError, match=r"topk \[3\]"):
        cc.check_topk((1, 3))


# ----------------------------------------------------------------------------------------------
# Proposals
# ----------------------------------------------------------------------------------------------

ARRAY = np.array([[0.1, 0.2, 0.3, 0.4, 0.95], [0.5, 0.5, 0.6, 0.7, 0.3]])


def dump(path: Path, obj, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def py2_pickle(key: str, array: np.ndarray) -> bytes:
    """The bytes Python 2's cPickle (protocol 2) writes for ``{key: float64 array}``: byte strings as
    BINSTRING, ``numpy.core.multiarray._reconstruct``, as in the public AVA proposal files."""
    array = np.ascontiguousarray(array, "<f8")
    data = array.tobytes()
    rows, cols = array.shape
    return (b"\x80\x02}q\x00U" + bytes([len(key)]) + key.encode() + b"q\x01"
            b"cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85q\x04"
            b"U\x01b\x87q\x05Rq\x06(K\x01K" + bytes([rows]) + b"K" + bytes([cols]) + b"\x86q\x07"
            b"cnumpy\ndtype\nq\x08U\x02f8K\x00K\x01\x87Rq\t(K\x03U\x01<NNNJ\xff\xff\xff\xff"
            b"J\xff\xff\xff\xffK\x00tb\x89T" + struct.pack("<i", len(data)) + data + b"tbs.")


def test_load_proposals_float32(tmp_path):
    props = load_proposals(dump(tmp_path / "p.pkl", {"vid,0902": ARRAY}))
    assert list(props) == ["vid,0902"]
    assert props["vid,0902"].dtype == np.float32
    np.testing.assert_array_equal(props["vid,0902"], ARRAY.astype(np.float32))


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_load_proposals_every_protocol(tmp_path, protocol):
    data = {"-vid,0902": ARRAY, "-vid,0903": ARRAY[:1, :4], "-vid,0904": np.zeros((0, 5))}
    props = load_proposals(dump(tmp_path / "p.pkl", data, protocol))
    assert list(props) == list(data)
    np.testing.assert_array_equal(props["-vid,0902"], ARRAY.astype(np.float32))
    assert props["-vid,0903"].shape == (1, 4)
    assert props["-vid,0904"].shape == (0, 5) and props["-vid,0904"].dtype == np.float32


def test_load_python2_pickle(tmp_path):
    raw = py2_pickle("vid,0902", ARRAY)
    assert b"numpy.core.multiarray" in raw and b"_codecs" not in raw
    path = tmp_path / "py2.pkl"
    path.write_bytes(raw)
    props = load_proposals(path)
    assert list(props) == ["vid,0902"]
    np.testing.assert_array_equal(props["vid,0902"], ARRAY.astype(np.float32))


def test_load_proposals_empty_list_and_dict(tmp_path):
    props = load_proposals(dump(tmp_path / "p.pkl", {"v,0902": [], "v,0903": ARRAY.tolist()}))
    assert props["v,0902"].shape == (0, 5)
    np.testing.assert_array_equal(props["v,0903"], ARRAY.astype(np.float32))
    assert load_proposals(dump(tmp_path / "e.pkl", {})) == {}


def test_save_load_proposals_round_trip(tmp_path):
    data = {"a,0902": ARRAY.astype(np.float32), "-b,1798": ARRAY[:, :4].astype(np.float32),
            "c,0905": np.zeros((0, 5), np.float32)}
    save_proposals(tmp_path / "out" / "p.pkl", data)
    assert not (tmp_path / "out" / "p.pkl.tmp").exists()
    back = load_proposals(tmp_path / "out" / "p.pkl")
    assert list(back) == list(data)
    for key, value in data.items():
        assert back[key].shape == value.shape
        np.testing.assert_array_equal(back[key], value)


@pytest.mark.parametrize("data, key, fragment", [
    ({"v,0902": ARRAY, "v,0903": np.ones((2, 3)) * 0.5}, "v,0903", "shape (2, 3)"),
    ({"v,0902": np.ones(5) * 0.5}, "v,0902", "shape (5,)"),
    ({"v,0902": np.array([[0.1, 0.2, 1.2, 0.4, 0.9]])}, "v,0902", "outside [0, 1]"),
    ({"v,0902": np.array([[0.3, 0.2, 0.1, 0.4, 0.9]])}, "v,0902", "x2 <= x1"),
    ({"v,0902": np.array([[-0.1, 0.2, 0.3, 0.4]])}, "v,0902", "outside [0, 1]"),
    ({"v,0902": ARRAY, 902: ARRAY}, "902", "keys must be"),
    ({("v", 902): ARRAY}, "('v', 902)", "keys must be"),
    ({"v0902": ARRAY}, "'v0902'", "keys must be"),
    ({"v,0902": "abc"}, "v,0902", "numeric"),
])
def test_load_proposals_bad_entries_name_the_key(tmp_path, data, key, fragment):
    path = dump(tmp_path / "p.pkl", data)
    err = error_of(load_proposals, path)
    assert str(err).startswith(f"{path} [{key}]: "), str(err)
    assert fragment in str(err)


def test_load_proposals_not_a_dict(tmp_path):
    path = dump(tmp_path / "p.pkl", [ARRAY])
    err = error_of(load_proposals, path)
    assert str(err).startswith(str(path)) and "expected a dict" in str(err)


def test_load_proposals_truncated_and_garbage(tmp_path):
    raw = pickle.dumps({"v,0902": ARRAY}, protocol=4)
    path = tmp_path / "cut.pkl"
    path.write_bytes(raw[: len(raw) // 2])
    err = error_of(load_proposals, path)
    assert str(err).startswith(str(path)) and "cannot unpickle" in str(err)
    path.write_bytes(b"this is not a pickle")
    assert "cannot unpickle" in str(error_of(load_proposals, path))


def test_load_proposals_missing_file(tmp_path):
    err = error_of(load_proposals, tmp_path / "none.pkl")
    assert "not found" in str(err)


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class RunsEval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload", [RunsShell, RunsEval])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_pickle_that_would_run_code_is_refused(tmp_path, payload, protocol):
    # The same payload really runs under plain pickle (so the test can catch a permissive loader).
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(payload(control), protocol=protocol))
    assert control.exists()

    marker = tmp_path / "marker"
    path = dump(tmp_path / "evil.pkl", {"v,0902": payload(marker)}, protocol)
    err = error_of(load_proposals, path)
    assert str(err).startswith(str(path)) and "unsafe" in str(err)
    assert not marker.exists()
    # at the top level too
    dump(path, payload(marker), protocol)
    assert "unsafe" in str(error_of(load_proposals, path))
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# select_proposals
# ----------------------------------------------------------------------------------------------

def props(*scores: float) -> np.ndarray:
    """One distinct box per score: x1 = 0.1 * i."""
    return np.array([[0.1 * i, 0.1, 0.1 * i + 0.05, 0.5, s] for i, s in enumerate(scores)])


def test_select_proposals_threshold():
    boxes, scores = select_proposals(props(0.95, 0.5, 0.91), 0.9)
    np.testing.assert_allclose(scores, [0.95, 0.91], rtol=1e-6)
    np.testing.assert_allclose(boxes, props(0.95, 0.5, 0.91)[[0, 2], :4], rtol=1e-6)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32


def test_select_proposals_all_below_threshold_keeps_the_best():
    boxes, scores = select_proposals(props(0.3, 0.6), 0.9)
    np.testing.assert_allclose(scores, [0.6], rtol=1e-6)
    np.testing.assert_allclose(boxes, props(0.3, 0.6)[[1], :4], rtol=1e-6)
    # ties with the best are all kept
    _, scores = select_proposals(props(0.6, 0.3, 0.6), 0.9)
    assert len(scores) == 2


def test_select_proposals_threshold_is_inclusive():
    _, scores = select_proposals(props(0.95, 0.9, 0.89), 0.9)
    np.testing.assert_allclose(scores, [0.95, 0.9], rtol=1e-6)
    _, scores = select_proposals(props(0.95, 0.5, 0.91), 0.5)
    assert len(scores) == 3


@pytest.mark.parametrize("empty", [None, np.zeros((0, 5)), np.zeros((0, 4))])
def test_select_proposals_missing_or_empty_gives_whole_frame(empty):
    boxes, scores = select_proposals(empty)
    np.testing.assert_array_equal(boxes, [[0, 0, 1, 1]])
    np.testing.assert_array_equal(scores, [1])


def test_select_proposals_without_scores_keeps_all():
    array = props(0.1, 0.2, 0.3)[:, :4]
    boxes, scores = select_proposals(array, 0.9)
    np.testing.assert_allclose(boxes, array, rtol=1e-6)
    np.testing.assert_array_equal(scores, [1, 1, 1])


def test_select_proposals_max_proposals():
    boxes, scores = select_proposals(props(0.95, 0.99, 0.5, 0.92, 0.97), 0.9, max_proposals=2)
    np.testing.assert_allclose(scores, [0.95, 0.99], rtol=1e-6)  # file order, not score order
    assert boxes.shape == (2, 4)


# ----------------------------------------------------------------------------------------------
# img_key
# ----------------------------------------------------------------------------------------------

def test_img_key():
    assert img_key("vid", 902) == "vid,0902"
    assert img_key("-5KQ66BBWC4", 1798) == "-5KQ66BBWC4,1798"
    assert img_key("v", 5) == "v,0005"
