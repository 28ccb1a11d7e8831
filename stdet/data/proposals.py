"""Person proposals: ``{"video,%04d": (N, 5) array}`` pickles, read without executing code.

The AVA proposal files (e.g. ``ava_dense_proposals_val.FAIR.recall_93.9.pkl``) are pickled dicts of
numpy arrays, one row per detected person: normalised ``x1, y1, x2, y2, score``. A pickle can name any
callable to run while loading, so they are read with :class:`RestrictedUnpickler`, which resolves only
the few numpy constructors an array needs; anything else is refused before it runs.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from .annotations import check_box
from .errors import AVADataError
from .io import atomic_write_bytes

# (module, name) pairs a pickled dict of numpy arrays needs. numpy 2 renamed numpy.core to numpy._core;
# _codecs.encode appears in protocol-2 pickles of array bytes. None of these can run arbitrary code.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    # the empty bytes of an empty array: ``bytes()`` in protocol 0-2 pickles written by Python 3
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
    ("collections", "OrderedDict"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allowed list (it could execute code)."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists, tuples, strings, numbers and numpy arrays."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load {module}.{name}: only plain data and numpy arrays "
                                "are allowed")


def restricted_load(path: str | os.PathLike):
    """Load a pickle of plain data / numpy arrays; refuse anything that would run code."""
    path = Path(path)
    if not path.is_file():
        raise AVADataError(path, "file not found")
    data = path.read_bytes()
    try:
        # latin1 reads numpy arrays pickled by Python 2, as the public AVA proposal files were.
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as e:
        raise AVADataError(path, f"unsafe pickle: {e}") from None
    except Exception as e:  # truncated or not a pickle at all
        raise AVADataError(path, f"cannot unpickle: {type(e).__name__}: {e}") from None


def load_proposals(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a proposals pickle into ``{"video,%04d": (N, 4 or 5) float32}``, checking every entry.

    Raises :class:`AVADataError` naming the file and the key of a malformed entry.
    """
    raw = restricted_load(path)
    if not isinstance(raw, dict):
        raise AVADataError(path, f"expected a dict of arrays, got {type(raw).__name__}")
    proposals: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or "," not in key:
            raise AVADataError(path, "keys must be 'video_id,timestamp' strings", key=repr(key))
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise AVADataError(path, "value is not a numeric array", key=key) from None
        if array.size == 0:
            array = array.reshape(0, 5)
        if array.ndim != 2 or array.shape[1] not in (4, 5):
            raise AVADataError(path, f"expected an (N, 4) or (N, 5) array, got shape {array.shape}",
                               key=key)
        for box in array[:, :4]:
            check_box(box, path, key=key)
        proposals[key] = array
    return proposals


def save_proposals(path: str | os.PathLike, proposals: dict[str, np.ndarray]) -> None:
    """Write proposals in the AVA pickle format (a dict of float arrays), atomically."""
    atomic_write_bytes(path, pickle.dumps({k: np.asarray(v, np.float64) for k, v in proposals.items()},
                                          protocol=2))


def select_proposals(proposals: np.ndarray | None, score_thr: float = 0.9,
                     max_proposals: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and scores kept for one keyframe: ``(K, 4)`` normalised boxes and ``(K,)`` scores.

    Keeps scores >= ``min(score_thr, max score)`` (so at least the best detection survives); a
    keyframe with no proposal entry (``None`` or empty) gets the whole frame with score 1; arrays
    without scores keep every box with score 1. At most ``max_proposals`` boxes, in file order.
    """
    if proposals is None or len(proposals) == 0:
        return np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), np.ones(1, np.float32)
    proposals = np.asarray(proposals, np.float32)
    if proposals.shape[1] == 4:
        boxes, scores = proposals, np.ones(len(proposals), np.float32)
    else:
        thr = min(score_thr, float(proposals[:, 4].max()))
        keep = proposals[:, 4] >= thr
        boxes, scores = proposals[keep, :4], proposals[keep, 4]
    return boxes[:max_proposals], scores[:max_proposals]
