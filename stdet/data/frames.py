"""Frame sources for AVA: extracted JPEG frames or the video files themselves.

AVA frame conventions (used everywhere in stdet)
------------------------------------------------
* Videos are cut from second ``AVA_FIRST_SECOND = 900`` of the movie (the annotated 15 minutes,
  keyframes at seconds 902..1798) and read at ``FPS = 30``.
* Rawframes live in ``ROOT/VIDEO_ID/img_%05d.jpg`` and are numbered from **1**: ``img_00001.jpg``
  is the frame shown at time 0 of the cut video (what ``ffmpeg -r 30 .../img_%05d.jpg`` writes).
* A keyframe timestamp ``t`` (whole seconds of the movie) maps to the 1-based frame index::

      keyframe_to_frame_index(t) = (t - 900) * 30 + 1

  i.e. the frame shown at time ``t - 900`` s of the cut video (902 -> 61, 1798 -> 26941).
  MMAction2 1.x adds its start index twice (``timestamp_start`` offset and ``start_index=1``
  on top of a 1-based formula) and so lands one frame later (902 -> 62); the difference is
  1/30 s and has no measurable effect on accuracy, but stdet picks the convention above and
  uses it in every reader, so both backends and all tools agree on which frame is "the" keyframe.
* For a video file, frame index ``i`` is the frame whose presentation time (relative to the
  stream's start) is ``(i - 1) / fps``; a decoded frame's index is ``round(pts_seconds * fps) + 1``
  (halves rounding up).
  For a video not encoded at ``fps``, index ``i`` gets the last frame whose computed index is
  ``<= i`` (the frame shown after resampling to ``fps``), so indices still run ``1..duration*fps``.

Both backends (:class:`RawFrames`, :class:`VideoFile`) have the same interface
(:class:`FrameSource`) and return clips as ``uint8`` arrays of shape ``(T, H, W, 3)``, RGB.
They hold only paths and small caches, so they pickle and work in DataLoader workers (forked or
spawned); files are opened per call.
"""
from __future__ import annotations

import math
import os
import re
import string
from fractions import Fraction
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .errors import FrameReadError

FPS = 30
AVA_FIRST_SECOND = 900

__all__ = [
    "FPS", "AVA_FIRST_SECOND", "keyframe_to_frame_index", "clip_frame_indices", "FrameSource",
    "RawFrames", "VideoFile", "open_frame_source", "read_keyframe_clip",
]


def keyframe_to_frame_index(timestamp: int, fps: int = FPS,
                            first_second: int = AVA_FIRST_SECOND) -> int:
    """1-based index of the frame shown at ``timestamp - first_second`` seconds of the cut video."""
    return (int(timestamp) - first_second) * fps + 1


