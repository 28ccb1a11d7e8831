"""AVA box rows as numpy arrays (:class:`BoxTable`): read fast from ground-truth and results CSVs,
or built from rows in memory (:meth:`BoxTable.from_rows`).

Both files have rows ``video_id,timestamp,x1,y1,x2,y2,action_id[,score or person id]`` with
normalised boxes. Results files have tens of millions of rows (AVA val with all 80 classes scored
is about 23 M), so they are parsed by pandas' C reader in chunks, each chunk checked with vectorized
tests; only when a chunk fails is it re-read line by line to name the offending line. Video ids
become small integer codes shared by every file of one evaluation (:class:`FrameKeys`), and a
keyframe becomes one int64 key.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.annotations import parse_float, parse_int
from ..data.io import not_a_text_file, open_text_lines
from ..data.errors import AVADataError

COLUMNS = ["video", "timestamp", "x1", "y1", "x2", "y2", "action", "extra"]
_TS_BITS = 21  # timestamps below 2**21 s (AVA uses 902..1798)
CHUNK_ROWS = 1 << 21


class FrameKeys:
    """Maps ``(video_id, timestamp)`` to one int64 key; the video vocabulary is shared by the files
    of an evaluation."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def video_codes(self, videos: pd.Categorical) -> np.ndarray:
        """Codes of a categorical column of video ids (new ids get new codes)."""
        lookup = np.array([self.codes.setdefault(v, len(self.codes)) for v in videos.categories],
                          dtype=np.int64)
        return lookup[videos.codes] if len(lookup) else np.zeros(len(videos), np.int64)

    def encode(self, videos, timestamps) -> np.ndarray:
        """The int64 keys of rows of ``videos`` (strings or a categorical; new ids get new codes)
        and ``timestamps`` (integers in ``0..2**21``)."""
        timestamps = np.asarray(timestamps, np.int64)
        if ((timestamps < 0) | (timestamps >= 1 << _TS_BITS)).any():
            raise ValueError(f"timestamps must be in 0..{(1 << _TS_BITS) - 1}")
        if not isinstance(videos, pd.Categorical):
            videos = pd.Categorical(pd.Series(videos, dtype=object).astype(str))
        return (self.video_codes(videos) << _TS_BITS) | timestamps

    def key(self, video: str, timestamp: int) -> int | None:
        """The key of one keyframe; ``None`` for a video no file has mentioned."""
        code = self.codes.get(video)
        return None if code is None else (code << _TS_BITS) | int(timestamp)

    def decode(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(video ids, timestamps)`` of int64 keys."""
        names = np.array(sorted(self.codes, key=self.codes.get), dtype=object)
        return names[keys >> _TS_BITS], keys & ((1 << _TS_BITS) - 1)


@dataclass
class BoxTable:
    """Rows of one CSV: ``frame`` keys, ``boxes (N, 4)`` as x1, y1, x2, y2, ``labels``, ``scores``
    (the 8th column: the score of a result, the person id of a ground-truth box; 1.0 without
    it, as the reference readers do) and ``order``, the 0-based row index in the file (used to
    break score ties by file order)."""

    frame: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    order: np.ndarray
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    rows_per_video: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Rows of the source per video code (:class:`FrameKeys`), counted before any prefilter or
    :meth:`take`: what the file holds, for checks such as results of videos without ground truth."""

    def __len__(self) -> int:
        return len(self.frame)

    def take(self, index: np.ndarray) -> "BoxTable":
        return BoxTable(self.frame[index], self.boxes[index], self.labels[index], self.scores[index],
                        self.order[index], self.path, self.warnings, self.rows_per_video)

    @classmethod
    def from_rows(cls, rows, keys: FrameKeys) -> "BoxTable":
        """A table of rows in memory, as :func:`read_box_csv` would read them from a file.

        ``rows``: a DataFrame with columns ``video, timestamp, x1, y1, x2, y2, action`` and an
        optional ``score`` (``video_id`` and ``action_id`` are read as ``video`` and ``action``),
        or a sequence of ``(video, timestamp, (x1, y1, x2, y2), action[, score])`` tuples. The
        score is 1.0 where there is none and ``order`` is the row index, as in a file. Tables
        evaluated together share ``keys``.

        >>> import pandas as pd
        >>> from stdet.evaluation import BoxTable, FrameKeys
        >>> keys = FrameKeys()
        >>> gt = BoxTable.from_rows([("v", 902, (0.1, 0.1, 0.5, 0.5), 12),
        ...                          ("v", 903, (0.5, 0.5, 0.9, 0.9), 80)], keys)
        >>> len(gt), gt.labels.tolist(), gt.scores.tolist()
        (2, [12, 80], [1.0, 1.0])
        >>> det = BoxTable.from_rows(pd.DataFrame({
        ...     "video": ["v"], "timestamp": [902], "x1": [0.1], "y1": [0.1], "x2": [0.5],
        ...     "y2": [0.45], "action": [12], "score": [0.9]}), keys)
        >>> det.frame.tolist() == gt.frame[:1].tolist()      # the same keyframe, the same key
        True
        """
        if not isinstance(rows, pd.DataFrame):
            rows = [tuple(r) for r in rows]
            if any(len(r) not in (4, 5) for r in rows):
                raise ValueError("a row is (video, timestamp, (x1, y1, x2, y2), action[, score])")
            boxes = np.array([r[2] for r in rows], np.float64).reshape(len(rows), 4)
            rows = pd.DataFrame({"video": [r[0] for r in rows], "timestamp": [r[1] for r in rows],
                                 **dict(zip(COLUMNS[2:6], boxes.T)),
                                 "action": [r[3] for r in rows],
                                 "score": [r[4] if len(r) == 5 else 1.0 for r in rows]})
        rows = rows.rename(columns={"video_id": "video", "action_id": "action"})
        missing = [c for c in COLUMNS[:7] if c not in rows.columns]
        if missing:
            raise ValueError(f"rows lack the columns {missing}")
        n = len(rows)
        scores = rows["score"].to_numpy(np.float64) if "score" in rows else np.ones(n)
        frame = keys.encode(rows["video"].to_numpy(), rows["timestamp"].to_numpy())
        return cls(frame, rows[COLUMNS[2:6]].to_numpy(np.float64).reshape(n, 4),
                   rows["action"].to_numpy(np.int64), scores, np.arange(n, dtype=np.int64),
                   rows_per_video=_rows_per_video(np.zeros(0, np.int64), frame))

    @classmethod
    def empty(cls, path: Path | None = None) -> "BoxTable":
        return cls(np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0),
                   np.zeros(0, np.int64), path)


