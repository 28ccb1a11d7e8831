import subprocess
import sys

from stdet.cli import build_parser, main
from stdet.data import AVALayout, read_annotations


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "stdet", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in ("mini-ava", "zoo", "convert"):
        assert command in out


def test_convert_command_checks_against_a_config(tmp_path, capsys):
    import torch

    from stdet import build_detector, load_checkpoint, zoo

    name = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_mini"
    model = build_detector(zoo.get(name).model)
    mm_names = {k.replace("backbone.stem.conv.", "backbone.conv1.conv.")
                 .replace("head.classifier.", "roi_head.bbox_head.fc_cls."): v
                for k, v in model.state_dict().items()}
    src = tmp_path / "mmaction.pth"
    torch.save({"state_dict": mm_names, "meta": {"epoch": 20}}, src)
    assert main(["convert", str(src), str(tmp_path / "ok.pth"), "--config", name]) == 0
    out = capsys.readouterr().out
    assert "loaded" in out and "missing" not in out
    report = load_checkpoint(build_detector(zoo.get(name).model), tmp_path / "ok.pth", strict=True)
    assert not report.missing

    # the custom-class config has a 17-class head: the 81-class file does not fit, nothing written
    other = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes_mini"
    assert main(["convert", str(src), str(tmp_path / "bad.pth"), "--config", other]) == 2
    width = zoo.get(other).model.backbone.base_channels * 32  # the backbone's output channels
    captured = capsys.readouterr()
    assert f"head.classifier.weight: file (81, {width}) vs model (17, {width})" in captured.out
    assert captured.err.startswith("error: ") and "nothing written" in captured.err
    assert not (tmp_path / "bad.pth").exists()


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
