"""Checkpoint reading, MMAction2 -> stdet key conversion and loading (``stdet.engine.checkpoint``).

Fake MMAction2 checkpoints are built from the key lists recorded from MMAction2 1.2.0 in
``tests/fixtures/mmaction2_keys`` (every tensor holds its own random values, so a tensor loaded
under the wrong name is caught); the other tests use the small ("mini") models or tiny dicts.
Full-size models are built but never run.
"""
from __future__ import annotations

import builtins
import os
import pathlib
import pickle
import sys
import types
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from stdet import zoo
from stdet.data.errors import AVADataError
from stdet.engine.checkpoint import (_Inert, convert_checkpoint, convert_state_dict,
                                     init_backbone, load_checkpoint, load_state_dict_file, read_checkpoint,
                                     save_checkpoint)
from stdet.models import build_backbone, build_detector

KEYS = Path(__file__).parent / "fixtures" / "mmaction2_keys"

# zoo config -> MMAction2 backbone key list
BACKBONES = {
    "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb": "slowonly_r50",
    "slowonly_nl_kinetics_pretrained_r50_4x16x1_10e_ava_rgb": "slowonly_r50_nl",
    "slowonly_kinetics_pretrained_r101_8x8x1_20e_ava_rgb": "slowonly_r101",
    "slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb": "slowfast_r50_4x16",
    "slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb": "slowfast_r50_8x8",
}
ACRN = "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb"
SLOWONLY = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb"
SLOWFAST = "slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb"
LFB = {fbo: f"lfb_{fbo}_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb"
       for fbo in ("nl", "avg", "max")}


