"""Frame index conventions and the two frame backends (rawframes, video files)."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from stdet.data.errors import AVADataError, FrameReadError
from stdet.data.frames import (AVA_FIRST_SECOND, FPS, RawFrames, VideoFile, clip_frame_indices,
                               keyframe_to_frame_index, open_frame_source, read_keyframe_clip)

# Synthetic test video: 4 s at 30 fps, 64x48. Frame k (0-based) has a flat background whose gray
# level encodes k // 8 and an 8-px wide vertical bar in column block k % 8, so every frame is
# identifiable despite lossy compression.
NUM_FRAMES = 120
W, H = 64, 48
VID = "vid"


def _background(k: int) -> int:
    return 20 + 15 * (k // 8)


def make_frame(k: int) -> np.ndarray:
    bg = _background(k)
    img = np.full((H, W, 3), bg, dtype=np.uint8)
    img[:, (k % 8) * 8:(k % 8) * 8 + 8] = 255 if bg < 128 else 0
    return img


def frame_id(img: np.ndarray) -> int:
    """Recover k from a (decoded, lossy) frame made by make_frame."""
    block_means = img.astype(np.float64).mean(axis=(0, 2)).reshape(8, 8).mean(axis=1)
    bg = np.median(block_means)
    bar = int(np.argmax(np.abs(block_means - bg)))
    return int(round((bg - 20) / 15)) * 8 + bar


def clip_ids(clip: np.ndarray) -> list[int]:
    return [frame_id(f) for f in clip]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ava")
    (root / "videos").mkdir()
    path = root / "videos" / f"{VID}.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        # Short GOP so that reads in the middle really seek to a keyframe other than the first.
        stream.options = {"crf": "10", "g": "10"}
        for k in range(NUM_FRAMES):
            frame = av.VideoFrame.from_ndarray(make_frame(k), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    # Extract rawframes like ffmpeg would (img_00001.jpg is the first frame).
    frames_dir = root / "frames" / VID
    frames_dir.mkdir(parents=True)
    with av.open(str(path)) as cont:
        for i, frame in enumerate(cont.decode(video=0), start=1):
            frame.to_image().save(frames_dir / f"img_{i:05d}.jpg", quality=95)
    return root


@pytest.fixture(scope="module")
def sources(data):
    return RawFrames(data / "frames"), VideoFile(data / "videos")


# ---------------------------------------------------------------- index conventions


def test_constants():
    assert FPS == 30 and AVA_FIRST_SECOND == 900


@pytest.mark.parametrize("timestamp,index", [(902, 61), (900, 1), (1798, 26941), (901, 31)])
def test_keyframe_to_frame_index(timestamp, index):
    assert keyframe_to_frame_index(timestamp) == index


def test_clip_indices_4x16():
    idx = clip_frame_indices(61, 4, 16, 1000)
    assert idx.tolist() == [29, 45, 61, 77]
    assert idx[4 // 2] == 61  # the keyframe is frame clip_len // 2 of the clip


def test_clip_indices_32x2():
    idx = clip_frame_indices(61, 32, 2, 1000)
    assert idx.tolist() == list(range(29, 93, 2))
    assert idx[16] == 61 and idx.dtype == np.int64


def test_clip_indices_clamped_at_ends():
    assert clip_frame_indices(1, 4, 16, 120).tolist() == [1, 1, 1, 17]
    assert clip_frame_indices(120, 4, 16, 120).tolist() == [88, 104, 120, 120]
    assert clip_frame_indices(3, 8, 2, 5).tolist() == [1, 1, 1, 1, 3, 5, 5, 5]


@pytest.mark.parametrize("clip_len,interval,low,high", [(4, 16, -8, 7), (32, 2, -1, 0),
                                                        (8, 8, -4, 3), (8, 1, 0, 0)])
def test_clip_indices_jitter_bounds(clip_len, interval, low, high):
    base = clip_frame_indices(5000, clip_len, interval, 10000)
    rng = np.random.default_rng(0)
    diffs = np.stack([clip_frame_indices(5000, clip_len, interval, 10000, rng) - base
                      for _ in range(300)])
    assert diffs.min() == low and diffs.max() == high


def test_clip_indices_jitter_deterministic_and_clamped():
    a = clip_frame_indices(61, 32, 2, 100, np.random.default_rng(7))
    b = clip_frame_indices(61, 32, 2, 100, np.random.default_rng(7))
    assert np.array_equal(a, b)
    near_start = clip_frame_indices(2, 4, 16, 100, np.random.default_rng(1))
    assert near_start.min() >= 1 and near_start.max() <= 100


# ---------------------------------------------------------------- backends agree


def test_synthetic_frames_identifiable():
    assert [frame_id(make_frame(k)) for k in range(NUM_FRAMES)] == list(range(NUM_FRAMES))


def test_num_frames_agree(sources):
    raw, video = sources
    assert raw.num_frames(VID) == NUM_FRAMES
    assert video.num_frames(VID) == NUM_FRAMES


@pytest.mark.parametrize("indices", [
    [1, 1, 1, 17],                   # start, repeated index
    list(range(51, 83, 2)),          # middle: the video backend seeks
    [7, 6, 5, 40],                   # unsorted
    [88, 104, 120, 120],             # end, last frame repeated
    [120],
])
def test_backends_give_same_clip(sources, indices):
    raw, video = sources
    a, b = raw.read(VID, indices), video.read(VID, indices)
    assert a.shape == b.shape == (len(indices), H, W, 3)
    assert a.dtype == b.dtype == np.uint8
    expected = [i - 1 for i in indices]
    assert clip_ids(a) == expected
    assert clip_ids(b) == expected
    assert np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() < 2.0


class _CountingContainer:
    """Proxy around an av container counting the frames decoded."""

    def __init__(self, container, counter):
        self._c, self._counter = container, counter

    def __getattr__(self, name):
        return getattr(self._c, name)

    def decode(self, *args, **kwargs):
        for frame in self._c.decode(*args, **kwargs):
            self._counter.append(frame.pts)
            yield frame


def test_video_reads_seek_instead_of_decoding_everything(data, monkeypatch):
    video = VideoFile(data / "videos")
    decoded: list = []
    original = VideoFile._open
    monkeypatch.setattr(VideoFile, "_open",
                        staticmethod(lambda path: _CountingContainer(original(path), decoded)))
    clip = video.read(VID, [95, 97, 99])
    assert clip_ids(clip) == [94, 96, 98]
    # GOP of 10: at most one GOP before frame 95 plus the frames up to 99 (and codec delay).
    assert 0 < len(decoded) <= 20


def test_read_keyframe_clip(sources):
    for source in sources:
        clip, idx = read_keyframe_clip(source, VID, 902, 4, 16)
        assert idx.tolist() == [29, 45, 61, 77]
        assert clip_ids(clip) == [28, 44, 60, 76]
        clip, idx = read_keyframe_clip(source, VID, 903, 8, 8, rng=np.random.default_rng(0))
        assert clip_ids(clip) == (idx - 1).tolist() and idx.max() <= NUM_FRAMES


def test_sources_pickle(sources):
    for source in sources:
        source.num_frames(VID)  # fill the cache first: it must pickle too
        clone = pickle.loads(pickle.dumps(source))
        assert type(clone) is type(source)
        assert clip_ids(clone.read(VID, [10, 20])) == [9, 19]


def test_open_frame_source(data):
    assert isinstance(open_frame_source(data / "frames"), RawFrames)
    assert isinstance(open_frame_source(data / "videos", kind="video"), VideoFile)
    assert open_frame_source(data / "frames", filename_tmpl="img_{:05d}.jpg").num_frames(VID) \
        == NUM_FRAMES
    with pytest.raises(ValueError, match="kind"):
        open_frame_source(data, kind="hdf5")


# ---------------------------------------------------------------- errors name the path


def _copy_frames(data: Path, dst: Path, n: int = 10) -> Path:
    vdir = dst / VID
    vdir.mkdir(parents=True)
    for i in range(1, n + 1):
        shutil.copy(data / "frames" / VID / f"img_{i:05d}.jpg", vdir / f"img_{i:05d}.jpg")
    return vdir


def test_missing_frame(data, tmp_path):
    vdir = _copy_frames(data, tmp_path)
    (vdir / "img_00005.jpg").unlink()
    with pytest.raises(FrameReadError, match="not found") as e:
        RawFrames(tmp_path).read(VID, [4, 5, 6])
    assert str(vdir / "img_00005.jpg") in str(e.value)
    assert isinstance(e.value, AVADataError)


def test_corrupt_jpeg(data, tmp_path):
    vdir = _copy_frames(data, tmp_path)
    (vdir / "img_00003.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    good = (vdir / "img_00004.jpg").read_bytes()
    (vdir / "img_00004.jpg").write_bytes(good[: len(good) // 2])  # truncated
    source = RawFrames(tmp_path)
    for index in (3, 4):
        with pytest.raises(FrameReadError) as e:
            source.read(VID, [1, index])
        assert str(vdir / f"img_{index:05d}.jpg") in str(e.value)


def test_missing_video(tmp_path):
    with pytest.raises(FrameReadError) as e:
        RawFrames(tmp_path).read("nope", [1])
    assert str(tmp_path / "nope") in str(e.value)
    with pytest.raises(FrameReadError) as e:
        RawFrames(tmp_path).num_frames("nope")
    assert str(tmp_path / "nope") in str(e.value)
    for call in (lambda s: s.read("nope", [1]), lambda s: s.num_frames("nope")):
        with pytest.raises(FrameReadError) as e:
            call(VideoFile(tmp_path))
        assert str(tmp_path / "nope") in str(e.value)


def test_corrupt_video(tmp_path):
    path = tmp_path / "bad.mp4"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(FrameReadError) as e:
        VideoFile(tmp_path).read("bad", [1])
    assert str(path) in str(e.value)


def test_video_index_past_end(data):
    with pytest.raises(FrameReadError, match="not reached") as e:
        VideoFile(data / "videos").read(VID, [118, 125])
    assert str(data / "videos" / f"{VID}.mp4") in str(e.value)


def test_index_below_one(sources):
    for source in sources:
        with pytest.raises(FrameReadError, match="< 1"):
            source.read(VID, [0, 1])


@pytest.mark.parametrize("timestamp,frame", [(905, 151), (899, -29)])
def test_keyframe_outside_video(sources, data, timestamp, frame):
    raw, video = sources
    for source, path in ((raw, data / "frames" / VID), (video, data / "videos" / f"{VID}.mp4")):
        with pytest.raises(FrameReadError) as e:
            read_keyframe_clip(source, VID, timestamp, 4, 16)
        msg = str(e.value)
        assert str(path) in msg
        assert f"{VID},{timestamp:04d}" in msg
        assert f"keyframe {timestamp:04d} -> frame {frame} outside 1..{NUM_FRAMES}" in msg
