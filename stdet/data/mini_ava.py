"""mini-AVA: a small synthetic dataset in the exact AVA on-disk layout, made to teach.

Every video is a static cluttered background with a TV set and four actors, two to each of two
horizontal lanes, each in its own half (so actors never occlude each other). An actor is a coloured
body, a head with an eye on the side it faces, sometimes an item held in front of it, and sometimes
a sign above its head, as big as the TV: a blinking speech bubble while it speaks, three balls
while it juggles. Labels use
real AVA action ids and fall into groups that need different information:

============  ===================================  =================================================
group         classes (AVA id)                     decided by
============  ===================================  =================================================
motion        stand (12), walk (14), run/jog (10)  how the actor moves across frames; every frame
                                                   of an actor looks alike
brief_motion  jump/leap (7)                        hops in place (while standing), 8 frames each:
                                                   frames 8 or 16 apart show one instant of a hop;
                                                   frames 2 apart see it
appearance    carry/hold (an object) (17)          an item in front of the body, in one frame
scene         watch (e.g., TV) (61)                the TV set is on: whoever is in the room
                                                   watches it, wherever the set is
interaction   listen to (a person) (74),           another actor: listen to = someone else speaks,
              watch (a person) (80)                watch = someone else juggles (one speaker and one
                                                   juggler at a time), wherever they are
long_term     read (48), text on/look at a         the video: in a reading video actors stand or
              cellphone (57)                       walk and items are blue books, in a texting video
                                                   they stand or run and items are green phones;
                                                   an item shows its colour for 3-4 s, then, 2-5 s
                                                   later, its grey back for 4-7 s, held standing,
                                                   which looks the same in both
============  ===================================  =================================================

Half of the videos of a split read, half text: a long-term feature bank holds no identity of the
actors, so the whole video's past decides. The other cues are independent of each other and of
the actor itself: facing, the TV, the speaker and the juggler change at random. Every state changes
only on half-second boundaries, so the state at a keyframe holds for at least half a second
around it.

Layout written under ``OUT`` (AVA's and MMAction2's file names)::

    annotations/ava_{train,val}_v2.2.csv                       8 columns, one row per action
    annotations/ava_{train,val}_excluded_timestamps_v2.2.csv
    annotations/ava_action_list_v2.2.pbtxt                     label {name label_id label_type}
    annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt  item {name id}
    annotations/ava_dense_proposals_{train,val}.FAIR.recall_93.9.pkl
    rawframes/VIDEO/img_%05d.jpg                                30 fps, from 1
    videos_15min/VIDEO.mp4                                      only with ``videos=True``
    mini_ava.json                                               seed, spec, classes, counts

Videos are shorter than AVA's 901 s but keep its arithmetic: they stand for the cut from second
900, keyframes run from 902 to ``900 + seconds - 3`` and the keyframe at second t is frame
``(t - 900) * 30 + 1``.
"""
from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .annotations import write_annotations
from .frames import AVA_FIRST_SECOND as FIRST_SECOND
from .frames import FPS, keyframe_to_frame_index
from .io import atomic_write_text
from .labels import ava_label_map, write_label_map
from .layout import AVALayout
from .proposals import save_proposals

STAND, WALK, RUN, JUMP = 12, 14, 10, 7
CARRY, READ, TEXT = 17, 48, 57
WATCH_TV, LISTEN, WATCH = 61, 74, 80
TALK, THROW = 79, 58

CLASS_GROUPS: dict[str, tuple[int, ...]] = {
    "motion": (STAND, WALK, RUN),
    "brief_motion": (JUMP,),
    "appearance": (CARRY,),
    "scene": (WATCH_TV,),
    "sign": (TALK, THROW),
    "interaction": (LISTEN, WATCH),
    "long_term": (READ, TEXT),
}
CLASS_IDS: tuple[int, ...] = tuple(sorted(i for ids in CLASS_GROUPS.values() for i in ids))

# Geometry in pixels (for the default 128 x 96 frame).
BODY_W, BODY_H, HEAD_W, HEAD_H = 10, 16, 6, 6
ACTOR_H = BODY_H + HEAD_H
HOP_FRAMES, HOP_HEIGHT = 8, 7   # a hop lasts 8 frames: SlowOnly's 16 and SlowFast's slow 8 alias it
ITEM_W, ITEM_H = 10, 9         # held in front of the body, sticking out on the side it faces
SIGN_H = 12                     # room above the head for the bubble or the balls
BUBBLE_W, BALL = 16, 6          # the speech bubble's width, a ball's side
BLINK = 3                       # a speech bubble blinks white / black every 3 frames
TV_W, TV_H = 18, 12

