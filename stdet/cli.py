"""``python -m stdet COMMAND ...``: the command-line entry point.

Each subcommand is a ``add_<name>_parser(subparsers)`` that registers its arguments and a
``run`` function; ``main`` only dispatches.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def add_mini_ava_parser(subparsers) -> None:
    from .data.mini_ava import MiniAVASpec

    defaults = MiniAVASpec()
    p = subparsers.add_parser(
        "mini-ava", help="generate mini-AVA, a small synthetic dataset in the AVA layout",
        description="Write mini-AVA under OUT: annotations, proposals, label maps and "
                    "rawframes/VIDEO/img_%%05d.jpg, deterministic from --seed.")
    p.add_argument("out", help="output root (created; existing videos are replaced)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--train-videos", type=int, default=defaults.train_videos)
    p.add_argument("--val-videos", type=int, default=defaults.val_videos)
    p.add_argument("--seconds", type=int, default=defaults.seconds,
                   help="length of each video in seconds (AVA's cut: 901)")
    p.add_argument("--videos", action="store_true", help="also write videos_15min/VIDEO.mp4")
    p.add_argument("--workers", type=int, default=None, help="rendering processes (default: 2)")
    p.set_defaults(run=run_mini_ava)


def run_mini_ava(args: argparse.Namespace) -> int:
    from .data.mini_ava import MiniAVASpec, generate_mini_ava

    if args.seconds < 5:
        raise SystemExit("mini-ava: --seconds must be at least 5")
    spec = MiniAVASpec(train_videos=args.train_videos, val_videos=args.val_videos, seconds=args.seconds)
    start = time.perf_counter()
    summary = generate_mini_ava(args.out, seed=args.seed, spec=spec, videos=args.videos,
                                workers=args.workers)
    for split, info in summary["splits"].items():
        print(f"{split}: {len(info['videos'])} videos, {info['keyframes']} keyframes, "
              f"{info['boxes']} boxes, {info['excluded']} excluded")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


COMMANDS = (add_mini_ava_parser,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stdet",
        description="Spatio-temporal action detection on AVA: data, models, training, evaluation.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"stdet {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
