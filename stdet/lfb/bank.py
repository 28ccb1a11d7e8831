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

import errno
import io
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.errors import AVADataError
from ..data.io import atomic_output, atomic_write_bytes, atomic_write_text

BANK_FORMAT = "stdet-lfb-1"
_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
_SHARD_NAME = re.compile(r"rank(\d+)-(\d{5,})\.npz")
_SHARD_ARRAYS = ("features", "videos", "seconds", "counts")
# what produced a shard (BankWriter's identity) and its format; a resumed extraction must match
_IDENTITY_KEYS = ("checkpoint_sha256", "config_sha256", "dtype", "channels")

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


def _read_identity(npz, path: Path) -> dict:
    """A shard's ``identity`` array (a JSON object as a 0-d string), ``{}`` if it has none."""
    if "identity" not in npz.files:
        return {}
    identity = json.loads(str(npz["identity"]))
    if not isinstance(identity, dict):
        raise FeatureBankError(path, f"identity must be a JSON object, got {identity!r}")
    return identity


def identity_mismatch(expected: dict, found: dict, label: str = "this run") -> list[str]:
    """``["checkpoint_sha256 ab12.. (this run: cd34..)", ...]`` for each identity key both
    sides record with different values."""
    return [f"{key} {found[key]} ({label}: {expected[key]})" for key in _IDENTITY_KEYS
            if key in expected and key in found and expected[key] != found[key]]


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
                self.identity = _read_identity(npz, path)
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

    def produced_by(self) -> dict:
        """Its identity (what extraction wrote it); a shard written before identities were
        recorded still tells its dtype and channels."""
        return {"dtype": self.dtype.name, "channels": int(self.shape[1]), **self.identity}

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

        ROOT/lfb_S.parts/rank{r}-{k:05d}.npz   features (n, C), videos (U), seconds, counts (int64),
                                               identity (JSON: checkpoint_sha256, config_sha256, ...)

    A shard is written to a temporary file and renamed, so a crash loses at most the pending keyframes.
    ``add`` of a keyframe already in ``done`` is ignored: DistributedSampler pads a split with repeats.

    ``identity`` (``{"checkpoint_sha256": ..., "config_sha256": ...}``, from
    :func:`stdet.engine.lfb.bank_identity`) says what produces the features; it is stored in every
    shard with the dtype and channels, and existing shards that record another identity are
    refused (:class:`FeatureBankError`): a resumed extraction with another checkpoint, config or
    dtype would mix two models' features in one bank.
    """

    def __init__(self, root: str | os.PathLike, split: str, channels: int,
                 dtype: str | np.dtype = "float32", rank: int = 0, shard_size: int = 256,
                 identity: dict | None = None) -> None:
        self.root, self.split, self.rank = Path(root), split, int(rank)
        self.channels, self.shard_size = int(channels), int(shard_size)
        self.parts = _parts_dir(root, split)
        self.dtype = _bank_dtype(dtype, self.parts)
        self.identity = None if identity is None else {
            **identity, "dtype": self.dtype.name, "channels": self.channels}
        self.parts.mkdir(parents=True, exist_ok=True)
        self.done: set[Key] = set()
        self._next_k = 0
        for rank_, k, path in _shard_files(root, split):
            shard = _Shard(path)
            self._check_identity(shard)
            self.done.update(shard.keys())
            if rank_ == self.rank:
                self._next_k = k + 1
        self._pending: list[tuple[str, int, np.ndarray]] = []

    def _check_identity(self, shard: _Shard) -> None:
        """Refuse a shard another extraction wrote (only a writer given an identity checks)."""
        if self.identity is None:
            return
        differs = identity_mismatch(self.identity, shard.produced_by())
        if differs:
            raise FeatureBankError(
                self.parts, f"{shard.path.name} was written by another extraction: "
                            f"{'; '.join(differs)}; delete {self.parts} or rerun with the same "
                            "checkpoint, config and dtype")

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
        buffer = io.BytesIO()  # a file object: np.savez would append ".npz" to a name
        identity = self.identity or {"dtype": self.dtype.name, "channels": self.channels}
        np.savez(buffer, features=np.concatenate(features),
                 videos=np.array(videos, dtype=np.str_),
                 seconds=np.array(seconds, dtype=np.int64),
                 counts=np.array([len(x) for x in features], dtype=np.int64),
                 identity=np.array(json.dumps(identity, sort_keys=True)))
        atomic_write_bytes(path, buffer.getvalue())
        self._pending.clear()
        self._next_k += 1

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> BankWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # on an error too: what was extracted is kept for the resumed run


def _preallocate(path: Path) -> None:
    """Reserve the disk blocks of a freshly sized file: a full disk then fails here as an
    ``OSError`` instead of killing the process with SIGBUS when the memory map is written."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except (AttributeError, OSError) as e:  # no posix_fallocate, or a filesystem without it
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def _commit_bank(root: str | os.PathLike, split: str, channels: int, dtype: np.dtype,
                 entries: list[list], rows: int, fill: Callable[[np.ndarray], None],
                 identity: dict | None = None) -> None:
    """Write ``lfb_S.npy`` (filled by ``fill(out)``) and then ``lfb_S.json``, each via a temporary file.

    The JSON is the commit: it is removed once the new array is complete and written last, and a
    failure anywhere removes the new ``.npy`` again, so a crash leaves either no bank or a complete
    one. The array is written through a memory map, so a merge never holds the whole bank in memory.
    ``identity`` (what produced the features) is recorded in the JSON, for information.
    """
    path_npy, path_json = bank_paths(root, split)
    header = {"format": BANK_FORMAT, "split": split, "channels": int(channels), "dtype": dtype.name,
              "rows": int(rows)}
    if identity:
        header["identity"] = identity
    placed = False
    try:
        with atomic_output(path_npy) as tmp_npy:
            out = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=dtype, shape=(rows, channels))
            _preallocate(tmp_npy)
            fill(out)
            out.flush()
            del out
            path_json.unlink(missing_ok=True)
        placed = True
        lines = ",\n".join(json.dumps(entry) for entry in entries)
        atomic_write_text(path_json, json.dumps(header)[:-1] + f', "entries": [\n{lines}\n]}}\n')
    except BaseException:
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
    identity = _common_identity(shards)

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

    _commit_bank(root, split, channels, dtype, entries, rows, fill, identity)
    shutil.rmtree(_parts_dir(root, split))
    return FeatureBank.load(root, split)