_SPEED = {STAND: 0.0, WALK: 14.0, RUN: 40.0}  # px per second
_MOVING_P = 0.55                # a spell is spent walking (reading video) or running (texting)
_HOP_P = 0.45                   # a standing spell is spent hopping in place
_ACTOR_COLOURS = np.array([(220, 40, 40), (240, 140, 20), (200, 40, 200), (230, 210, 30),
                           (130, 60, 200), (150, 90, 40), (250, 120, 170), (30, 210, 210)], np.uint8)
_SKIN = np.array((235, 190, 150), np.uint8)
_EYE = np.array((20, 20, 20), np.uint8)
_ITEM_COLOURS = {READ: np.array((40, 70, 230), np.uint8), TEXT: np.array((30, 200, 60), np.uint8)}
_HELD_ITEM = np.array((128, 128, 128), np.uint8)
_BUBBLE = np.array((250, 250, 250), np.uint8)
_BALLS = np.array([(255, 60, 0), (255, 230, 0), (0, 230, 255)], np.uint8)
_TV_OFF = np.array((25, 25, 30), np.uint8)
_TV_FRAME = np.array((60, 60, 60), np.uint8)
_TV_ON = np.array([(255, 255, 255), (0, 200, 255), (255, 80, 180), (255, 200, 0)], np.uint8)
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

_HELD = 1  # item code of the grey item; 0 is no item, READ / TEXT the coloured item


@dataclass(frozen=True)
class MiniAVASpec:
    """Size of a mini-AVA build. ``seconds`` is each video's length (AVA's cut: 901); half the
    videos of each split read, half text (see the module's docstring)."""

    train_videos: int = 6
    val_videos: int = 4
    seconds: int = 36
    width: int = 128
    height: int = 96
    jpeg_quality: int = 85

    @property
    def keyframes(self) -> range:
        """Annotated seconds: 902 .. 900 + seconds - 3, as AVA's 902 .. 1798 for a 901 s cut."""
        return range(FIRST_SECOND + 2, FIRST_SECOND + self.seconds - 2)

    @property
    def num_frames(self) -> int:
        return self.seconds * FPS


@dataclass
class _Actor:
    """One actor's state at every frame (arrays of length num_frames)."""

    entity_id: int
    colour: np.ndarray
    x: np.ndarray          # left edge of the body, float px
    feet: np.ndarray       # y of the feet (lane baseline minus the hop), float px
    facing: np.ndarray     # +1 right, -1 left
    motion: np.ndarray     # AVA id of the motion state
    hopping: np.ndarray    # bool: hopping in place (while standing)
    item: np.ndarray       # 0 (none), _HELD (grey item), or READ / TEXT (that coloured item)
    long_term: np.ndarray  # READ / TEXT while the actor holds an item, else 0


@dataclass
class _Scene:
    """What the video shows besides its actors, per frame."""

    tv_box: tuple[int, int, int, int]  # x1, y1, x2, y2 of the screen
    tv_on: np.ndarray      # bool
    speaker: np.ndarray    # index of the speaking actor, -1 for none
    juggler: np.ndarray    # index of the juggling actor, -1 for none


def _video_ids(rng: np.random.Generator, n: int) -> list[str]:
    return ["".join(rng.choice(list(_ID_CHARS), 11)) for _ in range(n)]


def _half_second_segments(rng, seconds: int, lo: int, hi: int):
    """Segments [start, end) in frames with integer-second lengths in [lo, hi], starting at 0 and
    cut on half seconds after the first one, so keyframes (whole seconds) never sit on a boundary."""
    bounds = [0]
    t = rng.integers(lo, hi + 1) - 0.5
    while t < seconds:
        bounds.append(int(t * FPS))
        t += rng.integers(lo, hi + 1)
    bounds.append(seconds * FPS)
    return list(zip(bounds[:-1], bounds[1:]))


