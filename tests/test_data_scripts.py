"""Tests of the AVA preparation scripts in data_scripts/, run as subprocesses."""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "data_scripts"
sys.path.insert(0, str(SCRIPTS_DIR))
import _common  # noqa: E402

SCRIPTS = ["download_annotations", "download_videos", "cut_videos",
           "extract_frames", "fetch_proposals", "check_frames"]
VIDEO = "-clipA.mp4"  # AVA ids may start with a dash
VIDEO_ID = "-clipA"
CUT = ["--start", "1", "--duration", "2"]
CHECK = ["--duration", "2"]


def run(script: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``data_scripts/SCRIPT.py ARGS`` from ``cwd``."""
    cmd = [sys.executable, str(SCRIPTS_DIR / f"{script}.py"), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def snapshot(folder: Path) -> dict[str, int]:
    """Relative path -> mtime of everything under ``folder``."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def write_video(path: Path, seconds: int = 4, fps: int = 30) -> None:
    """Write a tiny mpeg4 video whose frames have distinct gray levels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(seconds * fps):
            image = np.full((48, 64, 3), (2 * i) % 256, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def frames_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with one video, cut to 2 s and extracted to frames."""
    root = tmp_path_factory.mktemp("ava") / "R"
    write_video(root / "videos" / VIDEO)
    for script, args in [("cut_videos", CUT), ("extract_frames", [])]:
        proc = run(script, "--root", root, *args, cwd=root.parent)
        assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture
def root_copy(frames_root: Path, tmp_path: Path) -> Path:
    """A private copy of ``frames_root`` that a test may change."""
    return Path(shutil.copytree(frames_root, tmp_path / "R"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_zero(script: str, tmp_path: Path) -> None:
    proc = run(script, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--root" in proc.stdout and "--dry-run" in proc.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_root_is_required(script: str, tmp_path: Path) -> None:
    assert run(script, cwd=tmp_path).returncode != 0


# --- cut / extract / check ---------------------------------------------------

def test_cut_and_extract_produce_expected_frames(frames_root: Path) -> None:
    assert (frames_root / "videos_15min" / VIDEO).is_file()
    frames = sorted((frames_root / "rawframes" / VIDEO_ID).glob("img_*.jpg"))
    assert len(frames) == 60
    assert frames[0].name == "img_00001.jpg" and frames[-1].name == "img_00060.jpg"
    assert not list(frames_root.rglob(".tmp-*"))


def test_check_frames_passes_and_writes_json(root_copy: Path) -> None:
    report = root_copy / "report.json"
    proc = run("check_frames", "--root", root_copy, *CHECK, "--json", report,
               cwd=root_copy)
    assert proc.returncode == 0, proc.stderr
    assert VIDEO_ID in proc.stdout
    data = json.loads(report.read_text())
    assert data["expected"] == 60 and data["bad"] == []
    assert data["videos"] == [{"video": VIDEO_ID, "count": 60, "max_index": 60,
                               "missing": [], "ok": True}]


def test_check_frames_expected_default_is_27030(root_copy: Path) -> None:
    proc = run("check_frames", "--root", root_copy, cwd=root_copy)
    assert proc.returncode == 1
    assert f"{VIDEO_ID}: 60 frames, expected 27030" in proc.stderr


def test_check_frames_flags_deleted_frame(root_copy: Path) -> None:
    (root_copy / "rawframes" / VIDEO_ID / "img_00010.jpg").unlink()
    proc = run("check_frames", "--root", root_copy, *CHECK, cwd=root_copy)
    assert proc.returncode == 1
    assert f"{VIDEO_ID}: 59 frames, expected 60" in proc.stderr
    assert "img_00010.jpg" in proc.stderr


def test_check_frames_flags_gap_with_right_count(root_copy: Path) -> None:
    frames = root_copy / "rawframes" / VIDEO_ID
    (frames / "img_00010.jpg").rename(frames / "img_00061.jpg")
    proc = run("check_frames", "--root", root_copy, "--expected", "60", cwd=root_copy)
    assert proc.returncode == 1
    assert VIDEO_ID in proc.stderr and "img_00010.jpg" in proc.stderr


def test_check_frames_names_every_short_video(root_copy: Path) -> None:
    for name, count in [("short1", 3), ("short2", 59)]:
        folder = root_copy / "rawframes" / name
        folder.mkdir()
        for i in range(1, count + 1):
            (folder / f"img_{i:05d}.jpg").write_bytes(b"")
    (root_copy / "rawframes" / ".tmp-unfinished").mkdir()
    proc = run("check_frames", "--root", root_copy, *CHECK, cwd=root_copy)
    assert proc.returncode == 1
    assert "short1: 3 frames, expected 60" in proc.stderr
    assert "short2: 59 frames, expected 60" in proc.stderr
    assert f"{VIDEO_ID}:" not in proc.stderr and "unfinished" not in proc.stdout


def test_check_frames_missing_folder_fails(tmp_path: Path) -> None:
    proc = run("check_frames", "--root", tmp_path, cwd=tmp_path)
    assert proc.returncode == 1 and str(tmp_path / "rawframes") in proc.stderr


def test_second_run_skips(root_copy: Path) -> None:
    before = snapshot(root_copy)
    for script, args in [("cut_videos", CUT), ("extract_frames", [])]:
        proc = run(script, "--root", root_copy, *args, cwd=root_copy)
        assert proc.returncode == 0, proc.stderr
        assert "skipped 1 already present" in proc.stdout
    assert snapshot(root_copy) == before


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "R"
    write_video(root / "videos" / VIDEO)
    before = snapshot(root)
    proc = run("cut_videos", "--root", root, *CUT, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "would cut" in proc.stdout and VIDEO in proc.stdout
    assert snapshot(root) == before
    (root / "videos_15min").mkdir()
    shutil.copy(root / "videos" / VIDEO, root / "videos_15min" / VIDEO)
    before = snapshot(root)
    proc = run("extract_frames", "--root", root, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "would extract" in proc.stdout
    assert snapshot(root) == before


def test_check_frames_dry_run_writes_no_json(root_copy: Path) -> None:
    report = root_copy / "report.json"
    proc = run("check_frames", "--root", root_copy, *CHECK, "--json", report,
               "--dry-run", cwd=root_copy)
    assert proc.returncode == 0 and not report.exists()


def test_broken_video_is_reported_and_leaves_no_output(tmp_path: Path) -> None:
    root = tmp_path / "R"
    write_video(root / "videos" / VIDEO, seconds=3)
    (root / "videos" / "broken.mp4").write_bytes(b"not a video")
    proc = run("cut_videos", "--root", root, *CUT, cwd=tmp_path)
    assert proc.returncode == 1
    assert "broken.mp4" in proc.stderr
    assert sorted(p.name for p in (root / "videos_15min").iterdir()) == [VIDEO]


def test_extract_replaces_stale_temp_dir(tmp_path: Path) -> None:
    root = tmp_path / "R"
    write_video(root / "videos_15min" / VIDEO, seconds=1)
    stale = root / "rawframes" / f".tmp-{VIDEO_ID}"
    stale.mkdir(parents=True)
    (stale / "img_09999.jpg").write_bytes(b"")
    proc = run("extract_frames", "--root", root, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists()
    assert len(list((root / "rawframes" / VIDEO_ID).glob("img_*.jpg"))) == 30


# --- downloads ----------------------------------------------------------------

@pytest.fixture
def server(tmp_path: Path) -> Path:
    """A folder served through file:// URLs with fake AVA files."""
    srv = tmp_path / "server"
    srv.mkdir()
    with zipfile.ZipFile(srv / "ava_v2.2.zip", "w") as archive:
        archive.writestr("ava_v2.2/", "")
        archive.writestr("ava_v2.2/ava_train_v2.2.csv", "vid,0902,0.1,0.2,0.3,0.4,12,0\n")
        archive.writestr("ava_v2.2/ava_val_v2.2.csv", "vid,0903,0.1,0.2,0.3,0.4,80,1\n")
    (srv / "trainval").mkdir()
    for name in ["-a1.mkv", "b2.mp4", "c3.webm"]:
        (srv / "trainval" / name).write_bytes(name.encode() * 100)
    (srv / "list.txt").write_text("-a1.mkv\nb2.mp4\n\nc3.webm\n")
    for split in ["train", "val"]:
        with open(srv / f"ava_dense_proposals_{split}.FAIR.recall_93.9.pkl", "wb") as f:
            pickle.dump({f"vid,{split}": np.zeros((1, 5))}, f)
    return srv


def test_download_annotations(server: Path, tmp_path: Path) -> None:
    root = tmp_path / "R"
    args = ["--root", root, "--url-base", server.as_uri()]
    proc = run("download_annotations", *args, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0 and "would download" in proc.stdout
    assert not root.exists()
    proc = run("download_annotations", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ann = root / "annotations"
    assert (ann / "ava_train_v2.2.csv").read_text().startswith("vid,0902")
    assert (ann / "ava_val_v2.2.csv").is_file() and not (ann / "ava_v2.2").exists()
    assert (ann / ".ava_v2.2.done").read_text().split() == [
        "ava_train_v2.2.csv", "ava_val_v2.2.csv"]
    before = snapshot(root)
    proc = run("download_annotations", *args, cwd=tmp_path)
    assert proc.returncode == 0 and "skipped" in proc.stdout
    assert snapshot(root) == before


def test_download_annotations_reextracts_lost_file(server: Path, tmp_path: Path) -> None:
    root = tmp_path / "R"
    args = ["--root", root, "--url-base", server.as_uri()]
    assert run("download_annotations", *args, cwd=tmp_path).returncode == 0
    (root / "annotations" / "ava_val_v2.2.csv").unlink()
    (server / "ava_v2.2.zip").unlink()  # the kept zip is reused, no download
    assert run("download_annotations", *args, cwd=tmp_path).returncode == 0
    assert (root / "annotations" / "ava_val_v2.2.csv").is_file()


def test_download_annotations_missing_url(server: Path, tmp_path: Path) -> None:
    root = tmp_path / "R"
    proc = run("download_annotations", "--root", root, "--url-base", server.as_uri(),
               "--version", "2.1", cwd=tmp_path)
    assert proc.returncode == 1
    assert (server / "ava_v2.1.zip").as_uri() in proc.stderr
    assert not list(root.rglob("*.part"))


def test_download_annotations_bad_zip(server: Path, tmp_path: Path) -> None:
    (server / "ava_v2.2.zip").write_bytes(b"not a zip")
    proc = run("download_annotations", "--root", tmp_path / "R",
               "--url-base", server.as_uri(), cwd=tmp_path)
    assert proc.returncode == 1 and "ava_v2.2.zip" in proc.stderr


def test_download_videos(server: Path, tmp_path: Path) -> None:
    root = tmp_path / "R"
    args = ["--root", root, "--file-list", (server / "list.txt").as_uri(),
            "--url-base", (server / "trainval").as_uri()]
    proc = run("download_videos", *args, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.count("would download") == 3
    assert not root.exists()
    proc = run("download_videos", *args, "--limit", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (root / "videos").iterdir()) == ["-a1.mkv", "b2.mp4"]
    before = snapshot(root / "videos")
    proc = run("download_videos", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 2 already present" in proc.stdout
    assert (root / "videos" / "c3.webm").read_bytes() == b"c3.webm" * 100
    after = snapshot(root / "videos")
    assert {name: after[name] for name in before} == before


def test_download_videos_reports_every_failure(server: Path, tmp_path: Path) -> None:
    root = tmp_path / "R"
    file_list = tmp_path / "list.txt"  # a local path, not a URL
    file_list.write_text("gone1.mkv\nb2.mp4\ngone2.mp4\n")
    proc = run("download_videos", "--root", root, "--file-list", file_list,
               "--url-base", (server / "trainval").as_uri(), cwd=tmp_path)
    assert proc.returncode == 1
    assert "gone1.mkv" in proc.stderr and "gone2.mp4" in proc.stderr
    assert sorted(p.name for p in (root / "videos").iterdir()) == ["b2.mp4"]


def test_download_videos_missing_file_list(tmp_path: Path) -> None:
    proc = run("download_videos", "--root", tmp_path / "R",
               "--file-list", tmp_path / "nope.txt", cwd=tmp_path)
    assert proc.returncode == 1 and "nope.txt" in proc.stderr


def test_fetch_proposals(server: Path, tmp_path: Path) -> None:
    root = tmp_path / "R"
    args = ["--root", root, "--url-base", server.as_uri(), "--splits", "train", "val"]
    proc = run("fetch_proposals", *args, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.count("would download") == 2
    assert not root.exists()
    assert run("fetch_proposals", *args, cwd=tmp_path).returncode == 0
    path = root / "annotations" / "ava_dense_proposals_val.FAIR.recall_93.9.pkl"
    with open(path, "rb") as f:
        assert list(pickle.load(f)) == ["vid,val"]
    before = snapshot(root)
    proc = run("fetch_proposals", *args, cwd=tmp_path)
    assert proc.returncode == 0 and "skipped 2 already present" in proc.stdout
    assert snapshot(root) == before


def test_fetch_proposals_missing_split(server: Path, tmp_path: Path) -> None:
    proc = run("fetch_proposals", "--root", tmp_path / "R", "--url-base", server.as_uri(),
               cwd=tmp_path)
    assert proc.returncode == 1
    assert "ava_dense_proposals_test.FAIR.recall_93.9.pkl" in proc.stderr
    assert (tmp_path / "R/annotations/ava_dense_proposals_train.FAIR.recall_93.9.pkl"
            ).is_file()


# --- _common ------------------------------------------------------------------

def test_download_skips_existing_and_cleans_part(server: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "list.txt"
    assert _common.download((server / "list.txt").as_uri(), dest) is True
    assert _common.download("file:///does/not/exist", dest) is False
    with pytest.raises(_common.ScriptError, match="missing.txt"):
        _common.download((server / "missing.txt").as_uri(), tmp_path / "missing.txt")
    assert not list(tmp_path.glob("*.part"))


def test_find_ffmpeg_falls_back_to_imageio(monkeypatch: pytest.MonkeyPatch) -> None:
    import imageio_ffmpeg
    monkeypatch.setattr(_common.shutil, "which", lambda name: None)
    assert _common.find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(_common.ScriptError, match="ffmpeg not found"):
        _common.find_ffmpeg()