def _common_identity(shards: list[_Shard]) -> dict:
    """The identity the shards share (checkpoint and config hashes); two shards that record
    different ones are refused, as a resumed :class:`BankWriter` refuses them."""
    first = next((s for s in shards if s.identity), None)
    if first is None:
        return {}
    for shard in shards:
        differs = identity_mismatch(first.produced_by(), shard.produced_by(), first.path.name)
        if differs:
            raise FeatureBankError(shard.path, f"was written by another extraction: "
                                               f"{'; '.join(differs)}; delete "
                                               f"{shard.path.parent} and extract again")
    return {k: v for k, v in first.identity.items() if k not in ("dtype", "channels")}


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------

def _rebuild_hint(path_npy: Path, split: str) -> str:
    return (f"rebuild it with `python -m stdet extract-lfb CONFIG CHECKPOINT --split {split} "
            f"--out {path_npy.parent}`")


def _check_array(path_npy: Path, split: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype in ``path_npy``'s header, after checking that the file holds all the
    data the header promises (a copy or download cut short would otherwise fail deep in numpy
    as ``mmap length is greater than file size``). A missing file stays ``FileNotFoundError``."""
    try:
        with open(path_npy, "rb") as f:
            shape, dtype = _npy_header(f)
            expected = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise FeatureBankError(path_npy, f"unreadable array: {e}; "
                                         f"{_rebuild_hint(path_npy, split)}") from None
    if size < expected:
        raise FeatureBankError(path_npy, f"truncated: {size} bytes, its header ({shape} "
                                         f"{dtype.name}) needs {expected}; "
                                         f"{_rebuild_hint(path_npy, split)}")
    return shape, dtype


class FeatureBank:
    """A written bank: the JSON index in memory, the features memory-mapped on first use.

    Pickling (DataLoader workers) carries the paths and the index only; every process reopens the
    memory map, so all workers read one copy through the page cache.
    """

    def __init__(self, path_npy: Path, path_json: Path, split: str, channels: int, dtype: np.dtype,
                 num_rows: int, entries: list[tuple[str, int, int, int]], mmap: bool = True,
                 identity: dict | None = None) -> None:
        self.path_npy, self.path_json, self.split = Path(path_npy), Path(path_json), split
        self.channels, self.dtype, self.num_rows, self.mmap = channels, np.dtype(dtype), num_rows, mmap
        # what extraction produced the features (checkpoint and config hashes); None for a bank
        # written before stdet recorded it, or imported from MMAction2
        self.identity = identity
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
        shape, npy_dtype = _check_array(path_npy, split)
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
        identity = meta.get("identity")
        return cls(path_npy, path_json, split, channels, dtype, rows, entries, mmap,
                   identity if isinstance(identity, dict) else None)

    @property
    def features(self) -> np.ndarray:
        """The ``(num_rows, channels)`` array, memory-mapped read-only (opened once per process).

        The file is checked again here: a DataLoader worker opens it long after :meth:`load`, and
        a bank truncated or removed in between raises :class:`FeatureBankError`, not numpy's
        ``mmap length is greater than file size``."""
        if self._features is None:
            self._features = self._open_features()
        return self._features

    def _open_features(self) -> np.ndarray:
        """The array of ``path_npy``, checked whole first; any failure names the file."""
        hint = _rebuild_hint(self.path_npy, self.split)
        try:
            _check_array(self.path_npy, self.split)
        except FileNotFoundError:
            raise FeatureBankError(self.path_npy, f"missing; {hint}") from None
        try:
            return np.load(self.path_npy, mmap_mode="r" if self.mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise FeatureBankError(self.path_npy, f"unreadable array: {type(e).__name__}: {e}; "
                                                  f"{hint}") from None

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