def _simulate_actor(rng, entity_id: int, colour, lane_feet: float, x_range: tuple[float, float],
                    spec: MiniAVASpec, kind: int) -> _Actor:
    """One actor's states, its body's left edge within ``x_range``; ``kind`` (READ or TEXT) is
    the video's: in a reading video actors stand or walk, in a texting video they stand or run,
    and whoever holds an item stands."""
    n = spec.num_frames
    x_min, x_max = x_range
    pos = rng.uniform(x_min, x_max)
    moving = WALK if kind == READ else RUN
    item, long_term = _item_episodes(rng, spec.seconds, kind)
    motion = np.zeros(n, np.int64)
    direction = np.zeros(n, np.float64)
    for start, end in _half_second_segments(rng, spec.seconds, 3, 6):
        motion[start:end] = moving if rng.random() < _MOVING_P else STAND
        direction[start:end] = rng.choice([-1.0, 1.0])
    motion[item != 0] = STAND
    facing = np.zeros(n, np.int64)
    for start, end in _half_second_segments(rng, spec.seconds, 1, 4):
        facing[start:end] = rng.choice([-1, 1])

    x = np.zeros(n, np.float64)
    sign = 1.0
    for f in range(n):
        if f and direction[f] != direction[f - 1]:
            sign = 1.0
        pos += sign * direction[f] * (_SPEED[int(motion[f])] / FPS)
        if not x_min <= pos <= x_max:  # bounce off the ends of its half-lane
            sign = -sign
            pos = float(np.clip(pos, x_min, x_max))
        x[f] = pos
    # standing spells (runs of frames) spent hopping in place, from a random phase: frames a
    # whole number of hops apart show the actor at one height, which says nothing (the random
    # rescale of training hides where the lane's baseline is)
    feet = np.full(n, lane_feet, np.float64)
    hopping = np.zeros(n, bool)
    change = np.flatnonzero(np.diff(motion) != 0) + 1
    for start, end in zip(np.r_[0, change], np.r_[change, n]):
        if motion[start] == STAND and rng.random() < _HOP_P:
            hopping[start:end] = True
            phase = (np.arange(end - start) + rng.integers(HOP_FRAMES)) / HOP_FRAMES
            feet[start:end] -= HOP_HEIGHT * (1 - np.cos(2 * np.pi * phase)) / 2
    return _Actor(entity_id, colour, x, feet, facing, motion, hopping, item, long_term)


def _item_episodes(rng, seconds: int, kind: int):
    """Episodes of holding the video's item: its colour for 3-4 s, then none for 2-5 s, then its
    grey back for 4-7 s, the first starting 1.5-4.5 s in (so a keyframe sees its colour). Two
    actors in five never hold one. Returns the item codes and the read/text labels per frame."""
    n = seconds * FPS
    item = np.zeros(n, np.int64)
    long_term = np.zeros(n, np.int64)
    if rng.random() < 0.4:
        return item, long_term
    t = rng.integers(1, 5) + 0.5
    while True:
        colour, gap, back = int(rng.integers(3, 5)), int(rng.integers(2, 6)), int(rng.integers(4, 8))
        if t + colour + gap + back > seconds:
            break
        a, b = int(t * FPS), int((t + colour) * FPS)
        c, d = int((t + colour + gap) * FPS), int((t + colour + gap + back) * FPS)
        item[a:b], item[c:d] = kind, _HELD
        long_term[a:b] = long_term[c:d] = kind
        t += colour + gap + back + int(rng.integers(2, 7))
    return item, long_term


def _turns(rng, seconds: int, n_actors: int, idle: tuple[int, int], busy: tuple[int, int]):
    """Per frame, the actor taking a turn (-1: nobody): idle and busy spells alternate, each busy
    spell taken by one actor at random."""
    who = np.full(seconds * FPS, -1, np.int64)
    busy_now = bool(rng.random() < 0.5)
    for start, end in _half_second_segments(rng, seconds, min(idle[0], busy[0]), max(idle[1], busy[1])):
        if busy_now:
            who[start:end] = rng.integers(n_actors)
        busy_now = not busy_now
    return who


def _simulate_scene(rng, spec: MiniAVASpec, n_actors: int) -> _Scene:
    tv_on = np.zeros(spec.num_frames, bool)
    on = bool(rng.random() < 0.5)
    for start, end in _half_second_segments(rng, spec.seconds, 2, 6):
        tv_on[start:end] = on
        on = not on
    x1 = int(rng.choice([1, spec.width - TV_W - 1]))
    y1 = int(rng.integers(1, spec.height - TV_H - 1))
    return _Scene((x1, y1, x1 + TV_W, y1 + TV_H), tv_on,
                  _turns(rng, spec.seconds, n_actors, (2, 5), (2, 4)),
                  _turns(rng, spec.seconds, n_actors, (2, 6), (2, 4)))


