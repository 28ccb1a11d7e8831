"""Check that every ROOT/rawframes/VIDEO/ holds the expected img_%05d.jpg frames.

A video with too few or too many frames, or with a gap in the numbering,
loses mAP: the keyframe at second t is read from frame (t - 900) * FPS + 1,
which then shows the wrong moment. Exits 1 if any video is off.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

FRAME_RE = re.compile(r"img_(\d+)\.jpg")
MAX_GAPS_SHOWN = 5


@dataclass
class VideoFrames:
    """Frame statistics of one rawframes folder."""

    video: str
    count: int
    max_index: int
    missing: list[int] = field(default_factory=list)

    def problems(self, expected: int) -> list[str]:
        """Human-readable problems of this video; empty when it is fine."""
        found = []
        if self.count != expected:
            found.append(f"{self.count} frames, expected {expected}")
        if self.missing:
            shown = ", ".join(f"img_{i:05d}.jpg" for i in self.missing[:MAX_GAPS_SHOWN])
            more = ", ..." if len(self.missing) > MAX_GAPS_SHOWN else ""
            found.append(f"{len(self.missing)} gaps below img_{self.max_index:05d}.jpg:"
                         f" {shown}{more}")
        return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = c.base_parser(__doc__)
    parser.add_argument("--fps", type=c.positive_float, default=30,
                        help="frame rate the frames were extracted at (default: %(default)s)")
    parser.add_argument("--duration", type=c.positive_float, default=901,
                        help="seconds of each cut video (default: %(default)s)")
    parser.add_argument("--expected", type=c.positive_int, default=None,
                        help="expected frames per video (default: round(duration * fps))")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write a JSON report to OUT")
    return parser.parse_args(argv)


def scan_video(folder: Path) -> VideoFrames:
    """Count the img_*.jpg frames of ``folder`` and find numbering gaps."""
    indices = {int(m.group(1)) for name in os.listdir(folder)
               if (m := FRAME_RE.fullmatch(name))}
    max_index = max(indices, default=0)
    missing = sorted(set(range(1, max_index + 1)) - indices)
    return VideoFrames(folder.name, len(indices), max_index, missing)


def frame_dirs(frames_root: Path) -> list[Path]:
    """The per-video folders of ROOT/rawframes, leaving out unfinished .tmp- ones."""
    if not frames_root.is_dir():
        raise c.ScriptError(f"frames folder not found: {frames_root}")
    dirs = sorted(p for p in frames_root.iterdir()
                  if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise c.ScriptError(f"no video folders in {frames_root}")
    return dirs


def print_table(stats: list[VideoFrames], expected: int) -> None:
    """Print one row per video: name, frame count, status."""
    width = max(len(s.video) for s in stats)
    c.log(f"{'video':<{width}}  {'frames':>7}  status")
    for s in stats:
        status = "; ".join(s.problems(expected)) or "ok"
        c.log(f"{s.video:<{width}}  {s.count:>7}  {status}")


def write_json(path: Path, stats: list[VideoFrames], expected: int) -> None:
    """Write the report as JSON, atomically."""
    report = {
        "expected": expected,
        "bad": [s.video for s in stats if s.problems(expected)],
        "videos": [asdict(s) | {"ok": not s.problems(expected)} for s in stats],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = c.tmp_sibling(path)
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Check the frame folders; return 1 if any video is off, else 0."""
    args = parse_args(argv)

    def body() -> int:
        expected = args.expected or round(args.duration * args.fps)
        dirs = frame_dirs(args.root / "rawframes")
        stats = [scan_video(d) for d in tqdm(dirs, desc="check", unit="video")]
        print_table(stats, expected)
        if args.json:
            if args.dry_run:
                c.log(f"would write {args.json}")
            else:
                write_json(args.json, stats, expected)
        bad = {s.video: "; ".join(s.problems(expected))
               for s in stats if s.problems(expected)}
        if bad:
            c.error(f"{len(bad)} of {len(stats)} videos have the wrong frames;"
                    " their keyframes map to the wrong images:")
            for video, problem in bad.items():
                c.error(f"  {video}: {problem}")
            return 1
        c.log(f"all {len(stats)} videos have {expected} frames")
        return 0

    return c.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
