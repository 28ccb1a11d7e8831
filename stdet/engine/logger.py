"""A JSON-lines log: one object per training iteration and per validation, easy to plot.

Only the main process writes; every line is flushed, so a crash loses nothing already logged.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


class JsonlLogger:
    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path else None
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    def log(self, **record) -> None:
        if self._file is None:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        try:
            self._file.write(json.dumps(clean) + "\n")
            self._file.flush()
        except OSError as e:  # a full disk: one line, the records before are kept
            from ..data.errors import WriteError

            raise WriteError(f"{self.path}: cannot append to the log: [Errno {e.errno}] "
                             f"{e.strerror}; the records before are kept") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines log, as dicts (a partly written last line is ignored)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_log(path: str | os.PathLike):
    """A training log (``WORK_DIR/log.jsonl``) as a ``pandas.DataFrame``, one row per record:
    ``mode`` "train" (epoch, iter, step, lr, loss, recall/precision, time, memory), "val" (epoch,
    mAP and the group means) or "error"; a partly written last line is ignored.

    >>> import stdet
    >>> log = stdet.read_log("work_dirs/slowonly_mini/log.jsonl")
    >>> log[log["mode"] == "val"][["epoch", "mAP"]]
    """
    import pandas as pd

    return pd.DataFrame(read_records(path))
