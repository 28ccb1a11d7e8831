"""Person proposals: ``{"video,%04d": (N, 5) array}`` pickles, read without executing code.

The AVA proposal files (e.g. ``ava_dense_proposals_val.FAIR.recall_93.9.pkl``) are pickled dicts of
numpy arrays, one row per detected person: normalised ``x1, y1, x2, y2, score``. A pickle can name any
callable to run while loading, so they are read with :class:`RestrictedUnpickler`, which resolves only
the few numpy constructors an array needs, each behind a guard; anything else is refused before it
runs.

The guards keep a hostile file from costing more than a small multiple of its own size: numpy's own
constructors would let a few hundred bytes allocate gigabytes (``_reconstruct`` of a huge shape,
``bytes(n)``, ``_codecs.encode`` chained to double a string at each step) or read memory out of
bounds (an object array whose pickled item list is shorter than its shape crashes the process). So
only plain numeric dtypes are built, array data must come from the file byte for byte, and an
entry's rows are checked for structure before anything is converted (see :func:`load_proposals`).
"""
from __future__ import annotations

import io
import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .annotations import check_box
from .errors import AVADataError
from .io import atomic_write_bytes

# (module, name) pairs a pickled dict of numpy arrays needs. numpy 2 renamed numpy.core to numpy._core;
# _codecs.encode appears in protocol-2 pickles of array bytes. The checkpoint reader
# (stdet.engine.checkpoint) also allows these names; RestrictedUnpickler maps each to a guard below.
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

