"""Faults planted in a run: errors from DataLoader workers, skipped keyframes counted across
workers, checkpoints and resumes of another run, degenerate inputs. Each is one line on stderr
(``error: ...``, exit 2 for a mistake in the input) or a counted warning, never a traceback."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import stdet
from stdet import zoo
from stdet.data.dataset import AVADataset
from stdet.data.errors import FrameReadError
from stdet.data.io import work_dir_lock
from stdet.data.layout import AVALayout
from stdet.engine.checkpoint import save_checkpoint
from stdet.engine.logger import read_records
from stdet.models import build_detector

REPO = Path(__file__).resolve().parents[1]
SLOWONLY = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb:mini"
SLOWFAST = "slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb:mini"
BANK = "lfb_slowonly_r50_ava_infer:mini"
TINY = ["optim.batch_per_gpu=4", "optim.lr=0.05", "schedule.epochs=1",
        "model.backbone.pretrained=None"]

pytestmark = pytest.mark.usefixtures("one_thread")


def stdet_cli(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "stdet", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_error_line(run: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """stderr is exactly one line ``error: ...`` holding every fragment; the exit code is
    ``code``."""
    lines = run.stderr.strip().splitlines()
    assert run.returncode == code, run.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def warnings_of(run: subprocess.CompletedProcess) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("warning: ")]


@pytest.fixture
def root(tiny_ava, tmp_path) -> Path:
    """A copy of the tiny mini-AVA that a test may damage."""
    return Path(shutil.copytree(tiny_ava, tmp_path / "ava"))


def corrupt(frames: list[Path]) -> None:
    for frame in frames:
        frame.write_bytes(b"\x00not a jpeg" * 20)


def video_frames(root: Path, split: str) -> tuple[str, list[Path]]:
    """The first video of ``split`` and every one of its frames."""
    video = AVALayout(root).ann_file(split).read_text().split(",", 1)[0]
    return video, sorted((root / "rawframes" / video).glob("img_*.jpg"))


def frames_only_of(root: Path, count: int) -> dict[str, Path]:
    """``count`` val keyframes and, for each, a frame no other val keyframe's test clip reads
    (the keyframe's own frame, where the clips do not overlap on it)."""
    cfg = zoo.resolve(SLOWONLY, data_root=root)
    layout = AVALayout(root)
    ds = AVADataset.from_layout(layout, "val", clip_len=cfg.data.clip_len,
                                frame_interval=cfg.data.frame_interval)
    users: dict[tuple[str, int], list[str]] = {}
    for i in range(len(ds)):
        meta = ds[i]["meta"]
        for index in meta["frame_indices"]:
            users.setdefault((meta["video_id"], int(index)), []).append(meta["img_key"])
    chosen: dict[str, Path] = {}
    for (video, index), keys in users.items():
        if len(keys) == 1 and keys[0] not in chosen and len(chosen) < count:
            chosen[keys[0]] = layout.rawframes / video / f"img_{index:05d}.jpg"
    assert len(chosen) == count
    return chosen


def bank_checkpoint(path: Path) -> Path:
    save_checkpoint(path, build_detector(zoo.resolve(BANK).model))
    return path


def train_once(root: Path, work: Path, *options: str) -> None:
    stdet.train(stdet.config(SLOWONLY, "data.workers=0", *TINY, *options, data_root=root), work,
                validate=False, device="cpu", progress=False)


# ------------------------------------------------------------------------------------------------
# errors raised in DataLoader workers


@pytest.mark.parametrize("command", ["train", "test", "extract-lfb"])
def test_an_unreadable_frame_in_a_worker_is_one_line(command, root, tmp_path):
    video, frames = video_frames(root, "val" if command != "train" else "train")
    corrupt(frames)
    options = ["--cfg-options", "data.workers=2", *TINY]
    if command == "train":
        argv = ["train", SLOWONLY, "--work-dir", str(tmp_path / "w")]
    elif command == "test":
        ckpt = tmp_path / "m.pth"
        save_checkpoint(ckpt, build_detector(zoo.resolve(SLOWONLY).model))
        argv = ["test", SLOWONLY, str(ckpt), "--eval", "mAP"]
    else:
        argv = ["extract-lfb", BANK, str(bank_checkpoint(tmp_path / "b.pth")), "--split", "val",
                "--out", str(tmp_path / "lfb")]
        options = ["--cfg-options", "data.workers=2"]
    run = stdet_cli(*argv, "--data-root", str(root), "--device", "cpu", *options)
    line = assert_one_error_line(run, 2, f"{root / 'rawframes' / video}", "cannot decode")
    assert "DataLoader" not in line and "Traceback" not in run.stderr


def test_a_workers_error_reaches_python_as_itself(root, tmp_path):
    video, frames = video_frames(root, "val")
    corrupt(frames)
    cfg = stdet.config(SLOWONLY, "data.workers=2", data_root=root)
    with pytest.raises(FrameReadError) as info:
        stdet.test(cfg, build_detector(cfg.model), out=tmp_path / "r.csv", device="cpu",
                   progress=False)
    assert Path(info.value.path).parent == root / "rawframes" / video
    assert str(info.value).startswith(info.value.path) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------
# data.on_error=skip: counted across workers, reported


def test_skipped_test_keyframes_are_counted_across_workers(root, tmp_path):
    damaged = frames_only_of(root, 2)
    corrupt(list(damaged.values()))
    ckpt = tmp_path / "m.pth"
    save_checkpoint(ckpt, build_detector(zoo.resolve(SLOWONLY).model))
    out = tmp_path / "results.csv"
    run = stdet_cli("test", SLOWONLY, str(ckpt), "--eval", "mAP", "--out", str(out),
                    "--data-root", str(root), "--device", "cpu",
                    "--cfg-options", "data.workers=2", "data.on_error=skip")
    assert run.returncode == 0, run.stderr[-3000:]
    skips = [w for w in warnings_of(run) if "skipped" in w]
    assert len(skips) == 1 and "skipped 2 of 7 keyframes" in skips[0], run.stderr[-3000:]
    assert all(key in skips[0] for key in damaged)
    scored = {f"{v},{t}" for v, t in (line.split(",")[:2] for line in out.read_text().splitlines())}
    assert scored and not scored & set(damaged)  # skipped keyframes are not scored (nor twice)
    assert len(scored) == 5


def test_skipped_training_keyframes_are_logged_each_epoch(root, tmp_path):
    video, frames = video_frames(root, "train")
    keys = AVADataset.from_layout(AVALayout(root), "train").keys
    damaged = [k for k in keys if k[0] == video]
    corrupt(frames)
    work = tmp_path / "w"
    run = stdet_cli("train", SLOWONLY, "--work-dir", str(work), "--data-root", str(root),
                    "--device", "cpu", "--cfg-options", "data.workers=2", "data.on_error=skip",
                    *TINY, "schedule.epochs=2")
    assert run.returncode == 0, run.stderr[-3000:]
    skips = [r for r in read_records(work / "log.jsonl") if r["mode"] == "skip"]
    assert [r["epoch"] for r in skips] == [1, 2]
    for record in skips:
        # every keyframe of the damaged video is drawn once an epoch and fails (a sample then
        # tries the next keyframe, which may fail too), and only those fail
        assert record["skipped"] >= len(damaged) and len(record["keyframes"]) == min(
            20, record["skipped"])
        assert all(key.startswith(f"{video},") for key in record["keyframes"])
    warned = [w for w in warnings_of(run) if "skipped" in w]
    assert [w.split(":")[1].strip() for w in warned] == ["epoch 1", "epoch 2"]
    assert f"skipped {skips[0]['skipped']} of {len(keys)} keyframes" in warned[0]


def test_the_datasets_count_includes_its_workers_skips(root):
    from stdet.engine.data import build_dataset, eval_loader
    from stdet.engine.distributed import DistInfo

    damaged = frames_only_of(root, 3)
    corrupt(list(damaged.values()))
    dataset = build_dataset(stdet.config(SLOWONLY, "data.on_error=skip", data_root=root), "val")
    loader = eval_loader(dataset, workers=2, info=DistInfo())
    scored = [m["img_key"] for batch in loader for m in batch["meta"]]
    assert sorted(k.split(":")[0] for k in loader.skipped) == sorted(damaged)
    assert dataset.skipped == 3 and len(scored) == len(dataset) - 3
    assert not set(scored) & set(damaged)


# ------------------------------------------------------------------------------------------------
# checkpoints and resumes of another run


def test_test_refuses_another_configs_checkpoint(root, tmp_path):
    ckpt = tmp_path / "slowfast.pth"
    save_checkpoint(ckpt, build_detector(zoo.resolve(SLOWFAST).model))
    run = stdet_cli("test", SLOWONLY, str(ckpt), "--data-root", str(root), "--device", "cpu",
                    "--out", str(tmp_path / "r.csv"), "--cfg-options", "data.workers=0")
    assert_one_error_line(run, 2, str(ckpt), f"does not fit {zoo.resolve(SLOWONLY).name}",
                          "missing", "--lenient")
    assert not (tmp_path / "r.csv").exists()
    lenient = stdet_cli("test", SLOWONLY, str(ckpt), "--lenient", "--data-root", str(root),
                        "--device", "cpu", "--out", str(tmp_path / "r.csv"),
                        "--cfg-options", "data.workers=0")
    assert lenient.returncode == 0 and "missing (kept the model's values)" in lenient.stderr
    assert (tmp_path / "r.csv").is_file()


def test_resume_from_another_configs_checkpoint_is_one_line(root, tmp_path):
    train_once(root, tmp_path / "a")
    run = stdet_cli("train", SLOWFAST, "--work-dir", str(tmp_path / "b"), "--data-root", str(root),
                    "--device", "cpu", "--resume", str(tmp_path / "a" / "latest.pth"),
                    "--cfg-options", "data.workers=0", *TINY)
    assert_one_error_line(run, 2, "cannot resume", zoo.resolve(SLOWONLY).name, "missing")


def test_resume_refuses_changed_fields_and_applies_the_schedule(root, tmp_path):
    work = tmp_path / "w"
    train_once(root, work)
    saved = (work / "config.json").read_text()
    base = ["train", SLOWONLY, "--work-dir", str(work), "--data-root", str(root), "--device",
            "cpu", "--resume", "--cfg-options", "data.workers=0", *TINY]
    run = stdet_cli(*base, "optim.lr=0.01", "model.head.dropout=0.1")
    assert_one_error_line(run, 2, "optim.lr (0.05 -> 0.01)", "model.head.dropout (0.5 -> 0.1)")
    assert (work / "config.json").read_text() == saved  # the refused run changed nothing
    # more epochs: the schedule applies from the resumed epoch on, and the log says so
    run = stdet_cli(*base, "schedule.epochs=2")
    assert run.returncode == 0, run.stderr[-3000:]
    resume = [r for r in read_records(work / "log.jsonl") if r["mode"] == "resume"]
    assert resume == [{"mode": "resume", "epoch": 1, "step": 4,
                       "checkpoint": str(work / "latest.pth"),
                       "changes": ["schedule.epochs: 1 -> 2"]}]
    assert json.loads((work / "config.json").read_text())["schedule"]["epochs"] == 2


def test_resume_drops_the_killed_runs_records(root, tmp_path):
    """A run killed in epoch 2 leaves epoch 2's first records after epoch 1's checkpoint; the
    resumed run replays epoch 2, and the log holds each step once."""
    work = tmp_path / "w"
    train_once(root, work)
    log = work / "log.jsonl"
    records = read_records(log)
    epoch1 = [r for r in records if r["mode"] == "train"]
    assert [r["step"] for r in epoch1] == [1, 2, 3, 4]
    with log.open("a") as f:  # what the kill left behind
        for r in epoch1[:2]:
            f.write(json.dumps({**r, "epoch": 2, "step": r["step"] + 4, "loss": 9.0}) + "\n")
    stdet.train(stdet.config(SLOWONLY, "data.workers=0", *TINY, "schedule.epochs=2",
                             data_root=root), work, validate=False, device="cpu", resume=True,
                progress=False)
    steps = [r["step"] for r in read_records(log) if r["mode"] == "train"]
    assert steps == list(range(1, 9))
    assert all(r["loss"] != 9.0 for r in read_records(log) if r["mode"] == "train")


def test_resume_from_weights_only_is_one_line(root, tmp_path):
    ckpt = tmp_path / "weights.pth"
    save_checkpoint(ckpt, build_detector(zoo.resolve(SLOWONLY).model))
    run = stdet_cli("train", SLOWONLY, "--work-dir", str(tmp_path / "w"), "--data-root", str(root),
                    "--device", "cpu", "--resume", str(ckpt), "--cfg-options", "data.workers=0",
                    *TINY)
    assert_one_error_line(run, 2, "not a training checkpoint", "model.backbone.pretrained=")


def test_one_work_dir_one_training(root, tmp_path):
    work = tmp_path / "w"
    argv = ["train", SLOWONLY, "--work-dir", str(work), "--data-root", str(root), "--device", "cpu",
            "--cfg-options", "data.workers=0", *TINY]
    with work_dir_lock(work, "train"):  # a training running in it
        run = stdet_cli(*argv)
        assert_one_error_line(run, 2, str(work), f"in use by pid {os.getpid()} (train)")
        assert sorted(p.name for p in work.iterdir()) == [".stdet.lock"]
    assert stdet_cli(*argv).returncode == 0
    assert not (work / ".stdet.lock").exists()


# ------------------------------------------------------------------------------------------------
# degenerate runs


def test_an_empty_split_is_refused(root, tmp_path):
    AVALayout(root).ann_file("train").write_text("")
    run = stdet_cli("train", SLOWONLY, "--work-dir", str(tmp_path / "w"), "--data-root", str(root),
                    "--device", "cpu", "--cfg-options", "data.workers=0", *TINY)
    assert_one_error_line(run, 2, str(AVALayout(root).ann_file("train")),
                          "no keyframe to train on")
    assert not (tmp_path / "w" / "latest.pth").exists()


@pytest.mark.parametrize("option, message", [
    ("schedule.epochs=-1", "schedule.epochs must be >= 1, got -1"),
    ("data.clip_len=0", "data.clip_len must be >= 1, got 0"),
])
def test_degenerate_values_are_refused_before_the_run(option, message, root, tmp_path):
    run = stdet_cli("train", SLOWONLY, "--work-dir", str(tmp_path / "w"), "--data-root", str(root),
                    "--device", "cpu", "--cfg-options", "data.workers=2", *TINY, option)
    assert_one_error_line(run, 2, message)
    assert not (tmp_path / "w").exists()
