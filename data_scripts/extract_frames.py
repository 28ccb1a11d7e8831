"""Extract the frames of every cut video into ROOT/rawframes/VIDEO_ID/img_%05d.jpg."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

FRAME_PATTERN = "img_%05d.jpg"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = c.base_parser(__doc__)
    parser.add_argument("--fps", type=c.positive_float, default=30,
                        help="frames per second to extract (default: %(default)s)")
    parser.add_argument("--quality", type=c.positive_int, default=1,
                        help="JPEG quality for ffmpeg -q:v (1 is best) (default: %(default)s)")
    parser.add_argument("--videos-dir", default="videos_15min",
                        help="folder under ROOT holding the cut videos (default: %(default)s)")
    return parser.parse_args(argv)


def extract(src: Path, out_dir: Path, fps: float, quality: int) -> None:
    """Extract the frames of ``src`` into a new folder ``out_dir``."""
    out_dir.mkdir()
    c.run_ffmpeg(["-i", str(src), "-r", f"{fps:g}", "-q:v", str(quality),
                  str(out_dir / FRAME_PATTERN)])
    if not any(out_dir.glob("img_*.jpg")):
        raise c.ScriptError(f"ffmpeg wrote no frames for {src}")


def main(argv: list[str] | None = None) -> int:
    """Extract the frames; return the exit code."""
    args = parse_args(argv)

    def body() -> int:
        inputs = c.list_inputs(args.root / args.videos_dir)
        if not inputs:
            raise c.ScriptError(f"no videos in {args.root / args.videos_dir}")
        ids = [v.stem for v in inputs]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise c.ScriptError(f"two videos share the id {dup} in {args.videos_dir}")
        if not args.dry_run:
            c.find_ffmpeg()
        frames_dir = args.root / "rawframes"
        return c.process_all(
            inputs, lambda src: frames_dir / src.stem,
            lambda src, tmp: extract(src, tmp, args.fps, args.quality),
            args.dry_run, "extract")

    return c.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
