"""Probes: what information decides each mini-AVA class group, measured on the rendered frames.

Each probe turns a ground-truth box into a feature vector computed from the JPEG frames alone (no
generator state) and a 1-nearest-neighbour classifier fit on train predicts val. Comparing probes that
see different information shows what a class needs: a motion class is at chance from one frame and
solved from a few frames; an interaction class is at chance from the actor's own box and solved with
the other actors; a long-term class is at chance from the clip and solved from the actor's past.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .annotations import KeyframeBoxes, read_annotations
from .frames import keyframe_to_frame_index
from .layout import AVALayout


@dataclass
class ProbeBox:
    """One ground-truth box with what a probe may look at."""

    video_id: str
    timestamp: int
    box: np.ndarray            # normalised x1, y1, x2, y2
    actions: tuple[int, ...]
    entity_id: int
    others: np.ndarray         # (M, 4) normalised boxes of the other actors at this keyframe
    past: dict[int, np.ndarray]  # the same actor's box at every annotated second of its video


class FrameCache:
    """Reads ``rawframes/VIDEO/img_%05d.jpg`` as float RGB arrays, each file once."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._frames: dict[tuple[str, int], np.ndarray] = {}

    def __call__(self, video_id: str, index: int) -> np.ndarray:
        key = (video_id, index)
        if key not in self._frames:
            path = AVALayout(self.root).rawframes / video_id / f"img_{index:05d}.jpg"
            self._frames[key] = np.asarray(Image.open(path).convert("RGB"), np.float32)
        return self._frames[key]


def probe_boxes(annotations: dict[tuple[str, int], KeyframeBoxes]) -> list[ProbeBox]:
    tracks: dict[tuple[str, int], dict[int, np.ndarray]] = {}
    for (video_id, t), kf in annotations.items():
        for box, entity in zip(kf.boxes, kf.entity_ids):
            tracks.setdefault((video_id, int(entity)), {})[t] = box
    boxes = []
    for (video_id, t), kf in annotations.items():
        for i in range(len(kf.boxes)):
            entity = int(kf.entity_ids[i])
            boxes.append(ProbeBox(video_id, t, kf.boxes[i], kf.actions[i], entity,
                                  np.delete(kf.boxes, i, axis=0), tracks[video_id, entity]))
    return boxes


def _pixel_box(box: np.ndarray, frame: np.ndarray) -> tuple[int, int, int, int]:
    h, w = frame.shape[:2]
    return (int(round(box[0] * w)), int(round(box[1] * h)), int(round(box[2] * w)),
            int(round(box[3] * h)))


def crop(frame: np.ndarray, box: np.ndarray, size: tuple[int, int] = (22, 10)) -> np.ndarray:
    """The box's pixels resized to ``size`` (h, w), flattened."""
    x1, y1, x2, y2 = _pixel_box(box, frame)
    patch = Image.fromarray(frame[y1:y2, x1:x2].astype(np.uint8)).resize(size[::-1], Image.NEAREST)
    return np.asarray(patch, np.float32).ravel()


