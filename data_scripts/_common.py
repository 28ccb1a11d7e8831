"""Shared helpers for the AVA preparation scripts.

Each script imports this module as ``_common`` after putting its own folder on
``sys.path``, so the scripts run as ``python data_scripts/NAME.py`` from any
working directory.
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from tqdm import tqdm

CHUNK_BYTES = 1 << 20
URL_TIMEOUT_S = 60
TMP_PREFIX = ".tmp-"
PART_SUFFIX = ".part"


class ScriptError(RuntimeError):
    """A failure that ends a script with a message and a non-zero exit code."""


def log(msg: str) -> None:
    """Print a progress message on stdout without breaking tqdm bars."""
    tqdm.write(msg, file=sys.stdout)


def error(msg: str) -> None:
    """Print an error message on stderr without breaking tqdm bars."""
    tqdm.write(f"error: {msg}", file=sys.stderr)


def base_parser(description: str) -> argparse.ArgumentParser:
    """Return a parser with the options every script shares: --root, --dry-run."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", type=Path, required=True,
                        help="AVA data root (holds annotations/, videos/, ...)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be done and write nothing")
    return parser


def positive_int(text: str) -> int:
    """argparse type: an integer greater than zero."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number greater than zero."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def run_main(body: Callable[[], int]) -> int:
    """Run a script body, turning ScriptError into a message and exit code 1."""
    try:
        return body()
    except ScriptError as exc:
        error(str(exc))
        return 1
    except KeyboardInterrupt:
        error("interrupted")
        return 130


def report_failures(failures: dict[str, str], what: str) -> int:
    """Print every failure by name; return the exit code (1 if any failed)."""
    if not failures:
        return 0
    error(f"{len(failures)} failed ({what}):")
    for name, reason in failures.items():
        error(f"  {name}: {reason}")
    return 1


def find_ffmpeg() -> str:
    """Return the ffmpeg executable: ``ffmpeg`` on PATH, else imageio-ffmpeg's."""
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise ScriptError(
            "ffmpeg not found: put ffmpeg on PATH or `pip install imageio-ffmpeg`"
            f" ({exc})") from exc


def run_ffmpeg(args: Sequence[str]) -> None:
    """Run ffmpeg with ``args``; raise ScriptError with its stderr tail on failure."""
    cmd = [find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ScriptError(f"ffmpeg exited {proc.returncode}: {tail}")


def list_inputs(folder: Path) -> list[Path]:
    """Sorted regular files of ``folder``, leaving out hidden and partial files."""
    if not folder.is_dir():
        raise ScriptError(f"input folder not found: {folder}")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith(PART_SUFFIX))


def tmp_sibling(path: Path) -> Path:
    """Temporary name next to ``path`` that keeps its extension: ``.tmp-NAME``."""
    return path.with_name(TMP_PREFIX + path.name)


def remove(path: Path) -> None:
    """Delete a file or a directory tree if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def join_url(base: str, name: str) -> str:
    """Append ``name`` to a URL base, with exactly one slash between them."""
    return base.rstrip("/") + "/" + name


def to_url(location: str) -> str:
    """Turn a local path into a ``file://`` URL; leave URLs unchanged."""
    if "://" in location:
        return location
    return Path(location).resolve().as_uri()


def _open(url: str) -> Any:
    """Open ``url`` for reading; raise ScriptError naming it on failure."""
    try:
        return urllib.request.urlopen(url, timeout=URL_TIMEOUT_S)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ScriptError(f"cannot download {url}: {exc}") from exc


def read_text(location: str) -> str:
    """Read a text file from a URL or a local path."""
    with _open(to_url(location)) as resp:
        try:
            return resp.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScriptError(f"cannot read {location}: {exc}") from exc


def download(url: str, dest: Path) -> bool:
    """Download ``url`` to ``dest`` via ``dest.part``; skip if ``dest`` exists.

    Supports http(s) and file:// URLs. Returns True if the file was
    downloaded, False if it was already there.
    """
    if dest.exists():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    try:
        with _open(url) as resp, open(part, "wb") as out:
            _copy_with_bar(resp, out, dest.name)
        os.replace(part, dest)
    except (OSError, http.client.HTTPException) as exc:
        remove(part)
        raise ScriptError(f"cannot download {url} to {dest}: {exc}") from exc
    except BaseException:
        remove(part)
        raise
    return True


def _copy_with_bar(resp: Any, out: IO[bytes], name: str) -> None:
    """Copy a response body to ``out`` with a byte progress bar."""
    total = resp.headers.get("Content-Length") if resp.headers else None
    with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
              desc=name, leave=False, disable=None) as bar:
        while chunk := resp.read(CHUNK_BYTES):
            out.write(chunk)
            bar.update(len(chunk))


def process_all(inputs: Sequence[Path], output_for: Callable[[Path], Path],
                work: Callable[[Path, Path], None], dry_run: bool, verb: str) -> int:
    """Run ``work(src, tmp)`` for each input whose output is missing.

    ``work`` writes to ``tmp`` (a ``.tmp-`` sibling of the output, file or
    folder), which is renamed to the output only when ``work`` succeeds, so a
    killed run never leaves a half output under the final name. Failures are
    collected and reported at the end; returns the exit code.
    """
    failures: dict[str, str] = {}
    todo = [(src, output_for(src)) for src in inputs]
    skipped = sum(dest.exists() for _, dest in todo)
    todo = [(src, dest) for src, dest in todo if not dest.exists()]
    if dry_run:
        for src, dest in todo:
            log(f"would {verb} {src} -> {dest}")
        log(f"{len(todo)} to {verb}, skipped {skipped} already present")
        return 0
    for src, dest in tqdm(todo, desc=verb, unit="video"):
        try:
            _make_atomically(src, dest, work)
        except ScriptError as exc:
            failures[src.name] = str(exc)
    log(f"{verb}: done {len(todo) - len(failures)}, skipped {skipped} already"
        f" present, failed {len(failures)}")
    return report_failures(failures, verb)


def _make_atomically(src: Path, dest: Path, work: Callable[[Path, Path], None]) -> None:
    """Run ``work(src, tmp)`` then rename ``tmp`` to ``dest``; clean up on failure."""
    tmp = tmp_sibling(dest)
    remove(tmp)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        work(src, tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        remove(tmp)
        raise ScriptError(f"{src}: {exc}") from exc
    except BaseException:
        remove(tmp)
        raise


def download_many(jobs: Sequence[tuple[str, Path]], dry_run: bool, desc: str) -> int:
    """Download each (url, dest) whose dest is missing; report failures by name.

    A failed download does not stop the others. Returns the exit code.
    """
    todo = [(url, dest) for url, dest in jobs if not dest.exists()]
    skipped = len(jobs) - len(todo)
    if dry_run:
        for url, dest in todo:
            log(f"would download {url} -> {dest}")
        log(f"{len(todo)} to download, skipped {skipped} already present")
        return 0
    failures: dict[str, str] = {}
    for url, dest in tqdm(todo, desc=desc, unit="file"):
        try:
            download(url, dest)
        except ScriptError as exc:
            failures[dest.name] = str(exc)
    log(f"{desc}: downloaded {len(todo) - len(failures)}, skipped {skipped}"
        f" already present, failed {len(failures)}")
    return report_failures(failures, "downloads")
