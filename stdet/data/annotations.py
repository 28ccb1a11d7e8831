"""AVA annotation CSVs and excluded timestamps.

An annotation row is ``video_id, timestamp, x1, y1, x2, y2, action_id[, person_id]`` with box
coordinates normalised to [0, 1] (AVA v2.1+ has the 8th column, older lists 7). One person at one
keyframe spans several rows, one per action; rows with the same box at the same keyframe are merged
into one box with a set of actions (multi-label), as MMAction2 and PySlowFast do.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import AVADataError
from .io import atomic_write_text
from .labels import AVA_ACTIONS

KeyframeKey = tuple[str, int]  # (video_id, timestamp in seconds)


def img_key(video_id: str, timestamp: int) -> str:
    """The ``"video,%04d"`` key proposals pickles and results use for a keyframe."""
    return f"{video_id},{timestamp:04d}"


@dataclass
class KeyframeBoxes:
    """Ground truth of one keyframe.

    boxes: (N, 4) float32 normalised x1, y1, x2, y2; actions: N tuples of action ids (sorted);
    entity_ids: (N,) int64, -1 where the CSV has no person id column.
    """

    boxes: np.ndarray
    actions: list[tuple[int, ...]]
    entity_ids: np.ndarray

    def multi_hot(self, num_classes: int, class_index=None) -> np.ndarray:
        """(N, num_classes) float32 labels; ``class_index`` maps an action id to its column
        (default: the id itself); ids it maps to None are dropped."""
        labels = np.zeros((len(self.actions), num_classes), np.float32)
        for row, actions in enumerate(self.actions):
            for action in actions:
                column = action if class_index is None else class_index(action)
                if column is not None:
                    labels[row, column] = 1.0
        return labels


@dataclass
class _Builder:
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    actions: list[set[int]] = field(default_factory=list)
    entity_ids: list[int] = field(default_factory=list)


def read_annotations(path: str | os.PathLike,
                     valid_ids: Container[int] | None = None) -> dict[KeyframeKey, KeyframeBoxes]:
    """Read an AVA annotation CSV into ``{(video_id, timestamp): KeyframeBoxes}`` (file order).

    ``valid_ids``: the action ids allowed (default: the 80 AVA actions). A row with another id,
    the wrong number of columns, a non-numeric field or a box that is not ``0 <= x1 < x2 <= 1``
    raises :class:`AVADataError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise AVADataError(path, "annotation file not found")
    valid_ids = AVA_ACTIONS if valid_ids is None else valid_ids
    builders: dict[KeyframeKey, _Builder] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) not in (7, 8):
                raise AVADataError(path, f"expected 7 or 8 columns, got {len(row)}: {','.join(row)}",
                                   line=lineno)
            video_id = row[0].strip()
            if not video_id:
                raise AVADataError(path, "empty video id", line=lineno)
            timestamp = _parse_int(row[1], "timestamp", path, lineno)
            box = tuple(_parse_float(v, name, path, lineno)
                        for v, name in zip(row[2:6], ("x1", "y1", "x2", "y2")))
            check_box(box, path, lineno)
            action = _parse_int(row[6], "action_id", path, lineno)
            if action not in valid_ids:
                raise AVADataError(path, f"action id {action} is not in the label map "
                                   "(pass the full action list for ground truth)", line=lineno)
            entity = _parse_int(row[7], "person_id", path, lineno) if len(row) == 8 else -1
            builder = builders.setdefault((video_id, timestamp), _Builder())
            try:
                i = builder.boxes.index(box)
            except ValueError:
                builder.boxes.append(box)
                builder.actions.append(set())
                builder.entity_ids.append(entity)
                i = len(builder.boxes) - 1
            builder.actions[i].add(action)
    return {
        key: KeyframeBoxes(np.asarray(b.boxes, np.float32).reshape(-1, 4),
                           [tuple(sorted(a)) for a in b.actions],
                           np.asarray(b.entity_ids, np.int64))
        for key, b in builders.items()
    }


def check_box(box, path, line=None, key=None) -> None:
    """Raise unless ``0 <= x1 < x2 <= 1`` and ``0 <= y1 < y2 <= 1`` (normalised AVA boxes)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite((x1, y1, x2, y2))):
        raise AVADataError(path, f"box {box} is not finite", line=line, key=key)
    if min(x1, y1) < 0 or max(x2, y2) > 1:
        raise AVADataError(path, f"box {box} lies outside [0, 1]", line=line, key=key)
    if x2 <= x1 or y2 <= y1:
        raise AVADataError(path, f"box {box} has x2 <= x1 or y2 <= y1", line=line, key=key)


def read_excluded_timestamps(path: str | os.PathLike) -> set[KeyframeKey]:
    """Read ``video_id,timestamp`` rows (keyframes left out of training and evaluation)."""
    path = Path(path)
    if not path.is_file():
        raise AVADataError(path, "excluded timestamps file not found")
    excluded: set[KeyframeKey] = set()
    with path.open(newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 2:
                raise AVADataError(path, f"expected 2 columns (video_id,timestamp), got {len(row)}",
                                   line=lineno)
            excluded.add((row[0].strip(), _parse_int(row[1], "timestamp", path, lineno)))
    return excluded


def write_annotations(path: str | os.PathLike,
                      rows: list[tuple[str, int, float, float, float, float, int, int]]) -> None:
    """Write AVA annotation rows (8 columns; boxes with 3 decimals as AVA does), atomically."""
    lines = [f"{v},{t:04d},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{a},{e}"
             for v, t, x1, y1, x2, y2, a, e in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _parse_int(value: str, name: str, path: Path, line: int) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise AVADataError(path, f"{name} must be an integer, got {value!r}", line=line) from None


def _parse_float(value: str, name: str, path: Path, line: int) -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise AVADataError(path, f"{name} must be a number, got {value!r}", line=line) from None