def body_colour(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Median colour of the bottom rows of the box (the actor's body below a held item)."""
    x1, y1, x2, y2 = _pixel_box(box, frame)
    body = frame[y2 - 4:y2 - 1, x1 + 1:x2 - 1].reshape(-1, 3)
    return np.median(body, axis=0)


def facing(frame: np.ndarray, box: np.ndarray) -> float:
    """+1 when the darkest pixels of the head (the eye) are on its right half, else -1."""
    x1, y1, x2, y2 = _pixel_box(box, frame)
    head = frame[y1:y1 + (y2 - y1) // 4, x1:x2].sum(axis=2)
    cols = head.min(axis=0)
    half = len(cols) // 2
    return 1.0 if cols[half:].min() < cols[:half].min() else -1.0


def _trajectory(frames: FrameCache, b: ProbeBox, offsets=range(-15, 16, 5), reach: int = 40):
    """Centroid (dx, dy) of the actor's body colour in a window around its box, per frame offset."""
    centre = keyframe_to_frame_index(b.timestamp)
    key_frame = frames(b.video_id, centre)
    colour = body_colour(key_frame, b.box)
    x1, y1, x2, y2 = _pixel_box(b.box, key_frame)
    h, w = key_frame.shape[:2]
    wx1, wx2 = max(0, x1 - reach), min(w, x2 + reach)
    wy1, wy2 = max(0, y1 - 8), min(h, y2 + 8)
    points = []
    for off in offsets:
        window = frames(b.video_id, centre + off)[wy1:wy2, wx1:wx2]
        mask = np.abs(window - colour).max(axis=2) < 40
        ys, xs = np.nonzero(mask)
        points.append((xs.mean(), ys.mean()) if len(xs) else (np.nan, np.nan))
    points = np.nan_to_num(np.asarray(points) - points[len(points) // 2], nan=0.0)
    return points


def single_frame_features(frames: FrameCache, b: ProbeBox) -> np.ndarray:
    """What one frame shows of the actor: its box's pixels at the keyframe."""
    return crop(frames(b.video_id, keyframe_to_frame_index(b.timestamp)), b.box)


def motion_features(frames: FrameCache, b: ProbeBox) -> np.ndarray:
    """How the actor moves over one second around the keyframe: |dx| and dy of its body per frame."""
    traj = _trajectory(frames, b)
    return np.concatenate([np.abs(traj[:, 0]), traj[:, 1]])


def own_box_features(frames: FrameCache, b: ProbeBox) -> np.ndarray:
    """Everything about the actor's own box over the clip: its pixels and its motion."""
    return np.concatenate([single_frame_features(frames, b) / 255.0, motion_features(frames, b)])


def brief_motion_features(offsets: range) -> Callable[[FrameCache, ProbeBox], np.ndarray]:
    """How the actor's body moves between frames ``offsets`` away from the keyframe: |dx| and dy."""
    def features(frames: FrameCache, b: ProbeBox) -> np.ndarray:
        traj = _trajectory(frames, b, offsets=offsets)
        return np.concatenate([np.abs(traj[:, 0]), traj[:, 1]])
    return features


def _around(box: np.ndarray, frame: np.ndarray, pad_x: int = 10, above: int = 16,
            below: int = 2) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = _pixel_box(box, frame)
    h, w = frame.shape[:2]
    return max(0, x1 - pad_x), max(0, y1 - above), min(w, x2 + pad_x), min(h, y2 + below)


def scene_features(frames: FrameCache, b: ProbeBox, step: int = 5) -> np.ndarray:
    """What changes in the frame away from every actor (their boxes widened to cover a step of
    their motion and what is above their heads): pixels that change by more than 60 in ``step``
    frames before and after the keyframe."""
    centre = keyframe_to_frame_index(b.timestamp)
    frame = frames(b.video_id, centre)
    away = np.ones(frame.shape[:2], bool)
    for box in (b.box, *b.others):
        x1, y1, x2, y2 = _around(box, frame)
        away[y1:y2, x1:x2] = False
    counts = []
    for a, c in ((centre - step, centre), (centre, centre + step)):
        change = np.abs(frames(b.video_id, a) - frames(b.video_id, c)).max(axis=2)
        counts.append(float(((change > 60) & away).sum()))
    return np.array(counts, np.float32)


def _sign_pixels(frame: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    """White (a speech bubble) and vivid (juggled balls) pixels in the strip above a box."""
    from .mini_ava import SIGN_H

    x1, y1, x2, _ = _pixel_box(box, frame)  # the strip stops short of the feet of an actor above
    strip = frame[max(0, y1 - SIGN_H):max(0, y1 - 1), max(0, x1 - 1):x2 + 1].reshape(-1, 3)
    white = float((strip.min(axis=1) > 225).sum())
    vivid = float(((strip.max(axis=1) > 200) & (strip.min(axis=1) < 110)).sum())
    return white, vivid


def others_features(frames: FrameCache, b: ProbeBox) -> np.ndarray:
    """For the other actors: the most bubble pixels and the most ball pixels above any of them."""
    frame = frames(b.video_id, keyframe_to_frame_index(b.timestamp))
    signs = [_sign_pixels(frame, other) for other in b.others] or [(0.0, 0.0)]
    return np.array(signs, np.float32).max(axis=0)


def clip_features(frames: FrameCache, b: ProbeBox) -> np.ndarray:
    """The actor's box pixels at the keyframe and half a second either side."""
    centre = keyframe_to_frame_index(b.timestamp)
    return np.concatenate([crop(frames(b.video_id, centre + off), b.box) for off in (-15, 0, 15)])


def _item_pixels(frame: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    """Blue (book) and green (phone) pixels in a box."""
    r, g, bl = crop(frame, box).reshape(-1, 3).T
    return float(((bl > 170) & (r < 110) & (g < 130)).sum()), float(((g > 150) & (r < 100) & (bl < 120)).sum())


def history_features(frames: FrameCache, b: ProbeBox, seconds=range(1, 13)) -> np.ndarray:
    """Blue and green item pixels seen on the same actor 1 to 12 s before the keyframe."""
    counts = np.zeros(2, np.float32)
    for s in seconds:
        past = b.past.get(b.timestamp - s)
        if past is not None:
            counts += _item_pixels(frames(b.video_id, keyframe_to_frame_index(b.timestamp - s)), past)
    return counts


def nearest_neighbour_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """1-NN with features standardised on the training set."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    d = (b * b).sum(1)[:, None] - 2 * b @ a.T + (a * a).sum(1)[None]
    return train_y[d.argmin(1)]


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall: 1/K for a classifier that ignores its input, whatever the class balance."""
    classes = np.unique(y_true)
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in classes]))


@dataclass
class ProbeResult:
    group: str
    probe: str
    balanced_accuracy: float
    chance: float
    n_train: int
    n_val: int


def run_probe(root: str | Path, group: str, probe: str,
              target: Callable[[ProbeBox], int | None],
              features: Callable[..., np.ndarray], frames: FrameCache | None = None) -> ProbeResult:
    """Fit 1-NN on train features, score val: balanced accuracy on boxes where ``target`` is not None."""
    root = Path(root)
    frames = frames or FrameCache(root)
    data = {}
    for split in ("train", "val"):
        ann = read_annotations(AVALayout(root).ann_file(split))
        chosen = [(b, target(b)) for b in probe_boxes(ann)]
        chosen = [(b, y) for b, y in chosen if y is not None]
        x = np.stack([features(frames, b) for b, _ in chosen])
        data[split] = (x, np.array([y for _, y in chosen]))
    pred = nearest_neighbour_predict(*data["train"], data["val"][0])
    y_val = data["val"][1]
    return ProbeResult(group, probe, balanced_accuracy(y_val, pred), 1 / len(np.unique(y_val)),
                       len(data["train"][1]), len(y_val))


def _one_of(ids: tuple[int, ...]) -> Callable[[ProbeBox], int | None]:
    def target(b: ProbeBox) -> int | None:
        hits = [a for a in b.actions if a in ids]
        return hits[0] if len(hits) == 1 else None
    return target


def _has(class_id: int) -> Callable[[ProbeBox], int]:
    return lambda b: int(class_id in b.actions)


def _grey_item(frames: FrameCache, ids: tuple[int, ...]) -> Callable[[ProbeBox], int | None]:
    """Which of ``ids`` a box does, for boxes whose keyframe shows no blue or green item in it."""
    one_of = _one_of(ids)

    def target(b: ProbeBox) -> int | None:
        y = one_of(b)
        if y is None or sum(_item_pixels(frames(b.video_id, keyframe_to_frame_index(b.timestamp)), b.box)):
            return None
        return y
    return target


def probe_table(root: str | Path):
    """Every probe of the mini-AVA class groups as a DataFrame (group, class, probe, accuracy)."""
    import pandas as pd

    from .mini_ava import CLASS_GROUPS, JUMP, LISTEN, STAND, WATCH, WATCH_TV
    frames = FrameCache(root)
    jump = lambda b: int(JUMP in b.actions) if {JUMP, STAND} & set(b.actions) else None  # noqa: E731
    runs = [
        ("motion", "motion", "one frame", _one_of(CLASS_GROUPS["motion"]), single_frame_features),
        ("motion", "motion", "frames over 1 s", _one_of(CLASS_GROUPS["motion"]), motion_features),
        ("brief_motion", "jump vs stand", "4 frames 16 apart", jump, brief_motion_features(range(-32, 17, 16))),
        ("brief_motion", "jump vs stand", "frames 2 apart", jump, brief_motion_features(range(-8, 9, 2))),
        ("scene", "watch (e.g., TV)", "own box over the clip", _has(WATCH_TV), own_box_features),
        ("scene", "watch (e.g., TV)", "the scene away from the actors", _has(WATCH_TV), scene_features),
        ("interaction", "listen to (a person)", "own box over the clip", _has(LISTEN), own_box_features),
        ("interaction", "listen to (a person)", "other actors", _has(LISTEN), others_features),
        ("interaction", "watch (a person)", "own box over the clip", _has(WATCH), own_box_features),
        ("interaction", "watch (a person)", "other actors", _has(WATCH), others_features),
        ("long_term", "read vs text (grey item)", "the clip (+-0.5 s)",
         _grey_item(frames, CLASS_GROUPS["long_term"]), clip_features),
        ("long_term", "read vs text (grey item)", "the actor 1-12 s earlier",
         _grey_item(frames, CLASS_GROUPS["long_term"]), history_features),
    ]
    rows = []
    for group, name, probe, target, feats in runs:
        r = run_probe(root, group, probe, target, feats, frames)
        rows.append({"group": group, "classes": name, "probe": probe,
                     "balanced_accuracy": r.balanced_accuracy, "chance": r.chance,
                     "n_train": r.n_train, "n_val": r.n_val})
    return pd.DataFrame(rows)
