"""Backbones, the zoo and its configs: every config builds and trains at mini scale, runs at full
scale, and the backbones have MMAction2 1.2.0's parameter counts."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from stdet import zoo
from stdet.cli import main
from stdet.configs import Config, apply_overrides, valid_keys
from stdet.mini import (MINI_FINETUNE_EPOCHS, MINI_FINETUNE_LR_PER_CLIP, MINI_LR_PER_CLIP,
                        MINI_WIDTH_DIVISOR, mini)
from stdet.models import NonLocal3d, SlowFast, SlowOnly, build_backbone, build_detector, count_parameters
from stdet.models.complexity import model_complexity
from stdet.models.slowfast import temporal_subsample

# The AVA model zoo's config names, as published (SEED_ZOO.md).
PUBLISHED_NAMES = [
    "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
    "slowonly_omnisource_pretrained_r50_4x16x1_20e_ava_rgb",
    "slowonly_nl_kinetics_pretrained_r50_4x16x1_10e_ava_rgb",
    "slowonly_nl_kinetics_pretrained_r50_8x8x1_10e_ava_rgb",
    "slowonly_kinetics_pretrained_r101_8x8x1_20e_ava_rgb",
    "slowonly_omnisource_pretrained_r101_8x8x1_20e_ava_rgb",
    "slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
    "slowfast_context_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
    "slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb",
    "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava_rgb",
    "lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb",
    "lfb_avg_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb",
    "lfb_max_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb",
    "slowfast_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
    "slowfast_temporal_max_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
    "slowfast_temporal_max_focal_alpha3_gamma1_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
    "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
    "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes",
    "slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes",
]
LFB_NAMES = [n for n in PUBLISHED_NAMES if n.startswith("lfb_")]
BUILDABLE = [n for n in PUBLISHED_NAMES if n not in LFB_NAMES]


def _unique_models(names):
    """One config name per distinct ModelConfig (several configs share a model)."""
    seen, out = set(), []
    for n in names:
        key = repr(zoo.get(n).model)
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out


# ---- parameter counts (MMAction2 1.2.0, same settings) --------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb", 31_634_496),
    ("slowonly_nl_kinetics_pretrained_r50_4x16x1_10e_ava_rgb", 38_988_864),
    ("slowonly_kinetics_pretrained_r101_8x8x1_20e_ava_rgb", 59_539_520),
    ("slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb", 33_557_288),
    ("slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb", 33_643_560),
])
def test_backbone_parameter_counts_equal_mmaction2(name, expected):
    with torch.device("meta"):
        backbone = build_backbone(zoo.get(name).model.backbone)
    assert count_parameters(backbone) == expected


# ---- every config: full scale forward, mini scale forward + backward --------------------------

@pytest.mark.parametrize("name", _unique_models(BUILDABLE))
def test_full_scale_forward_on_small_input(name):
    cfg = zoo.get(name)
    torch.manual_seed(0)
    model = build_detector(cfg.model).eval()
    clips = torch.randn(2, 3, cfg.data.clip_len, 64, 96)
    rois = torch.tensor([[0, 0, 0, 96, 64], [1, 10, 5, 50, 60], [1, 40, 8, 90, 60.0]])
    with torch.no_grad():
        logits = model(clips, rois)
    assert logits.shape == (3, cfg.model.head.num_classes)
    assert torch.isfinite(logits).all()


def _mini_batch(cfg: Config, batch: int = 2):
    g = torch.Generator().manual_seed(0)
    h, w = 96, 128
    clips = torch.randn(batch, 3, cfg.data.clip_len, h, w, generator=g)
    num_classes = cfg.model.head.num_classes
    gt_boxes, gt_labels, proposals = [], [], []
    for i in range(batch):
        boxes = torch.tensor([[10.0, 20, 50, 90], [60, 10, 110, 80]])[: i + 1]
        labels = torch.zeros(len(boxes), num_classes)
        labels[:, 1 + i] = 1
        labels[0, num_classes - 1] = 1
        gt_boxes.append(boxes)
        gt_labels.append(labels)
        proposals.append(torch.cat([boxes + 1.0, torch.tensor([[0.0, 0, 30, 30]])]))
    return clips, proposals, gt_boxes, gt_labels


@pytest.mark.parametrize("name", BUILDABLE)
def test_mini_scale_trains_and_predicts(name):
    cfg = zoo.get(name, scale="mini")
    assert cfg.scale == "mini" and cfg.name == f"{name}_mini"
    torch.manual_seed(0)
    model = build_detector(cfg.model).train()
    clips, proposals, gt_boxes, gt_labels = _mini_batch(cfg)
    rois, targets = model.training_rois(proposals, gt_boxes, gt_labels,
                                        torch.Generator().manual_seed(0))
    out = model.loss_of(model(clips, rois), targets)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    assert {"recall@top3", "prec@top5"} <= set(out)
    out["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert grads["head.classifier.weight"].abs().sum() > 0
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("backbone."))
    model.eval()
    scores = model.predict(clips, proposals)
    assert [s.shape for s in scores] == [(len(p), cfg.model.head.num_classes) for p in proposals]
    assert all(((s >= 0) & (s <= 1)).all() for s in scores)


@pytest.mark.parametrize("name", LFB_NAMES)
def test_lfb_configs_build_and_run_with_long_term_features(name):
    """Full scale on a small input, with a (B, 300, 2048) long-term sample per clip (mini scale
    training: tests/test_fbo.py)."""
    cfg = zoo.get(name)
    assert cfg.model.lfb is not None and cfg.model.shared_head == "lfb"
    torch.manual_seed(0)
    model = build_detector(cfg.model).eval()
    clips = torch.randn(2, 3, cfg.data.clip_len, 64, 96)
    rois = torch.tensor([[0, 0, 0, 96, 64], [1, 10, 5, 50, 60], [1, 40, 8, 90, 60.0]])
    long_term = torch.randn(2, 300, 2048)
    with torch.no_grad():
        logits = model(clips, rois, long_term)
        assert logits.shape == (3, cfg.model.head.num_classes)
        assert torch.isfinite(logits).all()
        with pytest.raises(ValueError, match="long-term features"):
            model(clips, rois)


# ---- backbone details ------------------------------------------------------------------------

def test_output_shapes_and_stride_16():
    slow_only = SlowOnly(base_channels=8, stage_blocks=(1, 1, 1, 1)).eval()
    assert slow_only(torch.randn(1, 3, 4, 64, 96)).shape == (1, 256, 4, 4, 6)
    slow_fast = SlowFast(base_channels=16, channel_ratio=4, resample_rate=4, speed_ratio=4,
                         fusion_kernel=7, stage_blocks=(1, 1, 1, 1)).eval()
    slow, fast = slow_fast(torch.randn(1, 3, 32, 64, 96))
    assert slow.shape == (1, 512, 8, 4, 6) and fast.shape == (1, 128, 32, 4, 6)
    assert slow_fast.feature_channels == 512 + 128


@pytest.mark.parametrize("strides", [(1, 2, 2, 1), (1, 2, 1, 1), (2, 2, 2, 2)])
def test_roi_extractor_reads_the_map_at_the_backbones_stride(strides):
    """RoIAlign's scale is the stride the backbone's map really has (a box in input pixels lands
    on the same place of the map, whatever the stages' strides)."""
    cfg = zoo.get("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb", "mini")
    model_cfg = dataclasses.replace(cfg.model, backbone=dataclasses.replace(
        cfg.model.backbone, spatial_strides=strides, pretrained=None))
    detector = build_detector(model_cfg).eval()
    height, width = 128, 192
    with torch.no_grad():
        features = detector.backbone(torch.randn(1, 3, 4, height, width))
    assert detector.roi_extractor.spatial_scale == features.shape[-1] / width == features.shape[-2] / height


@pytest.mark.parametrize("frames, rate", [(32, 8), (32, 4), (30, 8), (32, 1), (7, 2)])
def test_temporal_subsample_is_nearest_resampling(frames, rate):
    clip = torch.randn(1, 2, frames, 3, 3)
    expected = F.interpolate(clip, mode="nearest", scale_factor=(1.0 / rate, 1.0, 1.0))
    assert torch.equal(temporal_subsample(clip, rate), expected)


def test_slowfast_rejects_incompatible_rates():
    with pytest.raises(ValueError, match="multiple of speed_ratio"):
        SlowFast(resample_rate=6, speed_ratio=4)


def test_non_local_is_identity_at_init_and_matches_reference():
    torch.manual_seed(0)
    block = NonLocal3d(8).eval()
    x = torch.randn(2, 8, 3, 4, 6)
    assert torch.equal(block(x), x)  # zero-initialised output BN
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    block.out_bn.running_mean.normal_()
    block.out_bn.running_var.uniform_(0.5, 1.5)

    def conv(layer, t):
        return torch.einsum("oc,bcthw->bothw", layer.weight[:, :, 0, 0, 0], t) + (
            0 if layer.bias is None else layer.bias.view(1, -1, 1, 1, 1))

    def pool(t):  # max over 2x2 spatial windows
        b, c, tt, h, w = t.shape
        return t.view(b, c, tt, h // 2, 2, w // 2, 2).amax(dim=(4, 6))

    q = conv(block.theta, x).flatten(2)                    # (B, C', N)
    k = pool(conv(block.phi, x)).flatten(2)                # (B, C', N/4)
    v = pool(conv(block.g, x)).flatten(2)
    att = torch.softmax(torch.einsum("bcn,bcm->bnm", q, k) / math.sqrt(4), dim=-1)
    y = torch.einsum("bnm,bcm->bcn", att, v).view(2, 4, 3, 4, 6)
    z = conv(block.out_conv, y)
    bn = block.out_bn
    z = (z - bn.running_mean.view(1, -1, 1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1, 1) + bn.eps)
    z = z * bn.weight.view(1, -1, 1, 1, 1) + bn.bias.view(1, -1, 1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + z)


# ---- zoo and configs ----------------------------------------------------------------------------

def test_zoo_has_exactly_the_published_names():
    assert sorted(zoo.names()) == sorted(PUBLISHED_NAMES)


def test_zoo_settings_of_a_few_configs():
    sf = zoo.get("slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb")
    assert (sf.model.backbone.resample_rate, sf.model.backbone.speed_ratio,
            sf.model.backbone.fusion_kernel) == (4, 4, 7)
    assert (sf.data.clip_len, sf.data.frame_interval, sf.published.map) == (32, 2, 25.5)
    focal = zoo.get("slowfast_temporal_max_focal_alpha3_gamma1_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb")
    assert (focal.model.head.focal_alpha, focal.model.head.focal_gamma,
            focal.model.head.temporal_pool) == (3.0, 1.0, "max")
    assert focal.schedule.policy == "cosine" and focal.data.version == "2.2"
    custom = zoo.get("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes")
    assert custom.model.head.num_classes == len(custom.data.custom_classes) + 1 == 17
    assert max(custom.model.head.topk) < custom.model.head.num_classes
    context = zoo.get("slowfast_context_kinetics_pretrained_r50_4x16x1_20e_ava_rgb")
    assert build_detector(context.model).head.classifier.in_features == 4608


def test_unknown_name_suggests_close_ones():
    with pytest.raises(KeyError, match="did you mean slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb"):
        zoo.get("slowfast_kinetics_pretrained_r50_8x8x1_20e_ava")


def test_mini_counterpart():
    full = zoo.get("slowfast_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb")
    small = mini(full, pretrained=zoo.mini_pretrained(full.name))
    assert zoo.get(full.name + "_mini") == small == zoo.get(full.name, scale="mini")
    assert small.model.backbone.arch == full.model.backbone.arch
    assert (small.data.clip_len, small.data.frame_interval) == (32, 2)
    assert small.optim.lr == pytest.approx(MINI_FINETUNE_LR_PER_CLIP * small.optim.batch_per_gpu)
    assert mini(full).optim.lr == pytest.approx(MINI_LR_PER_CLIP * small.optim.batch_per_gpu)
    assert small.optim.reference_batch == small.optim.batch_per_gpu
    assert small.schedule.policy == "cosine" and small.published.map is None
    assert small.model.backbone.base_channels * MINI_WIDTH_DIVISOR == full.model.backbone.base_channels
    step = mini(zoo.get("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb"))
    assert (step.schedule.epochs, step.schedule.milestones, step.schedule.warmup_epochs) == (8, (6, 7), 0.5)
    assert mini(full, epochs=12).schedule.epochs == 12
    assert mini(small) is small
    assert count_parameters(build_detector(small.model)) < 2_000_000


def test_zoo_backbones_start_from_the_published_kinetics_checkpoint():
    for name in zoo.names():
        cfg = zoo.get(name)
        pretrained = cfg.model.backbone.pretrained
        assert pretrained.startswith("https://") and pretrained.endswith(".pth"), name
        small = zoo.get(name, scale="mini")
        if name in zoo.MINI_FROM_SCRATCH:
            assert small.model.backbone.pretrained is None, name
            assert small.optim.lr == MINI_LR_PER_CLIP * small.optim.batch_per_gpu, name
        else:  # the mini SlowOnly's checkpoint stands in for Kinetics
            assert small.model.backbone.pretrained == f"work_dirs/{zoo.MINI_BASE}_mini/latest.pth"
            assert small.optim.lr == MINI_FINETUNE_LR_PER_CLIP * small.optim.batch_per_gpu, name
            assert small.schedule.epochs == MINI_FINETUNE_EPOCHS, name


def test_overrides_are_typed_and_typos_list_valid_keys():
    cfg = zoo.get("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb")
    new = apply_overrides(cfg, ["model.head.dropout=0.3", "optim.lr=1", "data.custom_classes=[3, 6]",
                                "model.head.with_global=true", "schedule.milestones=(4,8)"])
    assert new.model.head.dropout == 0.3 and isinstance(new.optim.lr, float) and new.optim.lr == 1.0
    assert new.data.custom_classes == (3, 6) and new.model.head.with_global is True
    assert new.schedule.milestones == (4, 8) and cfg.model.head.dropout == 0.5
    # `str | None` fields take a path or None; a single number fills a tuple field
    paths = apply_overrides(cfg, ["model.backbone.pretrained=/data/k400/slowonly.pth",
                                  "schedule.milestones=5"])
    assert paths.model.backbone.pretrained == "/data/k400/slowonly.pth"
    assert paths.schedule.milestones == (5,)
    assert apply_overrides(cfg, ["model.backbone.pretrained=None"]).model.backbone.pretrained is None
    assert "model.backbone.depth" in valid_keys(cfg)
    with pytest.raises(KeyError, match="model.head.dropout"):
        apply_overrides(cfg, ["model.head.dropuot=0.3"])
    with pytest.raises(ValueError, match="optim.lr"):
        apply_overrides(cfg, ["optim.lr=fast"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        apply_overrides(cfg, ["optim.lr"])
    assert dataclasses.replace(cfg) == cfg


def test_complexity_on_meta_equals_a_real_run():
    cfg = zoo.get("slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb", scale="mini")
    stats = model_complexity(cfg.model, (3, 32, 96, 128))
    model = build_detector(cfg.model).eval()
    assert stats["params"] == count_parameters(model)
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 96, 128), torch.tensor([[0.0, 0, 0, 128, 96]]))
    assert stats["gflops"] == pytest.approx(counter.get_total_flops() / 2 / 1e9)


def test_zoo_table_and_cli(capsys):
    df = zoo.table("mini", contains="slowonly_kinetics")
    assert list(df["config"]) == ["slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_mini",
                                  "slowonly_kinetics_pretrained_r101_8x8x1_20e_ava_rgb_mini",
                                  "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes_mini"]
    assert (df["params (M)"] > 0).all() and (df["GFLOPs"] > 0).all()
    full = zoo.table("full", complexity=False)
    detectors = full[full["config"] != zoo.LFB_BANK_CONFIG]   # and the bank model's row
    assert len(detectors) == len(PUBLISHED_NAMES) == len(full) - 1 and detectors["mAP"].notna().all()
    assert main(["zoo", "--filter", "acrn", "--no-complexity"]) == 0
    out = capsys.readouterr().out
    assert "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb" in out and "27.8" in out


def test_published_maps_are_percent_and_scaled_lr_is_exact_at_the_reference_batch():
    for name in zoo.names():
        cfg = zoo.get(name)
        for value in (cfg.published.map, cfg.published.custom_classes_map):
            assert value is None or 10 < value < 60, (name, value)
        assert cfg.optim.scaled_lr(cfg.optim.reference_batch) == cfg.optim.lr, name
        assert cfg.optim.scaled_lr(2 * cfg.optim.reference_batch) == 2 * cfg.optim.lr, name
