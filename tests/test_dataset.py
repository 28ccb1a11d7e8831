"""mini-AVA read back by the AVA readers, and ``AVADataset`` / ``ava_collate`` on it."""
from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stdet.data import (AVADataError, AVADataset, AVALayout, FrameReadError, MiniAVASpec, RawFrames,
                        ava_collate, ava_label_map, generate_mini_ava, img_key, load_proposals,
                        read_annotations, read_excluded_timestamps, read_label_map,
                        select_proposals, test_transforms)
from stdet.data.mini_ava import CLASS_GROUPS, CLASS_IDS

SPEC = MiniAVASpec(train_videos=2, val_videos=1, seconds=12)
NUM_FRAMES = 12 * 30
KEYFRAMES = list(range(902, 910))  # 900 + 2 .. 900 + 12 - 3
TEST_W = round(256 * 128 / 96)  # 341: short side 96 -> 256
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
STAND, WATCH, WALK = 12, 80, 14


@pytest.fixture(scope="session")
def mini(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mini_ava")
    generate_mini_ava(root, seed=0, spec=SPEC, videos=True, progress=False)
    return root


@pytest.fixture(scope="session")
def layout(mini) -> AVALayout:
    return AVALayout(mini)


@pytest.fixture(scope="session")
def val_test(layout) -> AVADataset:
    return AVADataset.from_layout(layout, "val")


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [row for row in csv.reader(f) if row]


def gt_from_csv(path: Path) -> dict:
    """{(video, t): {box string tuple: (entity, set of actions)}} in file order, parsed by hand."""
    gt: dict = defaultdict(dict)
    for video, t, x1, y1, x2, y2, action, entity in csv_rows(path):
        box = gt[video, int(t)].setdefault((x1, y1, x2, y2), (int(entity), set()))
        box[1].add(int(action))
    return dict(gt)


def denormalise(clip: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) normalised -> float (T, H, W, 3) in 0-255."""
    return clip.permute(1, 2, 3, 0).numpy() * STD + MEAN


def expected_indices(t: int) -> list[int]:
    center = (t - 900) * 30 + 1
    return [min(max(center + d, 1), NUM_FRAMES) for d in (-32, -16, 0, 16)]


def copy_dataset(mini: Path, tmp_path: Path, videos: bool = False) -> AVALayout:
    root = tmp_path / "copy"
    shutil.copytree(mini, root, ignore=None if videos else shutil.ignore_patterns("videos_15min"))
    return AVALayout(root)


# ----------------------------------------------------------------------------------------------
# mini-AVA read back by the AVA readers
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "val"])
def test_mini_ava_annotations(layout, split):
    ann = read_annotations(layout.ann_file(split))
    rows = csv_rows(layout.ann_file(split))
    assert {int(r[6]) for r in rows} <= set(CLASS_IDS)
    videos = {r[0] for r in rows}
    assert len(videos) == (2 if split == "train" else 1)
    assert set(ann) == {(v, t) for v in videos for t in KEYFRAMES}
    motion = set(CLASS_GROUPS["motion"])
    entities: dict[str, set] = {}
    for (video, t), kf in ann.items():
        assert len(kf.boxes) in (2, 3)
        for actions in kf.actions:
            assert len(motion.intersection(actions)) == 1, actions
        ids = set(kf.entity_ids.tolist())
        assert len(ids) == len(kf.boxes)  # one box per person
        assert entities.setdefault(video, ids) == ids  # the same people all video long
    for ids in entities.values():
        assert ids == set(range(len(ids)))
    # the merged boxes are exactly the CSV's (boxes, action sets, entity ids)
    expected = gt_from_csv(layout.ann_file(split))
    for key, kf in ann.items():
        boxes = list(expected[key].items())
        np.testing.assert_allclose(kf.boxes, [[float(v) for v in b] for b, _ in boxes], atol=1e-7)
        assert kf.actions == [tuple(sorted(a)) for _, (_, a) in boxes]
        assert kf.entity_ids.tolist() == [e for _, (e, _) in boxes]


def test_mini_ava_label_maps(layout):
    expected = list(ava_label_map(CLASS_IDS).items())
    assert len(expected) == 9
    assert list(read_label_map(layout.label_file).items()) == expected
    assert list(read_label_map(layout.eval_label_file).items()) == expected
    assert "label_id:" in layout.label_file.read_text()
    assert "  id:" in layout.eval_label_file.read_text()


@pytest.mark.parametrize("split", ["train", "val"])
def test_mini_ava_proposals_and_excluded(layout, split):
    keys = {(r[0], int(r[1])) for r in csv_rows(layout.ann_file(split))}
    proposals = load_proposals(layout.proposal_file(split))
    assert {img_key(*k) for k in keys} <= set(proposals)
    for array in proposals.values():
        assert array.ndim == 2 and array.shape[1] == 5
        assert ((array[:, 4] > 0) & (array[:, 4] <= 1)).all()
    excluded = read_excluded_timestamps(layout.exclude_file(split))
    assert excluded and excluded <= keys
    assert len(excluded) == max(1, len(keys) // 50)


# ----------------------------------------------------------------------------------------------
# AVADataset, test mode
# ----------------------------------------------------------------------------------------------

def test_val_dataset_keys(layout, val_test):
    keys = list(gt_from_csv(layout.ann_file("val")))
    excluded = read_excluded_timestamps(layout.exclude_file("val"))
    assert len(val_test) == len(keys) - len(excluded) == 7
    assert val_test.keys == [k for k in keys if k not in excluded]
    assert not val_test.train


def test_val_samples(layout, val_test):
    gt = gt_from_csv(layout.ann_file("val"))
    proposals = load_proposals(layout.proposal_file("val"))
    scale = np.array([TEST_W, 256, TEST_W, 256], np.float32)
    frames = RawFrames(layout.rawframes)
    for i, (video, t) in enumerate(val_test.keys):
        s = val_test[i]
        assert s["clip"].shape == (3, 4, 256, TEST_W) and s["clip"].dtype == torch.float32
        boxes = list(gt[video, t].items())
        n = len(boxes)
        assert s["gt_labels"].shape == (n, 81)
        expected = np.zeros((n, 81), np.float32)
        for row, (_, (_, actions)) in enumerate(boxes):
            expected[row, sorted(actions)] = 1
        np.testing.assert_array_equal(s["gt_labels"].numpy(), expected)
        norm = np.array([[float(v) for v in b] for b, _ in boxes], np.float32)
        np.testing.assert_allclose(s["gt_boxes"].numpy(), norm * scale, atol=1e-3)

        want_boxes, want_scores = select_proposals(proposals[img_key(video, t)], 0.9, 1000)
        np.testing.assert_allclose(s["proposals"].numpy(), want_boxes * scale, atol=1e-3)
        np.testing.assert_array_equal(s["proposal_scores"].numpy(), want_scores)
        assert (want_scores >= min(0.9, proposals[img_key(video, t)][:, 4].max())).all()

        meta = s["meta"]
        assert meta["video_id"] == video and meta["timestamp"] == t
        assert meta["img_key"] == f"{video},{t:04d}"
        assert meta["original_shape"] == (96, 128) and meta["img_shape"] == (256, TEST_W)
        assert meta["frame_indices"].tolist() == expected_indices(t)
        assert meta["entity_ids"].tolist() == [e for _, (e, _) in boxes]

        # the clip is the resized frames at those indices, Kinetics-normalised, channels first
        raw = frames.read(video, expected_indices(t))
        resized, _ = test_transforms()(raw, [])
        np.testing.assert_allclose(denormalise(s["clip"]), resized, atol=1e-3)


def test_frame_indices_clamped_at_video_start(layout):
    # 8x16 around keyframe 902 (frame 61) starts at 61 - 4 * 16 = -3, clamped to 1; frame 61 is
    # the clip's frame 8 // 2 = 4
    ds = AVADataset.from_layout(layout, "val", clip_len=8, frame_interval=16)
    i = ds.keys.index((ds.keys[0][0], 902))
    s = ds[i]
    assert s["clip"].shape == (3, 8, 256, TEST_W)
    assert s["meta"]["frame_indices"].tolist() == [1, 13, 29, 45, 61, 77, 93, 109]


def test_backends_give_the_same_clip(layout, val_test):
    video_ds = AVADataset.from_layout(layout, "val", frame_source="video")
    assert video_ds.keys == val_test.keys
    for i in range(len(val_test)):
        a, b = val_test[i], video_ds[i]
        assert a["clip"].shape == b["clip"].shape
        assert a["meta"]["frame_indices"].tolist() == b["meta"]["frame_indices"].tolist()
        diff = np.abs(denormalise(a["clip"]) - denormalise(b["clip"])).mean()
        assert diff < 8, (i, diff)
        torch.testing.assert_close(a["gt_boxes"], b["gt_boxes"])
        torch.testing.assert_close(a["proposals"], b["proposals"])
    # and the clips are not all alike: a clip differs more from another keyframe's clip
    other = np.abs(denormalise(val_test[0]["clip"]) - denormalise(video_ds[3]["clip"])).mean()
    same = np.abs(denormalise(val_test[0]["clip"]) - denormalise(video_ds[0]["clip"])).mean()
    assert other > same


# ----------------------------------------------------------------------------------------------
# AVADataset, train mode
# ----------------------------------------------------------------------------------------------

def replay_train_draws(seed: int, t: int):
    """The random draws of one train sample (4x16, rescale 256-320, crop 256, flip 0.5)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
    center = (t - 900) * 30 + 1
    indices = center + np.array([-32, -16, 0, 16]) + rng.integers(-8, 8, size=4)  # [-8, 7]
    indices = np.clip(indices, 1, NUM_FRAMES)
    short = int(rng.integers(256, 321))
    h, w = short, round(128 * short / 96)
    top, left = int(rng.integers(0, h - 256 + 1)), int(rng.integers(0, w - 256 + 1))
    flip = rng.random() < 0.5
    return indices, (h, w), (top, left), flip


def expected_train_boxes(norm: np.ndarray, size, offset, flip) -> np.ndarray:
    (h, w), (top, left) = size, offset
    px = norm * np.array([w, h, w, h]) - np.array([left, top, left, top])
    px = np.clip(px, 0, 256)
    if flip:
        px[:, [0, 2]] = 256 - px[:, [2, 0]]
    return px


def test_train_sample_follows_its_random_draws(layout):
    ds = AVADataset.from_layout(layout, "train")
    assert ds.train and len(ds) == 15  # 2 videos x 8 keyframes - 1 excluded
    proposals = load_proposals(layout.proposal_file("train"))
    flips = set()
    for seed in range(6):
        i = seed % len(ds)
        video, t = ds.keys[i]
        torch.manual_seed(seed)
        s = ds[i]
        indices, size, offset, flip = replay_train_draws(seed, t)
        flips.add(flip)
        assert s["meta"]["frame_indices"].tolist() == indices.tolist()
        assert s["clip"].shape == (3, 4, 256, 256)
        assert s["meta"]["original_shape"] == (96, 128) and s["meta"]["img_shape"] == (256, 256)
        kf = ds.annotations[video, t]
        np.testing.assert_allclose(s["gt_boxes"].numpy(), expected_train_boxes(kf.boxes, size, offset, flip),
                                   atol=2e-3)
        boxes, scores = select_proposals(proposals[img_key(video, t)])
        np.testing.assert_allclose(s["proposals"].numpy(), expected_train_boxes(boxes, size, offset, flip),
                                   atol=2e-3)
        np.testing.assert_array_equal(s["proposal_scores"].numpy(), scores)
        for b in (s["gt_boxes"], s["proposals"]):
            assert (b >= 0).all() and (b <= 256).all()
            assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
    assert flips == {True, False}  # both branches of the flip were checked


def test_train_samples_reproducible_under_manual_seed(layout):
    ds = AVADataset.from_layout(layout, "train")
    samples = {}
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        samples.setdefault(seed, []).append(ds[5])
    a, b = samples[3]
    (c,) = samples[4]
    assert torch.equal(a["clip"], b["clip"]) and torch.equal(a["gt_boxes"], b["gt_boxes"])
    assert torch.equal(a["proposals"], b["proposals"])
    assert a["meta"]["frame_indices"].tolist() == b["meta"]["frame_indices"].tolist()
    assert not (torch.equal(a["clip"], c["clip"]) and torch.equal(a["gt_boxes"], c["gt_boxes"]))


def test_train_proposals_move_with_gt(layout):
    ds = AVADataset.from_layout(layout, "train", use_proposals=False)
    assert ds.proposals is None
    for seed in range(4):
        torch.manual_seed(seed)
        s = ds[seed]
        # proposals are the gt boxes before the transform, so they stay equal after it
        torch.testing.assert_close(s["proposals"], s["gt_boxes"], rtol=0, atol=0)
        np.testing.assert_array_equal(s["proposal_scores"].numpy(), 1)
        assert (s["gt_boxes"] >= 0).all() and (s["gt_boxes"] <= 256).all()
        # boxes still have area (the actors are 10 x 22 px of 128 x 96, inside the crop mostly)
        area = (s["gt_boxes"][:, 2] - s["gt_boxes"][:, 0]) * (s["gt_boxes"][:, 3] - s["gt_boxes"][:, 1])
        assert (area > 0).any()


# ----------------------------------------------------------------------------------------------
# Custom classes
# ----------------------------------------------------------------------------------------------

def test_custom_classes_need_matching_num_classes(layout):
    with pytest.raises(ValueError, match="num_classes must be len"):
        AVADataset.from_layout(layout, "val", custom_classes=[STAND, WATCH])
    with pytest.raises(AVADataError, match="label_file"):
        AVADataset(layout.ann_file("val"), layout.rawframes, custom_classes=[STAND, WATCH], num_classes=3)
    with pytest.raises(AVADataError, match=r"\[53\]"):  # mini-AVA's label map has 9 classes
        AVADataset.from_layout(layout, "val", custom_classes=[STAND, 53], num_classes=3)


def test_custom_classes_test_mode(layout):
    ds = AVADataset.from_layout(layout, "val", custom_classes=[STAND, WATCH], num_classes=3)
    gt = gt_from_csv(layout.ann_file("val"))
    assert len(ds) == 7
    dropped = 0
    for i, key in enumerate(ds.keys):
        s = ds[i]
        kept = [(b, e, a) for b, (e, a) in gt[key].items() if a & {STAND, WATCH}]
        dropped += len(gt[key]) - len(kept)
        assert s["gt_labels"].shape == (len(kept), 3)
        expected = [[0, float(STAND in a), float(WATCH in a)] for _, _, a in kept]
        np.testing.assert_array_equal(s["gt_labels"].numpy().reshape(-1, 3), np.reshape(expected, (-1, 3)))
        norm = np.array([[float(v) for v in b] for b, _, _ in kept], np.float32).reshape(-1, 4)
        np.testing.assert_allclose(s["gt_boxes"].numpy(), norm * [TEST_W, 256, TEST_W, 256], atol=1e-3)
        assert s["meta"]["entity_ids"].tolist() == [e for _, e, _ in kept]
    assert dropped > 0  # some boxes do neither (walk/run/jump without watching)


def test_custom_classes_train_drops_keyframes_without_them(layout, tmp_path):
    ann = tmp_path / "train.csv"
    rows = layout.ann_file("train").read_text()
    video = rows.split(",", 1)[0]
    # second 910 of the first video: one person walking (kept in test mode, no custom class)
    ann.write_text(rows + f"{video},0910,0.100,0.100,0.200,0.300,{WALK},0\n")
    common = dict(proposal_file=layout.proposal_file("train"), exclude_file=layout.exclude_file("train"),
                  label_file=layout.label_file, custom_classes=[STAND, WATCH], num_classes=3)
    train = AVADataset(ann, layout.rawframes, train=True, **common)
    # a test keeps them only when asked (MMAction2 drops them in every split)
    mmaction2 = AVADataset(ann, layout.rawframes, train=False, **common)
    with pytest.warns(UserWarning, match=f"1 of .* keyframes .* have no proposals \\({video},0910\\)"):
        test = AVADataset(ann, layout.rawframes, train=False, custom_keyframes="all", **common)
    gt = gt_from_csv(ann)
    excluded = read_excluded_timestamps(layout.exclude_file("train"))
    with_classes = [k for k in gt if k not in excluded and any(a & {STAND, WATCH} for _, a in gt[k].values())]
    assert (video, 910) in test.keys and (video, 910) not in train.keys
    assert train.keys == mmaction2.keys == with_classes
    assert test.keys == [k for k in gt if k not in excluded]
    s = test[test.keys.index((video, 910))]
    assert s["gt_boxes"].shape == (0, 4) and s["gt_labels"].shape == (0, 3)
    assert s["proposals"].shape[0] >= 1  # the whole frame (no proposals for 910)
    torch.manual_seed(0)
    for i in range(len(train)):
        assert train[i]["gt_labels"].shape[0] >= 1


# ----------------------------------------------------------------------------------------------
# Collation
# ----------------------------------------------------------------------------------------------

def test_collate_with_dataloader(val_test):
    loader = DataLoader(val_test, batch_size=3, num_workers=2, collate_fn=ava_collate)
    batches = list(loader)
    assert [b["clips"].shape[0] for b in batches] == [3, 3, 1]
    batch = batches[0]
    assert batch["clips"].shape == (3, 3, 4, 256, TEST_W)
    for key in ("proposals", "proposal_scores", "gt_boxes", "gt_labels", "meta"):
        assert isinstance(batch[key], list) and len(batch[key]) == 3
    for i in range(3):
        s = val_test[i]
        # workers run torch single-threaded, which may round a few resized pixels the other way
        diff = np.abs(denormalise(batch["clips"][i]) - denormalise(s["clip"]))
        assert diff.max() <= 1 + 1e-3 and (diff > 1e-3).mean() < 1e-4
        for key in ("proposals", "proposal_scores", "gt_boxes", "gt_labels"):
            torch.testing.assert_close(batch[key][i], s[key])
        assert batch["meta"][i]["img_key"] == s["meta"]["img_key"]


def fake_sample(h: int, w: int, value: float, n_boxes: int) -> dict:
    return {"clip": torch.full((3, 2, h, w), value),
            "proposals": torch.arange(n_boxes * 4, dtype=torch.float32).reshape(n_boxes, 4),
            "proposal_scores": torch.ones(n_boxes), "gt_boxes": torch.ones(n_boxes, 4) * value,
            "gt_labels": torch.zeros(n_boxes, 81), "meta": {"img_key": f"v,{h:04d}"}}


def test_collate_pads_bottom_right():
    a, b = fake_sample(4, 7, 1.0, 2), fake_sample(6, 5, 2.0, 1)
    batch = ava_collate([a, b])
    clips = batch["clips"]
    assert clips.shape == (2, 3, 2, 6, 7)
    assert (clips[0, :, :, :4, :7] == 1).all() and (clips[0, :, :, 4:, :] == 0).all()
    assert (clips[1, :, :, :6, :5] == 2).all() and (clips[1, :, :, :, 5:] == 0).all()
    assert torch.equal(batch["proposals"][0], a["proposals"]) and batch["proposals"][1].shape == (1, 4)
    assert torch.equal(batch["gt_boxes"][1], b["gt_boxes"])
    assert [m["img_key"] for m in batch["meta"]] == ["v,0004", "v,0006"]


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------

def test_missing_frame_raises_or_skips(mini, tmp_path):
    lay = copy_dataset(mini, tmp_path)
    ds = AVADataset.from_layout(lay, "val")
    video, t = ds.keys[0]
    frame = lay.rawframes / video / f"img_{(t - 900) * 30 + 1:05d}.jpg"
    frame.unlink()
    with pytest.raises(FrameReadError) as info:
        ds[0]
    assert str(frame) in str(info.value) and "not found" in str(info.value)

    # a test sample is a skip record (scoring the next keyframe twice would duplicate its
    # detections); a training sample is the next readable keyframe, with the skip listed
    skip = AVADataset.from_layout(lay, "val", on_error="skip")
    s = skip[0]
    assert set(s) == {"skipped"} and s["skipped"][0].startswith(f"{video},{t:04d}: {frame}")
    assert skip.skipped == 1
    train = AVADataset.from_layout(lay, "val", on_error="skip", train=True)
    load = train._load  # training jitters frames: make keyframe 0 unreadable whatever it draws
    train._load = lambda key: (_ for _ in ()).throw(FrameReadError(frame, "not found")) \
        if key == train.keys[0] else load(key)
    s = train[0]
    assert s["meta"]["img_key"] == img_key(*train.keys[1]) and len(s["skipped"]) == 1
    assert train.skipped == 1
    # other keyframes are untouched
    assert ds[1]["meta"]["img_key"] == img_key(*ds.keys[1])


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_jpeg_names_the_file(mini, tmp_path, damage):
    lay = copy_dataset(mini, tmp_path)
    ds = AVADataset.from_layout(lay, "val")
    video, t = ds.keys[2]
    frame = lay.rawframes / video / f"img_{(t - 900) * 30 + 1 + 16:05d}.jpg"
    data = frame.read_bytes()
    frame.write_bytes(b"\x00garbage, not a jpeg" * 10 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(FrameReadError) as info:
        ds[2]
    assert str(info.value).startswith(str(frame)) and "cannot decode" in str(info.value)


@pytest.mark.parametrize("source", ["rawframes", "video"])
def test_keyframe_beyond_video(mini, tmp_path, source):
    lay = copy_dataset(mini, tmp_path, videos=True)
    ann = lay.ann_file("val")
    video = ann.read_text().split(",", 1)[0]
    with ann.open("a") as f:
        f.write(f"{video},0950,0.100,0.100,0.200,0.300,{STAND},0\n")
    path = lay.rawframes / video if source == "rawframes" else lay.videos / f"{video}.mp4"
    with pytest.raises(FrameReadError) as info:
        AVADataset.from_layout(lay, "val", frame_source=source)
    message = str(info.value)
    assert message.startswith(f"{path} [{video},0950]: ") and "1501 outside 1..360" in message

    with pytest.warns(UserWarning, match=f"skipped 1 of 8 keyframes.*{video},0950"):
        ds = AVADataset.from_layout(lay, "val", frame_source=source, on_error="skip")
    assert len(ds) == 7 and (video, 950) not in ds.keys and ds.skipped == 1


def test_action_id_beyond_num_classes(layout):
    expected = next((r[0], int(r[1])) for r in csv_rows(layout.ann_file("val")) if int(r[6]) >= 50)
    with pytest.raises(AVADataError) as info:
        AVADataset.from_layout(layout, "val", num_classes=50)
    assert str(info.value).startswith(f"{layout.ann_file('val')} [{img_key(*expected)}]: ")
    assert "num_classes=50" in str(info.value)
    # 81 columns hold every AVA id
    assert len(AVADataset.from_layout(layout, "val", num_classes=81)) == 7


def test_bad_arguments(layout):
    with pytest.raises(ValueError, match="on_error"):
        AVADataset.from_layout(layout, "val", on_error="ignore")
    with pytest.raises(ValueError, match="person_det_score_thr"):
        AVADataset.from_layout(layout, "val", person_det_score_thr=1.5)
