"""What stands between a converted MMAction2 checkpoint and its published number, besides the
evaluation protocol and the preprocessing: which keyframes a custom-class test scores, how the
classifier starts, and the temporal pooling an MMAction2 1.x ACRN checkpoint was trained with."""
from __future__ import annotations

import math
import warnings

import pandas as pd
import pytest
import torch

import stdet
from stdet import cli, zoo
from stdet.data.annotations import read_annotations, read_excluded_timestamps
from stdet.data.layout import AVALayout
from stdet.engine.checkpoint import (convert_checkpoint, load_checkpoint, mmaction2_origin,
                                     read_checkpoint, save_checkpoint)
from stdet.models import build_detector
from stdet.models.heads import BBoxHeadAVA

SLOWONLY = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb"
ACRN = "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb"
CUSTOM = [7, 14]  # AVA ids of mini-AVA that some of its val keyframes lack

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------
# custom classes at test time


def scored_keyframes(path) -> set[tuple[str, int]]:
    rows = pd.read_csv(path, header=None)
    return {(v, int(t)) for v, t in zip(rows[0], rows[1])}


def test_custom_class_tests_score_the_keyframes_with_the_classes_by_default(tiny_ava, tmp_path):
    options = [f"data.custom_classes={CUSTOM}", f"model.head.num_classes={len(CUSTOM) + 1}",
               "model.head.topk=(1,)", "data.workers=0"]
    cfg = stdet.config(f"{SLOWONLY}:mini", *options, data_root=tiny_ava)
    assert cfg.data.custom_keyframes == "with_classes"
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    layout = AVALayout(tiny_ava)
    excluded = read_excluded_timestamps(layout.exclude_file("val"))
    gt = {k: v for k, v in read_annotations(layout.ann_file("val")).items() if k not in excluded}
    with_classes = {k for k, kf in gt.items() if any(set(a) & set(CUSTOM) for a in kf.actions)}
    assert 0 < len(with_classes) < len(gt)  # the case has keyframes without the classes

    mm = stdet.test(cfg, model, out=tmp_path / "mm.csv", device="cpu", progress=False)
    every = stdet.test(stdet.config(cfg, "data.custom_keyframes=all"), model,
                       out=tmp_path / "all.csv", device="cpu", progress=False)
    assert scored_keyframes(tmp_path / "mm.csv") == with_classes  # MMAction2's keyframes
    assert scored_keyframes(tmp_path / "all.csv") == set(gt)
    # the same detections where both score; elsewhere only false positives (no ground truth of
    # the classes there), so the official protocol's mAP can only drop
    both = pd.read_csv(tmp_path / "all.csv", header=None)
    both = both[[(v, int(t)) in with_classes for v, t in zip(both[0], both[1])]]
    assert both.reset_index(drop=True).equals(pd.read_csv(tmp_path / "mm.csv", header=None))
    assert every.map <= mm.map + 1e-12


# ------------------------------------------------------------------------------------------------
# classifier initialisation


@pytest.mark.parametrize("init", ["normal", "xavier"])
def test_classifier_initialisation(init):
    torch.manual_seed(0)
    head = BBoxHeadAVA(2304, 81, init=init)
    weight = head.classifier.weight
    expected = 0.01 if init == "normal" else math.sqrt(2 / (2304 + 81))
    assert abs(weight.mean().item()) < 0.1 * expected
    assert weight.std().item() == pytest.approx(expected, rel=0.02)
    assert torch.count_nonzero(head.classifier.bias) == 0


def test_full_size_configs_start_their_classifier_as_the_published_runs():
    for name in zoo.names():
        cfg = stdet.config(name)
        assert cfg.model.head.init == "normal", name
    torch.manual_seed(0)
    model = build_detector(stdet.config(SLOWONLY).model)
    assert model.head.classifier.weight.std().item() == pytest.approx(0.01, rel=0.02)


# ------------------------------------------------------------------------------------------------
# MMAction2 1.x ACRN checkpoints


