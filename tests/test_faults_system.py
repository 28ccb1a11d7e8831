"""Faults of the system around a run, each planted for real: concurrent writers, a full disk, a
target that is a directory, a work dir in use, a resumed bank extraction with another model, a
truncated bank, a missing GPU, a ``./stdet`` folder that shadows the package.

Command-line checks run ``python -m stdet`` in a subprocess and assert what a user sees: exactly
one line ``error: ...`` on stderr and the exit code (2: a mistake of the input, 1: a fault of
the run).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stdet import build_detector, cli, save_checkpoint, zoo
from stdet.data.errors import AVADataError, RunError, StdetError, WorkDirBusyError, WriteError
from stdet.data.io import atomic_write_bytes, atomic_write_text, work_dir_lock
from stdet.engine.lfb import config_sha256
from stdet.lfb import FeatureBank
from stdet.lfb.bank import BankWriter, FeatureBankError, bank_paths, merge_shards

REPO = Path(__file__).resolve().parents[1]
MINI = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb:mini"
BANK = "lfb_slowonly_r50_ava_infer:mini"
LFB = "lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb:mini"
EVAL_CASE = REPO / "tests" / "fixtures" / "ava_eval" / "case_0"

# os.write raises ENOSPC for the temporary files of atomic writes, then stdet's CLI runs
ENOSPC_CLI = """
import errno, os, sys
_write = os.write
def _disk_full(fd, data):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = ""
    if target.endswith(".tmp"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _write(fd, data)
os.write = _disk_full
from stdet.cli import main
sys.exit(main(sys.argv[1:]))
"""

HOLD_LOCK = """
import sys, time
from stdet.data.io import work_dir_lock
with work_dir_lock(sys.argv[1], sys.argv[2], name=sys.argv[3]):
    print("locked", flush=True)
    time.sleep(300)
"""

WRITE_LOOP = """
import sys
from stdet.data.io import atomic_write_bytes
path, byte, times = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = bytes([byte]) * (1 << 20)
for _ in range(times):
    atomic_write_bytes(path, payload)
"""


def run_stdet(*args: str, cwd: Path = REPO, code: str | None = None,
              timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m stdet ARGS`` (or ``python -c CODE ARGS``) with one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "stdet"]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess, exit_code: int) -> str:
    """The one ``error: ...`` line a failed command printed, checking its exit code."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == exit_code, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def mini_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "mini.pth"
    torch.manual_seed(0)
    save_checkpoint(path, build_detector(zoo.resolve(MINI).model))
    return path


@pytest.fixture
def disk_full(monkeypatch):
    """``os.write`` to a temporary file of an atomic write fails with ENOSPC."""
    real = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


# ------------------------------------------------------------------------------------------------
# 1. atomic writes


def test_two_writers_and_a_reader_never_see_a_torn_file(tmp_path):
    """Two processes replace one 1 MiB file 200 times each while this one reads it: every read is
    one writer's whole payload, no rename fails, no temporary file is left."""
    target = tmp_path / "shared.bin"
    payloads = {bytes([byte]) * (1 << 20) for byte in (0x41, 0x42)}
    atomic_write_bytes(target, bytes([0x41]) * (1 << 20))
    writers = [subprocess.Popen([sys.executable, "-c", WRITE_LOOP, str(target), str(byte), "200"],
                                cwd=REPO, stderr=subprocess.PIPE, text=True) for byte in (0x41, 0x42)]
    reads = 0
    while any(w.poll() is None for w in writers) or reads == 0:
        data = target.read_bytes()
        assert data in payloads, f"torn read: {len(data)} bytes, {set(data[:1] + data[-1:])}"
        reads += 1
    for writer in writers:
        assert writer.wait() == 0, writer.stderr.read()
    assert reads > 1 and temp_files(tmp_path) == []


def test_atomic_write_refuses_a_directory_before_writing(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(AVADataError, match="is a directory; expected a file path") as error:
        atomic_write_text(folder, "x")
    assert error.value.exit_code == 2 and str(error.value).startswith(str(folder))
    assert list(folder.iterdir()) == [] and temp_files(tmp_path) == []


@pytest.mark.usefixtures("disk_full")
def test_full_disk_keeps_the_previous_file(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old results\n")
    with pytest.raises(WriteError) as error:
        atomic_write_text(target, "new results\n" * 1000)
    message = str(error.value)
    assert isinstance(error.value, RunError) and error.value.exit_code == 1
    assert message.startswith(f"{target}: ") and "No space left on device" in message
    assert "previous results.csv is intact" in message and "\n" not in message
    assert target.read_text() == "old results\n" and temp_files(tmp_path) == []
    with pytest.raises(WriteError, match="nothing was written there"):
        atomic_write_bytes(tmp_path / "new.bin", b"x")
    assert not (tmp_path / "new.bin").exists() and temp_files(tmp_path) == []


def test_save_checkpoint_writes_atomically(tmp_path, monkeypatch, disk_full):
    target = tmp_path / "latest.pth"
    target.write_bytes(b"the earlier checkpoint")
    model = {"w": torch.ones(3)}
    with pytest.raises(WriteError, match="No space left on device; the previous latest.pth is intact"):
        save_checkpoint(target, model)
    assert target.read_bytes() == b"the earlier checkpoint" and temp_files(tmp_path) == []
    monkeypatch.undo()  # the disk has room again
    save_checkpoint(target, model)
    assert torch.equal(torch.load(target, weights_only=True)["state_dict"]["w"], model["w"])


def test_written_files_get_the_usual_permissions(tmp_path):
    """mkstemp makes 0600; a new file gets what open() would give, a replaced one keeps its own."""
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_text(tmp_path / "new.txt", "x")
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o666 & ~umask
    (tmp_path / "shared.txt").write_text("x")
    (tmp_path / "shared.txt").chmod(0o640)
    atomic_write_text(tmp_path / "shared.txt", "y")
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o640


def test_cli_full_disk_is_one_line_and_keeps_the_earlier_file(tmp_path, mini_ckpt):
    out = tmp_path / "converted.pth"
    out.write_bytes(b"an earlier conversion")
    proc = run_stdet("convert", mini_ckpt, out, code=ENOSPC_CLI)
    line = one_error_line(proc, 1)
    assert str(out) in line and "No space left on device" in line and "intact" in line
    assert out.read_bytes() == b"an earlier conversion" and temp_files(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# 7. convert and eval: OUT is a directory (or under a file)


def test_convert_to_a_directory_is_one_line(tmp_path, mini_ckpt):
    folder = tmp_path / "out"
    folder.mkdir()
    for extra in ([], ["--config", MINI]):
        line = one_error_line(run_stdet("convert", mini_ckpt, folder, *extra), 2)
        assert line == f"error: {folder}: is a directory; expected a file path"
    assert list(folder.iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = one_error_line(run_stdet("convert", mini_ckpt, blocker / "out.pth"), 2)
    assert "a file is in the way" in line and blocker.read_text() == "x"


def test_convert_with_a_mini_config_writes_the_checkpoint(tmp_path, mini_ckpt):
    proc = run_stdet("convert", mini_ckpt, tmp_path / "out.pth", "--config", MINI)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "wrote" in proc.stdout and (tmp_path / "out.pth").is_file()


def test_eval_json_to_a_directory_is_one_line(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    proc = run_stdet("eval", "--gt", EVAL_CASE / "gt.csv", "--pred", EVAL_CASE / "pred.csv",
                     "--label-map", EVAL_CASE / "labels.pbtxt", "--exclude",
                     EVAL_CASE / "excluded.csv", "--json", folder)
    assert one_error_line(proc, 2) == f"error: {folder}: is a directory; expected a file path"
    assert list(folder.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# 2. an exclusive work-dir lock


def hold_lock(directory: Path, command: str, name: str = ".stdet.lock") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(directory), command, name],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_holder_fails_at_once_and_sigkill_frees_the_lock(tmp_path):
    work = tmp_path / "work"
    holder = hold_lock(work, "train")
    try:
        with pytest.raises(WorkDirBusyError) as error:
            with work_dir_lock(work, "test"):
                pass
        assert str(error.value) == (f"{work} is in use by pid {holder.pid} (train); wait for it "
                                    "or use another work dir")
        assert error.value.exit_code == 2
        with work_dir_lock(work, "extract-lfb", name=".stdet.other.lock"):
            pass  # another lock file of the same directory is another lock
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with work_dir_lock(work, "test") as path:  # the OS released it with the process
        assert path.read_text() == f"{os.getpid()} test\n"
    assert not path.exists()
    with work_dir_lock(work, "again"):
        pass


def test_extract_lfb_refuses_a_bank_being_extracted(tmp_path, tiny_ava, mini_ckpt):
    holder = hold_lock(tmp_path, "extract-lfb --split val", ".stdet.lfb_val.lock")
    try:
        proc = run_stdet("extract-lfb", BANK, mini_ckpt, "--split", "val", "--data-root", tiny_ava,
                         "--out", tmp_path, "--device", "cpu", "--cfg-options", "data.workers=0")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    line = one_error_line(proc, 2)
    assert f"{tmp_path} is in use by pid {holder.pid} (extract-lfb --split val)" in line
    assert not (tmp_path / "lfb_val.parts").exists()


# ------------------------------------------------------------------------------------------------
# 3. a resumed extraction with another checkpoint, config or dtype


def extract(root: Path, ckpt: Path, out: Path, *flags: str, options: tuple[str, ...] = ()) -> int:
    return cli.main(["extract-lfb", BANK, str(ckpt), "--split", "val", "--data-root", str(root),
                     "--out", str(out), "--device", "cpu", *flags,
                     "--cfg-options", "data.workers=0", *options])


@pytest.mark.usefixtures("one_thread")
def test_resume_with_another_model_is_refused(tmp_path, tiny_ava, mini_ckpt, monkeypatch, capsys):
    other = tmp_path / "other.pth"
    torch.manual_seed(1)
    save_checkpoint(other, build_detector(zoo.resolve(BANK).model))
    out = tmp_path / "bank"
    calls = []
    original = BankWriter.add

    def crash_after_four(self, *args, **kwargs):
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BankWriter, "add", crash_after_four)
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract(tiny_ava, mini_ckpt, out, "--shard-size", "2")
    monkeypatch.setattr(BankWriter, "add", original)
    parts = out / "lfb_val.parts"
    shards = sorted(parts.iterdir())
    assert len(shards) == 2

    for flags, options, what in ((["--shard-size", "2"], (), "checkpoint_sha256"),
                                 (["--half"], (), "dtype float32 (this run: float16)"),
                                 ([], ("data.person_det_score_thr=0.5",), "config_sha256")):
        capsys.readouterr()
        ckpt = other if what == "checkpoint_sha256" else mini_ckpt
        assert extract(tiny_ava, ckpt, out, *flags, options=options) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {parts}: "), err
        assert what in err[0] and f"delete {parts} or rerun with the same checkpoint" in err[0]
        assert sorted(parts.iterdir()) == shards  # nothing written, nothing removed

    assert extract(tiny_ava, mini_ckpt, out, "--shard-size", "2") == 0
    assert "4 kept from an earlier run" in capsys.readouterr().out
    identity = json.loads(bank_paths(out, "val")[1].read_text())["identity"]
    digest = hashlib.sha256(mini_ckpt.read_bytes()).hexdigest()[:16]
    assert identity == {"checkpoint_sha256": digest,
                        "config_sha256": config_sha256(zoo.resolve(BANK, data_root=tiny_ava))[:16]}
    assert FeatureBank.load(out, "val").identity == identity


def test_config_identity_ignores_where_and_how_data_is_read():
    cfg = zoo.resolve(BANK)
    moved = zoo.resolve(BANK, "data.workers=7", "data.start_method=spawn", "runtime.bf16=False",
                        data_root="/elsewhere")
    assert config_sha256(moved) == config_sha256(cfg)
    assert config_sha256(zoo.resolve(BANK, "data.clip_len=8")) != config_sha256(cfg)


def test_banks_and_shards_written_before_identities_still_load(tmp_path):
    writer = BankWriter(tmp_path, "train", 4)
    writer.add("v", 902, np.ones((2, 4), np.float32))
    writer.close()
    # a shard of an earlier stdet: no identity array; a writer with an identity accepts it
    shard = next((tmp_path / "lfb_train.parts").iterdir())
    with np.load(shard) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "identity"}
    with open(shard, "wb") as f:
        np.savez(f, **arrays)
    resumed = BankWriter(tmp_path, "train", 4, identity={"checkpoint_sha256": "a" * 16})
    assert resumed.done == {("v", 902)}
    merge_shards(tmp_path, "train")
    path_json = bank_paths(tmp_path, "train")[1]
    meta = json.loads(path_json.read_text())
    meta.pop("identity", None)
    path_json.write_text(json.dumps(meta))
    assert FeatureBank.load(tmp_path, "train").identity is None


# ------------------------------------------------------------------------------------------------
# 4. a truncated or missing bank


def small_bank(root: Path, channels: int = 8) -> FeatureBank:
    writer = BankWriter(root, "train", channels)
    for second in range(902, 912):
        writer.add("vid", second, np.full((5, channels), second, np.float32))
    writer.close()
    return merge_shards(root, "train")


def truncate_half(path: Path) -> tuple[int, int]:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    return size // 2, size


def test_truncated_bank_is_a_feature_bank_error(tmp_path):
    bank = small_bank(tmp_path)
    opened = FeatureBank.load(tmp_path, "train")  # before the damage: features not mapped yet
    half, full = truncate_half(bank.path_npy)
    expected = (f"{bank.path_npy}: truncated: {half} bytes, its header ((50, 8) float32) needs "
                f"{full}; rebuild it with `python -m stdet extract-lfb")
    with pytest.raises(FeatureBankError) as error:
        FeatureBank.load(tmp_path, "train")
    assert str(error.value).startswith(expected)
    with pytest.raises(FeatureBankError, match="truncated"):
        opened.features
    with pytest.raises(FeatureBankError, match="truncated"):
        opened.sample("vid", 905, np.random.default_rng(0))
    with pytest.raises(FeatureBankError, match="truncated"):
        opened.features_at("vid", 905)


def test_bank_removed_after_load_is_a_feature_bank_error(tmp_path):
    bank = small_bank(tmp_path)
    opened = FeatureBank.load(tmp_path, "train")
    bank.path_npy.unlink()
    with pytest.raises(FeatureBankError, match=r"lfb_train.npy: missing; rebuild it with"):
        opened.sample("vid", 905, np.random.default_rng(0))


def lfb_train(tiny_ava: Path, work: Path, *options: str) -> subprocess.CompletedProcess:
    return run_stdet("train", LFB, "--data-root", tiny_ava, "--device", "cpu", "--work-dir", work,
                     "--cfg-options", "data.workers=0", "model.backbone.pretrained=None", *options)


def test_cli_missing_or_truncated_bank_is_one_line(tmp_path, tiny_ava):
    line = one_error_line(lfb_train(tiny_ava, tmp_path / "work1",
                                    f"model.lfb.bank_dir={tmp_path / 'nowhere'}"), 2)
    assert "feature bank" in line and "python -m stdet extract-lfb" in line
    bank = small_bank(tmp_path / "bank")
    truncate_half(bank.path_npy)
    line = one_error_line(lfb_train(tiny_ava, tmp_path / "work2",
                                    f"model.lfb.bank_dir={tmp_path / 'bank'}"), 2)
    assert f"{bank.path_npy}: truncated" in line and "extract-lfb" in line


# ------------------------------------------------------------------------------------------------
# 5. --device


@pytest.mark.skipif(torch.cuda.is_available(), reason="plants a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path, tiny_ava, mini_ckpt):
    test = run_stdet("test", MINI, mini_ckpt, "--data-root", tiny_ava, "--device", "cuda",
                     "--out", tmp_path / "results.csv", "--cfg-options", "data.workers=0")
    line = one_error_line(test, 2)
    assert line.startswith("error: --device cuda: no CUDA GPU is available (torch ")
    assert line.endswith("; use --device cpu")
    train = run_stdet("train", MINI, "--data-root", tiny_ava, "--device", "cuda:0", "--work-dir",
                      tmp_path / "work", "--cfg-options", "data.workers=0",
                      "model.backbone.pretrained=None")
    assert "error: --device cuda:0: no CUDA GPU is available" in one_error_line(train, 2)
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "work").exists()


def test_unknown_device_is_one_line(tmp_path, tiny_ava, mini_ckpt):
    proc = run_stdet("test", MINI, mini_ckpt, "--data-root", tiny_ava, "--device", "gpu",
                     "--out", tmp_path / "results.csv")
    assert one_error_line(proc, 2) == ("error: --device gpu: unknown device; use cpu, cuda or "
                                       "cuda:N (N: a GPU index)")


# ------------------------------------------------------------------------------------------------
# 6. a ./stdet folder that shadows the package


def test_a_plain_stdet_folder_does_not_shadow_the_package(tmp_path):
    (tmp_path / "stdet").mkdir()  # e.g. a user's output folder named stdet
    version = run_stdet("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("stdet "), version.stderr
    help_ = run_stdet("eval", "--help", cwd=tmp_path)
    assert help_.returncode == 0 and "--pred" in help_.stdout, help_.stderr
    out = tmp_path / "stdet" / "metrics.json"
    scored = run_stdet("eval", "--gt", EVAL_CASE / "gt.csv", "--pred", EVAL_CASE / "pred.csv",
                       "--label-map", EVAL_CASE / "labels.pbtxt", "--exclude",
                       EVAL_CASE / "excluded.csv", "--json", out, cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert "mAP" in json.loads(out.read_text())


def test_new_errors_derive_from_the_base_and_pickle_whole(tmp_path, disk_full):
    """A DataLoader worker's error reaches the main process as the same error, same line."""
    from stdet.engine.distributed import DeviceError

    with pytest.raises(WriteError) as full:
        atomic_write_text(tmp_path / "x.txt", "x")
    errors = [full.value, WorkDirBusyError(f"{tmp_path} is in use by pid 1 (train)"),
              DeviceError("--device gpu: unknown device")]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert isinstance(copy, StdetError) and copy.exit_code == error.exit_code
    assert isinstance(full.value, RunError) and isinstance(full.value, OSError)
    assert [e.exit_code for e in errors] == [1, 2, 2]
