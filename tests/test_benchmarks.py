"""The benchmark scripts still run against the package (their numbers are not checked here)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("one_thread")
def test_gpu_train_step_times_the_engine_step_at_full_size(capsys):
    """One full-size SlowOnly step on the CPU: the table row is complete and the step makes no
    host read (the syncs/step column)."""
    bench = load_script("gpu_train_step")
    name = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb"
    assert bench.main([name, "--device", "cpu", "--batch", "1", "--steps", "1", "--warmup", "0",
                       "--no-peak", "--distinct-batches", "1"]) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith(f"| {name} |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:3] == ["4x16", "1"]             # clip, batch
    assert float(cells[6]) > 0                     # clips/s
    assert cells[8] == "-" and cells[9] == "0"     # no MFU without a peak; no host read


def test_data_throughput_builds_its_datasets_through_the_public_config(tmp_path):
    """The benchmark runs end to end on its quick setting (it builds the train split of the data
    it writes, through ``stdet.config``'s data root) and prints the workers-per-GPU table."""
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "data_throughput.py"), "--quick",
                          "--sources", "rawframes", "--workers", "0", "--gpu-clips-per-s", "5"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "workers needed" in run.stdout


def test_gpu_suite_is_valid_bash():
    script = REPO / "benchmarks" / "gpu_suite.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def test_gpu_train_step_makes_a_card_with_its_index_current(monkeypatch):
    """``--device cuda`` names no card; torch 2.11 refuses ``set_device("cuda")`` (seen on an
    H200), so the benchmark passes the current card's index."""
    import torch

    bench = load_script("gpu_train_step")
    made_current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    assert bench.select_device("cuda") == torch.device("cuda", 0)
    assert bench.select_device("cuda:3") == torch.device("cuda", 3)
    assert made_current == [torch.device("cuda", 0), torch.device("cuda", 3)]
    assert all(d.index is not None for d in made_current)
    assert bench.select_device("cpu") == torch.device("cpu") and len(made_current) == 2
