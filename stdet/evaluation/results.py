"""The results CSV, written and read here only: ``video_id,timestamp,x1,y1,x2,y2,action_id,score``.

One row per (person box, action), no header, boxes normalised to [0, 1], timestamps ``%04d`` as in
AVA's CSVs, boxes and scores with 4 decimals: the file ActivityNet's and MMAction2's evaluators
read, and the one ``python -m stdet test --out`` writes.
"""
from __future__ import annotations

import os

import pandas as pd

from ..data.io import atomic_write_text
from .io import BoxTable, FrameKeys, read_box_csv

RESULT_COLUMNS = ["video", "timestamp", "x1", "y1", "x2", "y2", "action", "score"]


def write_results(rows: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``rows`` (columns :data:`RESULT_COLUMNS`, normalised boxes) as the results CSV ``path``,
    atomically: sorted by video, timestamp, action and descending score (stable, so equal scores
    keep their order), ``%04d`` timestamps, 4-decimal floats, no header.

    >>> import pandas as pd, tempfile, pathlib
    >>> from stdet.evaluation import write_results
    >>> rows = pd.DataFrame({"video": ["v", "v"], "timestamp": [902, 902], "x1": [0.1, 0.5],
    ...                      "y1": [0.1, 0.5], "x2": [0.5, 0.9], "y2": [0.5, 0.9],
    ...                      "action": [12, 12], "score": [0.25, 0.875]})
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.csv"
    >>> write_results(rows, path)
    >>> print(path.read_text(), end="")
    v,0902,0.5000,0.5000,0.9000,0.9000,12,0.8750
    v,0902,0.1000,0.1000,0.5000,0.5000,12,0.2500
    """
    missing = [c for c in RESULT_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"results rows lack the columns {missing}")
    rows = rows[RESULT_COLUMNS].sort_values(["video", "timestamp", "action", "score"],
                                            ascending=[True, True, True, False], kind="stable")
    rows = rows.assign(timestamp=rows["timestamp"].map("{:04d}".format))  # as AVA's CSVs: 0902
    text = rows.to_csv(header=False, index=False, float_format="%.4f")
    atomic_write_text(path, text)


def read_results(path: str | os.PathLike, keys: FrameKeys | None = None) -> BoxTable:
    """A results CSV as arrays (for plots and custom analyses); pass the ``keys`` of a ground
    truth read with :func:`read_box_csv` to match its keyframes.

    >>> table = read_results("results.csv")                # doctest: +SKIP
    >>> table.boxes, table.labels, table.scores            # (N, 4), (N,), (N,)  # doctest: +SKIP
    """
    return read_box_csv(path, FrameKeys() if keys is None else keys, scores=True)
