"""The LFB head and its feature bank operators (``stdet.models.fbo``): shapes, the non-local
operator against the paper's equations, avg / max pooling with zero padding, per-clip long-term
features, the mini LFB detectors training end to end, and MMAction2's parameter counts."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from stdet import zoo
from stdet.configs import LFBConfig
from stdet.models import build_detector, count_parameters
from stdet.models.fbo import FBOAvg, FBOMax, FBONonLocal, LFBHead, NonLocalLayer
from test_models import _mini_batch as model_batch

FBOS = ("nl", "avg", "max")
NAMES = {fbo: f"lfb_{fbo}_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb" for fbo in FBOS}
N = 300                                        # 60 s window x 5 features per second


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random (LayerNorm too, so that no affine map is the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / math.sqrt(p[0].numel()))


def inputs(k_rois: int, batch: int, channels: int, lt_channels: int, seed: int = 0,
           dtype=torch.float32, size: int = 4, frames: int = 2):
    """RoI features ``(K, C, T, S, S)``, RoIs ``(K, 5)`` on ``batch`` clips, long-term
    features ``(B, 300, C_lt)``."""
    g = torch.Generator().manual_seed(seed)
    roi_features = torch.randn(k_rois, channels, frames, size, size, generator=g, dtype=dtype)
    rois = torch.cat([torch.randint(batch, (k_rois, 1), generator=g).to(dtype),
                      torch.rand(k_rois, 4, generator=g, dtype=dtype) * 64], dim=1)
    rois[:batch, 0] = torch.arange(batch, dtype=dtype)            # every clip has a RoI
    long_term = torch.randn(batch, N, lt_channels, generator=g, dtype=dtype)
    return roi_features, rois, long_term



def lfb_head(lfb: LFBConfig, in_channels: int) -> LFBHead:
    """The head ``build_detector`` makes for ``model.lfb = lfb`` (the config's values, passed one
    by one)."""
    return LFBHead(in_channels, lfb.fbo, lfb.window_seconds * lfb.max_per_second,
                   lfb.feature_channels, lfb.latent_channels, lfb.num_layers, lfb.dropout)

# ---- shapes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", ["mini", "full"])
@pytest.mark.parametrize("fbo", FBOS)
def test_output_shapes(fbo, scale):
    cfg = zoo.get(NAMES[fbo], scale=scale).model
    lfb = cfg.lfb
    assert lfb.fbo == fbo and lfb.window_seconds * lfb.max_per_second == N
    channels = lfb.feature_channels                      # the backbone's output channels
    assert channels == (256 if scale == "mini" else 2048)
    assert lfb.latent_channels == (64 if scale == "mini" else 512)
    head = lfb_head(lfb, channels).eval()
    expected = channels + (lfb.latent_channels if fbo == "nl" else channels)
    assert head.out_channels == expected
    if scale == "full":
        assert expected == {"nl": 2560, "avg": 4096, "max": 4096}[fbo]
    roi_features, rois, long_term = inputs(3, 2, channels, channels)
    with torch.no_grad():
        out = head(roi_features, None, rois, long_term)
    assert out.shape == (3, expected, 1, 1, 1)
    assert torch.isfinite(out).all()
    # the short-term part is the RoI feature, averaged over time and max-pooled over space
    assert torch.equal(out[:, :channels], roi_features.mean(2, keepdim=True).amax((3, 4), keepdim=True))
    if scale == "mini":
        detector = build_detector(cfg)
        assert detector.backbone.feature_channels == channels
        assert detector.head.classifier.in_features == expected


# ---- FBO non-local against the paper's equations -------------------------------------------------

def reference_non_local(fbo: FBONonLocal, st: torch.Tensor, lt: torch.Tensor) -> torch.Tensor:
    """Wu et al. 2019, FBO_NL with LayerNorm and pre-activation, written with matrices:
    ``st (K, C)``, ``lt (K, N, C_lt)`` -> ``(K, c)``."""
    def linear(conv, x):
        return x @ conv.weight[:, :, 0, 0, 0].T + conv.bias

    s, lt_latent = linear(fbo.st_feat_conv, st), linear(fbo.lt_feat_conv, lt)
    for name in fbo.layer_names:
        layer = getattr(fbo, name)
        c = s.shape[-1]
        q = linear(layer.st_feat_conv, s)                          # (K, c)
        keys = linear(layer.lt_feat_conv, lt_latent)               # (K, N, c)
        values = linear(layer.global_conv, lt_latent)              # (K, N, c)
        attention = torch.softmax(torch.einsum("kc,knc->kn", q, keys) / math.sqrt(c), dim=-1)
        y = torch.einsum("kn,knc->kc", attention, values)
        mean, var = y.mean(-1, keepdim=True), y.var(-1, unbiased=False, keepdim=True)
        y = (y - mean) / torch.sqrt(var + layer.ln.eps)
        y = y * layer.ln.weight.flatten() + layer.ln.bias.flatten()
        s = s + linear(layer.out_conv, torch.relu(y))
    return s


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_non_local_matches_reference(num_layers):
    fbo = FBONonLocal(48, 40, 32, num_layers, dropout=0.2).double().eval()
    randomize_(fbo)
    g = torch.Generator().manual_seed(1)
    st = torch.randn(5, 48, generator=g, dtype=torch.float64)
    lt = torch.randn(5, 17, 40, generator=g, dtype=torch.float64)
    lt[:, 10:] = 0                                                 # zero-padded slots attend too
    with torch.no_grad():
        ours = fbo(st[:, :, None, None, None], lt.transpose(1, 2)[..., None, None])
        ref = reference_non_local(fbo, st, lt)
    assert ours.shape == (5, 32, 1, 1, 1)
    torch.testing.assert_close(ours.flatten(1), ref, rtol=0, atol=1e-6)
    assert (ours.flatten(1) - ref).abs().max() < 1e-10


def test_non_local_dropout_only_in_training():
    fbo = FBONonLocal(16, 16, 8, 2, dropout=0.5)
    st, lt = torch.randn(4, 16, 1, 1, 1), torch.randn(4, 16, 30, 1, 1)
    fbo.eval()
    assert torch.equal(fbo(st, lt), fbo(st, lt))
    fbo.train()
    torch.manual_seed(0)
    a = fbo(st, lt)
    torch.manual_seed(1)
    assert not torch.equal(a, fbo(st, lt))
    no_dropout = FBONonLocal(16, 16, 8, 2, dropout=0.0).train()
    assert torch.equal(no_dropout(st, lt), no_dropout(st, lt))


def test_initialisation_is_mmaction2s():
    """Kaiming normal with fan-out (std sqrt(2 / out_channels)), zero biases, LayerNorm 1 and 0."""
    torch.manual_seed(0)
    fbo = FBONonLocal(2048, 2048, 512, 2)
    convs = [fbo.st_feat_conv, fbo.lt_feat_conv]
    for name in fbo.layer_names:
        layer = getattr(fbo, name)
        assert isinstance(layer, NonLocalLayer)
        convs += [layer.st_feat_conv, layer.lt_feat_conv, layer.global_conv, layer.out_conv]
        assert torch.equal(layer.ln.weight, torch.ones(512, 1, 1, 1))
        assert torch.equal(layer.ln.bias, torch.zeros(512, 1, 1, 1))
    assert len(convs) == 10
    for conv in convs:
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.02)
        assert abs(conv.weight.mean().item()) < 2e-3
    with pytest.raises(ValueError, match="at least one layer"):
        FBONonLocal(8, 8, 4, 0)


# ---- avg / max over the window, zero padding included ---------------------------------------------

@pytest.mark.parametrize("fbo", ["avg", "max"])
def test_avg_max_pool_the_window_with_zero_padding(fbo):
    c = 24
    head = lfb_head(LFBConfig(fbo=fbo, feature_channels=c), c)
    assert isinstance(head.fbo, FBOAvg if fbo == "avg" else FBOMax)
    assert count_parameters(head) == 0
    roi_features, rois, long_term = inputs(6, 3, c, c, seed=2)
    long_term = -long_term.abs() - 0.1                   # every real feature is negative ...
    long_term[0, 40:] = 0                                # ... clip 0: 40 features, zeros after
    long_term[1, :250] = 0                               # clip 1: 50 features at the window's end
    out = head(roi_features, None, rois, long_term)[:, c:, 0, 0, 0]
    sampled = long_term[rois[:, 0].long()]               # (K, N, C)
    if fbo == "avg":
        expected = sampled.mean(dim=1)                    # divided by 300, not by 40 / 50
        assert torch.allclose(out[rois[:, 0] == 0], long_term[0, :40].sum(0) / N, atol=1e-6)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)
    else:
        expected = sampled.amax(dim=1)
        assert torch.equal(out, expected)
        padded = rois[:, 0] != 2                          # clips 0 and 1 have empty slots
        assert torch.equal(out[padded], torch.zeros_like(out[padded]))
        assert (out[~padded] < 0).all()


# ---- every RoI reads its own clip's long-term features --------------------------------------------

@pytest.mark.parametrize("fbo", FBOS)
def test_each_roi_uses_its_clips_long_term_features(fbo):
    c = 16
    head = lfb_head(LFBConfig(fbo=fbo, feature_channels=c, latent_channels=8), c).double().eval()
    randomize_(head, seed=3)
    roi_features, rois, long_term = inputs(7, 3, c, c, seed=4, dtype=torch.float64)
    with torch.no_grad():
        out = head(roi_features, None, rois, long_term)
        # permuting the clips' long-term features = each RoI reading clip perm[i]'s
        perm = torch.tensor([2, 0, 1])
        permuted = head(roi_features, None, rois, long_term[perm])
        moved = rois.clone()
        moved[:, 0] = perm[rois[:, 0].long()].double()
        assert torch.equal(permuted, head(roi_features, None, moved, long_term))
        assert not torch.allclose(permuted, out)
        # one RoI alone with its own clip's features gives the same output
        for k in range(rois.shape[0]):
            clip = int(rois[k, 0])
            alone = rois[k:k + 1].clone()
            alone[:, 0] = 0
            single = head(roi_features[k:k + 1], None, alone, long_term[clip:clip + 1])
            torch.testing.assert_close(single, out[k:k + 1], rtol=0, atol=1e-12)


def test_long_term_is_checked():
    head = lfb_head(LFBConfig(fbo="nl", feature_channels=16, latent_channels=8), 16)
    roi_features, rois, long_term = inputs(2, 2, 16, 16)
    with pytest.raises(ValueError, match=r"needs long-term features \(batch\['long_term'\]\)"):
        head(roi_features, None, rois, None)
    with pytest.raises(ValueError, match=r"\(B, 300, 16\), got \(2, 299, 16\)"):
        head(roi_features, None, rois, long_term[:, 1:])
    with pytest.raises(ValueError, match=r"got \(2, 300, 8\)"):
        head(roi_features, None, rois, long_term[..., :8])
    with pytest.raises(ValueError, match="fbo must be"):
        LFBHead(16, "attention")


# ---- the mini LFB detectors train and predict ---------------------------------------------------

def _mini_batch(cfg, batch: int = 2):
    """test_models' mini batch plus a (batch, N, C) long-term sample with empty seconds."""
    g = torch.Generator().manual_seed(1)
    long_term = torch.randn(batch, N, cfg.model.lfb.feature_channels, generator=g)
    long_term[:, 200:] = 0                               # a window with empty seconds
    return (*model_batch(cfg, batch), long_term)


