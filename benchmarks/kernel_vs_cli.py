"""Training inside a Jupyter kernel against the command line: wall time and identical weights.

The same run twice, from the same data and seed:

* ``python -m stdet train CONFIG --data-root ROOT --work-dir W/cli --validate --seed S`` in a
  child process (DataLoader workers forked from a plain process);
* ``stdet.train(stdet.config(CONFIG, data_root=ROOT), W/kernel, seed=S)`` executed by a Jupyter
  kernel (nbclient), as a notebook cell runs it (workers from a forkserver: the kernel is never
  forked; see ``stdet.data.processes``).

Both wall times include starting Python and importing stdet (the CLI's process start, the cell's
``import stdet``); the kernel's own start-up is not counted. Then every tensor of the two
``latest.pth`` is compared with ``torch.equal`` and the val mAP of each epoch with ``==``.

Usage::

    .venv/bin/python benchmarks/kernel_vs_cli.py --data-root /tmp/miniava     # ~2 min, 2 cores
        [--config NAME:mini] [--seed 0] [--cfg-options KEY=VALUE ...] [--keep DIR]

Output: a markdown table (where, wall s, ratio to the CLI, last val mAP, start method of the
workers) and whether the weights are identical. Exit code 1 if they are not.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb:mini"


def run_cli(config: str, root: Path, work: Path, seed: int, options: list[str]) -> float:
    """Seconds of ``python -m stdet train`` in a child process."""
    command = [sys.executable, "-m", "stdet", "train", config, "--data-root", str(root),
               "--work-dir", str(work), "--validate", "--seed", str(seed)]
    if options:
        command += ["--cfg-options", *options]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


def run_in_kernel(source: str, cwd: Path, timeout: int = 1800) -> list[str]:
    """Execute ``source`` as one notebook cell in a fresh Python kernel; its stdout lines."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    outputs = notebook.cells[0].outputs
    return "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout").splitlines()


def train_in_kernel(config: str, root: Path, work: Path, seed: int, options: list[str]) -> tuple[float, str]:
    """Seconds of ``stdet.train`` run by a kernel cell, and the workers' start method there."""
    cell = "\n".join([
        "import time",
        "start = time.perf_counter()",
        "import stdet",
        f"cfg = stdet.config({config!r}, *{options!r}, data_root={str(root)!r})",
        f"stdet.train(cfg, {str(work)!r}, validate=True, seed={seed}, progress=False)",
        "context = stdet.data.worker_context(cfg.data.start_method, cfg.data.workers)",
        "method = context.get_start_method() if context else 'default (fork)'",
        "print('RESULT', time.perf_counter() - start, method)",
    ])
    (line,) = [l for l in run_in_kernel(cell, REPO) if l.startswith("RESULT ")]
    _, seconds, method = line.split(" ", 2)
    return float(seconds), method


def same_weights(a: Path, b: Path) -> bool:
    sa = torch.load(a, map_location="cpu", weights_only=True)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=True)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def val_maps(work: Path) -> list[float]:
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines() if line]
    return [r["mAP"] for r in records if r.get("mode") == "val"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True, help="mini-AVA (python -m stdet mini-ava DIR)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--keep", help="work dir to keep (default: a temporary one)")
    args = p.parse_args(argv)
    root = Path(args.data_root).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep or tmp).resolve()
        cli_s = run_cli(args.config, root, base / "cli", args.seed, args.cfg_options)
        kernel_s, method = train_in_kernel(args.config, root, base / "kernel", args.seed,
                                           args.cfg_options)
        identical = same_weights(base / "cli" / "latest.pth", base / "kernel" / "latest.pth")
        maps = {"cli": val_maps(base / "cli"), "kernel": val_maps(base / "kernel")}
    print(f"{args.config}, seed {args.seed}, data {root}, {os.cpu_count()} cores\n")
    print("| where | wall (s) | / CLI | last val mAP | workers start by |")
    print("|---|---:|---:|---:|---|")
    print(f"| python -m stdet train | {cli_s:.1f} | 1.00 | {maps['cli'][-1]:.4f} | fork |")
    print(f"| stdet.train in a Jupyter kernel | {kernel_s:.1f} | {kernel_s / cli_s:.2f} | "
          f"{maps['kernel'][-1]:.4f} | {method} |")
    print(f"\nweights identical: {identical}; val mAP per epoch identical: "
          f"{maps['cli'] == maps['kernel']}")
    return 0 if identical and maps["cli"] == maps["kernel"] else 1


if __name__ == "__main__":
    sys.exit(main())
