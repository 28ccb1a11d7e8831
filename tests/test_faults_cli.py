"""The one-line rule, command by command: every command of ``python -m stdet`` given a bad input
prints exactly one line on stderr, ``error: ...``, and exits 2 (a mistake in the input); Ctrl-C
exits 130 with one line. Run as a user runs them: a subprocess, stderr a pipe."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stdet import cli, zoo
from stdet._progress import progress_bar, watched
from stdet.engine.checkpoint import save_checkpoint
from stdet.models import build_detector

REPO = Path(__file__).resolve().parents[1]
MINI = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb:mini"
BANK = "lfb_slowonly_r50_ava_infer:mini"


def run_cli(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "stdet", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_ava) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    ckpt = tmp / "model.pth"
    save_checkpoint(ckpt, build_detector(zoo.resolve(MINI).model))
    (tmp / "gt.csv").write_text("v,0902,0.1,0.1,0.5,0.5,12,0\n")
    (tmp / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp / "labels.pbtxt").write_text('item {\n  name: "stand"\n  id: 12\n}\n')
    return {"tmp": tmp, "ckpt": ckpt, "root": tiny_ava, "missing": tmp / "missing"}


# a bad input for every command, and what its line says
CASES = {
    "train: unknown config": (["train", "slowonly_nonsense"], "no zoo config named"),
    "train: value out of range": (["train", MINI, "--data-root", "{root}", "--cfg-options",
                                   "schedule.epochs=-1"], "schedule.epochs must be >= 1"),
    "train: usage": (["train"], "the following arguments are required: config"),
    "test: missing checkpoint": (["test", MINI, "{missing}", "--data-root", "{root}"],
                                 "checkpoint not found"),
    "test: another config's checkpoint": (
        ["test", "slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb:mini", "{ckpt}",
         "--data-root", "{root}", "--device", "cpu", "--out", "{tmp}/r.csv"], "does not fit"),
    "eval: binary ground truth": (["eval", "--gt", "{tmp}/binary.csv", "--pred", "{tmp}/gt.csv",
                                   "--label-map", "{tmp}/labels.pbtxt"], "not a text file"),
    "eval: custom classes": (["eval", "--gt", "{tmp}/gt.csv", "--pred", "{tmp}/gt.csv",
                              "--label-map", "{tmp}/labels.pbtxt", "--custom-classes", "a,b"],
                             "--custom-classes must be integers"),
    "eval: usage": (["eval", "--gt", "{tmp}/gt.csv"], "the following arguments are required"),
    "extract-lfb: missing checkpoint": (["extract-lfb", BANK, "{missing}", "--split", "val",
                                         "--data-root", "{root}"], "checkpoint not found"),
    "extract-lfb: usage": (["extract-lfb", BANK, "{ckpt}", "--split", "test"],
                           "argument --split: invalid choice"),
    "convert: missing checkpoint": (["convert", "{missing}", "{tmp}/out.pth"],
                                    "checkpoint not found"),
    "convert: not a checkpoint": (["convert", "{tmp}/gt.csv", "{tmp}/out.pth"],
                                  "gt.csv: not a PyTorch checkpoint"),
    "mini-ava: too short": (["mini-ava", "{tmp}/mini", "--seconds", "2"],
                            "--seconds must be at least 5"),
    "mini-ava: usage": (["mini-ava", "{tmp}/mini", "--seed", "x"], "invalid int value"),
    "zoo: usage": (["zoo", "--scale", "huge"], "argument --scale: invalid choice"),
    "zoo: csv to a directory": (["zoo", "--no-complexity", "--csv", "{tmp}"], "is a directory"),
    "no command": (["trian"], "invalid choice: 'trian'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_command_reports_a_bad_input_in_one_line(case, files):
    argv, message = CASES[case]
    run = run_cli(*(a.format(**files) for a in argv))
    lines = run.stderr.splitlines()
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], run.stderr
    assert "Traceback" not in run.stdout


def test_every_command_has_a_case():
    assert {case.split(":")[0] for case in CASES} - {"no command"} == set(cli.COMMANDS)


def test_ctrl_c_is_one_line_and_exit_130(files, tmp_path):
    """SIGINT in the middle of a training (data workers running) stops it with one line."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1")
    work = tmp_path / "w"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stdet", "train", MINI, "--work-dir", str(work), "--data-root",
         str(files["root"]), "--device", "cpu", "--cfg-options", "model.backbone.pretrained=None",
         "optim.batch_per_gpu=2", "schedule.epochs=50", "data.workers=2"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (work / "log.jsonl").is_file() or not (work / "log.jsonl").stat().st_size:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == ["interrupted"], err[-2000:]


