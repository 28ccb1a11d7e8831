"""Cut every ROOT/videos/* to the annotated 15 minutes, into ROOT/videos_15min/.

AVA annotates seconds 902-1798 of each movie; the cut keeps [START, START +
DURATION) re-timed to a constant FPS, so second t of the movie becomes second
t - START of the cut.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = c.base_parser(__doc__)
    parser.add_argument("--start", type=float, default=900,
                        help="first second to keep (default: %(default)s)")
    parser.add_argument("--duration", type=c.positive_float, default=901,
                        help="seconds to keep (default: %(default)s)")
    parser.add_argument("--fps", type=c.positive_float, default=30,
                        help="frame rate of the cut videos (default: %(default)s)")
    return parser.parse_args(argv)


def cut_args(src: Path, dest: Path, start: float, duration: float,
             fps: float) -> list[str]:
    """ffmpeg arguments that cut ``src`` into ``dest``."""
    return ["-ss", f"{start:g}", "-t", f"{duration:g}", "-i", str(src),
            "-r", f"{fps:g}", "-strict", "experimental", str(dest)]


def main(argv: list[str] | None = None) -> int:
    """Cut the videos; return the exit code."""
    args = parse_args(argv)

    def body() -> int:
        inputs = c.list_inputs(args.root / "videos")
        if not inputs:
            raise c.ScriptError(f"no videos in {args.root / 'videos'}")
        if not args.dry_run:
            c.find_ffmpeg()
        out_dir = args.root / "videos_15min"

        def cut(src: Path, tmp: Path) -> None:
            c.run_ffmpeg(cut_args(src, tmp, args.start, args.duration, args.fps))

        return c.process_all(inputs, lambda src: out_dir / src.name, cut,
                             args.dry_run, "cut")

    return c.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
