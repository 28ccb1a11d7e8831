"""Errors raised on bad AVA input: each names the file and, where there is one, the line or key."""
from __future__ import annotations

import os


class AVADataError(ValueError):
    """Malformed or missing AVA input.

    The message always starts with the offending path, then ``:LINE`` or ``[KEY]`` where known,
    so a user can open the file at the right place.
    """

    def __init__(self, path: str | os.PathLike, message: str, *, line: int | None = None,
                 key: str | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.key = key
        where = self.path
        if line is not None:
            where += f":{line}"
        if key is not None:
            where += f" [{key}]"
        super().__init__(f"{where}: {message}")


class FrameReadError(AVADataError):
    """A frame that cannot be read: missing, corrupt, or outside the video."""
