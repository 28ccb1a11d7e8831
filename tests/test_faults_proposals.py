"""Faults planted in proposal pickles: a file that does not fit the split, bad scores, hostile data.

A proposals file for another split, keys not written ``video,%04d`` or an empty dict used to turn
every keyframe silently into a whole-frame box; a NaN score dropped or kept boxes arbitrarily; and a
few hundred bytes of pickle could cost gigabytes (or crash the process) while being read. Each test
writes the fault and checks the error, the warning and its counts, or the memory the refusal took.
"""
from __future__ import annotations

import _codecs
import pickle
import subprocess
import sys
import textwrap
import tracemalloc
import warnings

import numpy as np
import pytest

from stdet.data import AVADataError, AVADataset, AVALayout, img_key, load_proposals
from stdet.data.proposals import check_coverage

BOX = [0.1, 0.2, 0.3, 0.4]
MiB = 2**20


def dump(path, obj, protocol: int = pickle.HIGHEST_PROTOCOL):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def error_of(func, *args, **kwargs) -> AVADataError:
    with pytest.raises(AVADataError) as info:
        func(*args, **kwargs)
    return info.value


def peak_memory_of(func, *args) -> tuple[BaseException | None, int]:
    """What ``func(*args)`` raised (None if nothing) and the peak bytes it allocated (Python and
    numpy allocations, both seen by tracemalloc)."""
    tracemalloc.start()
    try:
        func(*args)
        error = None
    except Exception as e:  # noqa: BLE001 - the caller checks which
        error = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


# ----------------------------------------------------------------------------------------------
# Coverage: does the file fit the dataset's keyframes?
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def layout(tiny_ava) -> AVALayout:
    return AVALayout(tiny_ava)


@pytest.fixture(scope="module")
def val_proposals(layout) -> dict[str, np.ndarray]:
    return load_proposals(layout.proposal_file("val"))


def val_dataset(layout, proposal_file) -> AVADataset:
    return AVADataset(layout.ann_file("val"), layout.rawframes, proposal_file=proposal_file,
                      exclude_file=layout.exclude_file("val"))


def test_full_coverage_is_silent(layout):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = val_dataset(layout, layout.proposal_file("val"))
    assert len(ds) == 7


def test_wrong_split_file_is_an_error(layout):
    path = layout.proposal_file("train")
    err = error_of(val_dataset, layout, path)
    train_key = next(iter(load_proposals(path)))
    assert str(err).startswith(f"{path}: none of its "), str(err)
    assert f"one of the 7 keyframes of {layout.ann_file('val')}" in str(err)
    assert repr(train_key) in str(err) and "another split" in str(err)


def test_empty_file_is_an_error(layout, tmp_path):
    path = dump(tmp_path / "empty.pkl", {})
    err = error_of(val_dataset, layout, path)
    assert str(err).startswith(f"{path}: the file has no entries"), str(err)
    assert "none of the 7 keyframes" in str(err)


def test_float_timestamps_are_an_error_with_a_hint(layout, val_proposals, tmp_path):
    video, t = next(iter(val_proposals)).split(",")
    float_keys = {f"{k.split(',')[0]},{int(k.split(',')[1])}.0": v for k, v in val_proposals.items()}
    path = dump(tmp_path / "float.pkl", float_keys)
    err = error_of(val_dataset, layout, path)
    assert str(err).startswith(f"{path}: none of its 8 keys matches"), str(err)
    assert "but 7 do once their timestamp is read as an integer"  # 1 excluded in str(err)
    assert f"'{video},{int(t)}.0' for '{video},{t}'" in str(err)
    assert "write keys as 'video_id,%04d'" in str(err)


def test_same_videos_other_timestamps_is_an_error(layout, val_proposals, tmp_path):
    shifted = {f"{k.split(',')[0]},{int(k.split(',')[1]) + 100:04d}": v
               for k, v in val_proposals.items()}
    path = dump(tmp_path / "shifted.pkl", shifted)
    err = error_of(val_dataset, layout, path)
    assert str(err).startswith(f"{path}: none of its 8 keys"), str(err)
    assert "its videos are theirs but no timestamp matches" in str(err)


def test_missing_keyframes_are_counted_and_get_the_whole_frame(layout, val_proposals, tmp_path):
    full = val_dataset(layout, layout.proposal_file("val"))
    gone = [img_key(*full.keys[1]), img_key(*full.keys[4])]
    path = dump(tmp_path / "holes.pkl", {k: v for k, v in val_proposals.items() if k not in gone})
    with pytest.warns(UserWarning) as record:
        ds = val_dataset(layout, path)
    messages = [str(w.message) for w in record if "have no proposals" in str(w.message)]
    assert len(messages) == 1, [str(w.message) for w in record]
    assert messages[0].startswith(f"{path}: 2 of 7 keyframes of {layout.ann_file('val')} have no "
                                  f"proposals ({gone[0]}, {gone[1]}); each gets the whole frame")
    assert len(ds) == 7
    boxes, scores = ds.proposals_of(full.keys[1])
    np.testing.assert_array_equal(boxes, [[0, 0, 1, 1]])
    np.testing.assert_array_equal(scores, [1])
    np.testing.assert_array_equal(ds.proposals_of(full.keys[0])[0], full.proposals_of(full.keys[0])[0])


