"""Download the AVA annotation zip and extract its files flat into ROOT/annotations/."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import zipfile
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

DEFAULT_URL_BASE = "https://research.google.com/ava/download/"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = c.base_parser(__doc__)
    parser.add_argument("--version", choices=["2.1", "2.2"], default="2.2",
                        help="AVA annotation version (default: %(default)s)")
    parser.add_argument("--url-base", default=DEFAULT_URL_BASE,
                        help="URL folder holding ava_v{version}.zip (default: %(default)s)")
    return parser.parse_args(argv)


def marker_path(ann_dir: Path, version: str) -> Path:
    """The file that records a finished extraction and lists its files."""
    return ann_dir / f".ava_v{version}.done"


def is_done(marker: Path) -> bool:
    """True if the marker exists and every file it lists is present."""
    if not marker.is_file():
        return False
    names = marker.read_text().split()
    return bool(names) and all((marker.parent / n).is_file() for n in names)


def zip_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Map flat file name -> member, leaving out folders and macOS metadata."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = Path(info.filename).name
        if info.is_dir() or not name or name.startswith(".") \
                or info.filename.startswith("__MACOSX/"):
            continue
        if name in members:
            raise c.ScriptError(f"two members named {name} in {archive.filename}")
        members[name] = info
    return members


def extract_flat(zip_path: Path, out_dir: Path) -> list[str]:
    """Extract every file of ``zip_path`` into ``out_dir`` without subfolders."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = zip_members(archive)
            for name, info in tqdm(members.items(), desc="extract", unit="file"):
                tmp = c.tmp_sibling(out_dir / name)
                with archive.open(info) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, out_dir / name)
    except (zipfile.BadZipFile, OSError) as exc:
        raise c.ScriptError(f"cannot extract {zip_path}: {exc}") from exc
    if not members:
        raise c.ScriptError(f"no files in {zip_path}")
    return sorted(members)


def write_marker(marker: Path, names: list[str]) -> None:
    """Write the marker listing the extracted files, atomically."""
    tmp = c.tmp_sibling(marker)
    tmp.write_text("\n".join(names) + "\n")
    os.replace(tmp, marker)


def main(argv: list[str] | None = None) -> int:
    """Download and extract the annotations; return the exit code."""
    args = parse_args(argv)

    def body() -> int:
        ann_dir = args.root / "annotations"
        zip_name = f"ava_v{args.version}.zip"
        url = c.join_url(args.url_base, zip_name)
        marker = marker_path(ann_dir, args.version)
        if is_done(marker):
            c.log(f"skipped: annotations v{args.version} already in {ann_dir}")
            return 0
        if args.dry_run:
            c.log(f"would download {url} -> {ann_dir / zip_name} and extract it")
            return 0
        c.download(url, ann_dir / zip_name)
        names = extract_flat(ann_dir / zip_name, ann_dir)
        write_marker(marker, names)
        c.log(f"extracted {len(names)} files into {ann_dir}")
        return 0

    return c.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
