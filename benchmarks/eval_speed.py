"""Speed and memory of ``python -m stdet eval`` against the reference evaluator, on AVA-sized files.

Two steps::

    # 1. write the input sets (numpy only; ~1 min for both)
    .venv/bin/python benchmarks/eval_speed.py --make-files /tmp/evalbench

    # 2. time both evaluators on them, each as a whole process
    .venv/bin/python benchmarks/eval_speed.py --dir /tmp/evalbench [--sets 360k,23m]
        [--protocol activitynet|mmaction2-0.x|mmaction2] [--reference-python /tmp/evalenv/bin/python]
        [--stdet-python .venv/bin/python] [--skip-reference] [--skip-stdet]

The sets, each a folder with ``gt.csv``, ``results.csv``, ``labels.pbtxt`` (the 60 classes of
ActivityNet's AVA list) and ``excluded.csv``:

``360k``  60 videos x 150 keyframes = 9,000 frames, 5 boxes a frame, 8 class scores a box
          (360,000 result rows), ground truth of 1-4 persons a frame with 2-3 actions each.
``23m``   the shape of AVA v2.1 val: 64 videos x 897 keyframes (0902-1798) = 57,408 frames,
          5 boxes a frame, all 80 class scores a box (22,963,200 result rows, ~1.3 GB).

Result rows are written the way MMAction2's ``results2csv`` writes them (boxes and scores with 4
decimals), so, as in real result files, many scores tie. Both evaluators are run through
``subprocess``; the table gives wall-clock seconds and the peak resident memory of each process
(``ru_maxrss`` from ``os.wait4``), and the mAP each reported (ties can make these differ in the
last digits if the two order tied detections differently).

The reference is ``benchmarks/ava_eval_reference.py`` run by ``--reference-python`` (its
environment is described there); it is skipped, with a message, when that python does not exist.
For the 23m set the reference takes very long: ``--skip-reference`` times stdet alone.
``stdet eval`` is called as::

    python -m stdet eval --gt GT --pred RESULTS --label-map LABELS --exclude EXCLUDED
        --protocol P --json OUT
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SETS = {
    # name: (videos, keyframes a video, boxes a frame, classes scored a box)
    "360k": (60, 150, 5, 8),
    "23m": (64, 897, 5, 80),
}
FIRST_KEYFRAME = 902


# --------------------------------------------------------------------------------------------
# writing the files


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal digits of non-negative ints as an (N, width) uint8 array."""
    out = np.empty((len(values), width), dtype=np.uint8)
    v = values.astype(np.int64)
    for col in range(width - 1, -1, -1):
        out[:, col] = 48 + v % 10
        v = v // 10
    return out


def _fixed4(values: np.ndarray) -> np.ndarray:
    """Numbers in [0, 1] as "d.dddd" (6 bytes a value)."""
    k = np.rint(np.clip(values, 0, 1) * 10000).astype(np.int64)
    out = np.empty((len(values), 6), dtype=np.uint8)
    out[:, 0] = 48 + k // 10000
    out[:, 1] = ord(".")
    out[:, 2:] = _digits(k % 10000, 4)
    return out


def _comma(n: int) -> np.ndarray:
    return np.full((n, 1), ord(","), dtype=np.uint8)


def format_results(video_ids: np.ndarray, videos: np.ndarray, ts: np.ndarray, boxes: np.ndarray,
                   actions: np.ndarray, scores: np.ndarray) -> bytes:
    """CSV bytes of ``video,ts,x1,y1,x2,y2,action,score`` rows, built without Python loops.

    ``videos``/``ts``/``boxes`` have one entry per box; ``actions``/``scores`` are (boxes, C).
    """
    n_box, n_cls = actions.shape
    vid = np.frombuffer("".join(video_ids).encode(), dtype=np.uint8).reshape(len(video_ids), -1)
    prefix = np.concatenate(
        [vid[videos], _comma(n_box), _digits(ts, 4), _comma(n_box)]
        + [part for j in range(4) for part in (_fixed4(boxes[:, j]), _comma(n_box))], axis=1)
    a = actions.reshape(-1)
    suffix = np.concatenate([_digits(a, 2), _comma(len(a)), _fixed4(scores.reshape(-1)),
                             np.full((len(a), 1), ord("\n"), dtype=np.uint8)], axis=1)
    rows = np.concatenate([np.repeat(prefix, n_cls, axis=0), suffix], axis=1)
    keep = np.ones(rows.shape, dtype=bool)
    keep[:, prefix.shape[1]] = a >= 10  # one-digit ids: drop the leading zero
    return rows[keep].tobytes()


def random_boxes(rng, n: int) -> np.ndarray:
    w, h = rng.uniform(0.1, 0.35, n), rng.uniform(0.3, 0.7, n)
    x1, y1 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
    return np.round(np.stack([x1, y1, x1 + w, y1 + h], axis=1), 3)