def _rows_per_video(counts: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """``counts`` (rows per video code) plus the rows of the keys ``frame``."""
    new = np.bincount(frame >> _TS_BITS, minlength=len(counts)).astype(np.int64)
    new[:len(counts)] += counts
    return new


def _count_columns(path: Path) -> int:
    with open_text_lines(path) as lines:
        for row in csv.reader(lines):
            if row:
                return len(row)
    return 0


def _locate_error(path: Path, ncols: int, first_line: int, last_line: int, score: bool) -> AVADataError:
    """Re-read lines ``first_line..last_line`` (1-based) one by one and describe the first bad one."""
    names = COLUMNS[:7] + ["score" if score else "person_id"]
    with open_text_lines(path) as lines:
        for lineno, row in enumerate(csv.reader(lines), start=1):
            if lineno < first_line:
                continue
            if lineno > last_line:
                break
            if len(row) != ncols:
                return AVADataError(path, f"expected {ncols} columns like the first row, got "
                                    f"{len(row)}", line=lineno)
            for name, value in zip(names[1:], row[1:]):
                parse = parse_int if name in ("timestamp", "action") else parse_float
                try:
                    number = parse(value, name, path, lineno)
                except AVADataError as error:
                    return error
                if not np.isfinite(number):
                    return AVADataError(path, f"{name} is not finite: {value!r}", line=lineno)
    return AVADataError(path, f"cannot parse lines {first_line}-{last_line}")


def read_box_csv(path: str | os.PathLike, keys: FrameKeys, *, scores: bool,
                 prefilter: Callable[[BoxTable], np.ndarray] | None = None) -> BoxTable:
    """Read a ground-truth (``scores=False``: an 8th column is the person id) or a results CSV
    (``scores=True``: the 8th column is the score; 1.0 without it).

    Raises :class:`AVADataError` naming the file and line of a row with the wrong column count, a
    non-numeric field, a timestamp outside ``0..2**21``, a ground-truth box with ``x2 < x1`` or
    ``y2 < y1``. Boxes outside ``[0, 1]`` and result boxes with ``x2 < x1`` are tolerated, as the
    reference evaluators do, and counted in ``warnings``. ``prefilter`` maps each checked chunk
    to the indices of its rows to keep (an evaluation protocol drops rows it would never use
    before they take memory); it is applied once a file has more than one chunk.
    """
    path = Path(path)
    if not path.is_file():
        raise AVADataError(path, "file not found")
    ncols = _count_columns(path)
    if ncols == 0:
        return BoxTable.empty(path)
    if ncols not in (7, 8):
        raise AVADataError(path, f"expected 7 or 8 columns, got {ncols}", line=1)
    names = COLUMNS[:ncols]
    dtypes = {"video": "category", "timestamp": np.int64, "x1": np.float64, "y1": np.float64,
              "x2": np.float64, "y2": np.float64, "action": np.int64, "extra": np.float64}
    parts: list[BoxTable] = []
    warnings: dict[str, int] = {}
    rows_per_video = np.zeros(0, np.int64)
    first_line = 1
    try:
        reader = pd.read_csv(path, header=None, names=names, dtype={n: dtypes[n] for n in names},
                             chunksize=CHUNK_ROWS, engine="c", encoding="utf-8-sig",
                             skip_blank_lines=True, na_filter=True)
        chunks = iter(reader)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            except UnicodeDecodeError:  # a ValueError too: test it first
                raise not_a_text_file(path) from None
            except (ValueError, pd.errors.ParserError):
                raise _locate_error(path, ncols, first_line, first_line + CHUNK_ROWS + 64,
                                    scores) from None
            last_line = first_line + len(chunk) - 1
            part = _check_chunk(chunk, path, keys, ncols, scores, first_line, last_line, warnings,
                                first_line - 1)
            rows_per_video = _rows_per_video(rows_per_video, part.frame)
            parts.append(part)
            if prefilter is not None and len(parts) > 1:  # a file of one chunk is used as it is
                if len(parts) == 2:
                    parts[0] = parts[0].take(prefilter(parts[0]))
                parts[-1] = part.take(prefilter(part))
            first_line = last_line + 1
    except pd.errors.EmptyDataError:
        return BoxTable.empty(path)
    except UnicodeDecodeError:  # raised by read_csv itself when the first block is not UTF-8
        raise not_a_text_file(path) from None
    table = BoxTable(*(np.concatenate([getattr(p, f) for p in parts])
                       for f in ("frame", "boxes", "labels", "scores", "order")), path=path,
                     rows_per_video=rows_per_video)
    table.warnings = [f"{path}: {n} {what}" for what, n in warnings.items()]
    return table


def _count(warnings: dict[str, int], what: str, n: int) -> None:
    warnings[what] = warnings.get(what, 0) + n


def _check_chunk(chunk: pd.DataFrame, path: Path, keys: FrameKeys, ncols: int, scores: bool,
                 first_line: int, last_line: int, warnings: dict[str, int], offset: int) -> BoxTable:
    numeric = chunk[[c for c in COLUMNS[2:6]]].to_numpy(np.float64)
    # the 8th column of ground truth (the person id) is read as a score too, as the reference
    # readers do: it orders a keyframe's boxes, which decides ties of equal IoU
    score = chunk["extra"].to_numpy(np.float64) if ncols == 8 else np.ones(len(chunk))
    if any("\0" in video for video in chunk["video"].cat.categories):  # pandas reads NUL as text
        raise not_a_text_file(path)
    bad = ~np.isfinite(numeric).all(axis=1) | ~np.isfinite(score) | chunk["video"].isna().to_numpy()
    if bad.any():  # an empty field (NaN) or a short row
        raise _locate_error(path, ncols, first_line, last_line, scores)
    timestamps = chunk["timestamp"].to_numpy(np.int64)
    out_of_range = (timestamps < 0) | (timestamps >= 1 << _TS_BITS)
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        raise AVADataError(path, f"timestamp {timestamps[i]} is outside 0..{(1 << _TS_BITS) - 1}",
                           line=first_line + i)
    x1, y1, x2, y2 = numeric.T
    flipped = (x2 < x1) | (y2 < y1)
    if flipped.any():
        if not scores:
            i = int(np.argmax(flipped))
            raise AVADataError(path, f"box has x2 < x1 or y2 < y1: {numeric[i].tolist()}",
                               line=first_line + i)
        _count(warnings, "boxes with x2 < x1 or y2 < y1 (the activitynet and mmaction2-0.x "
               "protocols drop them)",
               int(flipped.sum()))
    outside = ((numeric < 0) | (numeric > 1)).any(axis=1)
    if outside.any():
        _count(warnings, "boxes outside [0, 1] (used as they are)", int(outside.sum()))
    return BoxTable(keys.encode(chunk["video"].array, timestamps), numeric,
                    chunk["action"].to_numpy(np.int64), score,
                    np.arange(offset, offset + len(chunk), dtype=np.int64))
