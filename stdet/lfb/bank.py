"""The long-term feature bank (LFB) on disk: one feature vector per person box per keyframe second.

LFB (Wu et al., "Long-Term Feature Banks for Detailed Video Understanding", 2019) runs a detector once
over a whole split, keeps the pooled RoI feature of every detected person (C = 2048 channels for a
ResNet-50), and lets the real model look at the features of the 60 seconds around each keyframe.

MMAction2 keeps the bank as one torch pickle ``{video_id: {second: (n, C) tensor}}`` that every process
loads whole into memory. stdet writes it as two plain files instead, for split ``S`` under ``ROOT``::

    ROOT/lfb_S.npy    (N, C) float16 or float32, every RoI of the split, rows grouped by keyframe
    ROOT/lfb_S.json   {"format": "stdet-lfb-1", "split": S, "channels": C, "dtype": "float16",
                       "rows": N, "entries": [[video_id, second, start, stop], ...]}

Entries are sorted by ``(video_id, second)``; rows ``start:stop`` are that keyframe's RoIs
(``start == stop``: the keyframe was processed and had no person). The ``.npy`` is memory-mapped, so the
DataLoader workers of all ranks on a machine share one copy in the page cache, and nothing is a pickle.

Writing is resumable and DDP-aware (:class:`BankWriter`): every rank appends shards
``ROOT/lfb_S.parts/rank{r}-{k:05d}.npz``; :func:`merge_shards` (rank 0, after a barrier) joins them::

    extraction, rank r               merge (rank 0)                   training
    BankWriter.add(video, sec, x) -> lfb_S.parts/rank*-*.npz  ->  lfb_S.npy + lfb_S.json -> FeatureBank
"""
from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.errors import AVADataError
from ..data.io import atomic_write_text

BANK_FORMAT = "stdet-lfb-1"
_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
_SHARD_NAME = re.compile(r"rank(\d+)-(\d{5,})\.npz")
_SHARD_ARRAYS = ("features", "videos", "seconds", "counts")

Key = tuple[str, int]


class FeatureBankError(AVADataError):
    """A malformed bank, shard or MMAction2 pickle; the message starts with the file's path."""


def bank_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """``(ROOT/lfb_{split}.npy, ROOT/lfb_{split}.json)``."""
    root = Path(root)
    return root / f"lfb_{split}.npy", root / f"lfb_{split}.json"


def bank_nbytes(num_rois: int, channels: int = 2048, dtype: str | np.dtype = "float32") -> int:
    """Bytes of the feature array for ``num_rois`` RoIs (the .npy header adds about 128 more).

    E.g. 1000 RoIs x 2048 channels x 4 bytes = 8,192,000 bytes; float16 halves it.
    """
    return int(num_rois) * int(channels) * np.dtype(dtype).itemsize


def _bank_dtype(dtype: str | np.dtype, where: str | os.PathLike) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise FeatureBankError(where, f"unknown dtype {dtype!r}") from None
    if dtype not in _DTYPES:
        raise FeatureBankError(where, f"dtype must be float16 or float32, got {dtype.name}")
    return dtype


