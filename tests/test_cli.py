import subprocess
import sys

from stdet.cli import build_parser, main
from stdet.data import AVALayout, read_annotations


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "stdet", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "mini-ava" in out


def test_mini_ava_command(tmp_path, capsys):
    assert main(["mini-ava", str(tmp_path), "--seed", "3", "--train-videos", "1", "--val-videos", "1",
                 "--seconds", "8", "--videos"]) == 0
    out = capsys.readouterr().out
    assert "train: 1 videos, 4 keyframes" in out
    layout = AVALayout(tmp_path)
    assert len(read_annotations(layout.ann_file("val"))) == 4
    assert len(list(layout.videos.glob("*.mp4"))) == 2


def test_unknown_command_fails():
    parser = build_parser()
    try:
        parser.parse_args(["nope"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("an unknown command must fail")
