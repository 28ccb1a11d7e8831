"""File helpers: atomic writes, an exclusive work-directory lock, and text inputs that may be
binary by mistake (:func:`open_text_lines`).

Every file stdet writes goes through :func:`atomic_output` (or :func:`atomic_write_bytes` /
:func:`atomic_write_text` on top of it): the data goes to a temporary file with a unique name in
the target's directory, is flushed to disk, and is renamed onto the target. A reader, another
writer or a crash therefore sees the old file or the new one, never half of either::

    OUT/.NAME.k3j2h1.tmp   written, fsync'ed        ->  os.replace  ->  OUT/NAME  (+ fsync of OUT)

A failed write (a full disk) raises :class:`~stdet.data.errors.WriteError` naming the file and
saying that the previous file at that path is intact; the temporary file is removed.
"""
from __future__ import annotations

import codecs
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import AVADataError, WorkDirBusyError, WriteError

LOCK_NAME = ".stdet.lock"


def check_file_target(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path`, refusing an existing directory before anything is written (the
    rename would fail only after the whole file was produced)."""
    path = Path(path)
    if path.is_dir():
        raise AVADataError(path, "is a directory; expected a file path")
    return path


def _make_dir(directory: Path, target: Path) -> None:
    """Create ``directory`` (and its parents); a file in the way is a mistake of the input."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise AVADataError(target, f"cannot create its folder {directory}: a file is in the "
                                   "way") from None
    except OSError as e:
        raise _write_error(target, e, existed=False) from None


def _write_error(path: Path, cause: OSError, existed: bool) -> WriteError:
    """The one-line :class:`WriteError` for a failed write of ``path``."""
    reason = f"[Errno {cause.errno}] {cause.strerror}" if cause.errno and cause.strerror else str(cause)
    kept = (f"the previous {path.name} is intact" if existed
            else "nothing was written there")
    error = WriteError(f"{path}: cannot write: {reason}; {kept}")
    error.errno, error.path = cause.errno, str(path)
    return error


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (``os.umask`` sets it, a
    race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(path: Path) -> int:
    """The permissions the new file gets: the replaced file's, else what ``open`` would give
    (``mkstemp`` makes 0600, which would hide results from a group that shares a work dir)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; best effort (not every OS or filesystem can)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write; on a normal exit it is
    flushed to disk and renamed onto ``path``.

    For writers that need a path of their own (a memory-mapped array); bytes and text have
    :func:`atomic_write_bytes` and :func:`atomic_write_text`. An ``OSError`` (a full disk) becomes
    a :class:`WriteError` naming ``path``; on any error the temporary file is removed and an
    earlier file at ``path`` is left as it was.
    """
    path = check_file_target(path)
    _make_dir(path.parent, path)
    existed = path.exists()
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e, existed) from None
    tmp = Path(name)
    try:
        yield tmp
        os.fchmod(fd, _target_mode(path))
        os.fsync(fd)  # the data reaches the disk before the rename makes it the file
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException as e:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, (WriteError, AVADataError)):
            raise _write_error(path, e, existed) from None
        raise
    _fsync_dir(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (one call may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: readers and concurrent writers see a complete
    file, a crash leaves the previous one (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------------------------
# An exclusive lock on a work directory


def _holder(fd: int) -> str:
    """``pid 1234 (train)`` from a lock file's content, for the message of a second holder."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    pid, _, command = text.partition(" ")
    if not pid.isdigit():
        return "another process"
    return f"pid {pid}" + (f" ({command})" if command else "")


@contextmanager
def work_dir_lock(directory: str | os.PathLike, command: str, *, name: str = LOCK_NAME,
                  advice: str = "wait for it or use another work dir") -> Iterator[Path]:
    """Hold an exclusive lock on ``directory`` (created) for the ``with`` block.

    Two runs writing one work dir (or one feature bank) would interleave their checkpoints, logs
    or shards. The lock is ``fcntl.flock`` on ``DIRECTORY/NAME``, which holds this process's pid
    and ``command``; a second holder fails at once with :class:`WorkDirBusyError` naming them.
    The OS releases the lock when the holder exits, even by SIGKILL, so a crash leaves no stale
    lock; a normal exit also removes the file. ``name`` varies the lock file (one per split of a
    bank directory). Where ``fcntl`` is missing (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield Path(directory) / name
        return
    directory = Path(directory)
    path = directory / name
    _make_dir(directory, path)
    fd = _acquire(fcntl, path, directory, advice)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still locked: see _acquire
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fcntl, path: Path, directory: Path, advice: str) -> int:
    """An open descriptor of ``path`` holding ``flock(LOCK_EX | LOCK_NB)``, or
    :class:`WorkDirBusyError` at once. A holder removes the file before it unlocks, so a lock
    taken on a file that is no longer at ``path`` is stale: it is dropped and taken again."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise _write_error(path, e, existed=path.exists()) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _write_error(path, e, existed=True) from None
            raise WorkDirBusyError(f"{directory} is in use by {holder}; {advice}") from None
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


# ------------------------------------------------------------------------------------------------
# reading text inputs


@contextmanager
def open_text_lines(path: str | os.PathLike) -> Iterator[Iterator[str]]:
    """Open a text input: ``with open_text_lines(path) as lines: csv.reader(lines)``.

    UTF-8 with an optional BOM (spreadsheet programs and Notepad write one; it must not become
    part of the first video id), newlines kept as in the file (``newline=""``, as :mod:`csv`
    wants). A binary file given by mistake (a pickle, an image, a gzipped CSV) raises
    :class:`AVADataError` ``PATH: not a text file (...)`` instead of a ``UnicodeDecodeError``:
    a byte sequence that is not UTF-8, or a NUL byte, makes a file binary.
    """
    with Path(path).open(newline="", encoding="utf-8-sig") as f:
        yield _checked_lines(f, Path(path))


def _checked_lines(lines: Iterator[str], path: Path) -> Iterator[str]:
    try:
        for line in lines:
            if "\0" in line:
                raise not_a_text_file(path)
            yield line
    except UnicodeDecodeError:
        raise not_a_text_file(path) from None


def not_a_text_file(path: str | os.PathLike) -> AVADataError:
    """The error for a binary file read as text, naming its first byte that is not text."""
    where = _first_binary_byte(Path(path))
    if where is None:
        return AVADataError(path, "not a text file")
    offset, byte = where
    return AVADataError(path, f"not a text file (byte 0x{byte:02x} at offset {offset} is not "
                        "UTF-8 text)")


def _first_binary_byte(path: Path, block_size: int = 1 << 20) -> tuple[int, int] | None:
    """``(offset, byte)`` of the first NUL or byte that does not decode as UTF-8, or None.

    Read block by block (the file may be large); a multi-byte character cut by a block boundary
    is carried over by the incremental decoder."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as f:
        while True:
            block = f.read(block_size)
            pending = decoder.getstate()[0]
            candidates = []
            nul = block.find(b"\0")
            if nul >= 0:
                candidates.append(offset + nul)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                candidates.append(offset - len(pending) + e.start)
            if candidates:
                bad = min(candidates)
                return bad, (pending + block)[bad - offset + len(pending)]
            if not block:
                return None
            offset += len(block)