def read_keys(name: str) -> dict[str, tuple[int, ...]]:
    """``key -> shape`` of a recorded MMAction2 key list."""
    shapes = {}
    for line in (KEYS / f"{name}.txt").read_text().splitlines():
        key, shape = line.split(" ", 1)
        shapes[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes


def pattern(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """A float tensor of ``shape`` whose element ``[i, j, k, ...]`` is ``r[i + 2j + 3k + ...]`` for
    a random vector ``r``: values vary along every dimension and differ from tensor to tensor, yet
    the storage (what ``torch.save`` writes) is a few thousand numbers, which keeps full-size
    checkpoints a few hundred KB instead of hundreds of MB."""
    strides = tuple(range(1, len(shape) + 1))
    base = torch.randn(1 + sum((n - 1) * s for n, s in zip(shape, strides)), generator=g)
    return base.as_strided(shape, strides)


@lru_cache(maxsize=4)
def fake_weights(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Tensors of the shapes of key list ``name`` (keys unprefixed), see :func:`pattern`;
    ``num_batches_tracked`` are int64 scalars, each a different number."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, (key, shape) in enumerate(read_keys(name).items()):
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(1000 + i, dtype=torch.int64)
        else:
            out[key] = pattern(shape, g)
    return out


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def bbox_head(in_channels: int, num_classes: int = 81, seed: int = 1) -> dict[str, torch.Tensor]:
    """MMAction2 ``BBoxHeadAVA`` weights under their detector names."""
    assert read_keys("bbox_head_ava_in2304") == {"fc_cls.weight": (81, 2304), "fc_cls.bias": (81,)}
    g = torch.Generator().manual_seed(seed)
    return {"roi_head.bbox_head.fc_cls.weight": pattern((num_classes, in_channels), g),
            "roi_head.bbox_head.fc_cls.bias": pattern((num_classes,), g)}


def load_clean(cfg, file_state: dict, path):
    """Save MMAction2-named ``file_state`` to ``path`` and load it strictly into a detector of
    ``cfg`` (whose own names pass the converter unchanged): nothing missing or left over."""
    torch.save({"state_dict": file_state}, path)
    detector = build_detector(cfg)
    own = detector.state_dict()
    assert list(convert_state_dict(own)) == list(own)         # stdet names pass unchanged
    report = load_checkpoint(detector, path, strict=True)
    assert report.missing == report.unexpected == report.mismatched == []
    return detector, report


def assert_loaded(model: torch.nn.Module, file_state: dict[str, torch.Tensor], prefix: str = ""):
    """Every tensor of ``model`` equals the file's tensor under the converted name (and the file
    has no tensor the model lacks)."""
    converted = convert_state_dict(file_state)
    assert len(converted) == len(file_state), "two MMAction2 keys map to one stdet key"
    converted = {k[len(prefix):]: v for k, v in converted.items() if k.startswith(prefix)}
    own = model.state_dict()
    assert sorted(own) == sorted(converted)
    for key, value in own.items():
        assert value.dtype == converted[key].dtype, key
        assert torch.equal(value, converted[key]), key


def clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


@pytest.fixture(scope="module")
def mini_cfg():
    return zoo.get(SLOWFAST, scale="mini").model


@pytest.fixture
def mini_detector(mini_cfg):
    torch.manual_seed(0)
    return build_detector(mini_cfg)


@pytest.fixture
def trained_state(mini_cfg):
    """A mini detector's weights (stdet names) that differ from a fresh model's everywhere,
    buffers included."""
    torch.manual_seed(1)
    model = build_detector(mini_cfg)
    g = torch.Generator().manual_seed(2)
    state = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        else:
            state[key] = torch.full_like(value, 7)
    return state


# ------------------------------------------------------------------------------------------------
# 1. full-size MMAction2 key lists load strictly


@pytest.mark.parametrize("config, keys", BACKBONES.items(), ids=BACKBONES.values())
def test_mmaction2_checkpoints_load_strict(tmp_path, config, keys):
    """The backbone of an MMAction2 detector checkpoint into a bare backbone, and a whole
    detector checkpoint into the detector."""
    cfg = zoo.get(config).model
    backbone = build_backbone(cfg.backbone)
    detector = build_detector(cfg)
    own = detector.state_dict()
    assert list(convert_state_dict(own)) == list(own)         # stdet names pass unchanged

    # the backbone of an MMAction2 detector checkpoint into a bare backbone
    file_state = prefixed("backbone.", fake_weights(keys, seed=0))
    assert sum(k.endswith("num_batches_tracked") for k in file_state) > 0
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": file_state, "meta": {"epoch": 20}}, path)
    report = load_checkpoint(backbone, path, strict=True)
    assert report.missing == report.unexpected == report.mismatched == []
    assert len(report.loaded) == len(file_state) == len(backbone.state_dict())
    assert_loaded(backbone, file_state, prefix="backbone.")
    del backbone

    # a whole MMAction2 detector checkpoint into the detector
    in_channels = 2304 if cfg.backbone.arch == "slowfast" else 2048
    assert detector.shared_head is None
    file_state = {**prefixed("backbone.", fake_weights(keys, seed=1)), **bbox_head(in_channels)}
    path = tmp_path / "detector.pth"
    torch.save({"state_dict": file_state}, path)
    report = load_checkpoint(detector, path, strict=True)
    assert report.missing == report.unexpected == report.mismatched == []
    assert {"head.classifier.weight", "head.classifier.bias"} <= set(report.loaded)
    assert_loaded(detector, file_state)


def test_mmaction2_acrn_detector_loads_strict(tmp_path):
    cfg = zoo.get(ACRN).model
    assert cfg.head.shared_head == "acrn"
    acrn = read_keys("acrn_head_in4608")
    assert acrn["conv1.conv.weight"] == (2304, 4608, 1, 1, 1)
    file_state = {**prefixed("backbone.", fake_weights("slowfast_r50_8x8")),
                  **prefixed("roi_head.shared_head.", fake_weights("acrn_head_in4608", seed=3)),
                  **bbox_head(2304)}
    detector, report = load_clean(cfg, file_state, tmp_path / "acrn.pth")
    assert {f"shared_head.{k}" for k in ("conv1.weight", "bn1.running_var", "conv2.weight",
                                         "bn2.num_batches_tracked")} <= set(report.loaded)
    assert_loaded(detector, file_state)


@pytest.mark.parametrize("fbo", LFB)
def test_mmaction2_lfb_detector_loads_strict(tmp_path, fbo):
    """An MMAction2 LFB detector: SlowOnly R50, FBOHead (``fbo.*``, ConvModules inside the
    non-local layers; avg / max have no weights) and a BBoxHeadAVA on 2560 / 4096 channels."""
    cfg = zoo.get(LFB[fbo]).model
    assert cfg.shared_head == "lfb" and cfg.lfb.fbo == fbo
    fbo_keys = read_keys("fbo_head_nl_in2048")
    assert len(fbo_keys) == 24
    assert fbo_keys["fbo.non_local_layer_2.out_conv.conv.weight"] == (512, 512, 1, 1, 1)
    in_channels = {"nl": 2560, "avg": 4096, "max": 4096}[fbo]
    file_state = {**prefixed("backbone.", fake_weights("slowonly_r50", seed=4)),
                  **bbox_head(in_channels, seed=4)}
    if fbo == "nl":
        file_state.update(prefixed("roi_head.shared_head.",
                                   fake_weights("fbo_head_nl_in2048", seed=5)))
    detector, report = load_clean(cfg, file_state, tmp_path / f"lfb_{fbo}.pth")
    shared = [k for k in report.loaded if k.startswith("shared_head.")]
    if fbo == "nl":
        assert len(shared) == 24
        assert {"shared_head.fbo.st_feat_conv.weight",
                "shared_head.fbo.non_local_layer_1.global_conv.bias",
                "shared_head.fbo.non_local_layer_2.ln.weight"} <= set(shared)
    else:
        assert shared == []
    assert_loaded(detector, file_state)


# ------------------------------------------------------------------------------------------------
# 2. the name mapping, written out independently

MAPPING = {
    "backbone.conv1.conv.weight": "backbone.stem.conv.weight",
    "backbone.conv1.bn.running_var": "backbone.stem.bn.running_var",
    "backbone.layer1.0.conv2.bn.running_mean": "backbone.layer1.0.bn2.running_mean",
    "backbone.layer4.2.conv3.conv.weight": "backbone.layer4.2.conv3.weight",
    "backbone.layer1.0.downsample.conv.weight": "backbone.layer1.0.downsample.0.weight",
    "backbone.layer3.0.non_local_block.phi.0.conv.bias": "backbone.layer3.0.non_local.phi.bias",
    "backbone.layer2.2.non_local_block.g.0.conv.weight": "backbone.layer2.2.non_local.g.weight",
    "backbone.layer2.0.non_local_block.theta.conv.weight": "backbone.layer2.0.non_local.theta.weight",
    "backbone.layer3.4.non_local_block.conv_out.conv.weight":
        "backbone.layer3.4.non_local.out_conv.weight",
    "backbone.layer2.0.non_local_block.conv_out.bn.running_var":
        "backbone.layer2.0.non_local.out_bn.running_var",
    "backbone.slow_path.conv1.conv.weight": "backbone.slow.stem.conv.weight",
    "backbone.fast_path.conv1.bn.weight": "backbone.fast.stem.bn.weight",
    "backbone.slow_path.layer3.5.conv1.bn.bias": "backbone.slow.layer3.5.bn1.bias",
    "backbone.fast_path.layer1.0.downsample.bn.weight": "backbone.fast.layer1.0.downsample.1.weight",
    "backbone.slow_path.conv1_lateral.conv.weight": "backbone.laterals.0.weight",
    "backbone.slow_path.layer1_lateral.conv.weight": "backbone.laterals.1.weight",
    "backbone.slow_path.layer2_lateral.conv.weight": "backbone.laterals.2.weight",
    "backbone.slow_path.layer3_lateral.conv.weight": "backbone.laterals.3.weight",
    "roi_head.shared_head.conv1.conv.weight": "shared_head.conv1.weight",
    "roi_head.shared_head.conv2.bn.bias": "shared_head.bn2.bias",
    "roi_head.shared_head.fbo.st_feat_conv.weight": "shared_head.fbo.st_feat_conv.weight",
    "roi_head.shared_head.fbo.lt_feat_conv.bias": "shared_head.fbo.lt_feat_conv.bias",
    "roi_head.shared_head.fbo.non_local_layer_1.st_feat_conv.conv.weight":
        "shared_head.fbo.non_local_layer_1.st_feat_conv.weight",
    "roi_head.shared_head.fbo.non_local_layer_1.global_conv.conv.bias":
        "shared_head.fbo.non_local_layer_1.global_conv.bias",
    "roi_head.shared_head.fbo.non_local_layer_2.lt_feat_conv.conv.weight":
        "shared_head.fbo.non_local_layer_2.lt_feat_conv.weight",
    "roi_head.shared_head.fbo.non_local_layer_2.ln.weight": "shared_head.fbo.non_local_layer_2.ln.weight",
    "roi_head.shared_head.fbo.non_local_layer_2.out_conv.conv.weight":
        "shared_head.fbo.non_local_layer_2.out_conv.weight",
    "roi_head.bbox_head.fc_cls.weight": "head.classifier.weight",
    "roi_head.bbox_head.fc_cls.bias": "head.classifier.bias",
}


def test_convert_state_dict_literal_mapping():
    state = {k: torch.full((1,), float(i)) for i, k in enumerate(MAPPING)}
    out = convert_state_dict(state)
    assert list(out) == [MAPPING[k] for k in state]
    for key, value in state.items():
        assert out[MAPPING[key]] is value


def test_literal_keys_are_recorded_mmaction2_keys():
    """The literal sources are real MMAction2 names; with the strict loads above this makes the
    literal targets real stdet names."""
    recorded = {"backbone." + k for name in BACKBONES.values() for k in read_keys(name)}
    recorded |= {"roi_head.shared_head." + k for k in read_keys("acrn_head_in4608")}
    recorded |= {"roi_head.shared_head." + k for k in read_keys("fbo_head_nl_in2048")}
    recorded |= {"roi_head.bbox_head." + k for k in read_keys("bbox_head_ava_in2304")}
    assert set(MAPPING) <= recorded


@pytest.mark.parametrize("config", [SLOWONLY, "slowonly_nl_kinetics_pretrained_r50_4x16x1_10e_ava_rgb",
                                    SLOWFAST, ACRN, LFB["nl"]])
def test_stdet_names_pass_unchanged(config):
    state = build_detector(zoo.get(config, scale="mini").model).state_dict()
    out = convert_state_dict(state)
    assert list(out) == list(state)
    assert all(out[k] is state[k] for k in state)


# ------------------------------------------------------------------------------------------------
# 3. a Kinetics recognizer checkpoint into a detector


@pytest.fixture(scope="module")
def slowonly_detector():
    """One full-size SlowOnly R50 detector shared by the tests below (building it takes a while);
    each of them loads values no other test uses, so what an earlier one left does not matter."""
    return build_detector(zoo.get(SLOWONLY).model)


@pytest.fixture(scope="module")
def kinetics_ckpt(tmp_path_factory):
    g = torch.Generator().manual_seed(5)
    state = {**prefixed("backbone.", fake_weights("slowonly_r50", seed=5)),
             "cls_head.fc_cls.weight": pattern((400, 2048), g),
             "cls_head.fc_cls.bias": pattern((400,), g)}
    path = tmp_path_factory.mktemp("kinetics") / "slowonly_r50_4x16x1_256e_kinetics400_rgb.pth"
    torch.save({"meta": {"epoch": 256}, "state_dict": state}, path)
    return path, state


def test_kinetics_checkpoint_strict_raises_and_leaves_model(kinetics_ckpt, slowonly_detector):
    path, _ = kinetics_ckpt
    before = clone_state(slowonly_detector)
    with pytest.raises(KeyError) as err:
        load_checkpoint(slowonly_detector, path, strict=True)
    message = str(err.value)
    for key in ("cls_head.fc_cls.weight", "cls_head.fc_cls.bias", "head.classifier.weight",
                "head.classifier.bias"):
        assert key in message
    assert_same_state(clone_state(slowonly_detector), before)


def test_kinetics_checkpoint_into_detector(kinetics_ckpt, slowonly_detector):
    path, file_state = kinetics_ckpt
    head_before = clone_state(slowonly_detector.head)
    report = load_checkpoint(slowonly_detector, path)
    assert sorted(report.unexpected) == ["cls_head.fc_cls.bias", "cls_head.fc_cls.weight"]
    assert sorted(report.missing) == ["head.classifier.bias", "head.classifier.weight"]
    assert report.mismatched == []
    assert "cls_head" in str(report) and "head.classifier.weight" in str(report)
    backbone_file = {k: v for k, v in file_state.items() if k.startswith("backbone.")}
    assert_loaded(slowonly_detector.backbone, backbone_file, prefix="backbone.")
    assert_same_state(clone_state(slowonly_detector.head), head_before)


def test_init_backbone_takes_the_kinetics_backbone_only(kinetics_ckpt, slowonly_detector):
    path, file_state = kinetics_ckpt
    head_before = clone_state(slowonly_detector.head)
    report = init_backbone(slowonly_detector, path)
    assert report.unexpected == report.missing == report.mismatched == []
    backbone_file = {k: v for k, v in file_state.items() if k.startswith("backbone.")}
    assert_loaded(slowonly_detector.backbone, backbone_file, prefix="backbone.")
    assert_same_state(clone_state(slowonly_detector.head), head_before)


def test_init_backbone_slowonly_into_slowfast(tmp_path):
    """A mini SlowOnly detector's backbone becomes a mini SlowFast's slow pathway: the SlowFast
    model's slow features are then the SlowOnly model's on the slow frames, whatever the fast
    pathway computes, because the slow convs' lateral input channels start at zero."""
    from stdet.models.slowfast import temporal_subsample

    torch.manual_seed(0)
    slowonly = build_detector(zoo.get(SLOWONLY, scale="mini").model).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for bn in (m for m in slowonly.modules() if isinstance(m, torch.nn.BatchNorm3d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    save_checkpoint(tmp_path / "so.pth", slowonly)
    for name in (SLOWFAST, ACRN, "slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb"):
        torch.manual_seed(1)
        slowfast = build_detector(zoo.get(name, scale="mini").model).eval()
        fast_before = clone_state(slowfast.backbone.fast)
        head_before = clone_state(slowfast.head)
        report = init_backbone(slowfast, tmp_path / "so.pth")
        assert report.unexpected == report.mismatched == [], name
        assert report.missing and all(k.startswith(("backbone.fast.", "backbone.laterals."))
                                      for k in report.missing), name
        assert report.loaded == sorted(f"backbone.slow.{k}" for k in slowonly.backbone.state_dict()), name
        assert_same_state(clone_state(slowfast.backbone.fast), fast_before)
        assert_same_state(clone_state(slowfast.head), head_before)
        conv1 = slowfast.backbone.slow.layer1[0].conv1.weight
        c = slowonly.backbone.layer1[0].conv1.weight.shape[1]
        assert conv1.shape[1] > c and torch.equal(conv1[:, :c], slowonly.backbone.layer1[0].conv1.weight)
        assert not conv1[:, c:].any()
        clip = torch.randn(2, 3, 32, 96, 128)
        with torch.no_grad():
            slow, _ = slowfast.backbone(clip)
            expected = slowonly.backbone(temporal_subsample(clip, slowfast.backbone.resample_rate))
        torch.testing.assert_close(slow, expected, rtol=1e-5, atol=1e-5)


def test_init_backbone_without_backbone_weights(tmp_path):
    save_checkpoint(tmp_path / "head.pth", {"head.classifier.weight": torch.zeros(2, 2)})
    model = build_detector(zoo.get(SLOWONLY, scale="mini").model)
    with pytest.raises(KeyError, match="head.pth: no backbone"):
        init_backbone(model, tmp_path / "head.pth")


# ------------------------------------------------------------------------------------------------
# 4. a bare backbone takes only backbone.* keys


def test_bare_backbone_takes_only_backbone_keys(tmp_path, mini_cfg, trained_state):
    # stdet-named detector weights plus a stray top-level key the backbone also has a name for
    backbone = build_backbone(mini_cfg.backbone)
    stray_name = next(iter(backbone.state_dict()))            # e.g. "slow.stem.conv.weight"
    stray = torch.zeros_like(backbone.state_dict()[stray_name]) - 3
    path = tmp_path / "det.pth"
    torch.save({"state_dict": {**trained_state, stray_name: stray}}, path)
    report = load_checkpoint(backbone, path, strict=True)
    assert report.unexpected == report.missing == report.mismatched == []
    assert len(report.loaded) == len(backbone.state_dict())
    expected = {k[len("backbone."):]: v for k, v in trained_state.items() if k.startswith("backbone.")}
    assert_same_state(backbone.state_dict(), expected)
    assert not torch.equal(backbone.state_dict()[stray_name], stray)


# ------------------------------------------------------------------------------------------------
# 5. shape mismatch


def test_shape_mismatch_reported_not_loaded(tmp_path, mini_cfg, trained_state):
    channels = trained_state["head.classifier.weight"].shape[1]
    assert trained_state["head.classifier.weight"].shape[0] == 81
    small = build_detector(replace(mini_cfg, head=replace(mini_cfg.head, num_classes=17)))
    head_before = clone_state(small.head)
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, trained_state)
    report = load_checkpoint(small, path)
    assert sorted(report.mismatched) == [
        "head.classifier.bias: file (81,) vs model (17,)",
        f"head.classifier.weight: file (81, {channels}) vs model (17, {channels})"]
    assert sorted(report.missing) == ["head.classifier.bias", "head.classifier.weight"]
    assert report.unexpected == []
    assert_same_state(clone_state(small.head), head_before)
    for key, value in small.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, trained_state[key]), key
    with pytest.raises(KeyError, match="head.classifier.weight: file"):
        load_checkpoint(small, path, strict=True)


# ------------------------------------------------------------------------------------------------
# 6. containers and the DataParallel prefix


@pytest.mark.parametrize("wrap", ["state_dict", "model", "bare"])
@pytest.mark.parametrize("module_prefix", [False, True])
def test_checkpoint_layouts(tmp_path, mini_detector, trained_state, wrap, module_prefix):
    state = prefixed("module.", trained_state) if module_prefix else dict(trained_state)
    obj = state if wrap == "bare" else {wrap: state, "meta": {"epoch": 3}, "optimizer": {}}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    report = load_checkpoint(mini_detector, path, strict=True)
    assert len(report.loaded) == len(trained_state)
    assert_same_state(mini_detector.state_dict(), trained_state)
    assert all(not k.startswith("module.") for k in load_state_dict_file(path))


def test_module_prefix_with_mmaction2_names(tmp_path):
    file_state = {"module.backbone.conv1.conv.weight": torch.ones(1),
                  "module.roi_head.bbox_head.fc_cls.bias": torch.zeros(2)}
    path = tmp_path / "dp.pth"
    torch.save({"state_dict": file_state}, path)
    assert sorted(load_state_dict_file(path)) == ["backbone.stem.conv.weight", "head.classifier.bias"]


# ------------------------------------------------------------------------------------------------
# 7. MMAction2 1.x training state (mmengine objects, numpy scalars)

FAKE_MODULE = "fake_mmengine_logging"
FAKE_SOURCE = '''
import numpy as np

class HistoryBuffer:
    def __init__(self, values):
        self._log_history = np.asarray(values, dtype=np.float64)
        self._count_history = np.ones(len(values))
        self.max_length = 1000000
'''


class _ImportSpy:
    """A ``sys.meta_path`` finder that records attempts to import the fake module."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == FAKE_MODULE:
            self.asked.append(name)


@pytest.fixture
def mmengine_checkpoint(tmp_path, monkeypatch, trained_state):
    """Write an MMAction2 1.x-like checkpoint (zip and legacy formats) whose training state has an
    object of a module that is gone when it is read; returns the paths and an import spy."""
    fake = types.ModuleType(FAKE_MODULE)
    exec(FAKE_SOURCE, fake.__dict__)  # noqa: S102 - the test's own source
    monkeypatch.setitem(sys.modules, FAKE_MODULE, fake)
    obj = {"meta": {"seed": np.int64(3), "epoch": 10, "cfg": "model = dict(...)"},
           "state_dict": trained_state,
           "message_hub": {"log_scalars": {"loss": fake.HistoryBuffer([0.5, 0.25])},
                           "runtime_info": {"iter": np.int64(1234)}},
           "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}}
    paths = {"zip": tmp_path / "mm1.pth", "legacy": tmp_path / "mm1_legacy.pth"}
    torch.save(obj, paths["zip"])
    torch.save(obj, paths["legacy"], _use_new_zipfile_serialization=False)
    monkeypatch.delitem(sys.modules, FAKE_MODULE)
    with pytest.raises(pickle.UnpicklingError):               # what plain weights_only does
        torch.load(paths["zip"], weights_only=True)
    spy = _ImportSpy()
    monkeypatch.setattr(sys, "meta_path", [spy, *sys.meta_path])
    return paths, spy


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_mmengine_training_state_read_inert(mmengine_checkpoint, fmt):
    paths, spy = mmengine_checkpoint
    obj = read_checkpoint(paths[fmt])
    buf = obj["message_hub"]["log_scalars"]["loss"]
    assert isinstance(buf, _Inert)
    assert type(buf).__name__ == "HistoryBuffer"
    assert repr(buf) == f"<unloaded {FAKE_MODULE}.HistoryBuffer>"
    assert not hasattr(buf, "update")                          # none of the real class's methods
    np.testing.assert_array_equal(buf.state["_log_history"], [0.5, 0.25])
    assert buf.state["max_length"] == 1000000
    assert obj["meta"]["seed"] == 3 and isinstance(obj["meta"]["seed"], np.int64)
    assert obj["message_hub"]["runtime_info"]["iter"] == 1234
    assert obj["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert spy.asked == [] and FAKE_MODULE not in sys.modules


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_mmengine_checkpoint_weights_load(mmengine_checkpoint, mini_detector, trained_state, fmt):
    paths, spy = mmengine_checkpoint
    report = load_checkpoint(mini_detector, paths[fmt], strict=True)
    assert len(report.loaded) == len(trained_state)
    assert_same_state(mini_detector.state_dict(), trained_state)
    assert spy.asked == [] and FAKE_MODULE not in sys.modules


# ------------------------------------------------------------------------------------------------
# 8. a malicious pickle runs nothing


def _payloads(target: Path):
    return {
        "path_touch": (pathlib.Path.touch, (target,)),
        "os_system": (os.system, (f"touch '{target}'",)),
        "exec": (builtins.exec, (f"import pathlib; pathlib.Path({str(target)!r}).touch()",)),
        "eval": (builtins.eval, (f"open({str(target)!r}, 'w').close()",)),
    }


@pytest.mark.parametrize("payload", ["path_touch", "os_system", "exec", "eval"])
@pytest.mark.parametrize("where", ["beside_weights", "top_level", "legacy_format", "raw_pickle"])
def test_malicious_checkpoint_runs_nothing(tmp_path, mini_detector, trained_state, payload, where):
    target = tmp_path / "pwned"
    reduce_value = _payloads(target)[payload]

    class Evil:
        def __reduce__(self):
            return reduce_value

    # the payload works when unpickled by plain pickle (so the test would see it run)
    pickle.loads(pickle.dumps(Evil()))
    assert target.exists()
    target.unlink()

    path = tmp_path / "evil.pth"
    if where == "top_level":
        torch.save(Evil(), path)
    elif where == "raw_pickle":                                # not even a torch file
        path.write_bytes(pickle.dumps({"state_dict": trained_state, "hook": Evil()}, protocol=2))
    else:
        obj = {"state_dict": trained_state, "meta": {"hook": Evil()}}
        torch.save(obj, path, _use_new_zipfile_serialization=where != "legacy_format")
    before = clone_state(mini_detector)

    try:
        obj = read_checkpoint(path)
    except AVADataError as e:
        assert str(path) in str(e)
        with pytest.raises(AVADataError):
            load_checkpoint(mini_detector, path)
        assert_same_state(clone_state(mini_detector), before)
    else:
        assert where not in ("top_level", "raw_pickle")         # never a checkpoint dict
        assert isinstance(obj["meta"]["hook"], _Inert)
        load_checkpoint(mini_detector, path, strict=True)
        assert_same_state(mini_detector.state_dict(), trained_state)
    assert not target.exists()


def test_malicious_top_level_is_not_a_dict(tmp_path):
    target = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch '{target}'",))

    path = tmp_path / "evil.pth"
    torch.save(Evil(), path)
    with pytest.raises(AVADataError, match="expected a dict"):
        read_checkpoint(path)
    assert not target.exists()


# ------------------------------------------------------------------------------------------------
# 9. legacy (non-zip) torch format


def test_legacy_format_loads(tmp_path, mini_detector, trained_state):
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": trained_state, "meta": {"epoch": 20}}, path,
               _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] != b"PK"                        # not a zip archive
    report = load_checkpoint(mini_detector, path, strict=True)
    assert len(report.loaded) == len(trained_state)
    assert_same_state(mini_detector.state_dict(), trained_state)


def test_legacy_format_mmaction2_names(tmp_path, slowonly_detector):
    file_state = {**prefixed("backbone.", fake_weights("slowonly_r50", seed=6)),
                  **bbox_head(2048, seed=6)}
    path = tmp_path / "slowonly_2020.pth"
    torch.save({"state_dict": file_state}, path, _use_new_zipfile_serialization=False)
    load_checkpoint(slowonly_detector, path, strict=True)
    assert_loaded(slowonly_detector, file_state)


# ------------------------------------------------------------------------------------------------
# 10. unreadable files


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "missing.pth"
    with pytest.raises(AVADataError, match="not found") as err:
        read_checkpoint(path)
    assert err.value.path == str(path) and str(path) in str(err.value)
    with pytest.raises(AVADataError):
        load_checkpoint(torch.nn.Linear(1, 1), path)


def _valid_bytes(tmp_path: Path, legacy: bool) -> bytes:
    tmp = tmp_path / "valid.pth"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, tmp, _use_new_zipfile_serialization=not legacy)
    return tmp.read_bytes()


@pytest.mark.parametrize("content", ["text", "empty", "truncated_zip", "truncated_legacy", "garbage"])
def test_unreadable_file(tmp_path, content):
    data = {
        "text": lambda: b"model = dict(type='FastRCNN')\n",
        "empty": lambda: b"",
        "truncated_zip": lambda: _valid_bytes(tmp_path, False)[:-200],
        "truncated_legacy": lambda: _valid_bytes(tmp_path, True)[:300],
        "garbage": lambda: bytes(range(256)) * 4,
    }[content]()
    path = tmp_path / "bad.pth"
    path.write_bytes(data)
    # truncated files are checkpoints that cannot be read; the others are not checkpoints at all
    expected = "cannot read checkpoint" if content.startswith("truncated") else \
        r"not a PyTorch checkpoint \(neither torch.save's zip archive nor a pickle\)"
    with pytest.raises(AVADataError, match=expected) as err:
        read_checkpoint(path)
    assert err.value.path == str(path)


def test_list_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.ones(2), torch.zeros(2)], path)
    with pytest.raises(AVADataError, match="expected a dict, got list"):
        read_checkpoint(path)


@pytest.mark.parametrize("obj", [{"meta": {"epoch": 1}, "cfg": "x"}, {"state_dict": {}},
                                 {"state_dict": {"w": [1.0, 2.0]}}, {}])
def test_dict_without_tensors(tmp_path, obj):
    path = tmp_path / "empty.pth"
    torch.save(obj, path)
    assert read_checkpoint(path) == obj
    with pytest.raises(AVADataError, match="no tensors") as err:
        load_state_dict_file(path)
    assert err.value.path == str(path)
    with pytest.raises(AVADataError):
        load_checkpoint(torch.nn.Linear(1, 1), path)


# ------------------------------------------------------------------------------------------------
# 11. convert_checkpoint


def test_convert_checkpoint(tmp_path, slowonly_detector):
    file_state = {**prefixed("backbone.", fake_weights("slowonly_r50", seed=8)),
                  **bbox_head(2048, seed=8)}
    src, dst = tmp_path / "mmaction2.pth", tmp_path / "out" / "stdet.pth"
    torch.save({"state_dict": file_state, "meta": {"epoch": 20}}, src)
    returned = convert_checkpoint(src, dst)
    assert not list(dst.parent.glob(f".{dst.name}.*.tmp"))

    obj = torch.load(dst, weights_only=True)
    assert obj["meta"]["converted_from"] == str(src)
    expected = convert_state_dict(file_state)
    assert list(obj["state_dict"]) == list(expected) == list(returned)
    assert "backbone.stem.conv.weight" in obj["state_dict"]
    assert "head.classifier.weight" in obj["state_dict"]
    assert not any(k.startswith(("roi_head.", "backbone.conv1.")) for k in obj["state_dict"])
    for key, value in expected.items():
        assert torch.equal(obj["state_dict"][key], value), key

    report = load_checkpoint(slowonly_detector, dst, strict=True)
    assert len(report.loaded) == len(file_state)
    assert_loaded(slowonly_detector, file_state)


@pytest.mark.parametrize("bad", ["text", "no_tensors", "missing"])
def test_convert_checkpoint_bad_source_writes_nothing(tmp_path, bad):
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pth"
    if bad == "text":
        src.write_text("not a checkpoint")
    elif bad == "no_tensors":
        torch.save({"meta": {}}, src)
    with pytest.raises(AVADataError):
        convert_checkpoint(src, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if bad == "missing" else ["src.pth"])

    # an existing destination is left as it was
    dst.write_bytes(b"previous")
    with pytest.raises(AVADataError):
        convert_checkpoint(src, dst)
    assert dst.read_bytes() == b"previous"


def test_convert_checkpoint_write_is_atomic(tmp_path, monkeypatch, trained_state):
    """If the final rename fails, the previous destination is intact (nothing was written to it
    in place)."""
    src, dst = tmp_path / "src.pth", tmp_path / "dst.pth"
    torch.save({"state_dict": trained_state}, src)
    dst.write_bytes(b"previous")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        convert_checkpoint(src, dst)
    assert dst.read_bytes() == b"previous"
    assert not list(dst.parent.glob(f".{dst.name}.*.tmp"))  # no temporary file left behind
    monkeypatch.undo()
    convert_checkpoint(src, dst)
    assert torch.load(dst, weights_only=True)["meta"]["converted_from"] == str(src)


# ------------------------------------------------------------------------------------------------
# 12. save_checkpoint round trip


def test_save_then_load_round_trip(tmp_path, mini_cfg, trained_state):
    torch.manual_seed(1)
    source = build_detector(mini_cfg)
    source.load_state_dict(trained_state)
    path = tmp_path / "sub" / "epoch_3.pth"
    save_checkpoint(path, source, meta={"epoch": 3, "config": "mini"}, best_map=0.25)
    assert not list(path.parent.glob(f".{path.name}.*.tmp"))

    obj = torch.load(path, weights_only=True)
    assert obj["meta"] == {"epoch": 3, "config": "mini"}
    assert obj["best_map"] == 0.25

    torch.manual_seed(9)
    target = build_detector(mini_cfg)
    assert not torch.equal(target.state_dict()["head.classifier.weight"],
                           trained_state["head.classifier.weight"])
    report = load_checkpoint(target, path, strict=True)
    assert report.missing == report.unexpected == report.mismatched == []
    assert len(report.loaded) == len(trained_state)
    for key, value in target.state_dict().items():
        assert value.dtype == trained_state[key].dtype, key
        assert torch.equal(value, trained_state[key]), key


def test_save_checkpoint_of_state_dict(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3).requires_grad_(), "n": torch.tensor(4)}
    path = tmp_path / "plain.pth"
    save_checkpoint(path, state)
    obj = torch.load(path, weights_only=True)
    assert obj["meta"] == {}
    assert torch.equal(obj["state_dict"]["w"], torch.arange(6.0).reshape(2, 3))
    assert not obj["state_dict"]["w"].requires_grad
    assert obj["state_dict"]["n"].item() == 4