def _actor_box(actor: _Actor, f: int) -> tuple[float, float, float, float]:
    """Pixel box of the rendered actor at frame f: body plus head, as drawn."""
    x, feet = round(actor.x[f]), round(actor.feet[f])
    return float(x), float(feet - ACTOR_H), float(x + BODY_W), float(feet)


def _actions_at(actors: list[_Actor], scene: _Scene, i: int, f: int) -> list[int]:
    """AVA action ids of actor i at frame f."""
    me = actors[i]
    actions = [int(me.motion[f])]
    if me.hopping[f]:
        actions.append(JUMP)
    if me.item[f]:
        actions.append(CARRY)
    if me.long_term[f]:
        actions.append(int(me.long_term[f]))
    if scene.tv_on[f]:
        actions.append(WATCH_TV)
    if scene.speaker[f] == i:
        actions.append(TALK)
    if scene.juggler[f] == i:
        actions.append(THROW)
    if scene.speaker[f] not in (-1, i):
        actions.append(LISTEN)
    if scene.juggler[f] not in (-1, i):
        actions.append(WATCH)
    return actions


def _background(rng, spec: MiniAVASpec) -> np.ndarray:
    """Static clutter: a muted gradient and rectangles with low saturation (never actor-like)."""
    h, w = spec.height, spec.width
    base = rng.uniform(70, 150, 3)
    gy = np.linspace(-20, 20, h)[:, None, None] * rng.uniform(-1, 1)
    img = np.broadcast_to(base, (h, w, 3)) + gy
    for _ in range(rng.integers(20, 35)):
        rw, rh = rng.integers(3, 30), rng.integers(3, 24)
        x0, y0 = rng.integers(0, w - 2), rng.integers(0, h - 2)
        grey = rng.uniform(50, 190)
        colour = 0.75 * grey + 0.25 * rng.uniform(40, 220, 3)
        img[y0:y0 + rh, x0:x0 + rw] = colour
    return np.clip(img, 0, 255).astype(np.uint8)


