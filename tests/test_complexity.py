"""Training memory counted without full-size arithmetic (``stdet.models.training_memory``)."""
from __future__ import annotations

import pytest
import torch

import stdet
from stdet.models import saved_bytes, training_memory

MINI = {"slowonly": "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
        "acrn": "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
        "lfb": "lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb"}
BOX = (8.0, 4.0, 40.0, 60.0)


def test_saved_bytes_counts_each_storage_once_and_leaves_out_the_excluded():
    x = torch.randn(1000, requires_grad=True)
    assert saved_bytes(lambda: (x.exp() * 2).sum())[0] == 4000        # exp keeps its output
    w = torch.randn(1000, requires_grad=True)
    y = torch.randn(1000)
    # mul keeps both inputs: x and w (y needs no grad, w's own grad needs y)
    with_w, _ = saved_bytes(lambda: (x * w * y).sum())
    without_w, _ = saved_bytes(lambda: (x * w * y).sum(), exclude=[w])
    assert with_w - without_w == 4000
    view = x[:500]
    assert saved_bytes(lambda: view.exp().sum() + x.exp().sum())[0] == 2000 + 4000


@pytest.mark.parametrize("family", list(MINI))
def test_training_memory_adds_up_and_the_roi_part_is_linear(family):
    cfg = stdet.config(MINI[family] + ":mini")
    shape = (3, cfg.data.clip_len, 64, 64)
    one, two, five = (training_memory(cfg.model, shape, batch=2, num_rois=r, box=BOX)
                      for r in (1, 2, 5))
    assert one["params"] == stdet.models.count_parameters(stdet.build_detector(cfg.model))
    assert one["state"] == 16 * one["params"]
    for m in (one, two, five):
        assert m["total"] == m["state"] + m["backbone"] + m["roi_part"]
        assert m["backbone"] == one["backbone"] > 0
    assert five["roi_part"] - one["roi_part"] == 4 * (two["roi_part"] - one["roi_part"]) > 0
    # the backbone's activations grow with the batch (all but BatchNorm's per-channel statistics),
    # the state does not
    four = training_memory(cfg.model, shape, batch=4, num_rois=1, box=BOX)
    assert 1.95 * one["backbone"] < four["backbone"] <= 2 * one["backbone"]
    assert four["state"] == one["state"]
    assert four["roi_part"] == 2 * one["roi_part"]