@pytest.mark.parametrize("fbo", FBOS)
def test_mini_lfb_detector_trains_and_predicts(fbo):
    cfg = zoo.get(NAMES[fbo], scale="mini")
    torch.manual_seed(0)
    model = build_detector(cfg.model).train()
    assert isinstance(model.shared_head, LFBHead)
    clips, proposals, gt_boxes, gt_labels, long_term = _mini_batch(cfg)
    rois, targets = model.training_rois(proposals, gt_boxes, gt_labels,
                                        torch.Generator().manual_seed(0))
    out = model.loss_of(model(clips, rois, long_term), targets)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    fbo_grads = {n: g for n, g in grads.items() if n.startswith("shared_head.fbo.")}
    if fbo == "nl":
        assert len(fbo_grads) == 24                      # 2 projections, 2 x (4 convs + LayerNorm)
        assert all(g.abs().sum() > 0 for g in fbo_grads.values()), \
            [n for n, g in fbo_grads.items() if g.abs().sum() == 0]
    else:
        assert fbo_grads == {}
    channels = model.head.classifier.in_features
    long_term_columns = grads["head.classifier.weight"][:, 256:channels]
    assert long_term_columns.abs().sum() > 0             # the long-term part reaches the classifier
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("backbone."))

    model.eval()
    scores = model.predict(clips, proposals, long_term=long_term)
    assert [s.shape for s in scores] == [(len(p), cfg.model.head.num_classes) for p in proposals]
    assert all(((s >= 0) & (s <= 1)).all() for s in scores)
    other = model.predict(clips, proposals, long_term=torch.zeros_like(long_term))
    assert not torch.allclose(torch.cat(scores), torch.cat(other))

    with pytest.raises(ValueError, match=r"long-term features \(batch\['long_term'\]\)"):
        model(clips, model.training_rois(proposals, gt_boxes, gt_labels)[0])
    with pytest.raises(ValueError, match="long-term features"):
        model.predict(clips, proposals)
    with pytest.raises(ValueError, match="long-term features"):
        model(clips, torch.tensor([[0.0, 0, 0, 50, 50]]))