def test_check_coverage_examples_and_counts(tmp_path):
    proposals = {f"v,{t:04d}": np.zeros((0, 5), np.float32) for t in (902, 903)}
    keys = [f"v,{t:04d}" for t in range(902, 908)]
    with pytest.warns(UserWarning, match=r"p\.pkl: 4 of 6 keyframes have no proposals "
                                         r"\(v,0904, v,0905, v,0906 \.\.\.\)"):
        assert check_coverage(proposals, keys, tmp_path / "p.pkl") == keys[2:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_coverage(proposals, keys[:2], tmp_path / "p.pkl") == []
        assert check_coverage({}, [], tmp_path / "p.pkl") == []  # no keyframe: nothing to miss


def test_keys_without_zero_padding_are_read_padded(layout, val_proposals, tmp_path):
    unpadded = {f"{k.split(',')[0]},{int(k.split(',')[1])}": v for k, v in val_proposals.items()}
    assert not set(unpadded) & set(val_proposals)
    path = dump(tmp_path / "unpadded.pkl", unpadded)
    first = next(iter(unpadded))
    with pytest.warns(UserWarning, match=f"read 8 of 8 keys written without the zero padding of "
                                         f"'video_id,%04d': '{first}' as '{first.replace(',', ',0')}'"):
        read = load_proposals(path)
    assert list(read) == list(val_proposals)
    for key, value in val_proposals.items():
        np.testing.assert_array_equal(read[key], value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = val_dataset(layout, path)  # every keyframe found: no coverage warning, no error
    assert len(ds) == 7 and all(img_key(*k) in ds.proposals for k in ds.keys)


def test_padded_and_unpadded_key_of_one_keyframe_is_an_error(tmp_path):
    path = dump(tmp_path / "p.pkl", {"v,902": np.array([BOX]), "v,0902": np.array([BOX])})
    err = error_of(load_proposals, path)
    assert str(err) == f"{path} [v,0902]: two keys name this keyframe (one without zero padding)"


# ----------------------------------------------------------------------------------------------
# Non-finite scores and boxes
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("score, shown", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
@pytest.mark.parametrize("as_list", [False, True])
def test_non_finite_score_names_the_key(tmp_path, score, shown, as_list):
    rows = np.array([[*BOX, 0.9], [*BOX, score]])
    path = dump(tmp_path / "p.pkl", {"vid,0901": np.array([[*BOX, 0.5]]),
                                     "vid,0902": rows.tolist() if as_list else rows})
    err = error_of(load_proposals, path)
    assert str(err) == f"{path} [vid,0902]: score is {shown} (row 1)"


def test_non_finite_box_names_the_key(tmp_path):
    path = dump(tmp_path / "p.pkl", {"vid,0902": np.array([[0.1, np.nan, 0.3, 0.4, 0.9]])})
    err = error_of(load_proposals, path)
    assert str(err).startswith(f"{path} [vid,0902]: box ") and "is not finite" in str(err)


# ----------------------------------------------------------------------------------------------
# Hostile pickles: refused quickly, with memory bounded by the file, never a crash
# ----------------------------------------------------------------------------------------------

def shared_nesting(width: int, depth: int) -> list:
    """``width ** depth`` numbers in nested lists that share each level: the pickle memoizes
    each level once, so the file is a few hundred bytes."""
    level = [0.5] * width
    for _ in range(depth - 1):
        level = [level] * width
    return level


@pytest.mark.parametrize("width, depth", [(10, 8), (5, 11)])  # 10**8 and 5**11 ~ 4.9e7 numbers
def test_nested_shared_lists_are_refused_with_bounded_memory(tmp_path, width, depth):
    path = dump(tmp_path / "laughs.pkl", {"v,0902": shared_nesting(width, depth)}, protocol=2)
    assert path.stat().st_size <= 2048
    error, peak = peak_memory_of(load_proposals, path)
    assert isinstance(error, AVADataError), error
    assert str(error).startswith(f"{path} [v,0902]: value is not an (N, 4) or (N, 5) numeric "
                                 "array: row 0 "), str(error)
    assert peak < 50 * MiB, peak / MiB


def test_object_array_is_refused_without_reading_its_items(tmp_path):
    array = np.empty(2, dtype=object)
    array[0] = array[1] = shared_nesting(10, 8)
    path = dump(tmp_path / "objects.pkl", {"v,0902": array}, protocol=2)
    assert path.stat().st_size <= 2048
    error, peak = peak_memory_of(load_proposals, path)
    assert isinstance(error, AVADataError), error
    assert str(error).startswith(f"{path}: unsafe pickle: refusing numpy dtype 'O8'"), str(error)
    assert peak < 50 * MiB, peak / MiB


def test_object_array_shorter_than_its_shape_does_not_crash(tmp_path):
    """numpy fills an object array's state from the pickled item list without checking its length
    against the shape, then reads past the list: plain numpy would crash the process (the load runs
    in a child process, so a crash fails this test instead of killing the run)."""
    script = textwrap.dedent("""
        import pickle, sys
        import numpy as np
        from numpy._core.multiarray import _reconstruct
        from stdet.data import AVADataError, load_proposals

        class Short:
            def __reduce__(self):
                return (_reconstruct, (np.ndarray, (0,), b"b"),
                        (1, (100000,), np.dtype("O"), False, [1, 2]))

        with open(sys.argv[1], "wb") as f:
            pickle.dump({"v,0902": Short()}, f, protocol=2)
        try:
            load_proposals(sys.argv[1])
        except AVADataError as e:
            print(e)
    """)
    path = tmp_path / "short.pkl"
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.startswith(f"{path}: unsafe pickle: refusing numpy dtype 'O8'"), done.stdout


class Reduce:
    """Pickles as ``func(*args)``, with ``state`` when given: a payload numpy would accept."""

    def __init__(self, func, args: tuple, state=None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def hex_chain(steps: int) -> Reduce:
    """``_codecs.encode(..._codecs.encode(b"a", "hex")..., "hex")``: each step doubles the bytes."""
    value = b"a"
    for _ in range(steps):
        value = Reduce(_codecs.encode, (value, "hex"))
    return value


@pytest.mark.parametrize("payload, fragment", [
    # 2**28 bytes from ~40 bytes of pickle
    (Reduce(bytes, (2**28,)), "refusing bytes(268435456,)"),
    # 2**27 bytes (and twice that on the way) from 27 nested calls
    (hex_chain(27), "refusing _codecs.encode("),
    # an uninitialised 256 MiB array
    (Reduce(np._core.multiarray._reconstruct, (np.ndarray, (2**28,), b"b")), "refusing _reconstruct("),
    # a dtype whose state adds fields (numpy would let it turn into one holding pointers)
    (Reduce(np.dtype, ("f8", False, True), (3, "|", None, ("a",), {"a": (np.dtype("f8"), 0)}, 8,
                                            1, 0)), "refusing dtype state"),
], ids=["bytes", "hex-chain", "reconstruct", "dtype-fields"])
def test_allowed_constructors_cannot_allocate_what_the_file_does_not_hold(tmp_path, payload, fragment):
    path = dump(tmp_path / "bomb.pkl", {"v,0902": payload}, protocol=4)
    assert path.stat().st_size <= 2048
    error, peak = peak_memory_of(load_proposals, path)
    assert isinstance(error, AVADataError), error
    assert str(error).startswith(f"{path}: unsafe pickle: {fragment}"), str(error)
    assert peak < 50 * MiB, peak / MiB


@pytest.mark.parametrize("as_list", [False, True])
def test_value_shared_by_many_keys_is_converted_once(tmp_path, as_list):
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 0.5, (2000, 2))
    rows = np.concatenate([corner, corner + 0.25, rng.uniform(0, 1, (2000, 1))], axis=1)
    value = rows.tolist() if as_list else rows  # float64: each key's float32 copy would be 40 KB
    path = dump(tmp_path / "shared.pkl", {f"v{i},0902": value for i in range(20000)})
    assert path.stat().st_size < 2 * rows.nbytes + 20000 * 20
    tracemalloc.start()
    try:
        read = load_proposals(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(read) == 20000 and peak < 50 * MiB, peak / MiB  # 20000 copies would be 800 MB
    np.testing.assert_array_equal(read["v19999,0902"], rows.astype(np.float32))


@pytest.mark.parametrize("payload", [
    Reduce(bytes, (2**28,)),
    hex_chain(27),
    Reduce(np._core.multiarray._reconstruct, (np.ndarray, (2**28,), b"b")),
], ids=["bytes", "hex-chain", "reconstruct"])
def test_a_checkpoint_is_read_with_the_same_guards(tmp_path, payload):
    """A torch checkpoint whose pickle holds such a payload (``weights_only`` refuses numpy, so
    the checkpoint reader's fallback unpickler meets it) is refused within bounded memory."""
    import io
    import zipfile

    import torch

    from stdet.engine.checkpoint import read_checkpoint

    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "meta": {}}, buffer)
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps({"state_dict": {}, "history": payload}, protocol=2)
            dst.writestr(item, data)
    error, peak = peak_memory_of(read_checkpoint, path)
    assert isinstance(error, AVADataError) and "refusing" in str(error), error
    assert str(error).startswith(f"{path}: cannot read checkpoint")
    assert peak < 50 * MiB, peak / MiB