def clip_frame_indices(center: int, clip_len: int, frame_interval: int, num_frames: int,
                       rng: np.random.Generator | None = None) -> np.ndarray:
    """1-based indices of ``clip_len`` frames, ``frame_interval`` apart, around frame ``center``.

    The clip starts ``(clip_len // 2) * frame_interval`` frames before ``center``, so ``center`` is
    frame ``clip_len // 2`` of the clip (e.g. 32x2: 32 frames from center-32 to center+30).
    With ``rng`` (training) each index is jittered by an integer drawn uniformly from
    ``[-(frame_interval // 2), (frame_interval - 1) // 2]``, which keeps the jittered samples within
    their own ``frame_interval``-wide slot. Indices are finally clamped to ``[1, num_frames]`` so
    clips near either end of the video repeat the edge frame.

    Returns:
        int64 array of shape ``(clip_len,)``.
    """
    if clip_len < 1 or frame_interval < 1:
        raise ValueError(f"clip_len and frame_interval must be >= 1, got {clip_len}, {frame_interval}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    start = center - (clip_len // 2) * frame_interval
    indices = start + np.arange(clip_len, dtype=np.int64) * frame_interval
    if rng is not None:
        low, high = -(frame_interval // 2), (frame_interval - 1) // 2
        indices = indices + rng.integers(low, high + 1, size=clip_len)
    return np.clip(indices, 1, num_frames).astype(np.int64)


@runtime_checkable
class FrameSource(Protocol):
    """What a frame backend provides. ``video_id`` is the AVA video id (e.g. ``"-5KQ66BBWC4"``)."""

    root: Path

    def video_path(self, video_id: str) -> Path:
        """The directory or file holding the video's frames (for messages)."""
        ...

    def num_frames(self, video_id: str) -> int:
        """Number of frames of the video; valid indices are ``1..num_frames``."""
        ...

    def read(self, video_id: str, indices: Sequence[int]) -> np.ndarray:
        """Frames at the given 1-based indices, in order, as uint8 ``(T, H, W, 3)`` RGB."""
        ...


def _check_indices(path: Path, indices: Sequence[int]) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise FrameReadError(path, "no frame indices requested")
    if idx.min() < 1:
        raise FrameReadError(path, f"frame index {int(idx.min())} < 1 (frames are numbered from 1)")
    return idx


def _stack(path: Path, frames: list[np.ndarray]) -> np.ndarray:
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise FrameReadError(path, f"frames have different sizes: {sorted(shapes)}")
    return np.stack(frames)


def _check_min_short_side(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"min_short_side must be a positive integer or None, got {value!r}")
    return int(value)


class RawFrames:
    """Extracted frames: ``root/<video_id>/<filename_tmpl.format(i)>``, ``i`` from 1.

    Reduced-size decoding: with ``min_short_side=S`` (the attribute, or the argument of
    :meth:`read`), a JPEG whose short side is at least ``2 * S`` is decoded by libjpeg at 1/2, 1/4
    or 1/8 of its size (PIL's ``Image.draft``), the strongest reduction that keeps the short side
    ``>= S``. A pipeline that resizes frames to a short side of at most ``S`` afterwards gets
    nearly the same clip (the DCT-domain downscale replaces part of the antialiased resize) for a
    fraction of the decode time. ``None`` (default) decodes every frame at full size, exactly as
    without the option. Other formats (PNG...) are always decoded at full size.

    A full-size decode gives the pixels MMAction2's ``RawFrameDecode`` gets from
    ``mmcv.imfrombytes(..., channel_order="rgb")`` (OpenCV's ``imdecode``, BGR turned to RGB):
    both use libjpeg-turbo's default decoder, equal on 4:2:0, 4:4:4 and progressive JPEGs
    (``benchmarks/preprocess_parity.py``). One difference: OpenCV applies an EXIF orientation
    and PIL does not (frames written by ffmpeg carry none).

    Args:
        root: directory with one sub-directory per video.
        filename_tmpl: ``str.format`` template with a single integer field.
        min_short_side: default of :meth:`read`'s ``min_short_side`` (None: full-size decode).
    """

    def __init__(self, root: str | os.PathLike, filename_tmpl: str = "img_{:05d}.jpg",
                 min_short_side: int | None = None) -> None:
        self.root = Path(root)
        self.filename_tmpl = filename_tmpl
        self.min_short_side = _check_min_short_side(min_short_side)
        self._pattern = self._template_regex(filename_tmpl)
        self._num_frames: dict[str, int] = {}

    @staticmethod
    def _template_regex(tmpl: str) -> re.Pattern:
        parts = list(string.Formatter().parse(tmpl))
        fields = [p for p in parts if p[1] is not None]
        if len(fields) != 1:
            raise ValueError(f"filename_tmpl must have exactly one field, got {tmpl!r}")
        regex = ""
        for literal, field, _, _ in parts:
            regex += re.escape(literal)
            if field is not None:
                regex += r"\d+"
        return re.compile(regex)

    def __repr__(self) -> str:
        extra = f", min_short_side={self.min_short_side}" if self.min_short_side else ""
        return f"RawFrames(root={str(self.root)!r}, filename_tmpl={self.filename_tmpl!r}{extra})"

    def video_path(self, video_id: str) -> Path:
        return self.root / video_id

    def frame_path(self, video_id: str, index: int) -> Path:
        return self.root / video_id / self.filename_tmpl.format(int(index))

    def num_frames(self, video_id: str) -> int:
        """Count of files in the video's directory matching the template (cached)."""
        if video_id not in self._num_frames:
            vdir = self.video_path(video_id)
            if not vdir.is_dir():
                raise FrameReadError(vdir, "video frame directory not found")
            n = sum(1 for name in os.listdir(vdir) if self._pattern.fullmatch(name))
            if n == 0:
                raise FrameReadError(vdir, f"no frames matching {self.filename_tmpl!r}")
            self._num_frames[video_id] = n
        return self._num_frames[video_id]

    def _load(self, path: Path, min_short_side: int | None = None) -> np.ndarray:
        from PIL import Image

        if not path.is_file():
            raise FrameReadError(path, "frame not found")
        try:
            with Image.open(path) as im:
                if min_short_side is not None and im.format == "JPEG":
                    # libjpeg picks the largest of 1/8, 1/4, 1/2 with both sides >= the
                    # requested size (none: full size), so the short side stays >= min_short_side.
                    im.draft("RGB", (min_short_side, min_short_side))
                # convert() forces a full decode, so truncated files fail here and not later.
                rgb = im.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise FrameReadError(path, f"cannot decode frame: {e}") from e

    def read(self, video_id: str, indices: Sequence[int],
             min_short_side: int | None = None) -> np.ndarray:
        """Frames at 1-based ``indices`` as uint8 ``(T, H, W, 3)``; each distinct index decoded once,
        and only those: a clip of 4 frames 16 apart opens 4 files, not 64.

        ``min_short_side`` (default: the reader's attribute) allows a reduced-size JPEG decode
        whose short side is still ``>= min_short_side`` (see the class docstring)."""
        vdir = self.video_path(video_id)
        idx = _check_indices(vdir, indices)
        if not vdir.is_dir():
            raise FrameReadError(vdir, "video frame directory not found")
        size = _check_min_short_side(
            self.min_short_side if min_short_side is None else min_short_side)
        decoded = {int(i): self._load(self.frame_path(video_id, int(i)), size)
                   for i in np.unique(idx)}
        return _stack(vdir, [decoded[int(i)] for i in idx])


class VideoFile:
    """Frames decoded from ``root/<video_id><ext>`` with PyAV.

    Index ``i`` is the frame presented at ``(i - 1) / fps`` seconds after the stream's start.
    A read seeks backwards to the keyframe before the first requested frame and decodes forward
    only up to the last requested one.

    Args:
        root: directory holding the videos.
        extensions: extensions tried in order to find a video's file.
        fps: frame rate that defines indices (AVA: 30).
    """

    def __init__(self, root: str | os.PathLike,
                 extensions: Sequence[str] = (".mp4", ".mkv", ".webm", ".avi"),
                 fps: int = FPS) -> None:
        self.root = Path(root)
        self.extensions = tuple(extensions)
        self.fps = fps
        self._num_frames: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"VideoFile(root={str(self.root)!r}, extensions={self.extensions!r}, fps={self.fps})"

    def video_path(self, video_id: str) -> Path:
        """The video's file; raises :class:`FrameReadError` if none of the extensions exists."""
        for ext in self.extensions:
            path = self.root / f"{video_id}{ext}"
            if path.is_file():
                return path
        tried = "|".join(e.lstrip(".") for e in self.extensions)
        raise FrameReadError(self.root / f"{video_id}.{{{tried}}}", "video file not found")

    @staticmethod
    def _open(path: Path):
        import av

        try:
            container = av.open(str(path))
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise FrameReadError(path, f"cannot open video: {e}") from e
        if not container.streams.video:
            container.close()
            raise FrameReadError(path, "no video stream")
        return container

    def _count_frames(self, path: Path) -> int:
        container = self._open(path)
        try:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            # The frame count is exact when the container stores it and the stream runs at our fps;
            # otherwise cover the stream's duration with fps-spaced indices.
            if stream.frames and rate is not None and Fraction(rate) == self.fps:
                return int(stream.frames)
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration:
                import av

                seconds = container.duration / av.time_base
            else:
                seconds = 0.0
            n = int(round(seconds * self.fps))
            if n < 1:
                raise FrameReadError(path, "cannot determine the number of frames")
            return n
        finally:
            container.close()

    def num_frames(self, video_id: str) -> int:
        """Number of fps-spaced frames in the video (cached)."""
        if video_id not in self._num_frames:
            self._num_frames[video_id] = self._count_frames(self.video_path(video_id))
        return self._num_frames[video_id]

    def read(self, video_id: str, indices: Sequence[int]) -> np.ndarray:
        """Frames at 1-based ``indices`` as uint8 ``(T, H, W, 3)`` RGB."""
        import av

        path = self.video_path(video_id)
        idx = _check_indices(path, indices)
        wanted = [int(i) for i in np.unique(idx)]
        container = self._open(path)
        try:
            frames = self._decode(container, wanted, seek=wanted[0] > 1)
            if frames is None:
                # The seek landed after the first wanted frame (bad index in the file): start over.
                container.close()
                container = self._open(path)
                frames = self._decode(container, wanted, seek=False)
        except FrameReadError:
            raise  # already names the file (and is a ValueError: keep it from the clause below)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise FrameReadError(path, f"cannot decode video: {e}") from e
        finally:
            container.close()
        if frames is None or len(frames) < len(wanted):
            got = set(frames or {})
            missing = [i for i in wanted if i not in got]
            raise FrameReadError(path, f"frame(s) {missing[:5]} not reached; decoding ended "
                                       f"(video has about {self.num_frames(video_id)} frames)")
        return _stack(path, [frames[int(i)] for i in idx])

    def _decode(self, container, wanted: list[int], seek: bool) -> dict[int, np.ndarray] | None:
        """Decode forward from (a keyframe before) ``wanted[0]`` up to ``wanted[-1]``.

        Each wanted index gets the last decoded frame whose index is <= it: for a stream at
        ``fps`` that is the frame with exactly that index; for other rates it is the frame the
        ``fps`` resampling would show (as ``ffmpeg -r fps`` extraction does).
        Needing the next frame to know that a frame was the last one, decoding stops one frame
        after ``wanted[-1]``. Returns ``None`` when the first decoded frame already lies past
        ``wanted[0]`` after a seek.
        """
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        start = stream.start_time or 0
        if seek:
            target = Fraction(wanted[0] - 1, self.fps)
            container.seek(start + int(target / tb), stream=stream, backward=True, any_frame=False)
        out: dict[int, np.ndarray] = {}
        pending = list(wanted)  # sorted ascending
        prev: tuple[int, object] | None = None  # (index, av.VideoFrame) of the last decoded frame
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            # Halves round up (not to even), as ffmpeg's fps filter does, so ties resolve alike.
            index = math.floor((frame.pts - start) * tb * self.fps + Fraction(1, 2)) + 1
            if prev is None and seek and index > pending[0]:
                return None
            while pending and pending[0] < index:
                # prev is the frame on screen at pending[0]'s time; if nothing was decoded before
                # (the stream starts late), this first frame is the closest there is.
                src = prev[1] if prev is not None else frame
                out[pending.pop(0)] = src.to_ndarray(format="rgb24")
            if not pending:
                break  # stop one frame past the last wanted one, never at the end of the video
            prev = (index, frame)
        # End of stream: the last frame stays on screen for one frame duration.
        while pending and prev is not None and pending[0] <= prev[0] + self._last_frame_span(stream):
            out[pending.pop(0)] = prev[1].to_ndarray(format="rgb24")
        return out

    def _last_frame_span(self, stream) -> int:
        """Indices covered by the last frame after its own (>= 0; more for streams below fps)."""
        rate = stream.average_rate or stream.guessed_rate
        if rate is None or Fraction(rate) >= self.fps:
            return 0
        return int(np.ceil(self.fps / float(rate))) - 1


def open_frame_source(root: str | os.PathLike, kind: str = "rawframes", **kwargs) -> FrameSource:
    """A frame source: ``RawFrames(root, **kwargs)`` for ``kind="rawframes"``,
    ``VideoFile(root, **kwargs)`` for ``kind="video"``."""
    if kind == "rawframes":
        return RawFrames(root, **kwargs)
    if kind == "video":
        return VideoFile(root, **kwargs)
    raise ValueError(f"unknown frame source kind {kind!r}; expected 'rawframes' or 'video'")


def read_keyframe_clip(source: FrameSource, video_id: str, timestamp: int, clip_len: int,
                       frame_interval: int, rng: np.random.Generator | None = None, *,
                       fps: int = FPS, first_second: int = AVA_FIRST_SECOND,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Read the clip centred on an AVA keyframe.

    Returns:
        ``(clip, indices)``: uint8 ``(clip_len, H, W, 3)`` RGB and the int64 ``(clip_len,)``
        1-based frame indices it was read from.

    Raises:
        FrameReadError: the keyframe's own frame lies outside the video (usually a wrong
            video, a truncated download or a wrong fps), or a frame cannot be read.
    """
    center = keyframe_to_frame_index(timestamp, fps, first_second)
    n = source.num_frames(video_id)
    if not 1 <= center <= n:
        raise FrameReadError(source.video_path(video_id),
                             f"keyframe {int(timestamp):04d} -> frame {center} outside 1..{n}",
                             key=f"{video_id},{int(timestamp):04d}")
    indices = clip_frame_indices(center, clip_len, frame_interval, n, rng)
    return source.read(video_id, indices), indices