def test_other_detectors_ignore_long_term():
    cfg = zoo.get("slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb", scale="mini")
    torch.manual_seed(0)
    model = build_detector(cfg.model).eval()
    clips = torch.randn(1, 3, cfg.data.clip_len, 96, 128)
    rois = torch.tensor([[0.0, 10, 10, 60, 90]])
    with torch.no_grad():
        assert torch.equal(model(clips, rois), model(clips, rois, torch.randn(1, N, 8)))


def test_the_lfb_head_follows_model_lfb():
    """An LFB model is one with ``model.lfb``: without it, the same config builds no shared head;
    the ACRN head beside a bank is refused when the config is built, naming both fields."""
    cfg = zoo.get(NAMES["nl"], scale="mini").model
    assert cfg.shared_head == "lfb" and cfg.head.shared_head == "none"
    assert build_detector(replace(cfg, lfb=None)).shared_head is None
    with pytest.raises(ValueError, match="model.head.shared_head='acrn' and model.lfb"):
        replace(cfg, head=replace(cfg.head, shared_head="acrn"))


# ---- parameter counts ---------------------------------------------------------------------------

# MMAction2 1.2.0's FBOHead with the zoo's fbo_cfg (st/lt 2048 channels, latent 512, 2 layers),
# counted in MMAction2 (sum of p.numel() over FBOHead.parameters()); the same by the formula:
# 2 projections 2048 -> 512 (weights and biases) + 2 layers x (4 convs 512 -> 512 + LayerNorm 2 x 512)
FBO_HEAD_PARAMS = {"nl": 4_201_472, "avg": 0, "max": 0}
SLOWONLY_R50_PARAMS = 31_634_496                         # tests/test_models.py


