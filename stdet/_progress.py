"""Progress bars where someone watches them.

Every loop a user waits on goes through :func:`progress_bar`: a ``tqdm.auto`` bar (a widget in
a notebook) on a terminal or in a Jupyter kernel. Written to a pipe or a log file, a bar is a
stream of carriage-return frames around the lines that matter, so there it is off unless the
environment says otherwise (``TQDM_DISABLE=0`` shows it, ``TQDM_DISABLE=1`` hides it
everywhere).
"""
from __future__ import annotations

import os
import sys


def watched() -> bool:
    """Whether a bar is seen as a bar: stderr is a terminal, or this is a Jupyter kernel."""
    from .data.processes import in_jupyter_kernel

    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or in_jupyter_kernel()


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """``tqdm.auto.tqdm(iterable, **kwargs)``, disabled unless ``enabled`` and :func:`watched`
    (or ``TQDM_DISABLE`` in the environment decides)."""
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if "TQDM_DISABLE" in os.environ:  # tqdm reads it when `disable` is not passed
        return tqdm(iterable, **kwargs)
    return tqdm(iterable, disable=not watched(), **kwargs)
