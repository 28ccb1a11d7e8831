"""The long-term feature bank on disk: writer shards -> merge -> memory-mapped bank, and sampling.

Banks here are small (8 channels) so every test runs in milliseconds; the format is the same as a
2048-channel AVA bank's.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from stdet.lfb import (
    BANK_FORMAT,
    BankWriter,
    FeatureBank,
    bank_nbytes,
    bank_paths,
    import_mmaction2,
    merge_shards,
)

C = 8


def random_keyframes(seed: int = 0) -> dict[tuple[str, int], np.ndarray]:
    """Three videos, a few seconds each, 0..7 RoIs per second (some seconds have none)."""
    rng = np.random.default_rng(seed)
    frames = {}
    for video in ("vidB", "vidA", "vidC"):
        for second in rng.choice(np.arange(900, 960), size=6, replace=False):
            n = int(rng.integers(0, 8))
            frames[(video, int(second))] = rng.standard_normal((n, C)).astype(np.float32)
    frames[("vidA", 901)] = np.zeros((0, C), np.float32)  # a keyframe whose proposals were all rejected
    return frames


def write_bank(root: Path, frames, split: str = "train", dtype: str = "float32", ranks: int = 1,
               shard_size: int = 4) -> FeatureBank:
    """Deal the keyframes to ``ranks`` writers round-robin, as DistributedSampler does, and merge."""
    writers = [BankWriter(root, split, C, dtype, rank=r, shard_size=shard_size) for r in range(ranks)]
    for i, ((video, second), x) in enumerate(frames.items()):
        writers[i % ranks].add(video, second, x)
    for writer in writers:
        writer.close()
    return merge_shards(root, split)


# ----------------------------------------------------------------------------------------------
# Writer -> merge -> load
# ----------------------------------------------------------------------------------------------

def test_round_trip(tmp_path):
    frames = random_keyframes()
    merged = write_bank(tmp_path, frames)
    assert not (tmp_path / "lfb_train.parts").exists()
    bank = FeatureBank.load(tmp_path, "train")
    assert bank.keys == sorted(frames) == merged.keys
    assert bank.channels == C and bank.dtype == np.float32 and bank.split == "train"
    assert bank.num_rows == sum(len(x) for x in frames.values())
    for (video, second), x in frames.items():
        np.testing.assert_array_equal(bank.features_at(video, second), x)
    assert bank.features_at("vidA", 901).shape == (0, C)
    assert bank.features_at("vidA", 12).shape == (0, C)  # absent second
    assert bank.features_at("nope", 900).shape == (0, C)  # absent video

    meta = json.loads(bank_paths(tmp_path, "train")[1].read_text())
    assert meta["format"] == BANK_FORMAT and meta["rows"] == bank.num_rows and meta["dtype"] == "float32"
    assert [e[2] == e[3] for e in meta["entries"] if e[:2] == ["vidA", 901]] == [True]
    stops = [e[3] for e in meta["entries"]]
    assert [e[2] for e in meta["entries"]] == [0, *stops[:-1]]  # rows are contiguous, in key order


def test_float16_bank_rounds_like_numpy(tmp_path):
    frames = random_keyframes()
    half = write_bank(tmp_path / "half", frames, dtype="float16")
    full = write_bank(tmp_path / "full", frames)
    assert half.dtype == np.float16 and np.load(half.path_npy).dtype == np.float16
    assert half.keys == full.keys
    for video, second in frames:
        x = full.features_at(video, second)
        np.testing.assert_array_equal(half.features_at(video, second),
                                      x.astype(np.float16))
        np.testing.assert_allclose(half.features_at(video, second).astype(np.float32), x,
                                   rtol=1e-3, atol=1e-4)


def test_resume_skips_done_keyframes(tmp_path):
    frames = random_keyframes()
    items = list(frames.items())
    first = BankWriter(tmp_path, "train", C, shard_size=100)
    for (video, second), x in items[:5]:
        first.add(video, second, x)
    first.flush()
    first.add(*items[5][0], items[5][1])  # pending only: lost by the "crash"
    del first

    again = BankWriter(tmp_path, "train", C, rank=1)  # resumed with another world size
    assert again.done == {key for key, _ in items[:5]}
    assert BankWriter(tmp_path, "train", C, rank=0)._next_k == 1  # rank 0 continues after shard 0
    assert BankWriter(tmp_path, "val", C).done == set()  # another split
    for (video, second), x in items:
        if (video, second) in again.done:
            x = np.full_like(x, 99.0)  # re-adding a done keyframe is ignored
        again.add(video, second, x)
    again.close()
    bank = merge_shards(tmp_path, "train")
    assert bank.keys == sorted(frames)
    for (video, second), x in frames.items():
        np.testing.assert_array_equal(bank.features_at(video, second), x)


def test_two_ranks_merge_like_one(tmp_path):
    frames = random_keyframes(1)
    one = write_bank(tmp_path / "one", frames)
    two_root = tmp_path / "two"
    writers = [BankWriter(two_root, "val", C, rank=r, shard_size=3) for r in range(2)]
    for i, ((video, second), x) in enumerate(frames.items()):
        writers[i % 2].add(video, second, x)
    (video, second), x = next(iter(frames.items()))  # on rank 0
    writers[1].add(video, second, x)  # DistributedSampler padding: a repeat on rank 1
    for w in writers:
        w.close()
    written = sum(len(np.load(p)["seconds"]) for p in (two_root / "lfb_val.parts").iterdir())
    assert written == len(frames) + 1
    assert {p.name[:5] for p in (two_root / "lfb_val.parts").iterdir()} == {"rank0", "rank1"}
    two = merge_shards(two_root, "val")
    assert two.keys == one.keys
    np.testing.assert_array_equal(np.asarray(two.features), np.asarray(one.features))


def test_writer_checks_shape_and_writes_atomically(tmp_path):
    writer = BankWriter(tmp_path, "train", C)
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        writer.add("v", 900, np.zeros((2, C + 1)))
    with pytest.raises(ValueError):
        writer.add("v", 900, np.zeros(C))
    writer.add("v", 900, np.ones((2, C)))
    writer.flush()
    writer.flush()  # nothing pending: no empty shard
    assert sorted(p.name for p in (tmp_path / "lfb_train.parts").iterdir()) == ["rank0-00000.npz"]
    with np.load(tmp_path / "lfb_train.parts" / "rank0-00000.npz") as shard:
        assert shard["features"].shape == (2, C) and shard["videos"].dtype.kind == "U"
        assert shard["seconds"].dtype == shard["counts"].dtype == np.int64


# ----------------------------------------------------------------------------------------------
# Failures: atomic merge, corrupt shards, bad index files
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("failing_call", [1, 2])
def test_failed_merge_leaves_no_bank_and_keeps_shards(tmp_path, monkeypatch, failing_call):
    """os.replace fails for the .npy (call 1) or the .json (call 2): no bank, every shard kept."""
    frames = random_keyframes()
    writer = BankWriter(tmp_path, "train", C, shard_size=5)
    for (video, second), x in frames.items():
        writer.add(video, second, x)
    writer.close()
    shards = sorted((tmp_path / "lfb_train.parts").iterdir())
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == failing_call:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        merge_shards(tmp_path, "train")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lfb_train.parts"]  # no bank, no temp files
    assert sorted((tmp_path / "lfb_train.parts").iterdir()) == shards
    assert merge_shards(tmp_path, "train").keys == sorted(frames)  # and the merge can be redone


def test_merge_names_a_bad_shard(tmp_path):
    BankWriter(tmp_path, "train", C).close()
    with pytest.raises(FileNotFoundError, match="no shards"):
        merge_shards(tmp_path, "train")
    w = BankWriter(tmp_path, "train", C)
    w.add("a", 900, np.ones((1, C)))
    w.close()
    odd = BankWriter(tmp_path, "train", C + 1, rank=1)
    odd.add("b", 900, np.ones((1, C + 1)))
    odd.close()
    with pytest.raises(ValueError, match="rank1-00000.npz.*9 channels"):
        merge_shards(tmp_path, "train")
    (tmp_path / "lfb_train.parts" / "rank1-00000.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="rank1-00000.npz: corrupt shard"):
        merge_shards(tmp_path, "train")
    assert not bank_paths(tmp_path, "train")[0].exists()


def rewrite_index(root: Path, **changes) -> Path:
    path = bank_paths(root, "train")[1]
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("changes, problem", [
    ({"rows": 3}, "rows=3"),
    ({"format": "mmaction2"}, "format is 'mmaction2'"),
    ({"channels": 16}, "channels=16"),
    ({"dtype": "float16"}, "float16"),
    ({"dtype": "int8"}, "float16 or float32"),
    ({"split": "val"}, "split is 'val'"),
    ({"entries": [["v", 900, 0, 2], ["v", 901, 2, 10_000]]}, "outside rows"),
    ({"entries": [["v", 900, 3, 2]]}, "outside rows"),
    ({"entries": [["v", 901, 0, 1], ["v", 900, 1, 2]]}, "not sorted"),
    ({"entries": [["v", "900", 0, 1]]}, "not \\[video, second, start, stop\\]"),
])
def test_load_rejects_a_bad_index(tmp_path, changes, problem):
    write_bank(tmp_path, random_keyframes())
    path = rewrite_index(tmp_path, **changes)
    with pytest.raises(ValueError, match=problem) as info:
        FeatureBank.load(tmp_path, "train")
    assert str(info.value).startswith(str(path))


# ----------------------------------------------------------------------------------------------
# sample(): MMAction2's 60-second window
# ----------------------------------------------------------------------------------------------

def ramp_bank(root: Path, per_second: dict[int, int], video: str = "v") -> FeatureBank:
    """RoI ``j`` (< 10) at second ``s``: every channel equals ``10 * s + j`` (exact, never 0)."""
    writer = BankWriter(root, "train", C)
    for second, n in per_second.items():
        writer.add(video, second, np.repeat(10 * second + np.arange(n)[:, None], C, axis=1))
    writer.close()
    return merge_shards(root, "train")


def test_sample_window_placement(tmp_path):
    t = 1000
    bank = ramp_bank(tmp_path, {t - 31: 1, t - 30: 1, t: 2, t + 29: 1, t + 30: 1})
    out = bank.sample("v", t, np.random.default_rng(0))
    assert out.shape == (60 * 5, C) and out.dtype == np.float32
    slots = out[:, 0].reshape(60, 5)
    assert slots[0, 0] == 10 * (t - 30) and not slots[0, 1:].any()  # t-30 is the first second
    assert slots[59, 0] == 10 * (t + 29) and not slots[59, 1:].any()  # t+29 the last; t+30, t-31 out
    assert sorted(slots[30, :2]) == [10 * t, 10 * t + 1] and not slots[30, 2:].any()
    assert np.count_nonzero(slots) == 4
    assert (out == out[:, :1]).all()  # whole rows are copied
    small = bank.sample("v", t, np.random.default_rng(0), window=4, max_per_second=2)
    assert small.shape == (8, C) and sorted(small[4:6, 0]) == [10 * t, 10 * t + 1]
    assert not small[:4].any() and not small[6:].any()


def test_sample_video_edges(tmp_path):
    bank = ramp_bank(tmp_path, {s: 1 for s in range(902, 1799)})  # an AVA video's 15 minutes
    start = bank.sample("v", 902, np.random.default_rng(0))[:, 0].reshape(60, 5)
    assert not start[:30].any() and (start[30:, 0] == 10 * np.arange(902, 932)).all()
    end = bank.sample("v", 1798, np.random.default_rng(0))[:, 0].reshape(60, 5)
    assert (end[:31, 0] == 10 * np.arange(1768, 1799)).all() and not end[31:].any()
    assert not bank.sample("other", 1000, np.random.default_rng(0)).any()  # unknown video


def test_sample_draws_at_most_k_distinct_rois(tmp_path):
    t = 1000
    bank = ramp_bank(tmp_path, {t: 9, t + 1: 3})
    picks = []
    for seed in range(20):
        slots = bank.sample("v", t, np.random.default_rng(seed), max_per_second=5)[:, 0].reshape(60, 5)
        chosen = slots[30]
        assert len(set(chosen.tolist())) == 5  # 5 distinct RoIs of the 9
        assert set((chosen - 10 * t).astype(int)) <= set(range(9))
        assert sorted(slots[31, :3]) == [10 * t + 10, 10 * t + 11, 10 * t + 12]
        assert not slots[31, 3:].any()
        picks.append(tuple(chosen))
    assert len(set(picks)) > 1  # different seeds pick different RoIs or orders
    a = bank.sample("v", t, np.random.default_rng(7))
    b = bank.sample("v", t, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------
# Memory map and pickling (DataLoader workers)
# ----------------------------------------------------------------------------------------------

def test_features_are_memory_mapped_and_pickle_small(tmp_path):
    rng = np.random.default_rng(0)
    writer = BankWriter(tmp_path, "train", 256, shard_size=1000)
    for second in range(900, 1025):
        writer.add("v", second, rng.standard_normal((8, 256)))  # 125 x 8 x 256 x 4 B = 1 MB
    writer.close()
    merge_shards(tmp_path, "train")
    bank = FeatureBank.load(tmp_path, "train")
    assert bank._features is None  # opened lazily
    features = bank.features
    assert features.nbytes == 1_024_000
    assert isinstance(features, np.memmap) or isinstance(features.base, np.memmap)
    assert not features.flags.writeable

    blob = pickle.dumps(bank)
    assert len(blob) < 10_000
    clone = pickle.loads(blob)
    assert clone._features is None
    assert isinstance(clone.features, np.memmap)
    np.testing.assert_array_equal(clone.features, features)
    np.testing.assert_array_equal(clone.sample("v", 1000, np.random.default_rng(3)),
                                  bank.sample("v", 1000, np.random.default_rng(3)))
    assert not isinstance(FeatureBank.load(tmp_path, "train", mmap=False).features, np.memmap)


def test_empty_bank(tmp_path):
    writer = BankWriter(tmp_path, "val", C)
    writer.add("v", 900, np.zeros((0, C)))
    writer.close()
    bank = merge_shards(tmp_path, "val")
    assert bank.num_rows == 0 and bank.keys == [("v", 900)] and bank.features.shape == (0, C)
    assert not bank.sample("v", 900, np.random.default_rng(0)).any()


# ----------------------------------------------------------------------------------------------
# MMAction2's lfb_{split}.pkl
# ----------------------------------------------------------------------------------------------

class NotATensor:
    pass


def test_import_mmaction2(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    lfb = {
        "vid1": {902: torch.randn(3, C, generator=g).half(),  # the (n, C) tensor form
                 903: [torch.randn(C, generator=g).half() for _ in range(2)]},  # list of (C,) tensors
        "vid0": {1000: torch.randn(1, C, generator=g).half(), 1001: []},
    }
    pkl = tmp_path / "lfb_val.pkl"
    torch.save(lfb, pkl)
    bank = import_mmaction2(pkl, tmp_path / "bank", "val")
    assert bank.dtype == np.float16 and bank.num_rows == 6
    assert bank.keys == [("vid0", 1000), ("vid0", 1001), ("vid1", 902), ("vid1", 903)]
    np.testing.assert_array_equal(bank.features_at("vid1", 902), lfb["vid1"][902].numpy())
    np.testing.assert_array_equal(bank.features_at("vid1", 903), torch.stack(lfb["vid1"][903]).numpy())
    assert bank.features_at("vid0", 1001).shape == (0, C)
    full = import_mmaction2(pkl, tmp_path / "full", "val", dtype="float32")
    assert full.dtype == np.float32
    np.testing.assert_array_equal(full.features, bank.features.astype(np.float32))


def test_import_mmaction2_refuses_unsafe_or_malformed(tmp_path):
    torch = pytest.importorskip("torch")
    unsafe = tmp_path / "unsafe.pkl"
    torch.save({"vid": {902: NotATensor()}}, unsafe)
    with pytest.raises(ValueError, match="cannot load safely") as info:
        import_mmaction2(unsafe, tmp_path / "bank", "val")
    assert str(info.value).startswith(str(unsafe))
    bad = tmp_path / "bad.pkl"
    for value, problem in [(torch.zeros(2, 3, C), "expected an \\(n, C\\) tensor"),
                           (torch.zeros(2, C, dtype=torch.int64), "features must be float16 or float32"),
                           ([torch.zeros(C), "x"], "a list value must hold")]:
        torch.save({"vid": {902: torch.zeros(1, C), 903: value}}, bad)
        with pytest.raises(ValueError, match=f"bad.pkl \\[vid,903\\]: {problem}"):
            import_mmaction2(bad, tmp_path / "bank", "val")
    torch.save({"vid": {902: torch.zeros(1, C), 903: torch.zeros(1, C + 1)}}, bad)
    with pytest.raises(ValueError, match="vid,903.*9 channels"):
        import_mmaction2(bad, tmp_path / "bank", "val")
    assert not (tmp_path / "bank").exists()


def test_bank_nbytes():
    assert bank_nbytes(1000) == 1000 * 2048 * 4 == 8_192_000
    assert bank_nbytes(1000, dtype="float16") == 4_096_000
    assert bank_nbytes(10, channels=512, dtype=np.float32) == 20_480


def test_import_does_not_need_torch():
    import subprocess
    import sys
    code = ("import sys, numpy as np, stdet.lfb as lfb; lfb.FeatureBank; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