@pytest.mark.parametrize("fbo", FBOS)
def test_parameter_counts_equal_mmaction2(fbo):
    formula = 2 * (2048 * 512 + 512) + 2 * (4 * (512 * 512 + 512) + 2 * 512)
    assert FBO_HEAD_PARAMS["nl"] == formula
    cfg = zoo.get(NAMES[fbo]).model
    with torch.device("meta"):
        model = build_detector(cfg)
    assert count_parameters(model.shared_head) == FBO_HEAD_PARAMS[fbo]
    in_channels = {"nl": 2560, "avg": 4096, "max": 4096}[fbo]   # the configs' bbox_head in_channels
    assert count_parameters(model) == (SLOWONLY_R50_PARAMS + FBO_HEAD_PARAMS[fbo]
                                       + 81 * in_channels + 81)


def test_state_dict_names_are_mmaction2s_without_conv_modules():
    head = lfb_head(LFBConfig(fbo="nl", feature_channels=32, latent_channels=16), 32)
    names = list(head.state_dict())
    assert names[:4] == ["fbo.st_feat_conv.weight", "fbo.st_feat_conv.bias",
                         "fbo.lt_feat_conv.weight", "fbo.lt_feat_conv.bias"]
    layer = ["st_feat_conv.weight", "st_feat_conv.bias", "lt_feat_conv.weight", "lt_feat_conv.bias",
             "global_conv.weight", "global_conv.bias", "ln.weight", "ln.bias", "out_conv.weight",
             "out_conv.bias"]
    assert names[4:] == [f"fbo.non_local_layer_{i}.{n}" for i in (1, 2) for n in layer]
