"""Download the AVA trainval videos into ROOT/videos/."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

DEFAULT_FILE_LIST = ("https://s3.amazonaws.com/ava-dataset/annotations/"
                     "ava_file_names_trainval_v2.1.txt")
DEFAULT_URL_BASE = "https://s3.amazonaws.com/ava-dataset/trainval/"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = c.base_parser(__doc__)
    parser.add_argument("--file-list", default=DEFAULT_FILE_LIST,
                        help="URL or local path of the list of video file names"
                             " (default: %(default)s)")
    parser.add_argument("--url-base", default=DEFAULT_URL_BASE,
                        help="URL folder holding the videos (default: %(default)s)")
    parser.add_argument("--limit", type=c.positive_int, default=None,
                        help="download only the first N videos of the list")
    return parser.parse_args(argv)


def read_file_list(location: str) -> list[str]:
    """Video file names from the list, one per non-empty line."""
    names = [line.strip() for line in c.read_text(location).splitlines()]
    names = [n for n in names if n]
    bad = [n for n in names if "/" in n or "\\" in n or n.startswith(".")]
    if bad:
        raise c.ScriptError(f"bad video name {bad[0]!r} in {location}")
    if not names:
        raise c.ScriptError(f"no video names in {location}")
    return names


def main(argv: list[str] | None = None) -> int:
    """Download the videos; return the exit code."""
    args = parse_args(argv)

    def body() -> int:
        names = read_file_list(args.file_list)[:args.limit]
        out_dir = args.root / "videos"
        jobs = [(c.join_url(args.url_base, n), out_dir / n) for n in names]
        return c.download_many(jobs, args.dry_run, "videos")

    return c.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