def test_progress_bars_show_where_watched(monkeypatch):
    class Terminal:
        def isatty(self):
            return True

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not watched()  # pytest captures stderr: not a terminal
    assert progress_bar(range(3)).disable
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert watched()
    assert not progress_bar(range(3), file=sys.__stderr__).disable
    assert progress_bar(range(3), enabled=False).disable
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    monkeypatch.setenv("TQDM_DISABLE", "0")  # asked for: shown in a log file too
    assert not progress_bar(range(3), file=sys.__stderr__).disable


@pytest.mark.parametrize("error, where", [("gpu", "GPU"), ("host", "host")])
def test_out_of_memory_is_one_line_and_exit_1(error, where, monkeypatch, capsys):
    import torch

    from stdet.engine import train

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB") \
            if error == "gpu" else MemoryError()

    monkeypatch.setattr(train, "train", out_of_memory)
    assert cli.main(["train", MINI]) == 1
    assert capsys.readouterr().err == (f"error: out of {where} memory; lower optim.batch_per_gpu "
                                       f"(and data.workers) with --cfg-options\n")


def test_a_full_disk_while_logging_is_a_write_error(tmp_path):
    import errno

    from stdet.data.errors import WriteError
    from stdet.engine.logger import JsonlLogger, read_records

    logger = JsonlLogger(tmp_path / "log.jsonl")
    logger.log(mode="train", step=1)

    class FullDisk:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    logger._file, real = FullDisk(), logger._file
    with pytest.raises(WriteError) as info:
        logger.log(mode="train", step=2)
    real.close()
    assert str(info.value) == (f"{tmp_path / 'log.jsonl'}: cannot append to the log: [Errno 28] "
                               f"No space left on device; the records before are kept")
    assert info.value.exit_code == 1 and read_records(tmp_path / "log.jsonl") == [
        {"mode": "train", "step": 1}]


def test_a_ctrl_c_swallowed_by_a_finalizer_stops_at_the_next_batch(tiny_ava, monkeypatch):
    """SIGINT inside a finalizer (DataLoader workers shut down every epoch) becomes an "ignored"
    exception; the CLI's handler keeps it quiet and the next batch raises it again."""
    import types

    import stdet
    from stdet import _interrupt
    from stdet.engine.data import build_dataset, eval_loader
    from stdet.engine.distributed import DistInfo

    seen = []
    monkeypatch.setattr(_interrupt, "_previous_hook", seen.append)
    monkeypatch.setattr(_interrupt, "_requested", False)
    loader = eval_loader(build_dataset(stdet.config(f"{MINI}", data_root=tiny_ava), "val"), 0,
                         DistInfo())
    assert len(list(loader)) == 7
    with pytest.raises(KeyboardInterrupt):
        _interrupt._on_sigint(signal.SIGINT, None)  # what the signal does, here swallowed:
    _interrupt._unraisable(types.SimpleNamespace(exc_value=KeyboardInterrupt()))
    other = types.SimpleNamespace(exc_value=ValueError("x"))
    _interrupt._unraisable(other)
    assert seen == [other]  # other unraisable errors still reach the previous hook
    with pytest.raises(KeyboardInterrupt):
        next(iter(loader))
