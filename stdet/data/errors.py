"""stdet's errors: each is reported by the command line as one line ``error: ...``.

:class:`StdetError` is the base: ``exit_code`` 2 for a mistake in the input (a config value, a
data file, a checkpoint of another model), 1 for :class:`RunError`, a fault of the run (a
non-finite loss, a full disk). Every stdet error pickles with its fields, so an error raised in
a DataLoader worker reaches the main process as the same error, with the same one line.
"""
from __future__ import annotations

import os


def _rebuild(cls: type, args: tuple, state: dict) -> BaseException:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class StdetError(Exception):
    """An error a user can act on; its message is one line that names the file, line or key."""

    exit_code = 2

    def __reduce__(self):
        # the default (cls, args) would call __init__ with the formatted message only
        return _rebuild, (type(self), self.args, dict(self.__dict__))

    def __str__(self) -> str:  # a KeyError subclass would otherwise print its message quoted
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class RunError(StdetError, RuntimeError):
    """A fault of the run, not of its input (exit code 1): the disk filled up, the loss is not
    finite. The message says what was kept."""

    exit_code = 1


class AVADataError(StdetError, ValueError):
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


class WriteError(RunError, OSError):
    """A file could not be written (a full disk, a lost mount): a fault of the run, exit code 1.

    The message names the file, the OS error and whether an earlier file at that path is intact.
    It is an ``OSError`` too, so code that handles failed writes as ``OSError`` still does.
    """

    def __new__(cls, *args, **kwargs):
        # OSError's memory layout: RuntimeError.__new__, first in the MRO, refuses to build one
        # (the pickling of StdetError calls cls.__new__(cls))
        return OSError.__new__(cls, *args)


class WorkDirBusyError(StdetError):
    """Another process holds the lock of a work or bank directory; the message names its pid and
    command."""