# dtype kinds an unpickled array may have: bool, integers, floats, complex; never object, void
# (structured), strings or datetimes
_PLAIN_KINDS = "biufc"
_MAX_DIMS = 64  # numpy's own limit


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allowed list (it could execute code), or asks an
    allowed one for something other than a plain numeric array."""


class _ArrayType:
    """Stands in for ``numpy.ndarray`` in a pickle: only an argument of ``_reconstruct``. Not
    callable and without attributes, so a pickle can neither call it nor change it."""

    __slots__ = ()


_NDARRAY = _ArrayType()


class _PickledDtype:
    """A dtype named by a pickle (``numpy.dtype('f8', False, True)`` then its state): kept apart
    from numpy until :meth:`resolve`, as numpy's ``dtype.__setstate__`` would let the pickle turn
    a float dtype into one that holds object pointers."""

    __slots__ = ("base", "byteorder")

    def __init__(self, base: np.dtype) -> None:
        self.base, self.byteorder = base, "="

    def __setstate__(self, state) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not (isinstance(state, tuple) and len(state) in (8, 9)
                and state[1] in ("<", ">", "|", "=") and state[2:5] == (None, None, None)):
            raise UnsafePickleError(f"refusing dtype state {_short(state)}: only plain numeric "
                                    "dtypes are allowed")
        self.byteorder = state[1]

    def resolve(self) -> np.dtype:
        """A fresh numpy dtype: the base type in the pickled byte order."""
        return self.base.newbyteorder(self.byteorder) if self.byteorder in "<>" else self.base


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _dtype(*args) -> _PickledDtype:
    """``numpy.dtype(spec, align, copy)`` for a plain numeric ``spec`` such as ``'f8'``."""
    spec = args[0] if args else None
    if not isinstance(spec, str) or len(spec) > 16:
        raise UnsafePickleError(f"refusing numpy dtype {_short(spec)}: only plain numeric dtypes "
                                "are allowed")
    try:
        dtype = np.dtype(spec)
    except (TypeError, ValueError) as e:
        raise UnsafePickleError(f"refusing numpy dtype {spec!r}: {e}") from None
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsafePickleError(f"refusing numpy dtype {spec!r} (kind {dtype.kind!r}): only plain "
                                "numeric dtypes are allowed")
    return _PickledDtype(dtype)


def _element_count(shape, nbytes: int, itemsize: int) -> int:
    """The number of elements of ``shape``, refusing a shape whose data would not be exactly
    ``nbytes`` (stops multiplying once past it, so a shape of huge numbers costs nothing)."""
    if not (isinstance(shape, tuple) and len(shape) <= _MAX_DIMS
            and all(type(n) is int and n >= 0 for n in shape)):
        raise UnsafePickleError(f"refusing array shape {_short(shape)}")
    count = 0 if 0 in shape else 1
    for n in shape:
        count *= n
        if count * itemsize > nbytes:
            break
    if count * itemsize != nbytes:
        raise UnsafePickleError(f"refusing array of shape {_short(shape)}: its data has {nbytes} "
                                f"bytes, not {itemsize} per element")
    return count


def _data_bytes(raw) -> bytes | bytearray:
    """Array data as pickled: bytes, or a str of latin-1 code points (Python 2 pickles)."""
    if isinstance(raw, str):
        return raw.encode("latin1")  # one byte per code point (< 256, else UnicodeEncodeError)
    if isinstance(raw, (bytes, bytearray)):
        return raw
    raise UnsafePickleError(f"refusing array data of type {type(raw).__name__}: only bytes are "
                            "allowed")


def _resolved(dtype) -> np.dtype:
    if not isinstance(dtype, _PickledDtype):
        raise UnsafePickleError(f"refusing dtype {_short(dtype)}: not built by numpy.dtype")
    return dtype.resolve()


class _PickledArray(np.ndarray):
    """The array ``_reconstruct`` gives a pickle: its ``__setstate__`` checks the state (a plain
    dtype, data of exactly the shape's size) before numpy fills it in."""

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 4:
            state = (1, *state)  # the version-less format of old numpy
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafePickleError(f"refusing array state {_short(state)}")
        version, shape, dtype, fortran, raw = state
        dtype, data = _resolved(dtype), _data_bytes(raw)
        _element_count(shape, len(data), dtype.itemsize)
        super().__setstate__((version, shape, dtype, bool(fortran), bytes(data)))


def _reconstruct(*args) -> _PickledArray:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``: the empty array a pickle then
    fills in with its state. Any other shape would allocate memory the file does not hold."""
    if len(args) != 3 or args[0] is not _NDARRAY or not (isinstance(args[1], tuple)
                                                         and 0 in args[1]):
        raise UnsafePickleError(f"refusing _reconstruct{_short(args)}: only the empty ndarray "
                                "placeholder is allowed")
    return np.ndarray.__new__(_PickledArray, (0,), np.uint8)


def _frombuffer(*args) -> np.ndarray:
    """``numpy.core.numeric._frombuffer(buf, dtype, shape, order)`` (protocol-5 pickles)."""
    if len(args) != 4 or args[3] not in ("C", "F"):
        raise UnsafePickleError(f"refusing _frombuffer{_short(args)}")
    buf, dtype, shape, order = args
    dtype, data = _resolved(dtype), _data_bytes(buf)
    _element_count(shape, len(data), dtype.itemsize)
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order)


def _scalar(*args) -> np.generic:
    """``numpy.core.multiarray.scalar(dtype, data)``: one plain number."""
    if len(args) != 2:
        raise UnsafePickleError(f"refusing scalar{_short(args)}")
    dtype, data = _resolved(args[0]), _data_bytes(args[1])
    _element_count((), len(data), dtype.itemsize)
    return np.frombuffer(data, dtype=dtype)[0]


def _encode(*args) -> bytes:
    """``_codecs.encode(text, 'latin1')``, as protocol 0-2 pickles write bytes; other codecs
    (``hex`` doubles its input: chained, a few bytes of pickle could ask for terabytes) refused."""
    if not (len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1")):
        raise UnsafePickleError(f"refusing _codecs.encode{_short(args)}: only text to latin1 is "
                                "allowed")
    return args[0].encode("latin1")


def _bytes(*args) -> bytes:
    """``bytes()``: the empty bytes of protocol 0-2 pickles; ``bytes(n)`` would allocate n bytes."""
    if args:
        raise UnsafePickleError(f"refusing bytes{_short(args)}: only bytes() is allowed")
    return b""


_GUARDS = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _encode,
    ("__builtin__", "bytes"): _bytes,
    ("builtins", "bytes"): _bytes,
    ("collections", "OrderedDict"): OrderedDict,
}
assert set(_GUARDS) == _ALLOWED_GLOBALS


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists, tuples, strings, numbers and plain numeric numpy arrays (the
    arrays come back as a subclass of ``ndarray``; ``np.asarray`` gives a plain one)."""

    def find_class(self, module: str, name: str):
        guard = _GUARDS.get((module, name))
        if guard is not None:
            return guard
        raise UnsafePickleError(f"refusing to load {module}.{name}: only plain data and numpy arrays "
                                "are allowed")


def restricted_load(path: str | os.PathLike):
    """Load a pickle of plain data / numeric numpy arrays; refuse anything that would run code or
    allocate memory the file does not hold."""
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


# ------------------------------------------------------------------------------------------------
# proposal entries

_BOX_KINDS = "iuf"  # an entry's numbers: integers or floats (not bool, complex or objects)


def _not_boxes(path, key: str, why: str) -> AVADataError:
    return AVADataError(path, f"value is not an (N, 4) or (N, 5) numeric array: {why}", key=key)


def _is_number(value) -> bool:
    return type(value) in (int, float) or isinstance(value, (np.integer, np.floating))


def _row_width(row, index: int, path, key: str) -> int:
    """The length of one row of a list entry (4 or 5), checking it holds plain numbers only."""
    if isinstance(row, np.ndarray):
        if row.ndim != 1 or row.dtype.kind not in _BOX_KINDS:
            raise _not_boxes(path, key, f"row {index} is an array of shape {row.shape}, "
                                        f"dtype {row.dtype}")
        width = len(row)
    elif isinstance(row, (list, tuple)):
        width = len(row)
        if width in (4, 5) and not all(_is_number(v) for v in row):
            bad = next(v for v in row if not _is_number(v))
            raise _not_boxes(path, key, f"row {index} holds a {type(bad).__name__}")
    else:
        raise _not_boxes(path, key, f"row {index} is a {type(row).__name__}")
    if width not in (4, 5):
        raise _not_boxes(path, key, f"row {index} has {width} items")
    return width


def _rows_to_array(rows: list | tuple, path, key: str) -> np.ndarray:
    """A list of rows as an array, after checking it is exactly rows of 4 or 5 numbers.

    The check looks at most 5 items a row and never below a row, so a list nested deeper (a few
    hundred bytes of shared references can stand for 10**8 numbers) is refused before anything is
    expanded; the work is linear in the number of rows, each of which costs the file a byte or more.
    """
    if len(rows) == 0:
        return np.zeros((0, 5), np.float32)
    widths = {_row_width(row, i, path, key) for i, row in enumerate(rows)}
    if len(widths) > 1:
        raise _not_boxes(path, key, "rows of 4 and of 5 numbers")
    try:
        return np.array(rows, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as e:
        raise _not_boxes(path, key, f"{type(e).__name__}: {e}") from None


def _as_box_array(value, path, key: str) -> np.ndarray:
    """An entry as an ``(N, 4 or 5)`` float32 array; its type and structure are checked first,
    so nothing large is built for a malformed entry."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _BOX_KINDS:
            raise _not_boxes(path, key, f"an array of dtype {value.dtype}")
        array = np.asarray(value, dtype=np.float32)
    elif isinstance(value, (list, tuple)):
        array = _rows_to_array(value, path, key)
    else:
        raise _not_boxes(path, key, f"a {type(value).__name__}")
    if array.size == 0:
        return array.reshape(0, 5)
    if array.ndim != 2 or array.shape[1] not in (4, 5):
        raise AVADataError(path, f"expected an (N, 4) or (N, 5) array, got shape {array.shape}",
                           key=key)
    return array


def _check_rows(array: np.ndarray, path, key: str) -> None:
    """Every box normalised and well-formed (:func:`check_box`'s rules, vectorised), every score
    finite: a NaN score would make ``select_proposals`` drop or keep boxes arbitrarily."""
    x1, y1, x2, y2 = array[:, :4].T
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(array[:, :4]).all(axis=1) & (x1 >= 0) & (y1 >= 0) & (x2 <= 1)
                & (y2 <= 1) & (x2 > x1) & (y2 > y1))
    if bad.any():
        check_box(array[int(np.argmax(bad)), :4], path, key=key)
    if array.shape[1] == 5:
        finite = np.isfinite(array[:, 4])
        if not finite.all():
            row = int(np.argmin(finite))
            raise AVADataError(path, f"score is {float(array[row, 4])} (row {row})", key=key)


def _padded_key(key: str) -> str:
    """``"video,902"`` -> ``"video,0902"``: the ``img_key`` form of a key whose timestamp is an
    unsigned integer written without zero padding; any other key unchanged."""
    video, _, timestamp = key.rpartition(",")
    if timestamp.isascii() and timestamp.isdigit():
        return f"{video},{int(timestamp):04d}"
    return key


def load_proposals(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a proposals pickle into ``{"video,%04d": (N, 4 or 5) float32}``, checking every entry.

    Raises :class:`AVADataError` naming the file and the key of a malformed entry (not rows of 4
    or 5 numbers, a box outside ``[0, 1]``, a non-finite box or score).

    A key whose timestamp is an integer written without the zero padding of ``%04d``
    (``"vid,902"``) is read as ``"vid,0902"``, the key the dataset looks up, and the count of such
    keys is reported in a warning; two keys that then name the same keyframe are an error. Other
    timestamps (``"vid,902.0"``) are kept as written: :func:`check_coverage` reports them.
    """
    raw = restricted_load(path)
    if not isinstance(raw, dict):
        raise AVADataError(path, f"expected a dict of arrays, got {type(raw).__name__}")
    proposals: dict[str, np.ndarray] = {}
    padded: list[str] = []
    converted: dict[int, np.ndarray] = {}  # by id: a value shared by many keys is converted once
    for key, value in raw.items():
        if not isinstance(key, str) or "," not in key:
            raise AVADataError(path, "keys must be 'video_id,timestamp' strings", key=repr(key))
        if id(value) not in converted:
            array = _as_box_array(value, path, key)
            _check_rows(array, path, key)
            converted[id(value)] = array
        name = _padded_key(key)
        if name != key:
            padded.append(f"{key!r} as {name!r}")
        if name in proposals:
            raise AVADataError(path, "two keys name this keyframe (one without zero padding)",
                               key=name)
        proposals[name] = converted[id(value)]
    if padded:
        warnings.warn(f"{path}: read {len(padded)} of {len(proposals)} keys written without the "
                      f"zero padding of 'video_id,%04d': {', '.join(padded[:3])}"
                      f"{' ...' if len(padded) > 3 else ''}", stacklevel=2)
    return proposals


# ------------------------------------------------------------------------------------------------
# coverage of a dataset's keyframes


def _integer_key(key: str) -> str | None:
    """The ``video,%04d`` form of a key whose timestamp is any finite number (``"v,902.0"``)."""
    video, _, timestamp = key.rpartition(",")
    try:
        return f"{video},{int(float(timestamp)):04d}"
    except (ValueError, OverflowError):
        return None


def _no_match_hint(proposals: Mapping[str, np.ndarray], keys: Sequence[str], of: str) -> str:
    """Why none of ``keys`` is in ``proposals``: an empty file, keys not written ``video,%04d``, or
    (most likely) the file of another split."""
    if not proposals:
        return f"the file has no entries, so none of the {len(keys)} keyframes{of} has proposals"
    wanted = set(keys)
    renamed = [(k, _integer_key(k)) for k in proposals if _integer_key(k) in wanted]
    if renamed:
        return (f"none of its {len(proposals)} keys matches one of the {len(keys)} keyframes{of}, "
                f"but {len(renamed)} do once their timestamp is read as an integer (e.g. "
                f"{renamed[0][0]!r} for {renamed[0][1]!r}): write keys as 'video_id,%04d'")
    example = next(iter(proposals))
    videos = {k.rpartition(",")[0] for k in keys}
    same = next((k for k in proposals if k.rpartition(",")[0] in videos), None)
    if same is not None:
        return (f"none of its {len(proposals)} keys matches one of the {len(keys)} keyframes{of}: "
                f"its videos are theirs but no timestamp matches (the file has {same!r}, the "
                f"keyframes {keys[0]!r})")
    return (f"none of its {len(proposals)} keys matches one of the {len(keys)} keyframes{of} "
            f"(the file has {example!r}, the keyframes {keys[0]!r}): is it the proposals file of "
            "another split?")


def check_coverage(proposals: Mapping[str, np.ndarray], keys: Sequence[str],
                   path: str | os.PathLike, *, against: str | os.PathLike | None = None,
                   stacklevel: int = 2) -> list[str]:
    """The keyframe keys (``"video,%04d"``) that have no entry in ``proposals`` (read from
    ``path``), after checking that the file fits them.

    A keyframe without an entry gets the whole frame as its one person box (MMAction2's rule),
    which is right for the odd frame the detector skipped but silently wrong for a whole split.
    So: when none of ``keys`` has an entry, raise :class:`AVADataError` naming ``path`` with the
    likely cause (an empty file, keys not written ``video,%04d``, the file of another split);
    when some miss, warn with their count and three of them. ``against`` names where the keys
    come from (the annotation file) in the messages.
    """
    missing = [key for key in keys if key not in proposals]
    if not missing:
        return missing
    of = f" of {against}" if against is not None else ""
    if len(missing) == len(keys):
        raise AVADataError(path, _no_match_hint(proposals, keys, of))
    warnings.warn(f"{path}: {len(missing)} of {len(keys)} keyframes{of} have no proposals "
                  f"({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); each gets the "
                  "whole frame as its one person box", stacklevel=stacklevel)
    return missing


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