def _parts_dir(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / f"lfb_{split}.parts"


def _shard_files(root: str | os.PathLike, split: str) -> list[tuple[int, int, Path]]:
    """``(rank, k, path)`` of every complete shard of the split, in (rank, k) order."""
    parts = _parts_dir(root, split)
    if not parts.is_dir():
        return []
    found = []
    for path in parts.iterdir():
        match = _SHARD_NAME.fullmatch(path.name)
        if match:  # a leftover "*.tmp" of a crashed flush does not match
            found.append((int(match[1]), int(match[2]), path))
    return sorted(found)


def _npy_header(file) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an open ``.npy`` stream, without reading the data."""
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(file)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(file)
    return shape, dtype


class _Shard:
    """The index of one shard (its keyframes and row counts) and the header of its features."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [name for name in _SHARD_ARRAYS if name not in npz.files]
                if missing:
                    raise FeatureBankError(path, f"shard lacks arrays {missing}")
                with npz.zip.open("features.npy") as f:
                    self.shape, self.dtype = _npy_header(f)
                self.videos = [str(v) for v in npz["videos"]]
                self.seconds = npz["seconds"].astype(np.int64).tolist()
                self.counts = npz["counts"].astype(np.int64)
        except FeatureBankError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise FeatureBankError(path, f"corrupt shard: {type(e).__name__}: {e}") from None
        if len(self.shape) != 2:
            raise FeatureBankError(path, f"features must be 2-D, got shape {self.shape}")
        if not len(self.videos) == len(self.seconds) == len(self.counts):
            raise FeatureBankError(path, "videos, seconds and counts differ in length")
        if (self.counts < 0).any() or int(self.counts.sum()) != self.shape[0]:
            raise FeatureBankError(path, f"counts sum to {int(self.counts.sum())}, "
                                         f"features have {self.shape[0]} rows")
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).tolist()

    def keys(self) -> list[Key]:
        return list(zip(self.videos, self.seconds))

    def features(self) -> np.ndarray:
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                return npz["features"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise FeatureBankError(self.path, f"corrupt shard: {type(e).__name__}: {e}") from None


# ----------------------------------------------------------------------------------------------
# Writing: shards per rank, then one merge
# ----------------------------------------------------------------------------------------------

class BankWriter:
    """Resumable, DDP-aware writer. Each rank appends to its own shards; rank 0 merges.

    ``done`` holds the ``(video_id, second)`` keyframes already in this split's shards of *any* rank,
    so a restarted extraction (even with another world size) skips them. Keyframes are kept in memory
    until ``shard_size`` of them are pending, then written as one shard::

        ROOT/lfb_S.parts/rank{r}-{k:05d}.npz   features (n, C), videos (U), seconds, counts (int64)

    A shard is written to a temporary file and renamed, so a crash loses at most the pending keyframes.
    ``add`` of a keyframe already in ``done`` is ignored: DistributedSampler pads a split with repeats.
    """

    def __init__(self, root: str | os.PathLike, split: str, channels: int,
                 dtype: str | np.dtype = "float32", rank: int = 0, shard_size: int = 256) -> None:
        self.root, self.split, self.rank = Path(root), split, int(rank)
        self.channels, self.shard_size = int(channels), int(shard_size)
        self.parts = _parts_dir(root, split)
        self.dtype = _bank_dtype(dtype, self.parts)
        self.parts.mkdir(parents=True, exist_ok=True)
        self.done: set[Key] = set()
        self._next_k = 0
        for rank_, k, path in _shard_files(root, split):
            self.done.update(_Shard(path).keys())
            if rank_ == self.rank:
                self._next_k = k + 1
        self._pending: list[tuple[str, int, np.ndarray]] = []

    def add(self, video_id: str, second: int, features: np.ndarray) -> None:
        """Record the ``(n, C)`` RoI features of one keyframe (``n`` may be 0), cast to the bank dtype."""
        key = (str(video_id), int(second))
        if key in self.done:
            return
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.channels:
            raise ValueError(f"{key}: expected features of shape (n, {self.channels}), "
                             f"got {features.shape}")
        self._pending.append((*key, features.astype(self.dtype)))
        self.done.add(key)
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the pending keyframes as one shard (atomically); nothing pending writes nothing."""
        if not self._pending:
            return
        videos, seconds, features = zip(*self._pending)
        path = self.parts / f"rank{self.rank}-{self._next_k:05d}.npz"
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez(f, features=np.concatenate(features),
                         videos=np.array(videos, dtype=np.str_),
                         seconds=np.array(seconds, dtype=np.int64),
                         counts=np.array([len(x) for x in features], dtype=np.int64))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._pending.clear()
        self._next_k += 1

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> BankWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # on an error too: what was extracted is kept for the resumed run


def _commit_bank(root: str | os.PathLike, split: str, channels: int, dtype: np.dtype,
                 entries: list[list], rows: int, fill: Callable[[np.ndarray], None]) -> None:
    """Write ``lfb_S.npy`` (filled by ``fill(out)``) and then ``lfb_S.json``, each via a temporary file.

    The JSON is the commit: it is removed first and written last, and a failure anywhere removes the
    new ``.npy`` again, so a crash leaves either no bank or a complete one. The array is written through
    a memory map, so a merge never holds the whole bank in memory.
    """
    path_npy, path_json = bank_paths(root, split)
    tmp_npy = path_npy.with_name(path_npy.name + ".tmp")
    header = {"format": BANK_FORMAT, "split": split, "channels": int(channels), "dtype": dtype.name,
              "rows": int(rows)}
    path_npy.parent.mkdir(parents=True, exist_ok=True)
    placed = False
    try:
        out = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=dtype, shape=(rows, channels))
        fill(out)
        out.flush()
        del out
        path_json.unlink(missing_ok=True)
        os.replace(tmp_npy, path_npy)
        placed = True
        lines = ",\n".join(json.dumps(entry) for entry in entries)
        atomic_write_text(path_json, json.dumps(header)[:-1] + f', "entries": [\n{lines}\n]}}\n')
    except BaseException:
        tmp_npy.unlink(missing_ok=True)
        if placed:
            path_npy.unlink(missing_ok=True)
        raise


def merge_shards(root: str | os.PathLike, split: str) -> FeatureBank:
    """Join the shards of all ranks into ``lfb_S.npy`` + ``lfb_S.json``, then remove ``lfb_S.parts``.

    Keyframes are sorted by ``(video_id, second)``; one seen in two shards keeps its first copy. Every
    shard is checked (readable, same channels and dtype) before anything is written; the features are
    then copied one shard at a time. Raises :class:`FeatureBankError` naming a bad shard.
    """
    files = _shard_files(root, split)
    if not files:
        raise FileNotFoundError(f"{_parts_dir(root, split)}: no shards to merge")
    shards = [_Shard(path) for _, _, path in files]
    channels, dtype = shards[0].shape[1], shards[0].dtype
    for shard in shards:
        if shard.shape[1] != channels or shard.dtype != dtype:
            raise FeatureBankError(shard.path, f"has {shard.shape[1]} channels of {shard.dtype}, "
                                               f"{shards[0].path.name} has {channels} of {dtype}")
    _bank_dtype(dtype, shards[0].path)

    source: dict[Key, tuple[int, int]] = {}  # keyframe -> (shard index, index within the shard)
    for s, shard in enumerate(shards):
        for i, key in enumerate(shard.keys()):
            source.setdefault(key, (s, i))
    entries, placement, rows = [], {}, 0
    for key in sorted(source):
        s, i = source[key]
        n = int(shards[s].counts[i])
        entries.append([key[0], key[1], rows, rows + n])
        placement.setdefault(s, []).append((i, rows))
        rows += n

    def fill(out: np.ndarray) -> None:
        for s, targets in placement.items():
            features = shards[s].features()
            for i, start in targets:
                lo, hi = shards[s].starts[i], shards[s].starts[i + 1]
                out[start:start + hi - lo] = features[lo:hi]

    _commit_bank(root, split, channels, dtype, entries, rows, fill)
    shutil.rmtree(_parts_dir(root, split))
    return FeatureBank.load(root, split)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------

class FeatureBank:
    """A written bank: the JSON index in memory, the features memory-mapped on first use.

    Pickling (DataLoader workers) carries the paths and the index only; every process reopens the
    memory map, so all workers read one copy through the page cache.
    """

    def __init__(self, path_npy: Path, path_json: Path, split: str, channels: int, dtype: np.dtype,
                 num_rows: int, entries: list[tuple[str, int, int, int]], mmap: bool = True) -> None:
        self.path_npy, self.path_json, self.split = Path(path_npy), Path(path_json), split
        self.channels, self.dtype, self.num_rows, self.mmap = channels, np.dtype(dtype), num_rows, mmap
        self.keys: list[Key] = []
        # video -> second -> (start, stop): sample() looks up 60 seconds of one video. One string
        # object per video, so a pickled bank stores each name once.
        self._index: dict[str, dict[int, tuple[int, int]]] = {}
        names: dict[str, str] = {}
        for video, second, start, stop in entries:
            video = names.setdefault(video, video)
            self.keys.append((video, second))
            self._index.setdefault(video, {})[second] = (start, stop)
        self._features: np.ndarray | None = None

    @classmethod
    def load(cls, root: str | os.PathLike, split: str, mmap: bool = True) -> FeatureBank:
        """Open ``ROOT/lfb_{split}.{npy,json}``, checking the index against the array's header.

        Raises :class:`FeatureBankError` (a ValueError) naming the file and the problem.
        """
        path_npy, path_json = bank_paths(root, split)
        try:
            meta = json.loads(path_json.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as e:
            raise FeatureBankError(path_json, f"unreadable index: {e}") from None
        if not isinstance(meta, dict) or meta.get("format") != BANK_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise FeatureBankError(path_json, f"format is {found!r}, expected {BANK_FORMAT!r}")
        if meta.get("split") != split:
            raise FeatureBankError(path_json, f"split is {meta.get('split')!r}, expected {split!r}")
        channels, rows = meta.get("channels"), meta.get("rows")
        for name, value in (("channels", channels), ("rows", rows)):
            if type(value) is not int or value < 0:
                raise FeatureBankError(path_json, f"{name} must be a non-negative int, got {value!r}")
        dtype = _bank_dtype(str(meta.get("dtype")), path_json)
        try:
            with open(path_npy, "rb") as f:
                shape, npy_dtype = _npy_header(f)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as e:
            raise FeatureBankError(path_npy, f"unreadable array: {e}") from None
        if shape != (rows, channels) or npy_dtype != dtype:
            raise FeatureBankError(path_json, f"index says rows={rows}, channels={channels}, "
                                              f"{dtype.name}; {path_npy.name} holds {shape} {npy_dtype}")
        entries = meta.get("entries")
        if not isinstance(entries, list):
            raise FeatureBankError(path_json, "entries must be a list")
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)
                    and all(type(v) is int for v in entry[1:])):
                raise FeatureBankError(path_json, f"entry {entry!r} is not [video, second, start, stop]")
            if not 0 <= entry[2] <= entry[3] <= rows:
                raise FeatureBankError(path_json, f"entry {entry!r} is outside rows 0:{rows}")
        keys = [(e[0], e[1]) for e in entries]
        if keys != sorted(set(keys)):
            raise FeatureBankError(path_json, "entries are not sorted by (video, second) and unique")
        return cls(path_npy, path_json, split, channels, dtype, rows, entries, mmap)

    @property
    def features(self) -> np.ndarray:
        """The ``(num_rows, channels)`` array, memory-mapped read-only (opened once per process)."""
        if self._features is None:
            self._features = np.load(self.path_npy, mmap_mode="r" if self.mmap else None,
                                     allow_pickle=False)
        return self._features

    def __len__(self) -> int:
        """The number of keyframes (with or without RoIs)."""
        return len(self.keys)

    def __contains__(self, key: Key) -> bool:
        video, second = key
        return second in self._index.get(video, {})

    def features_at(self, video_id: str, second: int) -> np.ndarray:
        """The ``(n, C)`` features of one keyframe (a view); ``(0, C)`` if it is not in the bank."""
        start, stop = self._index.get(video_id, {}).get(int(second), (0, 0))
        if start == stop:
            return np.zeros((0, self.channels), self.dtype)
        return self.features[start:stop]

    def sample(self, video_id: str, timestamp: int, rng: np.random.Generator, window: int = 60,
               max_per_second: int = 5) -> np.ndarray:
        """The long-term features around a keyframe: ``(window * max_per_second, C)`` float32.

        Second ``i`` of the window is ``timestamp - window // 2 + i`` (MMAction2: 30 s before to 29 s
        after) and owns rows ``i*K : (i+1)*K`` with ``K = max_per_second``. A second with ``n`` RoIs
        fills its first ``min(n, K)`` rows with RoIs in a random order, ``rng.permutation(n)[:K]``
        (MMAction2's ``torch.randperm``); unused rows, seconds without RoIs and seconds outside the
        video stay zero. ``rng`` is drawn once per second that has RoIs, in window order.
        """
        K, seconds = max_per_second, self._index.get(video_id, {})
        first = int(timestamp) - window // 2
        source, target = [], []
        for i in range(window):
            start, stop = seconds.get(first + i, (0, 0))
            if stop > start:
                picked = rng.permutation(stop - start)[:K]
                source.append(start + picked)
                target.append(i * K + np.arange(len(picked)))
        out = np.zeros((window * K, self.channels), np.float32)
        if source:
            out[np.concatenate(target)] = self.features[np.concatenate(source)]
        return out

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_features"] = None  # each process maps the file itself
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (f"FeatureBank({str(self.path_npy)!r}, split={self.split!r}, keyframes={len(self.keys)}, "
                f"rows={self.num_rows}, channels={self.channels}, dtype={self.dtype.name})")


# ----------------------------------------------------------------------------------------------
# MMAction2's pickled banks
# ----------------------------------------------------------------------------------------------

def import_mmaction2(pkl_path: str | os.PathLike, root: str | os.PathLike, split: str,
                     dtype: str | np.dtype | None = None) -> FeatureBank:
    """Convert MMAction2's ``lfb_{split}.pkl`` (``{video: {second: (n, C) tensor | [(C,) tensors]}}``).

    Read with ``torch.load(weights_only=True)``: only dicts, lists, numbers, strings and tensors load,
    nothing can execute. ``dtype=None`` keeps the file's (float16 for MMAction2's half-precision banks).
    Raises :class:`FeatureBankError` naming the file and the bad key.
    """
    import torch  # only here: reading and sampling a bank need no torch

    pkl_path = Path(pkl_path)
    if not pkl_path.is_file():
        raise FileNotFoundError(f"{pkl_path}: no such file")
    try:
        raw = torch.load(pkl_path, map_location="cpu", weights_only=True)
    except Exception as e:  # refused by weights_only, truncated, or not a torch file at all
        raise FeatureBankError(pkl_path, f"cannot load safely: {type(e).__name__}: {e}") from None
    if not isinstance(raw, dict):
        raise FeatureBankError(pkl_path, f"expected a dict of videos, got {type(raw).__name__}")

    arrays: dict[Key, np.ndarray] = {}
    for video, seconds in raw.items():
        if not isinstance(video, str) or not isinstance(seconds, dict):
            raise FeatureBankError(pkl_path, "expected {video_id: {second: features}}", key=repr(video))
        for second, value in seconds.items():
            key = f"{video},{second}"
            if type(second) is not int:
                raise FeatureBankError(pkl_path, "seconds must be ints", key=key)
            arrays[(video, second)] = _mmaction2_features(value, pkl_path, key)

    found = [a for a in arrays.values() if a.shape[0]]
    channels = found[0].shape[1] if found else (next(iter(arrays.values())).shape[1] if arrays else 0)
    for (video, second), array in arrays.items():
        if array.shape[0] and array.shape[1] != channels:
            raise FeatureBankError(pkl_path, f"{array.shape[1]} channels, others have {channels}",
                                   key=f"{video},{second}")
    if dtype is None:
        dtype = np.result_type(*[a.dtype for a in found]) if found else np.float32
    dtype = _bank_dtype(dtype, pkl_path)

    entries, rows = [], 0
    for key in sorted(arrays):
        n = arrays[key].shape[0]
        entries.append([key[0], key[1], rows, rows + n])
        rows += n

    def fill(out: np.ndarray) -> None:
        for (video, second, start, stop) in entries:
            if stop > start:
                out[start:stop] = arrays[(video, second)]

    _commit_bank(root, split, channels, dtype, entries, rows, fill)
    return FeatureBank.load(root, split)


def _mmaction2_features(value, path: Path, key: str) -> np.ndarray:
    """One keyframe's value as an ``(n, C)`` array: a 2-D tensor, or a list of 1-D tensors."""
    import torch

    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, torch.Tensor) and v.ndim == 1 for v in value):
            raise FeatureBankError(path, "a list value must hold (C,) tensors", key=key)
        if not value:
            return np.zeros((0, 0), np.float32)
        if len({v.shape[0] for v in value}) > 1:
            raise FeatureBankError(path, "the (C,) tensors of one second differ in length", key=key)
        value = torch.stack(list(value))
    if not isinstance(value, torch.Tensor) or value.ndim != 2:
        raise FeatureBankError(path, f"expected an (n, C) tensor, got {_describe(value)}", key=key)
    if value.dtype not in (torch.float16, torch.float32):
        raise FeatureBankError(path, f"features must be float16 or float32, got {value.dtype}", key=key)
    return value.numpy()


def _describe(value) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else type(value).__name__
