"""mini-AVA: a small synthetic dataset in the exact AVA on-disk layout, made to teach.

Every video is a static cluttered background with 2 or 3 actors, each in its own horizontal lane
(so actors never occlude each other). An actor is a coloured body, a head with an eye on the side it
faces, and sometimes an item in its hand. Labels use real AVA action ids and fall into groups that
need different information, so the zoo's ideas show up in the numbers:

=============  =========================================  ==========================================
group          classes (AVA id)                           decided by
=============  =========================================  ==========================================
motion         stand (12), walk (14), run/jog (10),       how the actor moves across frames; every
               jump/leap (7)                              frame of an actor looks alike
appearance     carry/hold (an object) (17)                a coloured item visible in one frame
interaction    talk to (79), watch (a person) (80)        another actor: watch = someone in front of
                                                          the actor's eye (within 64 px); talk to =
                                                          two actors within 64 px facing each other
long-term      read (48), text on/look at a cellphone     the item the actor carried 9 to 25 s
               (57)                                       earlier: blue book -> read, green phone ->
                                                          text; in the clip itself both hold the
                                                          same grey item
=============  =========================================  ==========================================

``MiniAVASpec(long_term="motion")`` builds a variant for long-term feature banks. A small model
does not learn a 4-pixel item's colour, so a bank it writes cannot hold the colour; it does learn
motion. In this variant the carried item (3 s) and the time away (2-4 s) are a *lead-in* with its
own motion: walking before reading, running before texting (nobody runs otherwise), and the actor
stands still while holding the grey item (4-6 s). During the hold the clip shows only a standing
actor with a grey item; the lead-in, 4 to 13 s earlier, decides read vs text. Every actor of a
video does the same one (half the videos of each split read, half text), so the lead-ins of the
others in the video tell it too: at mini scale the bank's features carry no identity to match the
actor by. The LFB chapter uses 20 train and 12 val videos of 14 s (more videos of the same total
length: each video is one example of its kind).

Facing changes at random, independently of motion, so interaction labels carry no information about
the actor's own box. Motion states and facing change only on half-second boundaries, so the state at
a keyframe holds for at least half a second around it.

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
TALK, WATCH = 79, 80

CLASS_GROUPS: dict[str, tuple[int, ...]] = {
    "motion": (STAND, WALK, RUN, JUMP),
    "appearance": (CARRY,),
    "interaction": (TALK, WATCH),
    "long_term": (READ, TEXT),
}
CLASS_IDS: tuple[int, ...] = tuple(sorted(i for ids in CLASS_GROUPS.values() for i in ids))

# Geometry in pixels (for the default 128 x 96 frame).
BODY_W, BODY_H, HEAD_W, HEAD_H = 10, 16, 6, 6
ACTOR_H = BODY_H + HEAD_H
JUMP_HEIGHT = 6
ITEM = 4
INTERACTION_RANGE = 64

_SPEED = {STAND: 0.0, WALK: 12.0, RUN: 36.0, JUMP: 0.0}  # px per second
_MOTION_P = {STAND: 0.3, WALK: 0.3, RUN: 0.2, JUMP: 0.2}
# long_term="motion": nobody runs except on the way to texting
_LEAD_IN_MOTION_P = {STAND: 0.35, WALK: 0.4, JUMP: 0.25}
_LEAD_IN = {READ: WALK, TEXT: RUN}
_ACTOR_COLOURS = np.array([(220, 40, 40), (240, 140, 20), (200, 40, 200), (230, 210, 30),
                           (130, 60, 200), (150, 90, 40), (250, 120, 170), (30, 210, 210)], np.uint8)
_SKIN = np.array((235, 190, 150), np.uint8)
_EYE = np.array((20, 20, 20), np.uint8)
_ITEM_COLOURS = {READ: np.array((40, 70, 230), np.uint8), TEXT: np.array((30, 200, 60), np.uint8)}
_HELD_ITEM = np.array((128, 128, 128), np.uint8)
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


LONG_TERM_CUES = ("item", "motion")


@dataclass(frozen=True)
class MiniAVASpec:
    """Size of a mini-AVA build. ``seconds`` is each video's length (AVA's cut: 901).
    ``long_term``: what decides read vs text, ``"item"`` (the item carried 9 to 25 s earlier) or
    ``"motion"`` (how the actor moved 4 to 13 s earlier; see the module's docstring)."""

    train_videos: int = 5
    val_videos: int = 3
    seconds: int = 45
    width: int = 128
    height: int = 96
    jpeg_quality: int = 90
    long_term: str = "item"

    def __post_init__(self) -> None:
        if self.long_term not in LONG_TERM_CUES:
            raise ValueError(f"MiniAVASpec.long_term must be one of {LONG_TERM_CUES}, "
                             f"got {self.long_term!r}")

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
    feet: np.ndarray       # y of the feet (lane baseline minus jump), float px
    facing: np.ndarray     # +1 right, -1 left
    motion: np.ndarray     # AVA id of the motion state
    item: np.ndarray       # 0 (none), _HELD (grey item), or READ / TEXT (that coloured item)
    long_term: np.ndarray  # READ / TEXT while the grey item is held, else 0


_HELD = 1  # item code of the grey item; 0 is no item, READ / TEXT the coloured item


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


def _simulate_actor(rng, entity_id: int, colour, lane_feet: float, spec: MiniAVASpec,
                    kind: int | None = None) -> _Actor:
    """One actor's states. ``kind`` (READ or TEXT, the video's) is set in ``long_term="motion"``
    builds: every episode is of that kind, its lead-in sets the motion, holders stand still."""
    n = spec.num_frames
    probs = _MOTION_P if kind is None else _LEAD_IN_MOTION_P
    x_min, x_max = 2.0, spec.width - BODY_W - 2.0
    pos = rng.uniform(x_min, x_max)
    rng.choice([-1.0, 1.0])  # an initial heading; every segment draws its own (kept: seeds keep their data)
    segments = [(start, end, int(rng.choice(list(probs), p=list(probs.values()))),
                 rng.choice([-1.0, 1.0]))
                for start, end in _half_second_segments(rng, spec.seconds, 3, 6)]
    facing = np.zeros(n, np.int64)
    for start, end in _half_second_segments(rng, spec.seconds, 1, 4):
        facing[start:end] = rng.choice([-1, 1])
    item, long_term, lead_in = _item_episodes(rng, spec.seconds, kind)

    motion = np.zeros(n, np.int64)
    for start, end, state, _ in segments:
        motion[start:end] = state
    if kind is not None:
        motion[lead_in] = _LEAD_IN[kind]
        motion[long_term > 0] = STAND
    x = np.zeros(n, np.float64)
    feet = np.full(n, lane_feet, np.float64)
    for start, end, state, direction in segments:
        for f in range(start, end):
            pos += direction * (_SPEED[int(motion[f])] / FPS)
            if not x_min <= pos <= x_max:  # bounce off the frame's edges
                direction = -direction
                pos = float(np.clip(pos, x_min, x_max))
            x[f] = pos
        if state == JUMP:
            t = np.arange(end - start) / FPS
            hop = JUMP_HEIGHT * np.abs(np.sin(2 * np.pi * t))
            feet[start:end] -= np.where(motion[start:end] == JUMP, hop, 0.0)
    return _Actor(entity_id, colour, x, feet, facing, motion, item, long_term)


def _item_episodes(rng, seconds: int, kind: int | None = None):
    """Episodes of carrying a coloured item 3 s, putting it away, then holding a grey item
    (read/text). ``kind=None``: a random item each time, away 8-12 s, holding 6-10 s. ``kind``
    READ or TEXT: that item, away 2-4 s, holding 4-6 s. Returns the item codes, the read/text
    labels and the lead-in (carrying and away) per frame."""
    n = seconds * FPS
    item = np.zeros(n, np.int64)
    long_term = np.zeros(n, np.int64)
    lead_in = np.zeros(n, bool)
    t = rng.integers(0, 9 if kind is None else 2) + 0.5
    while True:
        episode_kind = int(rng.choice([READ, TEXT])) if kind is None else kind
        carry = 3
        if kind is None:
            gap, hold = int(rng.integers(8, 13)), int(rng.integers(6, 11))
        else:
            gap, hold = int(rng.integers(2, 5)), int(rng.integers(4, 7))
        if t + carry + gap + hold > seconds:
            break
        a, b = int(t * FPS), int((t + carry) * FPS)
        c, d = int((t + carry + gap) * FPS), int((t + carry + gap + hold) * FPS)
        item[a:b] = episode_kind
        item[c:d] = _HELD
        long_term[c:d] = episode_kind
        lead_in[a:c] = True
        t += carry + gap + hold + int(rng.integers(2, 7))
    return item, long_term, lead_in


def _actor_box(actor: _Actor, f: int) -> tuple[float, float, float, float]:
    """Pixel box of the rendered actor at frame f: body plus head, as drawn."""
    x, feet = round(actor.x[f]), round(actor.feet[f])
    return float(x), float(feet - ACTOR_H), float(x + BODY_W), float(feet)


def _actions_at(actors: list[_Actor], i: int, f: int) -> list[int]:
    """AVA action ids of actor i at frame f."""
    me = actors[i]
    actions = [int(me.motion[f])]
    if me.item[f] in _ITEM_COLOURS:
        actions.append(CARRY)
    if me.long_term[f]:
        actions.append(int(me.long_term[f]))
    watch = talk = False
    for j, other in enumerate(actors):
        if j == i:
            continue
        dx = (other.x[f] - me.x[f])
        if abs(dx) > INTERACTION_RANGE or dx == 0:
            continue
        i_see_other = np.sign(dx) == me.facing[f]
        other_sees_me = np.sign(-dx) == other.facing[f]
        watch |= bool(i_see_other)
        talk |= bool(i_see_other and other_sees_me)
    if talk:
        actions.append(TALK)
    if watch:
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


def _render(background: np.ndarray, actors: list[_Actor], f: int) -> np.ndarray:
    frame = background.copy()
    for a in actors:
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
            ix = x + BODY_W - ITEM if a.facing[f] > 0 else x
            iy = top + HEAD_H + 5
            frame[iy:iy + ITEM, ix:ix + ITEM] = colour
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


def _make_video(args) -> dict:
    """Simulate, render and write one video; returns its annotation rows and proposals."""
    out, video_id, seed_seq, spec, write_video, kind = args
    rng = np.random.default_rng(seed_seq)
    n_actors = int(rng.choice([2, 3, 3]))
    lanes = rng.permutation(3)[:n_actors]
    colours = rng.permutation(len(_ACTOR_COLOURS))[:n_actors]
    pitch = spec.height / 3
    actors = [_simulate_actor(rng, e, _ACTOR_COLOURS[c], pitch * (lane + 1) - 3, spec, kind)
              for e, (lane, c) in enumerate(zip(lanes, colours))]
    background = _background(rng, spec)

    from PIL import Image  # here: the CLI reads this module's defaults at start-up

    frame_dir = AVALayout(out).rawframes / video_id
    tmp_dir = frame_dir.with_name(f".tmp-{video_id}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    frames = []
    for f in range(spec.num_frames):
        frame = _render(background, actors, f)
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
            rows += [(video_id, t, *norm, action, actor.entity_id) for action in _actions_at(actors, i, f)]
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
            kind = (READ, TEXT)[k % 2] if spec.long_term == "motion" else None
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
            **({"long_term_kind": {j[1]: ("read" if j[5] == READ else "text")
                                   for j in jobs if split_of[j[1]] == split}}
               if spec.long_term == "motion" else {}),
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
