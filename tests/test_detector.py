"""The detector's one RoI path: ``forward``, ``roi_features``, ``classify_rois``, ``roi_logits``,
``bank_features`` and the complexity count that calls them, on the mini model of each family
(SlowOnly, SlowFast, SlowFast + context, ACRN, LFB), each held to the modules chained by hand."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from stdet import zoo
from stdet.models import build_detector
from stdet.models.complexity import model_complexity

FAMILIES = {
    "slowonly": "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
    "slowfast": "slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
    "context": "slowfast_context_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
    "acrn": "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
    "lfb": "lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb",
}
ROIS = torch.tensor([[0.0, 4, 6, 40, 60], [0, 30, 2, 94, 50], [1, 10, 10, 50, 63]])


def _mini(family: str, seed: int = 0):
    """The family's mini detector (eval), two clips of 64 x 96, and a long-term sample (LFB)."""
    cfg = zoo.get(FAMILIES[family], scale="mini")
    torch.manual_seed(seed)
    model = build_detector(cfg.model).eval()
    clips = torch.randn(2, 3, cfg.data.clip_len, 64, 96)
    return cfg, model, clips, _long_term(cfg, 2, torch.randn)


def _long_term(cfg, batch: int, fill=torch.zeros):
    """A ``(batch, N, C_lt)`` long-term sample for an LFB config, None for the others."""
    lfb = cfg.model.lfb
    if lfb is None:
        return None
    return fill(batch, lfb.window_seconds * lfb.max_per_second, lfb.feature_channels)


def _by_hand(model, clips, rois, long_term):
    """The RoI path chained module by module: features, extractor output, head input, logits."""
    features = model.backbone(clips)
    extracted, context = model.roi_extractor(features, rois)
    head_input = extracted
    if model.shared_head is not None:
        head_input = model.shared_head(extracted, context, rois, long_term)
    return features, extracted, head_input, model.head(head_input)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_forward_is_backbone_roi_features_classify_rois(family):
    cfg, model, clips, long_term = _mini(family)
    features, extracted, head_input, logits = _by_hand(model, clips, ROIS, long_term)
    roi_features = model.roi_features(features, ROIS, long_term)
    torch.testing.assert_close(roi_features, head_input, rtol=0, atol=0)
    torch.testing.assert_close(model.classify_rois(roi_features), logits, rtol=0, atol=0)
    torch.testing.assert_close(model.roi_logits(features, ROIS, long_term), logits, rtol=0, atol=0)
    torch.testing.assert_close(model(clips, ROIS, long_term), logits, rtol=0, atol=0)
    assert logits.shape == (3, cfg.model.head.num_classes)

    # the shapes roi_features documents: C the extractor's channels, S its output size
    channels = sum(f.shape[1] for f in (features if isinstance(features, tuple) else (features,)))
    channels *= 2 if cfg.model.head.with_global else 1
    size = cfg.model.head.roi_size
    assert extracted.shape == (3, channels, 1, size, size)
    if family == "acrn":
        assert roi_features.shape == (3, channels, 1, *features[0].shape[3:])
    elif family == "lfb":
        assert roi_features.shape == (3, model.shared_head.out_channels, 1, 1, 1)
    else:
        assert roi_features.shape == extracted.shape
    assert model.roi_modules() == [m for m in (model.roi_extractor, model.shared_head, model.head)
                                   if m is not None]


@pytest.mark.parametrize("family", ["slowonly", "slowfast", "lfb"])
@torch.no_grad()
def test_bank_features_are_the_extractor_output_max_pooled_over_space(family):
    _, model, clips, long_term = _mini(family, seed=1)
    _, extracted, _, _ = _by_hand(model, clips, ROIS, long_term)
    bank = model.bank_features(clips, ROIS)
    expected = torch.stack([extracted[k, :, 0].flatten(1).max(dim=1).values for k in range(3)])
    torch.testing.assert_close(bank, expected, rtol=0, atol=0)
    assert bank.shape == (3, model.backbone.feature_channels)


@pytest.mark.parametrize("family", ["slowonly", "slowfast", "acrn", "lfb"])
def test_complexity_equals_a_real_cpu_forward(family):
    """Meta-device backbone + CPU RoI part == a real CPU forward, counted here, with 2 RoIs."""
    cfg, model, _, _ = _mini(family)
    shape = (3, cfg.data.clip_len, 64, 96)
    stats = model_complexity(cfg.model, shape, num_rois=2)
    assert stats["params"] == sum(p.numel() for p in model.parameters())
    rois = torch.tensor([[0.0, 0, 0, 96, 64]] * 2)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        _by_hand(model, torch.zeros(1, *shape), rois, _long_term(cfg, 1))
    assert stats["gflops"] * 1e9 == pytest.approx(counter.get_total_flops() // 2, rel=1e-12)


# the zoo table's numbers before the RoI path moved into ActionDetector (full scale, test input)
ZOO_COMPLEXITY = {
    "slowonly": ((3, 4, 256, 341), 31_800_465, 56.784259072),
    "slowfast": ((3, 32, 256, 341), 33_743_993, 71.738120448),
    "acrn": ((3, 32, 256, 341), 92_232_057, 152.819489024),
    "lfb": ((3, 4, 256, 341), 36_043_409, 57.416157696),
}


@pytest.mark.parametrize("family", ZOO_COMPLEXITY)
def test_zoo_complexity_is_unchanged(family):
    shape, params, gflops = ZOO_COMPLEXITY[family]
    cfg = zoo.get(FAMILIES[family])
    assert zoo.test_clip_shape(cfg) == shape
    stats = model_complexity(cfg.model, shape)
    assert stats["params"] == params
    assert stats["gflops"] == pytest.approx(gflops, rel=1e-12)


@pytest.mark.parametrize("family", ["context", "acrn", "lfb"])
def test_backward_is_the_same_every_run(family):
    """The per-RoI gathers of a clip's context, global feature or long-term sample are
    ``index_select``: their backward sums in a fixed order, so the gradients (and with them
    training) are the same bit for bit from run to run on a multi-threaded CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg, model, clips, long_term = _mini(family)
        model.train()
        rois = torch.cat([ROIS] * 40)                    # many RoIs per clip: many adds per row
        grads = []
        for _ in range(5):
            model.zero_grad()
            torch.manual_seed(0)                         # the same dropout masks
            extra = {} if long_term is None else {"long_term": long_term.requires_grad_()}
            out = model(clips, rois, **extra)
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        assert all(torch.equal(grads[0], g) for g in grads[1:])
    finally:
        torch.set_num_threads(threads)
