"""Download the precomputed person proposals (Faster R-CNN, recall 93.9) into ROOT/annotations/."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

DEFAULT_URL_BASE = "https://download.openmmlab.com/mmaction/dataset/ava/"
SPLITS = ("train", "val", "test")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = c.base_parser(__doc__)
    parser.add_argument("--url-base", default=DEFAULT_URL_BASE,
                        help="URL folder holding the proposal files (default: %(default)s)")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS),
                        help="splits to fetch (default: %(default)s)")
    return parser.parse_args(argv)


def proposal_name(split: str) -> str:
    """File name of the proposals of one split."""
    return f"ava_dense_proposals_{split}.FAIR.recall_93.9.pkl"


def main(argv: list[str] | None = None) -> int:
    """Download the proposal files; return the exit code."""
    args = parse_args(argv)

    def body() -> int:
        ann_dir = args.root / "annotations"
        jobs = [(c.join_url(args.url_base, proposal_name(s)), ann_dir / proposal_name(s))
                for s in dict.fromkeys(args.splits)]
        return c.download_many(jobs, args.dry_run, "proposals")

    return c.run_main(body)


if __name__ == "__main__":
    sys.exit(main())
