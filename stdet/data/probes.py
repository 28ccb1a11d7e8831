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
    """Median colour of the lower-middle part of the box (the actor's body)."""
    x1, y1, x2, y2 = _pixel_box(box, frame)
    body = frame[y1 + (y2 - y1) // 2:y2 - 1, x1 + 1:x2 - 1].reshape(-1, 3)
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


def context_features(frames: FrameCache, b: ProbeBox, reach: float = 0.5) -> np.ndarray:
    """The actor's facing plus, for the two nearest other actors, their offset and their facing."""
    frame = frames(b.video_id, keyframe_to_frame_index(b.timestamp))
    me = facing(frame, b.box)
    cx = (b.box[0] + b.box[2]) / 2
    rows = []
    for other in b.others:
        dx = (other[0] + other[2]) / 2 - cx
        rows.append((abs(dx), dx * me, facing(frame, other) * np.sign(dx)))
    rows = sorted(rows)[:2] + [(1.0, reach * 4, 0.0)] * (2 - min(2, len(rows)))
    return np.array([v for _, dx, f in rows for v in (dx, f)], np.float32)


def clip_features(frames: FrameCache, b: ProbeBox) -> np.ndarray:
    """The actor's box pixels at the keyframe and half a second either side."""
    centre = keyframe_to_frame_index(b.timestamp)
    return np.concatenate([crop(frames(b.video_id, centre + off), b.box) for off in (-15, 0, 15)])


def history_features(frames: FrameCache, b: ProbeBox, seconds=range(5, 31)) -> np.ndarray:
    """Blue and green item pixels seen on the same actor 5 to 30 s before the keyframe."""
    blue = green = 0.0
    for s in seconds:
        past = b.past.get(b.timestamp - s)
        if past is None:
            continue
        patch = crop(frames(b.video_id, keyframe_to_frame_index(b.timestamp - s)), past).reshape(-1, 3)
        r, g, bl = patch.T
        blue += float(((bl > 170) & (r < 110) & (g < 130)).sum())
        green += float(((g > 150) & (r < 100) & (bl < 120)).sum())
    return np.array([blue, green], np.float32)


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


def probe_table(root: str | Path):
    """Every probe of the mini-AVA class groups as a DataFrame (group, class, probe, accuracy)."""
    import pandas as pd

    from .mini_ava import CLASS_GROUPS, TALK, WATCH
    frames = FrameCache(root)
    motion = _one_of(CLASS_GROUPS["motion"])
    long_term = _one_of(CLASS_GROUPS["long_term"])
    runs = [
        ("motion", "motion", "one frame", motion, single_frame_features),
        ("motion", "motion", "frames over 1 s", motion, motion_features),
        ("interaction", "talk to", "own box over the clip", _has(TALK), own_box_features),
        ("interaction", "talk to", "other actors", _has(TALK), context_features),
        ("interaction", "watch (a person)", "own box over the clip", _has(WATCH), own_box_features),
        ("interaction", "watch (a person)", "other actors", _has(WATCH), context_features),
        ("long_term", "read vs text", "the clip (+-0.5 s)", long_term, clip_features),
        ("long_term", "read vs text", "the actor 5-30 s earlier", long_term, history_features),
    ]
    rows = []
    for group, name, probe, target, feats in runs:
        r = run_probe(root, group, probe, target, feats, frames)
        rows.append({"group": group, "classes": name, "probe": probe,
                     "balanced_accuracy": r.balanced_accuracy, "chance": r.chance,
                     "n_train": r.n_train, "n_val": r.n_val})
    return pd.DataFrame(rows)

