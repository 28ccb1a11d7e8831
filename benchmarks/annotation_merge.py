"""Merging the rows of one crowded keyframe in ``read_annotations``: the former ``list.index``
merge against the current one (a dict from box to row), as the keyframe grows.

Every box has 4 rows (4 actions), as a person doing several things at once; the rows are
shuffled, so a box's rows are spread over the keyframe. For each size the table gives the merge
alone on the same parsed rows (the former: a scan of the keyframe's boxes per row, quadratic in
the boxes; the current: one dict look-up per row, linear) and the whole ``read_annotations`` of
the CSV (parsing and checks included). Times are the best of ``--repeat`` runs.

Usage::

    .venv/bin/python benchmarks/annotation_merge.py [--boxes 500,1000,2000,4000,8000] [--repeat 3]

Output: a markdown table (rows and boxes of the keyframe, seconds of each merge, their ratio,
seconds and rows/s of ``read_annotations``).
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from stdet.data.annotations import _Builder, read_annotations

ACTIONS_PER_BOX = 4


def crowd_rows(boxes: int, seed: int = 0) -> list[tuple[tuple[float, ...], int, int]]:
    """``(box, action, person)`` rows of one keyframe: ``boxes`` distinct boxes, 4 rows each,
    shuffled."""
    rng = random.Random(seed)
    rows = []
    for person in range(boxes):
        x = round(person / boxes * 0.7, 6)
        box = (x, 0.1, round(x + 0.25, 6), 0.9)
        rows += [(box, action, person) for action in range(1, ACTIONS_PER_BOX + 1)]
    rng.shuffle(rows)
    return rows


def merge_with_list_index(rows) -> int:
    """The former merge: the box's row found by ``list.index`` over the keyframe's boxes."""
    boxes, actions, persons = [], [], []
    for box, action, person in rows:
        try:
            i = boxes.index(box)
        except ValueError:
            boxes.append(box)
            actions.append(set())
            persons.append(person)
            i = len(boxes) - 1
        actions[i].add(action)
    return len(boxes)


def merge_with_dict(rows) -> int:
    """The current merge (``read_annotations``' per-keyframe builder)."""
    builder = _Builder()
    for box, action, person in rows:
        builder.add(box, action, person)
    return len(builder.boxes)


def best_of(repeat: int, func: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def write_csv(path: Path, rows) -> None:
    path.write_text("".join(f"v,0902,{b[0]},{b[1]},{b[2]},{b[3]},{a},{p}\n" for b, a, p in rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", default="500,1000,2000,4000,8000",
                        help="comma-separated numbers of distinct boxes in the keyframe")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.boxes.split(",") if n.strip()]
    print("| rows | boxes | list.index merge (s) | dict merge (s) | ratio | "
          "read_annotations (s) | rows/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for boxes in sizes:
            rows = crowd_rows(boxes)
            path = Path(tmp) / f"crowd_{boxes}.csv"
            write_csv(path, rows)
            old = best_of(args.repeat, lambda: merge_with_list_index(rows))
            new = best_of(args.repeat, lambda: merge_with_dict(rows))
            read = best_of(args.repeat, lambda: read_annotations(path))
            print(f"| {len(rows)} | {boxes} | {old:.4f} | {new:.4f} | {old / new:.0f}x | "
                  f"{read:.4f} | {len(rows) / read:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
