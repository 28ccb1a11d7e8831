"""Training-clip throughput of stdet's data pipeline, from rawframes and from video files.

What is measured is the real training path: ``AVADataset`` (the zoo config's clip sampling with
train jitter, ``RandomRescale(train_scale)``, ``RandomCrop(crop_size)``, ``Flip``, normalisation)
behind ``stdet.engine.data.train_loader`` (DistributedSampler, ``ava_collate``), with N DataLoader
workers. Nothing is re-implemented here; the dataset is built with the same arguments as
``stdet.engine.data.build_dataset`` (``data.frame_source`` picks rawframes or videos).

The data are synthesised (seeded, deterministic) in a temporary AVA root, at AVA's resolution:
``--videos`` videos of ``--seconds`` seconds at 30 fps, ``--size`` pixels (default 854x480, the
short side of AVA's rawframes), stored both as ``rawframes/VIDEO/img_%05d.jpg`` (JPEG quality
``--jpeg-quality``) and as ``videos_15min/VIDEO.mp4`` (PyAV libx264, GOP ``--gop``, x264's default
250 unless set). Frames are photo-like: a textured background seen by a slowly panning camera,
moving textured "actors" and per-frame sensor noise, so that JPEG sizes and inter-frame coding
behave like real footage rather than like flat synthetic frames. Annotations (1-8 persons a
keyframe), proposals and label map are written with stdet's own writers.

Usage::

    .venv/bin/python benchmarks/data_throughput.py                 # default run (~2-3 min, 2 cores)
    .venv/bin/python benchmarks/data_throughput.py --quick         # smoke run (~30 s)
    .venv/bin/python benchmarks/data_throughput.py --workers 0 1 2 4 8 --gpu-clips-per-s 40
        [--configs NAME ...] [--sources rawframes video] [--batch 8] [--keep DIR]
        [--reduced-decode/--no-reduced-decode] [--reduced-size 1280x720]

Output: a markdown table (source, config, workers, clips/s, frames decoded/s, ms per clip), the
decode accounting (frames decoded per clip), the reduced-size JPEG decode comparison, and, with
``--gpu-clips-per-s X`` (a measured GPU training speed, e.g. from ``gpu_train_step.py``), the
number of workers one GPU needs: ``ceil(X / r)``, ``r`` the clips/s of ONE worker (the
``workers=1`` row; on a machine with fewer free cores than workers, rows with more workers
measure the cores, not the pipeline).

Decode only what a clip uses (read from ``stdet/data/frames.py`` and checked here on every run):

* ``RawFrames.read`` decodes each distinct requested index once and no other file: a SlowOnly
  4x16 clip opens 4 JPEGs, a SlowFast 32x2 clip 32 (fewer when edge clamping repeats an index).
  The "decode accounting" section counts ``_load`` calls per clip and checks decoded == distinct.
* ``VideoFile.read`` seeks (``backward=True, any_frame=False``) to the last keyframe at or before
  the first requested frame and decodes forward, stopping one frame after the last requested
  one. So a video clip costs ``(first - keyframe) + (last - first) + 2`` decoded frames, whatever
  its ``clip_len``: 4x16 and 32x2 clips both span ~64 frames, and the distance back to the
  keyframe (on average half a GOP) often dominates. The accounting section counts frames the
  decoder returns and checks that the first one is the last keyframe <= the first wanted frame
  (keyframe positions taken from a demux of the packets), and that decoding ended at
  ``last + 1``.

Reduced-size JPEG decode (``RawFrames(min_short_side=S)``): the training pipeline rescales every
frame to a short side of at most ``max(train_scale)`` (320 for the zoo), so frames whose short
side is at least twice that can be decoded by libjpeg at 1/2 (1/4, 1/8) scale. Training does
this by default (``data.reduced_decode``); this benchmark builds the dataset with it off and on
from ``--reduced-size`` frames (default 1280x720, i.e. original-resolution 720p AVA frames; 480p
frames are below 2 x 320 and gain nothing) and reports both rates, at ``--reduced-workers``.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stdet import zoo  # noqa: E402
from stdet.configs import Config  # noqa: E402
from stdet.data.annotations import write_annotations  # noqa: E402
from stdet.data.dataset import AVADataset  # noqa: E402
from stdet.data.frames import FPS, RawFrames, VideoFile, read_keyframe_clip  # noqa: E402
from stdet.data.io import atomic_write_text  # noqa: E402
from stdet.data.labels import ava_label_map, write_label_map  # noqa: E402
from stdet.data.layout import AVALayout  # noqa: E402
from stdet.data.proposals import save_proposals  # noqa: E402
from stdet.engine.data import build_dataset, train_loader  # noqa: E402
from stdet.engine.distributed import DistInfo  # noqa: E402

DEFAULT_CONFIGS = {
    "slowonly_4x16": "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
    "slowfast_8x8": "slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb",
}
FIRST_SECOND = 900


# --------------------------------------------------------------------------------------------
# synthetic AVA-like data
# --------------------------------------------------------------------------------------------

def natural_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo-like still: smooth colour fields at several scales, hard-edged shapes, fine noise."""
    img = np.zeros((height, width, 3), np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    for scale in (1, 3, 9, 27, 81):
        for c in range(3):
            fx, fy = rng.uniform(0.5, 1.5, 2) * scale * np.pi
            px, py = rng.uniform(0, 2 * np.pi, 2)
            img[..., c] += (60 / scale ** 0.5) * np.sin(fx * xx + px) * np.cos(fy * yy + py)
    img += 128
    for _ in range(40):
        h, w = rng.integers(height // 30, height // 4), rng.integers(width // 30, width // 4)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        img[y:y + h, x:x + w] = 0.5 * img[y:y + h, x:x + w] + 0.5 * rng.uniform(0, 255, 3)
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class VideoJob:
    root: str
    video_id: str
    seed: int
    seconds: int
    width: int
    height: int
    jpeg_quality: int
    gop: int
    write_video: bool


def _render_video(job: VideoJob) -> int:
    """Write one video's rawframes (and mp4); returns the number of frames."""
    from PIL import Image

    rng = np.random.default_rng(job.seed)
    w, h = job.width, job.height
    margin = max(16, w // 10)
    background = natural_image(rng, h + margin, w + margin)
    actors = []
    for _ in range(int(rng.integers(3, 7))):
        ah, aw = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 16, w // 8))
        actors.append({"tex": natural_image(rng, ah, aw), "x": rng.uniform(0, w - aw),
                       "y": rng.uniform(h * 0.3, h - ah), "vx": rng.uniform(-3, 3) * w / 854})
    noise = [rng.normal(0, 3, (h, w, 3)).astype(np.int16) for _ in range(7)]
    layout = AVALayout(job.root)
    frame_dir = layout.rawframes / job.video_id
    frame_dir.mkdir(parents=True, exist_ok=True)
    n = job.seconds * FPS
    container = stream = None
    if job.write_video:
        import av

        layout.videos.mkdir(parents=True, exist_ok=True)
        container = av.open(str(layout.videos / f"{job.video_id}.mp4"), "w")
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = job.gop
        stream.options = {"preset": "veryfast", "crf": "23", "keyint_min": str(min(25, job.gop)),
                          "threads": "1"}
    for f in range(n):
        t = f / FPS
        ox = int(margin / 2 * (1 + math.sin(2 * math.pi * t / 17)))
        oy = int(margin / 4 * (1 + math.sin(2 * math.pi * t / 11)))
        frame = background[oy:oy + h, ox:ox + w].copy()
        for a in actors:
            ah, aw = a["tex"].shape[:2]
            x = int(a["x"] + a["vx"] * f) % max(1, w - aw)
            y = int(a["y"] + 4 * math.sin(2 * math.pi * t))
            y = min(max(y, 0), h - ah)
            frame[y:y + ah, x:x + aw] = a["tex"]
        frame = np.clip(frame.astype(np.int16) + noise[f % len(noise)], 0, 255).astype(np.uint8)
        Image.fromarray(frame).save(frame_dir / f"img_{f + 1:05d}.jpg", quality=job.jpeg_quality)
        if container is not None:
            import av

            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
    if container is not None:
        for packet in stream.encode():
            container.mux(packet)
        container.close()
    return n


def make_ava_root(root: Path, *, videos: int, seconds: int, width: int, height: int,
                  jpeg_quality: int, gop: int, write_video: bool, seed: int = 0,
                  workers: int = 2) -> list[str]:
    """A synthetic AVA root (both annotation versions 2.1 and 2.2, train split) under ``root``."""
    rng = np.random.default_rng(seed)
    chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    ids = ["".join(rng.choice(list(chars), 11)) for _ in range(videos)]
    jobs = [VideoJob(str(root), v, seed * 1000 + i, seconds, width, height, jpeg_quality, gop,
                     write_video) for i, v in enumerate(ids)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            list(pool.map(_render_video, jobs))
    else:
        for job in jobs:
            _render_video(job)
    rows, proposals = [], {}
    actions = sorted(ava_label_map())
    for v in ids:
        for t in range(FIRST_SECOND + 2, FIRST_SECOND + seconds - 2):
            persons = int(rng.integers(1, 9))
            boxes = []
            for e in range(persons):
                x1, y1 = rng.uniform(0, 0.8), rng.uniform(0, 0.5)
                box = (x1, y1, min(1.0, x1 + rng.uniform(0.08, 0.2)), min(1.0, y1 + rng.uniform(0.3, 0.5)))
                boxes.append(box)
                for a in rng.choice(actions, int(rng.integers(1, 4)), replace=False):
                    rows.append((v, t, *box, int(a), e))
            props = [(*np.clip(np.add(b, rng.normal(0, 0.01, 4)), 0, 1), rng.uniform(0.85, 1.0))
                     for b in boxes]
            props += [(0.1, 0.1, 0.3, 0.6, rng.uniform(0.1, 0.8))]
            proposals[f"{v},{t:04d}"] = np.asarray(props, np.float64)
    for version in ("2.1", "2.2"):
        layout = AVALayout(root, version)
        layout.annotations.mkdir(parents=True, exist_ok=True)
        write_annotations(layout.ann_file("train"), rows)
        save_proposals(layout.proposal_file("train"), proposals)
        atomic_write_text(layout.exclude_file("train"), "")
        write_label_map(layout.label_file, ava_label_map(), form="label")
    return ids


# --------------------------------------------------------------------------------------------
# the pipeline under test
# --------------------------------------------------------------------------------------------

def build_train_dataset(cfg: Config, root: Path, frame_source: str,
                        reduced_decode: bool | None = None) -> AVADataset:
    """``stdet.engine.data.build_dataset`` of the train split under ``root``, with the config's
    frame source and reduced-size decoding set (None: the config's own choice)."""
    options = [f"data.frame_source={frame_source}"]
    if reduced_decode is not None:
        options.append(f"data.reduced_decode={str(reduced_decode).lower()}")
    return build_dataset(zoo.resolve(cfg, *options, data_root=root), "train")


def measure(dataset, batch: int, workers: int, min_batches: int, min_seconds: float,
            seed: int = 0) -> float:
    """Clips per second of ``train_loader(dataset, batch, workers)``: ``max(1, workers)`` warm-up
    batches (worker start-up, first file opens), then batches until both ``min_batches`` and
    ``min_seconds`` are reached. The dataset is repeated (``ConcatDataset``) so that no epoch ends
    (and no worker restarts) inside a measurement."""
    warmup = max(1, workers)
    repeated = torch.utils.data.ConcatDataset([dataset] * max(1, math.ceil(20000 / len(dataset))))
    loader = train_loader(repeated, batch, workers, DistInfo(), seed)
    loader.sampler.set_epoch(0)
    loader.generator.manual_seed(seed)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    clips = batches = 0
    while batches < min_batches or time.perf_counter() - start < min_seconds:
        clips += next(it)["clips"].shape[0]
        batches += 1
    elapsed = time.perf_counter() - start
    del it
    return clips / elapsed


class _CountingContainer:
    """Forwards to a PyAV container and records the frames ``decode`` yields."""

    def __init__(self, container, log: list):
        self._c, self._log = container, log

    def __getattr__(self, name):
        return getattr(self._c, name)

    def decode(self, *args, **kwargs):
        for frame in self._c.decode(*args, **kwargs):
            self._log.append((frame.pts, bool(frame.key_frame)))
            yield frame


class CountingVideoFile(VideoFile):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log: list = []

    def _open(self, path):  # type: ignore[override]
        return _CountingContainer(VideoFile._open(path), self.log)


class CountingRawFrames(RawFrames):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loads = 0

    def _load(self, path, min_short_side=None):  # type: ignore[override]
        self.loads += 1
        return super()._load(path, min_short_side)


def keyframe_indices(path: Path) -> np.ndarray:
    """1-based frame indices of the keyframes of a video (from a demux, no decoding)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        start, tb = s.start_time or 0, s.time_base
        idx = [math.floor((p.pts - start) * tb * FPS + 0.5) + 1
               for p in c.demux(s) if p.pts is not None and p.is_keyframe]
    return np.unique(np.asarray(idx, np.int64))


def decode_accounting(cfg: Config, root: Path, videos: list[str], seconds: int,
                      sources: list[str], samples: int, seed: int = 0) -> dict[str, float]:
    """Frames decoded per clip (and checks of what is decoded) for the config's train sampling."""
    rng = np.random.default_rng(seed)
    layout = AVALayout(root, cfg.data.version)
    out = {}
    keys = [(v, t) for v in videos for t in range(FIRST_SECOND + 2, FIRST_SECOND + seconds - 2)]
    picks = [keys[i] for i in rng.choice(len(keys), min(samples, len(keys)), replace=False)]
    if "rawframes" in sources:
        src = CountingRawFrames(layout.rawframes)
        total = 0
        for v, t in picks:
            before = src.loads
            _, idx = read_keyframe_clip(src, v, t, cfg.data.clip_len, cfg.data.frame_interval, rng)
            assert src.loads - before == len(np.unique(idx)), "RawFrames decoded extra frames"
            total += src.loads - before
        out["rawframes"] = total / len(picks)
    if "video" in sources:
        src = CountingVideoFile(layout.videos)
        import av

        kf, timing = {}, {}
        for v in videos:
            kf[v] = keyframe_indices(src.video_path(v))
            with av.open(str(src.video_path(v))) as c:
                s = c.streams.video[0]
                timing[v] = (s.time_base, s.start_time or 0)
        total = 0
        for v, t in picks:
            src.log.clear()
            _, idx = read_keyframe_clip(src, v, t, cfg.data.clip_len, cfg.data.frame_interval, rng)
            tb, start = timing[v]
            got = [math.floor((p - start) * tb * FPS + 0.5) + 1 for p, _ in src.log if p is not None]
            first, last = int(idx.min()), int(idx.max())
            expected_start = int(kf[v][kf[v] <= first].max()) if first > 1 else 1
            assert got[0] == expected_start, (got[0], expected_start, first)
            assert src.log[0][1] or first == 1, "decoding did not start at a keyframe"
            assert max(got) <= last + 1, ("decoded past the last wanted frame + 1", max(got), last)
            total += len(src.log)
        out["video"] = total / len(picks)
    return out


# --------------------------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                   help="zoo names (or the short names %s)" % ", ".join(DEFAULT_CONFIGS))
    p.add_argument("--sources", nargs="+", default=["rawframes", "video"], choices=["rawframes", "video"])
    p.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2, 4])
    p.add_argument("--batch", type=int, default=4, help="clips per DataLoader batch")
    p.add_argument("--min-batches", type=int, default=2,
                   help="timed batches: at least this many per worker (and at least this many)")
    p.add_argument("--min-seconds", type=float, default=3.0, help="timed for at least this long")
    p.add_argument("--videos", type=int, default=2)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--size", default="854x480", help="WxH of the stored frames (default 480p)")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--gop", type=int, default=250, help="keyframe interval of the mp4s (x264: 250)")
    p.add_argument("--reduced-decode", action=argparse.BooleanOptionalAction, default=True,
                   help="also compare full and reduced-size JPEG decode on --reduced-size frames")
    p.add_argument("--reduced-size", default="1280x720")
    p.add_argument("--reduced-workers", type=int, default=1)
    p.add_argument("--accounting-samples", type=int, default=8)
    p.add_argument("--gpu-clips-per-s", type=float, action="append", default=[],
                   metavar="X", help="measured GPU training clips/s (repeatable: one per config, "
                   "in --configs order, or one for all)")
    p.add_argument("--quick", action="store_true", help="~30 s smoke run")
    p.add_argument("--keep", help="write the synthetic data here and keep it (default: a temp dir)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.workers = [w for w in args.workers if w <= 1] or [0]
        args.seconds, args.videos, args.batch, args.min_batches, args.min_seconds = 6, 1, 2, 1, 1.0
        args.accounting_samples = 3
        args.size = "640x360"
        args.reduced_size = "1280x720"

    torch.set_num_threads(1)  # one core for the main process, as each worker gets
    names = [DEFAULT_CONFIGS.get(n, n) for n in args.configs]
    cfgs = [zoo.get(n) for n in names]
    width, height = parse_size(args.size)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="stdet-data-bench-"))
    try:
        t0 = time.perf_counter()
        videos = make_ava_root(tmp / "main", videos=args.videos, seconds=args.seconds, width=width,
                               height=height, jpeg_quality=args.jpeg_quality, gop=args.gop,
                               write_video="video" in args.sources, seed=args.seed)
        print(f"synthetic AVA root: {len(videos)} videos x {args.seconds} s at {FPS} fps, "
              f"{width}x{height}, JPEG q{args.jpeg_quality}, mp4 libx264 GOP {args.gop} "
              f"({time.perf_counter() - t0:.1f} s to write) under {tmp}")
        print(f"cores: {os.cpu_count()} (load average before measuring: "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}), torch threads in the main "
              f"process: 1, batch {args.batch}, warm-up max(1, workers) batches, then at least "
              f"{args.min_batches}*max(1, workers) batches and {args.min_seconds:g} s\n")

        # decode accounting
        print("## frames decoded per clip (train sampling, counted on up to "
              f"{args.accounting_samples} clips)\n")
        decoded: dict[tuple[str, str], float] = {}
        print("| config | sampling | rawframes: files decoded | video: frames decoded |")
        print("|---|---|---:|---:|")
        for cfg in cfgs:
            acc = decode_accounting(cfg, tmp / "main", videos, args.seconds, args.sources,
                                    args.accounting_samples,
                                    args.seed)
            for s, v in acc.items():
                decoded[(s, cfg.name)] = v
            print(f"| {cfg.name} | {cfg.data.clip_len}x{cfg.data.frame_interval} | "
                  f"{acc.get('rawframes', float('nan')):.1f} | {acc.get('video', float('nan')):.1f} |")
        print("\nchecked on every clip: RawFrames decodes exactly the distinct sampled indices; "
              "VideoFile starts decoding at the last keyframe <= the first sampled frame and stops "
              "at most one frame after the last.\n")

        rows = []
        for source in args.sources:
            for cfg in cfgs:
                ds = build_train_dataset(cfg, tmp / "main", source)
                for w in args.workers:
                    rate = measure(ds, args.batch, w, args.min_batches * max(1, w),
                                   args.min_seconds, args.seed)
                    rows.append((source, cfg, w, rate, rate * decoded[(source, cfg.name)]))
                    print(f"  measured {source} {cfg.name} workers={w}: {rate:.2f} clips/s",
                          file=sys.stderr, flush=True)

        print(f"## training-clip throughput ({width}x{height} stored frames; train_scale "
              f"{cfgs[0].data.train_scale}, crop {cfgs[0].data.crop_size}, flip)\n")
        print("| source | config | clip | workers | clips/s | frames decoded/s | ms per clip |")
        print("|---|---|---|---:|---:|---:|---:|")
        for source, cfg, w, rate, fps in rows:
            print(f"| {source} | {cfg.name} | {cfg.data.clip_len}x{cfg.data.frame_interval} | {w} | "
                  f"{rate:.2f} | {fps:.0f} | {1000 / rate:.1f} |")

        if args.reduced_decode:
            rw, rh = parse_size(args.reduced_size)
            t0 = time.perf_counter()
            rvideos = make_ava_root(tmp / "reduced", videos=1, seconds=max(8, args.seconds // 2),
                                    width=rw, height=rh, jpeg_quality=args.jpeg_quality,
                                    gop=args.gop, write_video=False, seed=args.seed + 1)
            print(f"\n## reduced-size JPEG decode ({rw}x{rh} rawframes, 1 video, "
                  f"{time.perf_counter() - t0:.1f} s to write; workers={args.reduced_workers})\n")
            print("| config | min_short_side | decoded frame | clips/s full | clips/s reduced | speed-up |")
            print("|---|---:|---|---:|---:|---:|")
            for cfg in cfgs:
                ds = build_train_dataset(cfg, tmp / "reduced", "rawframes", reduced_decode=False)
                s = max(cfg.data.train_scale)
                kw = dict(batch=args.batch, workers=args.reduced_workers,
                          min_batches=args.min_batches * max(1, args.reduced_workers),
                          min_seconds=args.min_seconds, seed=args.seed)
                full = measure(ds, **kw)
                ds = build_train_dataset(cfg, tmp / "reduced", "rawframes", reduced_decode=True)
                assert ds.source.min_short_side == s
                shape = ds.source.read(rvideos[0], [61]).shape[1:3]
                reduced = measure(ds, **kw)
                print(f"| {cfg.name} | {s} | {shape[1]}x{shape[0]} | {full:.2f} | {reduced:.2f} | "
                      f"{reduced / full:.2f}x |")
            # fidelity: what the pipeline makes of a frame (resize to the short side S), both ways
            from stdet.data.transforms import Resize

            frames = list(range(31, min(240, 30 * max(8, args.seconds // 2)), 29))[:8]
            full_src = RawFrames(tmp / "reduced" / "rawframes")
            red_src = RawFrames(tmp / "reduced" / "rawframes", min_short_side=320)
            for s in (320, 256):
                a, _ = Resize(s)(full_src.read(rvideos[0], frames), [])
                b, _ = Resize(s)(red_src.read(rvideos[0], frames, min_short_side=s), [])
                diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
                print(f"\nfidelity at short side {s} ({len(frames)} frames): reduced decode + resize "
                      f"vs full decode + resize: mean abs diff {diff.mean():.2f}, 99th percentile "
                      f"{np.percentile(diff, 99):.0f}, max {diff.max()} grey levels")

        if args.gpu_clips_per_s:
            gpu = args.gpu_clips_per_s
            if len(gpu) == 1:
                gpu = gpu * len(cfgs)
            if len(gpu) != len(cfgs):
                raise SystemExit("give one --gpu-clips-per-s, or one per config")
            print("\n## DataLoader workers one GPU needs: ceil(GPU clips/s / clips/s of one worker)\n")
            print("| source | config | GPU clips/s | one worker clips/s | workers needed |")
            print("|---|---|---:|---:|---:|")
            for source in args.sources:
                for cfg, x in zip(cfgs, gpu):
                    per = {w: r for s, c, w, r, _ in rows if s == source and c.name == cfg.name}
                    if 1 in per:
                        one = per[1]
                    elif per:
                        w_min = min(per)
                        one = per[w_min] / max(1, w_min)
                    else:
                        continue
                    print(f"| {source} | {cfg.name} | {x:g} | {one:.2f} | {math.ceil(x / one)} |")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
