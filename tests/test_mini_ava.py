"""mini-AVA: deterministic, small, fast, in the AVA layout, and each class group decidable only with
the information it claims to need."""
import hashlib
import time

import numpy as np
import pytest

from stdet.data import AVALayout, MiniAVASpec, generate_mini_ava, read_annotations
from stdet.data.mini_ava import CLASS_GROUPS, CLASS_IDS, READ, RUN, STAND, TEXT, WALK
from stdet.data.probes import balanced_accuracy, nearest_neighbour_predict, probe_table


def _digest(root) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "mini_ava.json"):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_default_build_is_fast_small_and_deterministic(tmp_path):
    start = time.perf_counter()
    summary = generate_mini_ava(tmp_path / "a", seed=7, progress=False)
    seconds = time.perf_counter() - start
    disk = sum(p.stat().st_blocks * 512 for p in (tmp_path / "a").rglob("*"))
    assert seconds < 30
    assert disk < 50 * 2**20
    spec = MiniAVASpec()
    frames = sorted((AVALayout(tmp_path / "a").rawframes / summary["splits"]["val"]["videos"][0]).iterdir())
    assert len(frames) == spec.seconds * 30
    assert frames[0].name == "img_00001.jpg" and frames[-1].name == f"img_{spec.seconds * 30:05d}.jpg"

    generate_mini_ava(tmp_path / "b", seed=7, progress=False, workers=1)
    generate_mini_ava(tmp_path / "c", seed=8, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_keyframes_follow_ava_arithmetic(tmp_path):
    spec = MiniAVASpec(train_videos=1, val_videos=1, seconds=12)
    generate_mini_ava(tmp_path, seed=0, spec=spec, progress=False)
    ann = read_annotations(AVALayout(tmp_path).ann_file("train"))
    seconds = sorted({t for _, t in ann})
    assert seconds == list(range(902, 900 + 12 - 2))  # as AVA's 902..1798 for its 901 s cut
    assert set(spec.keyframes) == set(seconds)


def test_labels_are_multi_label_with_one_motion_each(tmp_path):
    generate_mini_ava(tmp_path, seed=0, progress=False)
    ann = read_annotations(AVALayout(tmp_path).ann_file("val"))
    actions = [a for kf in ann.values() for a in kf.actions]
    assert all(sum(x in CLASS_GROUPS["motion"] for x in a) == 1 for a in actions)
    assert {x for a in actions for x in a} == set(CLASS_IDS)
    assert np.mean([len(a) for a in actions]) > 1.5
    assert min(len(kf.boxes) for kf in ann.values()) >= 2


def test_nearest_neighbour_and_balanced_accuracy():
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    y = np.array([0, 0, 1, 1])
    assert list(nearest_neighbour_predict(x, y, np.array([[0.4], [10.6], [5.6]]))) == [0, 1, 1]
    # always predicting the majority class scores 1/K, whatever the balance
    assert balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])) == 0.5


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    generate_mini_ava(root, seed=1, spec=MiniAVASpec(train_videos=12, val_videos=8), progress=False)
    return probe_table(root).set_index(["classes", "probe"])


@pytest.mark.parametrize("classes, blind, seeing", [
    ("motion", "one frame", "frames over 1 s"),
    ("talk to", "own box over the clip", "other actors"),
    ("watch (a person)", "own box over the clip", "other actors"),
    ("read vs text", "the clip (+-0.5 s)", "the actor 5-30 s earlier"),
])
def test_each_group_needs_its_information(probes, classes, blind, seeing):
    """Features without the claimed information stay near chance; with it, a 1-NN solves the class."""
    row_blind, row_seeing = probes.loc[(classes, blind)], probes.loc[(classes, seeing)]
    assert row_blind["balanced_accuracy"] < row_blind["chance"] + 0.15
    assert row_seeing["balanced_accuracy"] > 0.9
    assert row_blind["n_val"] > 100


def test_motion_variant_decides_read_and_text_by_the_lead_in(tmp_path):
    """long_term="motion": a video reads or texts (half each per split); the actor stands while it
    does, and the keyframe before it started shows the lead-in, walking (read) or running (text)."""
    spec = MiniAVASpec(train_videos=4, val_videos=2, seconds=14, long_term="motion")
    summary = generate_mini_ava(tmp_path, seed=0, spec=spec, progress=False)
    layout = AVALayout(tmp_path)
    checked = 0
    for split in ("train", "val"):
        kinds = summary["splits"][split]["long_term_kind"]
        assert list(kinds.values()) == ["read", "text"] * (len(kinds) // 2)
        tracks: dict = {}
        for (video, t), kf in read_annotations(layout.ann_file(split)).items():
            for entity, actions in zip(kf.entity_ids, kf.actions):
                tracks.setdefault((video, int(entity)), {})[t] = set(actions)
        for (video, _), track in tracks.items():
            own, other = (READ, TEXT) if kinds[video] == "read" else (TEXT, READ)
            assert all(other not in a for a in track.values())
            assert all(STAND in a for a in track.values() if own in a)  # holders stand still
            if own == READ:
                assert all(RUN not in a for a in track.values())  # nobody runs in a reading video
            seconds = sorted(track)
            for before, t in zip(seconds, seconds[1:]):
                if own in track[t] and own not in track[before]:  # a hold starts after its lead-in
                    assert (WALK if own == READ else RUN) in track[before]
                    checked += 1
    assert checked >= 6


def test_spec_rejects_an_unknown_long_term_cue():
    with pytest.raises(ValueError, match="long_term must be one of"):
        MiniAVASpec(long_term="colour")
