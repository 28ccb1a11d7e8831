"""Ctrl-C on the command line: the run stops, whatever it was doing when the signal came.

Python raises ``KeyboardInterrupt`` wherever the main thread is when SIGINT arrives. Inside a
finalizer (DataLoader workers are shut down and started again every epoch) that exception is
"ignored": printed as a traceback, and the run goes on. :func:`install` (the CLI calls it)
remembers the signal, keeps such an ignored interrupt from printing, and :func:`check` raises it
again at the next batch (:class:`~stdet.engine.data.AVALoader` calls it), so one Ctrl-C ends
the run with one line.
"""
from __future__ import annotations

import signal
import sys
import threading

_requested = False
_previous_hook = sys.unraisablehook


def _on_sigint(signum, frame) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def _unraisable(unraisable) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        return  # raised again by check() at the next batch
    _previous_hook(unraisable)


def install() -> None:
    """Handle SIGINT as above (the main thread of a command-line run only)."""
    global _previous_hook
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only
    signal.signal(signal.SIGINT, _on_sigint)
    if sys.unraisablehook is not _unraisable:
        _previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C came and was swallowed since."""
    if _requested:
        raise KeyboardInterrupt