MM1_ACRN_CFG = """model = dict(type='FastRCNN', roi_head=dict(type='AVARoIHead',
    bbox_roi_extractor=dict(type='SingleRoIExtractor3D', roi_layer_type='RoIAlign',
                            output_size=8, with_temporal_pool=True),
    shared_head=dict(type='ACRNHead', in_channels=4608, out_channels=2304)))"""
MM0_ACRN_CFG = MM1_ACRN_CFG.replace("with_temporal_pool=True)",
                                    "with_temporal_pool=True,\n temporal_pool_mode='max')")


@pytest.mark.parametrize("obj, origin", [
    ({"meta": {"mmengine_version": "0.10.4", "cfg": MM1_ACRN_CFG}, "state_dict": {}},
     {"version": "1.x", "temporal_pool": "avg"}),
    ({"meta": {"mmcv_version": "1.7.0", "config": MM0_ACRN_CFG}, "state_dict": {}},
     {"version": "0.x", "temporal_pool": "max"}),
    ({"meta": {"mmengine_version": "0.10.4", "cfg": MM0_ACRN_CFG}, "state_dict": {}},
     {"version": "1.x", "temporal_pool": "max"}),  # the text decides
    ({"meta": {"epoch": 10}, "message_hub": {},
      "state_dict": {"roi_head.shared_head.conv1.conv.weight": torch.zeros(1)}},
     {"version": "1.x", "temporal_pool": "avg"}),  # 1.x ACRN weights without the text
    ({"meta": {"mmengine_version": "0.10.4"}, "state_dict": {"backbone.x": torch.zeros(1)}},
     {"version": "1.x", "temporal_pool": None}),
    ({"meta": {"config": "slowonly_mini"}, "state_dict": {"backbone.stem.conv.weight": 0}}, {}),
    ({"meta": {"converted_from": "x.pth"}, "state_dict": {}},
     {"version": "converted", "temporal_pool": None}),  # converted by an earlier stdet
    ({"state_dict": {"backbone.conv1.conv.weight": 0}}, {"version": "unknown", "temporal_pool": None}),
])
def test_what_an_mmaction2_checkpoint_says_of_itself(obj, origin):
    assert mmaction2_origin(obj) == origin


def test_an_mmaction2_1x_acrn_checkpoint_names_the_setting_it_needs(tiny_ava, tmp_path):
    cfg = stdet.config(f"{ACRN}:mini", data_root=tiny_ava)
    assert cfg.model.head.temporal_pool == "max"  # 0.x's ACRN
    model = build_detector(cfg.model)
    mm1 = tmp_path / "acrn_mm1.pth"
    save_checkpoint(mm1, model, meta={"mmengine_version": "0.10.4", "cfg": MM1_ACRN_CFG})
    report = load_checkpoint(build_detector(cfg.model), mm1)
    assert report.covers and report.notes == [
        f"{mm1} is an MMAction2 1.x checkpoint whose RoI features are pooled over time by "
        f"average (its ACRN config dropped 0.x's temporal_pool_mode='max'); this model pools by "
        f"max: set model.head.temporal_pool=avg"]
    assert load_checkpoint(build_detector(stdet.config(cfg, "model.head.temporal_pool=avg").model),
                           mm1).notes == []
    # convert keeps what the file said of itself; test warns in one line
    converted = tmp_path / "converted.pth"
    convert_checkpoint(mm1, converted)
    assert read_checkpoint(converted)["meta"]["mmaction2"] == {"version": "1.x", "temporal_pool": "avg"}
    options = ["--data-root", str(tiny_ava), "--device", "cpu", "--out", str(tmp_path / "r.csv"),
               "--cfg-options", "data.workers=0"]
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert cli.main(["test", f"{ACRN}:mini", str(converted), *options]) == 0
    assert [str(w.message) for w in warned] == [report.notes[0].replace(str(mm1), str(converted))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli.main(["test", f"{ACRN}:mini", str(converted), *options,
                         "model.head.temporal_pool=avg"]) == 0


def test_stdet_checkpoints_have_no_notes(tmp_path):
    path = tmp_path / "m.pth"
    model = build_detector(stdet.config(f"{ACRN}:mini").model)
    save_checkpoint(path, model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(build_detector(stdet.config(f"{ACRN}:mini").model), path).notes == []