def _render(background: np.ndarray, actors: list[_Actor], scene: _Scene, f: int) -> np.ndarray:
    frame = background.copy()
    x1, y1, x2, y2 = scene.tv_box
    frame[y1 - 1:y2 + 1, x1 - 1:x2 + 1] = _TV_FRAME
    frame[y1:y2, x1:x2] = _TV_ON[(f // 5) % len(_TV_ON)] if scene.tv_on[f] else _TV_OFF
    h, w = frame.shape[:2]
    for i, a in enumerate(actors):
        x, feet = round(a.x[f]), round(a.feet[f])
        top = feet - ACTOR_H
        frame[top + HEAD_H:feet, x:x + BODY_W] = a.colour
        hx = x + (BODY_W - HEAD_W) // 2
        frame[top:top + HEAD_H, hx:hx + HEAD_W] = _SKIN
        ex = hx + HEAD_W - 2 if a.facing[f] > 0 else hx
        frame[top + 2:top + 4, ex:ex + 2] = _EYE
        code = a.item[f]
        if code:
            colour = _HELD_ITEM if code == _HELD else _ITEM_COLOURS[int(code)]
            ix = x + BODY_W - ITEM_W + 2 if a.facing[f] > 0 else x - 2
            iy = top + HEAD_H + 4
            frame[iy:iy + ITEM_H, max(ix, 0):min(ix + ITEM_W, w)] = colour
        centre = hx + HEAD_W // 2
        if scene.speaker[f] == i:  # a speech bubble with its tail
            left = centre - BUBBLE_W // 2
            colour = _BUBBLE if (f // BLINK) % 2 else _EYE
            frame[max(top - SIGN_H, 0):top - 2, max(left, 0):min(left + BUBBLE_W, w)] = colour
            frame[top - 2:top - 1, centre:centre + 1] = _BUBBLE
        if scene.juggler[f] == i:  # three balls going round above the head
            for k, ball in enumerate(_BALLS):
                angle = 2 * np.pi * (k / 3 + f / 12)
                bx = round(centre + (BUBBLE_W / 2) * np.cos(angle) - BALL / 2)
                by = round(top - 2 - SIGN_H / 2 + (SIGN_H / 4) * np.sin(angle) - BALL / 2)
                frame[max(by, 0):max(by + BALL, 0), max(bx, 0):min(bx + BALL, w)] = ball
    return frame


def _proposals_for(rng, gt_boxes: list[tuple[float, ...]], spec: MiniAVASpec) -> np.ndarray:
    """Detector-like proposals: jittered true boxes (mostly high scores, a few misses and duplicate
    detections) plus false positives on the background (mostly low scores)."""
    rows = []
    for box in gt_boxes:
        if rng.random() < 0.03:
            continue  # missed person
        for dup in range(1 + (rng.random() < 0.2)):
            jitter = rng.normal(0, 0.5 + 1.5 * dup, 4)
            score = 1 - abs(rng.normal(0, 0.06)) - 0.3 * dup * rng.random()
            rows.append((*np.add(box, jitter), float(np.clip(score, 0.3, 1.0))))
    for _ in range(rng.poisson(1.5)):
        w, h = rng.uniform(7, 14), rng.uniform(16, 26)
        x0, y0 = rng.uniform(0, spec.width - w), rng.uniform(0, spec.height - h)
        score = rng.uniform(0.9, 0.95) if rng.random() < 0.05 else rng.uniform(0.05, 0.85)
        rows.append((x0, y0, x0 + w, y0 + h, score))
    if not rows:
        return np.zeros((0, 5), np.float64)
    arr = np.asarray(rows, np.float64)
    arr[:, [0, 2]] = np.clip(arr[:, [0, 2]] / spec.width, 0, 1)
    arr[:, [1, 3]] = np.clip(arr[:, [1, 3]] / spec.height, 0, 1)
    ok = (arr[:, 2] > arr[:, 0] + 1e-3) & (arr[:, 3] > arr[:, 1] + 1e-3)
    return np.round(arr[ok], 4)


def _places(spec: MiniAVASpec) -> list[tuple[float, tuple[float, float]]]:
    """Where actors live: two lanes (baselines; each leaves room above the head for a hop and a
    sign as big as a TV's corner, see :func:`_render`), each split into a left and a right half with a gap between them (ranges of
    the body's left edge), so no two actors ever overlap."""
    top = ACTOR_H + HOP_HEIGHT + SIGN_H + 1
    pitch = spec.height - 2 - top
    half = spec.width / 2
    ranges = [(2.0, half - BODY_W - 3.0), (half + 3.0, spec.width - BODY_W - 2.0)]
    return [(float(round(top + k * pitch)), r) for k in range(2) for r in ranges]


def _make_video(args) -> dict:
    """Simulate, render and write one video; returns its annotation rows and proposals."""
    out, video_id, seed_seq, spec, write_video, kind = args
    rng = np.random.default_rng(seed_seq)
    places = _places(spec)
    n_actors = int(rng.integers(4, len(places) + 1))
    chosen = rng.permutation(len(places))[:n_actors]
    colours = rng.permutation(len(_ACTOR_COLOURS))[:n_actors]
    actors = [_simulate_actor(rng, e, _ACTOR_COLOURS[c], *places[k], spec, kind)
              for e, (k, c) in enumerate(zip(chosen, colours))]
    scene = _simulate_scene(rng, spec, n_actors)
    background = _background(rng, spec)

    from PIL import Image  # here: the CLI reads this module's defaults at start-up

    frame_dir = AVALayout(out).rawframes / video_id
    tmp_dir = frame_dir.with_name(f".tmp-{video_id}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    frames = []
    for f in range(spec.num_frames):
        frame = _render(background, actors, scene, f)
        Image.fromarray(frame).save(tmp_dir / f"img_{f + 1:05d}.jpg", quality=spec.jpeg_quality)
        if write_video:
            frames.append(frame)
    shutil.rmtree(frame_dir, ignore_errors=True)
    os.replace(tmp_dir, frame_dir)
    if write_video:
        _write_mp4(AVALayout(out).videos / f"{video_id}.mp4", frames)

    rows, proposals = [], {}
    for t in spec.keyframes:
        f = keyframe_to_frame_index(t) - 1  # 0-based position of the keyframe's image
        boxes = []
        for i, actor in enumerate(actors):
            box = _actor_box(actor, f)
            boxes.append(box)
            norm = (box[0] / spec.width, box[1] / spec.height, box[2] / spec.width, box[3] / spec.height)
            rows += [(video_id, t, *norm, action, actor.entity_id) for action in _actions_at(actors, scene, i, f)]
        proposals[f"{video_id},{t:04d}"] = _proposals_for(rng, boxes, spec)
    return {"rows": rows, "proposals": proposals}


def _write_mp4(path: Path, frames: list[np.ndarray]) -> None:
    import av  # imported here: only this optional output needs it

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


def generate_mini_ava(out: str | os.PathLike, seed: int = 0, spec: MiniAVASpec = MiniAVASpec(),
                      videos: bool = False, workers: int | None = None,
                      progress: bool = True) -> dict:
    """Write mini-AVA under ``out`` (deterministic for a seed) and return its summary.

    ``videos=True`` also writes each video as ``videos_15min/VIDEO.mp4`` for the video backend.
    ``workers``: processes for rendering (default: up to 2, one per video at most).
    """
    out = Path(out)
    root_seq = np.random.SeedSequence(seed)
    split_seqs = dict(zip(("train", "val"), root_seq.spawn(2)))
    counts = {"train": spec.train_videos, "val": spec.val_videos}
    jobs, split_of = [], {}
    id_rng = np.random.default_rng(root_seq.spawn(3)[2])
    for split, seq in split_seqs.items():
        ids = _video_ids(id_rng, counts[split])
        for k, (video_id, video_seq) in enumerate(zip(ids, seq.spawn(counts[split]))):
            kind = (READ, TEXT)[k % 2]
            jobs.append((str(out), video_id, video_seq, spec, videos, kind))
            split_of[video_id] = split
    from .._progress import progress_bar  # here, like PIL: the CLI reads this module at start-up

    workers = workers or min(2, os.cpu_count() or 1, len(jobs))
    if workers > 1:
        from .processes import worker_context  # a kernel is never forked

        with ProcessPoolExecutor(workers, mp_context=worker_context("auto", workers)) as pool:
            results = list(progress_bar(pool.map(_make_video, jobs), enabled=progress,
                                        total=len(jobs), desc="mini-AVA videos"))
    else:
        results = [_make_video(j) for j in progress_bar(jobs, enabled=progress,
                                                        desc="mini-AVA videos")]

    layout = AVALayout(out, "2.2")
    summary = {"seed": seed, "spec": asdict(spec), "classes": CLASS_GROUPS, "splits": {}}
    exclude_rng = np.random.default_rng(root_seq.spawn(4)[3])
    for split in ("train", "val"):
        split_results = [(j[1], r) for j, r in zip(jobs, results) if split_of[j[1]] == split]
        rows = [row for _, r in split_results for row in r["rows"]]
        proposals = {k: v for _, r in split_results for k, v in r["proposals"].items()}
        write_annotations(layout.ann_file(split), rows)
        save_proposals(layout.proposal_file(split), proposals)
        keys = sorted({(r[0], r[1]) for r in rows})
        n_excluded = max(1, len(keys) // 50)
        excluded = sorted(keys[i] for i in exclude_rng.choice(len(keys), n_excluded, replace=False))
        atomic_write_text(layout.exclude_file(split),
                          "".join(f"{v},{t:04d}\n" for v, t in excluded))
        summary["splits"][split] = {
            "videos": [v for v, _ in split_results],
            "long_term_kind": {j[1]: ("read" if j[5] == READ else "text")
                               for j in jobs if split_of[j[1]] == split},
            "keyframes": len(keys),
            "boxes": len({(r[0], r[1], r[7]) for r in rows}),
            "excluded": len(excluded),
            "label_counts": {str(c): sum(1 for r in rows if r[6] == c) for c in CLASS_IDS},
        }
    write_label_map(layout.label_file, ava_label_map(CLASS_IDS), form="label")
    write_label_map(layout.eval_label_file, ava_label_map(CLASS_IDS), form="item")
    atomic_write_text(out / "mini_ava.json", json.dumps(summary, indent=2) + "\n")
    return summary


def ensure_mini_ava(root: str | os.PathLike, seed: int = 0, spec: MiniAVASpec = MiniAVASpec(),
                    videos: bool = False, progress: bool = True) -> dict:
    """mini-AVA under ``root`` for ``seed`` and ``spec``: the summary of the one already there
    (its ``mini_ava.json`` records both), else generated now (:func:`generate_mini_ava`).

    >>> from stdet.data import ensure_mini_ava
    >>> summary = ensure_mini_ava("data/mini-ava")        # generated once, then reused
    >>> summary["splits"]["train"]["keyframes"]
    """
    path = Path(root) / "mini_ava.json"
    if path.is_file():
        import json

        summary = json.loads(path.read_text(encoding="utf-8"))
        same = summary.get("seed") == seed and summary.get("spec") == asdict(spec)
        if same and (not videos or all((Path(root) / "videos_15min" / f"{v}.mp4").is_file()
                                       for s in summary["splits"].values() for v in s["videos"])):
            return summary
    return generate_mini_ava(root, seed=seed, spec=spec, videos=videos, progress=progress)