def make_set(out: Path, n_videos: int, n_keyframes: int, n_boxes: int, n_classes: int,
             seed: int = 0) -> dict:
    from stdet.data.labels import AVA_EVALUATED_IDS, ava_label_map, write_label_map

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    write_label_map(out / "labels.pbtxt", ava_label_map(AVA_EVALUATED_IDS), form="item")
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"))
    video_ids = np.array(sorted({"".join(rng.choice(alphabet, 11)) for _ in range(n_videos)}))
    n_frames = n_videos * n_keyframes
    f_video = np.repeat(np.arange(n_videos), n_keyframes)
    f_ts = np.tile(np.arange(FIRST_KEYFRAME, FIRST_KEYFRAME + n_keyframes), n_videos)

    # ground truth: 95% of the frames have 1-4 persons with 2-3 of the 80 actions each
    has_gt = rng.random(n_frames) < 0.95
    n_persons = np.where(has_gt, rng.integers(1, 5, n_frames), 0)
    p_frame = np.repeat(np.arange(n_frames), n_persons)
    p_box = random_boxes(rng, len(p_frame))
    p_nact = rng.integers(2, 4, len(p_frame))
    # common AVA actions (stand, sit, watch, talk, listen, carry...) much more often than others
    weights = np.ones(80)
    weights[[11, 10, 79, 78, 73, 16, 13, 7]] = [40, 25, 30, 25, 15, 10, 8, 5]
    weights /= weights.sum()
    p_actions = np.stack([rng.choice(80, size=len(p_frame), p=weights) + 1 for _ in range(3)], 1)
    gt_lines = []
    for i in np.flatnonzero(p_nact > 0):
        fr = p_frame[i]
        head = (f"{video_ids[f_video[fr]]},{f_ts[fr]:04d},"
                + ",".join(f"{v:.3f}" for v in p_box[i]) + ",")
        for a in dict.fromkeys(p_actions[i, :p_nact[i]]):
            gt_lines.append(f"{head}{a},{i + 1}\n")
    (out / "gt.csv").write_text("".join(gt_lines))

    # excluded: 1% of the frames
    excl = np.flatnonzero(rng.random(n_frames) < 0.01)
    (out / "excluded.csv").write_text("".join(
        f"{video_ids[f_video[i]]},{f_ts[i]:04d}\n" for i in excl))

    # results: n_boxes a frame; the frame's persons first (jittered), then false positives
    first_person = np.concatenate([[0], np.cumsum(n_persons)])[:-1]
    written = 0
    chunk = max(1, 2_000_000 // (n_boxes * n_classes))  # frames a chunk (~2M rows)
    with open(out / "results.csv", "wb") as f:
        for start in range(0, n_frames, chunk):
            frames = np.arange(start, min(start + chunk, n_frames))
            b_frame = np.repeat(frames, n_boxes)
            slot = np.tile(np.arange(n_boxes), len(frames))
            is_person = slot < n_persons[b_frame]
            person = np.where(is_person, first_person[b_frame] + slot, 0)
            boxes = random_boxes(rng, len(b_frame))
            if len(p_box):
                base = p_box[person]
                size = np.repeat(base[:, 2:] - base[:, :2], 2, axis=0).reshape(-1, 4)
                jitter = np.clip(base + rng.normal(0, 0.06, (len(base), 4)) * size, 0, 1)
                jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + 0.01)
                boxes = np.where(is_person[:, None], jitter, boxes)
            boxes = np.clip(boxes, 0, 1)
            if n_classes >= 80:
                actions = np.tile(np.arange(1, 81), (len(b_frame), 1))
            else:  # random distinct classes, the person's first two actions among them
                key = rng.random((len(b_frame), 80))
                if len(p_box):
                    idx = np.flatnonzero(is_person)
                    for j in range(2):
                        key[idx, p_actions[person[idx], j] - 1] = -1.0
                actions = np.argsort(key, axis=1)[:, :n_classes] + 1
            scores = rng.random(actions.shape) ** 4 * 0.6
            if len(p_box):
                truth = (p_actions[person][:, None, :] == actions[:, :, None]).any(axis=2)
                truth &= is_person[:, None]
                scores = np.where(truth, np.clip(rng.normal(0.55, 0.25, scores.shape), 0, 1),
                                  scores)
            data = format_results(video_ids, f_video[b_frame], f_ts[b_frame], boxes, actions,
                                  scores)
            f.write(data)
            written += actions.size
    size_mb = (out / "results.csv").stat().st_size / 2**20
    info = {"set": out.name, "frames": n_frames, "gt_rows": len(gt_lines),
            "result_rows": written, "excluded": len(excl), "results_mb": round(size_mb, 1),
            "seconds": round(time.perf_counter() - t0, 1)}
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


# --------------------------------------------------------------------------------------------
# timing


