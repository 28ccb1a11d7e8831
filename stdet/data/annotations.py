"""AVA annotation CSVs and excluded timestamps.

An annotation row is ``video_id, timestamp, x1, y1, x2, y2, action_id[, person_id]`` with box
coordinates normalised to [0, 1] (AVA v2.1+ has the 8th column, older lists 7). One person at one
keyframe spans several rows, one per action; rows with the same box at the same keyframe are merged
into one box with a set of actions (multi-label), as MMAction2 and PySlowFast do.

Every text input of stdet (these CSVs, label maps, the evaluation's ground truth and results) is
opened with :func:`~stdet.data.io.open_text_lines` and its integer and number fields parsed with
:func:`parse_int` and :func:`parse_float`, so a BOM, a binary file given by mistake or a digit
that is not ASCII is handled alike everywhere.
"""
from __future__ import annotations

import csv
import os
import re
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import AVADataError
from .io import atomic_write_text, open_text_lines
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


Box = tuple[float, float, float, float]


@dataclass
class _Builder:
    """One keyframe's boxes in first-seen order; ``index`` finds a box's row in O(1), so merging
    the rows of a keyframe is linear in its rows (a crowd keyframe can have thousands)."""

    boxes: list[Box] = field(default_factory=list)
    actions: list[set[int]] = field(default_factory=list)
    entity_ids: list[int] = field(default_factory=list)
    index: dict[Box, int] = field(default_factory=dict)

    def add(self, box: Box, action: int, entity: int) -> None:
        """Add one row: a new box keeps the row's person id, a seen box gains the action."""
        i = self.index.get(box)
        if i is None:
            i = self.index[box] = len(self.boxes)
            self.boxes.append(box)
            self.actions.append(set())
            self.entity_ids.append(entity)
        self.actions[i].add(action)


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
    with open_text_lines(path) as lines:
        for lineno, row in enumerate(csv.reader(lines), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) not in (7, 8):
                raise AVADataError(path, f"expected 7 or 8 columns, got {len(row)}: {','.join(row)}",
                                   line=lineno)
            video_id = row[0].strip()
            if not video_id:
                raise AVADataError(path, "empty video id", line=lineno)
            timestamp = parse_int(row[1], "timestamp", path, lineno)
            box = tuple(parse_float(v, name, path, lineno)
                        for v, name in zip(row[2:6], ("x1", "y1", "x2", "y2")))
            check_box(box, path, lineno)
            action = parse_int(row[6], "action_id", path, lineno)
            if action not in valid_ids:
                raise AVADataError(path, f"action id {action} is not in the label map "
                                   "(pass the full action list for ground truth)", line=lineno)
            entity = parse_int(row[7], "person_id", path, lineno) if len(row) == 8 else -1
            builders.setdefault((video_id, timestamp), _Builder()).add(box, action, entity)
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
    with open_text_lines(path) as lines:
        for lineno, row in enumerate(csv.reader(lines), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 2:
                raise AVADataError(path, f"expected 2 columns (video_id,timestamp), got {len(row)}",
                                   line=lineno)
            excluded.add((row[0].strip(), parse_int(row[1], "timestamp", path, lineno)))
    return excluded


def write_annotations(path: str | os.PathLike,
                      rows: list[tuple[str, int, float, float, float, float, int, int]]) -> None:
    """Write AVA annotation rows (8 columns; boxes with 3 decimals as AVA does), atomically."""
    lines = [f"{v},{t:04d},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{a},{e}"
             for v, t, x1, y1, x2, y2, a, e in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


_INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_int(value: str, name: str, path: str | os.PathLike, line: int) -> int:
    """An integer CSV field: ASCII digits, an optional sign, spaces around.

    Python's ``int()`` also takes other scripts' digits (``int("٣") == 3``) and underscores
    (``int("1_0") == 10``); a field like that is a corrupt file, refused with its line."""
    text = value.strip(" \t")
    if not (text.isascii() and text.isdigit()) and _INTEGER.fullmatch(text) is None:
        raise AVADataError(path, f"{name} must be an integer, got {value!r}", line=line)
    return int(text)


def parse_float(value: str, name: str, path: str | os.PathLike, line: int) -> float:
    """A number CSV field: what ``float()`` reads from ASCII text without underscores (for the
    same reason as :func:`parse_int`); ``nan`` and ``inf`` pass, for the caller to refuse with
    a clearer message."""
    text = value.strip(" \t")
    if text.isascii() and "_" not in text:
        try:
            return float(text)
        except ValueError:
            pass
    raise AVADataError(path, f"{name} must be a number, got {value!r}", line=line)