# Both evaluators run as in a default Python setup: bytecode caches are written and used (a
# PYTHONDONTWRITEBYTECODE in the caller's environment would make every run recompile).
RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_measured(cmd: list[str], timeout: float | None) -> dict:
    """Run ``cmd``; wall-clock seconds, peak RSS (MiB) of the process, exit status, stderr tail."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=RUN_ENV)
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer:
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # blocks until the process ends
        seconds = time.perf_counter() - t0
        if timer:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
    return {"seconds": seconds, "peak_mib": usage.ru_maxrss / 1024, "rc": proc.returncode,
            "stderr": " | ".join(tail)}


def _map_of(path: Path):
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("mAP")


def time_set(set_dir: Path, args) -> dict:
    files = {k: str(set_dir / n) for k, n in (("gt", "gt.csv"), ("pred", "results.csv"),
                                              ("label_map", "labels.pbtxt"),
                                              ("exclude", "excluded.csv"))}
    common = ["--gt", files["gt"], "--pred", files["pred"], "--label-map", files["label_map"],
              "--exclude", files["exclude"], "--protocol", args.protocol]
    row = {"set": set_dir.name, "rows": None, "mb": set_dir.joinpath("results.csv").stat().st_size
           / 2**20}
    info = set_dir / "info.json"
    if info.exists():
        row["rows"] = json.loads(info.read_text()).get("result_rows")
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        if not args.skip_reference:
            if os.path.exists(args.reference_python):
                runs.append(("reference", [args.reference_python,
                                           str(ROOT / "benchmarks" / "ava_eval_reference.py")]))
            else:
                print(f"reference skipped: {args.reference_python} not found", file=sys.stderr)
        if not args.skip_stdet:
            runs.append(("stdet", [args.stdet_python, "-m", "stdet", "eval"]))
        for name, cmd in runs:
            out = Path(tmp) / f"{name}.json"
            # stdet runs in about a second, so it is timed `--repeat` times (median); a first,
            # untimed run writes the bytecode caches of both
            run_measured(cmd + ["--help"], args.timeout)
            repeats = args.repeat if name == "stdet" else 1
            trials = [run_measured(cmd + common + ["--json", str(out)], args.timeout)
                      for _ in range(repeats)]
            res = sorted(trials, key=lambda r: r["seconds"])[len(trials) // 2]
            res["mAP"] = _map_of(out)
            row[name] = res
            status = "ok" if res["rc"] == 0 else f"exit {res['rc']}: {res['stderr']}"
            print(f"  {set_dir.name} {name}: {res['seconds']:.1f} s, {res['peak_mib']:.0f} MiB, "
                  f"mAP {res['mAP']}, {status}", flush=True)
    return row


def print_table(rows: list[dict], protocol: str) -> None:
    def cell(run, key, fmt):
        if run is None:
            return "-"
        if run["rc"] != 0 and key != "seconds":
            return "failed"
        value = run.get(key)
        return "-" if value is None else format(value, fmt)

    print(f"\nprotocol: {protocol}")
    head = ("set", "result rows", "MB", "ref s", "stdet s", "ratio", "ref MiB", "stdet MiB",
            "ref mAP", "stdet mAP")
    lines = [head]
    for r in rows:
        ref, st = r.get("reference"), r.get("stdet")
        ratio = ("-" if not (ref and st and ref["rc"] == 0 and st["rc"] == 0)
                 else f"{ref['seconds'] / st['seconds']:.1f}x")
        lines.append((r["set"], "-" if r["rows"] is None else f"{r['rows']:,}", f"{r['mb']:.0f}",
                      cell(ref, "seconds", ".1f"), cell(st, "seconds", ".1f"), ratio,
                      cell(ref, "peak_mib", ".0f"), cell(st, "peak_mib", ".0f"),
                      cell(ref, "mAP", ".6f"), cell(st, "mAP", ".6f")))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for k, line in enumerate(lines):
        print("  ".join(str(v).rjust(w) for v, w in zip(line, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--make-files", metavar="DIR", help="write the input sets under DIR")
    parser.add_argument("--dir", default="/tmp/evalbench", help="where the sets are")
    parser.add_argument("--sets", default="360k,23m",
                        help="comma-separated, of: " + ", ".join(SETS))
    parser.add_argument("--protocol", choices=("activitynet", "mmaction2-0.x", "mmaction2"), default="activitynet")
    parser.add_argument("--reference-python", default="/tmp/evalenv/bin/python")
    default_py = ROOT / ".venv" / "bin" / "python"
    parser.add_argument("--stdet-python", default=str(default_py) if default_py.exists()
                        else sys.executable)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-stdet", action="store_true")
    parser.add_argument("--timeout", type=float, default=None, help="seconds a run, then killed")
    parser.add_argument("--repeat", type=int, default=3, help="stdet runs per set (the median "
                        "is reported; default 3)")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETS]
    if unknown:
        parser.error(f"unknown sets {unknown}; known: {list(SETS)}")

    if args.make_files:
        sys.path.insert(0, str(ROOT))
        for k, name in enumerate(names):
            info = make_set(Path(args.make_files) / name, *SETS[name], seed=k)
            print(json.dumps(info))
        return 0

    rows = []
    for name in names:
        set_dir = Path(args.dir) / name
        if not (set_dir / "results.csv").exists():
            print(f"{set_dir}: no results.csv (run --make-files {args.dir} first); skipped",
                  file=sys.stderr)
            continue
        rows.append(time_set(set_dir, args))
    if rows:
        print_table(rows, args.protocol)
    return 0


if __name__ == "__main__":
    sys.exit(main())
