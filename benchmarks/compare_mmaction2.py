"""stdet's backbones, ACRN and LFB heads against MMAction2 1.2.0, with converted weights.

For each AVA backbone of the zoo (SlowOnly R50, R50 + non-local, R101; SlowFast R50 4x16 and 8x8),
for the ACRN head and for the LFB head with each feature bank operator (non-local, avg, max), this
script builds MMAction2's module with the zoo settings, fills every parameter and floating buffer
with seeded random values (so no block is an identity), saves its weights as an MMAction2 detector
checkpoint (``backbone.*`` / ``roi_head.shared_head.*``), loads that file into stdet's module with
:func:`stdet.load_checkpoint` (strict: every key must map; the avg / max operators have no
weights), runs both on the same input in eval mode, and prints the max abs difference of the
outputs in float64 and in float32. MMAction2's LFB head reads its bank from files; here it gets
the same per-clip long-term features as stdet's, through a stand-in for its ``LFB`` class.

It needs MMAction2 itself, so it runs in a throwaway environment, not the project's::

    python3 -m venv /tmp/mmenv
    /tmp/mmenv/bin/pip install --no-deps torch==2.13.0
    /tmp/mmenv/bin/pip install --no-deps mmaction2==1.2.0 mmengine==0.10.7 \\
        mmcv-lite==2.1.0 addict yapf termcolor einops opencv-python-headless \\
        rich platformdirs packaging pyyaml pillow "importlib_metadata<8" zipp \\
        numpy filelock fsspec markdown-it-py mdurl pygments tomli pandas av tqdm
    # the 1.2.0 wheel lacks mmaction/models/localizers/drn/, which mmaction.models imports:
    D=/tmp/mmenv/lib/python3.11/site-packages/mmaction/models/localizers/drn
    mkdir -p $D && touch $D/__init__.py && echo "DRN = None" > $D/drn.py

    PYTHONPATH=. /tmp/mmenv/bin/python benchmarks/compare_mmaction2.py

When MMAction2 cannot be imported the script says so and exits 0.
"""

import argparse
import copy
import math
import os
import sys

try:
    import torch
    from torch import nn

    from mmaction.models.backbones.resnet3d_slowfast import ResNet3dSlowFast
    from mmaction.models.backbones.resnet3d_slowonly import ResNet3dSlowOnly
    from mmaction.models.roi_heads.shared_heads import fbo_head as mm_fbo_head
    from mmaction.models.roi_heads.shared_heads.acrn_head import ACRNHead as MMACRNHead
except Exception as exc:  # noqa: BLE001 - any import failure means "skip"
    print(f"compare_mmaction2: skipped, MMAction2 is not importable ({exc!r})")
    sys.exit(0)

import tempfile

from stdet import zoo
from stdet.configs import LFBConfig
from stdet.engine.checkpoint import load_checkpoint
from stdet.models import ACRNHead, build_backbone
from stdet.models.fbo import LFBHead


WEIGHT_SEED = 1234
INPUT_SEED = 2024

SLOWONLY_R50 = dict(
    depth=50,
    pretrained=None,
    pretrained2d=False,
    lateral=False,
    num_stages=4,
    conv1_kernel=(1, 7, 7),
    conv1_stride_t=1,
    pool1_stride_t=1,
    spatial_strides=(1, 2, 2, 1),
)

SLOWONLY_R50_NL = dict(
    SLOWONLY_R50,
    norm_cfg=dict(type="BN3d", requires_grad=True),
    non_local=((0, 0, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 0, 0)),
    non_local_cfg=dict(
        sub_sample=True,
        use_scale=True,
        norm_cfg=dict(type="BN3d", requires_grad=True),
        mode="embedded_gaussian",
    ),
)

SLOWONLY_R101 = dict(SLOWONLY_R50, depth=101)

FAST_PATHWAY = dict(
    type="resnet3d",
    depth=50,
    pretrained=None,
    lateral=False,
    base_channels=8,
    conv1_kernel=(5, 7, 7),
    conv1_stride_t=1,
    pool1_stride_t=1,
    spatial_strides=(1, 2, 2, 1),
)

SLOW_PATHWAY = dict(
    type="resnet3d",
    depth=50,
    pretrained=None,
    lateral=True,
    conv1_kernel=(1, 7, 7),
    dilations=(1, 1, 1, 1),
    conv1_stride_t=1,
    pool1_stride_t=1,
    inflate=(0, 0, 1, 1),
    spatial_strides=(1, 2, 2, 1),
)

SLOWFAST_R50_4X16 = dict(
    pretrained=None,
    resample_rate=8,
    speed_ratio=8,
    channel_ratio=8,
    slow_pathway=SLOW_PATHWAY,
    fast_pathway=FAST_PATHWAY,
)

SLOWFAST_R50_8X8 = dict(
    pretrained=None,
    resample_rate=4,
    speed_ratio=4,
    channel_ratio=8,
    slow_pathway=dict(SLOW_PATHWAY, fusion_kernel=7),
    fast_pathway=FAST_PATHWAY,
)

# name -> (MMAction2 class, its kwargs, zoo config with the same backbone, input (N, C, T, H, W))
MODELS = {
    "SlowOnly R50": (ResNet3dSlowOnly, SLOWONLY_R50,
                     "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb", (2, 3, 4, 96, 128)),
    "SlowOnly R50 NL": (ResNet3dSlowOnly, SLOWONLY_R50_NL,
                        "slowonly_nl_kinetics_pretrained_r50_4x16x1_10e_ava_rgb", (2, 3, 4, 96, 128)),
    "SlowOnly R101": (ResNet3dSlowOnly, SLOWONLY_R101,
                      "slowonly_kinetics_pretrained_r101_8x8x1_20e_ava_rgb", (2, 3, 8, 96, 128)),
    "SlowFast R50 4x16": (ResNet3dSlowFast, SLOWFAST_R50_4X16,
                          "slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb", (2, 3, 32, 96, 128)),
    "SlowFast R50 8x8": (ResNet3dSlowFast, SLOWFAST_R50_8X8,
                         "slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb", (2, 3, 32, 96, 128)),
}


def randomize_(model, seed):
    """Overwrite every parameter and floating buffer with seeded random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                w = module.weight
                fan_in = w[0].numel()  # in_channels/groups * prod(kernel)
                w.copy_(torch.randn(w.shape, generator=gen) / math.sqrt(fan_in))
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=gen))
                module.bias.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            elif isinstance(module, nn.LayerNorm):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=gen))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    # Anything not covered above must not keep its initial value silently.
    covered = set()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear,
                               nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
            prefix = f"{name}." if name else ""
            covered.update(prefix + k for k, _ in module.named_parameters(recurse=False))
            covered.update(prefix + k for k, b in module.named_buffers(recurse=False)
                           if b.is_floating_point())
    names = [k for k, _ in model.named_parameters()]
    names += [k for k, b in model.named_buffers() if b.is_floating_point()]
    missing = sorted(set(names) - covered)
    if missing:
        raise RuntimeError(f"tensors not randomized: {missing}")


def _as_tuple(out):
    return (out,) if torch.is_tensor(out) else tuple(out)


def _max_diffs(ours, theirs, *inputs):
    """Max abs output difference in float64 and in float32 (both models in eval mode)."""
    diffs = {}
    for dtype in (torch.float64, torch.float32):
        ours.to(dtype).eval()
        theirs.to(dtype).eval()
        with torch.no_grad():
            a = _as_tuple(ours(*(x.to(dtype) if x.is_floating_point() else x for x in inputs)))
            b = _as_tuple(theirs(*(x.to(dtype) if x.is_floating_point() else x for x in inputs)))
        diffs[dtype] = max((x - y).abs().max().item() for x, y in zip(a, b))
    scale = max(y.abs().max().item() for y in b)
    return diffs[torch.float64], diffs[torch.float32], scale


def compare_backbone(name, tmp):
    cls, kwargs, config_name, in_shape = MODELS[name]
    torch.manual_seed(0)
    theirs = cls(**copy.deepcopy(kwargs))  # ResNet3dSlowFast mutates its pathway dicts
    randomize_(theirs, WEIGHT_SEED)
    path = os.path.join(tmp, "backbone.pth")
    torch.save({"meta": {"mmaction2": "1.2.0"},
                "state_dict": {f"backbone.{k}": v for k, v in theirs.state_dict().items()}}, path)
    ours = build_backbone(zoo.get(config_name).model.backbone)
    report = load_checkpoint(ours, path, strict=True)
    x = torch.randn(in_shape, generator=torch.Generator().manual_seed(INPUT_SEED))
    n_theirs = sum(p.numel() for p in theirs.parameters())
    n_ours = sum(p.numel() for p in ours.parameters())
    return (name, n_theirs, n_ours, len(report.loaded)) + _max_diffs(ours, theirs, x)


def compare_acrn(tmp):
    torch.manual_seed(0)
    theirs = MMACRNHead(in_channels=4608, out_channels=2304)
    randomize_(theirs, WEIGHT_SEED)
    path = os.path.join(tmp, "acrn.pth")
    torch.save({"state_dict": {f"roi_head.shared_head.{k}": v
                               for k, v in theirs.state_dict().items()}}, path)
    ours = ACRNHead(4608, 2304)
    holder = nn.Module()
    holder.shared_head = ours
    report = load_checkpoint(holder, path, strict=True)
    gen = torch.Generator().manual_seed(INPUT_SEED)
    roi_features = torch.randn(5, 2304, 1, 8, 8, generator=gen)
    context = torch.randn(2, 2304, 1, 6, 8, generator=gen)
    rois = torch.tensor([[0, 0, 0, 50, 50], [1, 10, 10, 60, 90], [0, 5, 5, 20, 20],
                         [1, 0, 0, 128, 96], [1, 30, 20, 70, 80]], dtype=torch.float32)

    class Theirs(nn.Module):  # MMAction2's call signature: (x, feat, rois)
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, feat, r):
            return self.m(x, feat, r)

    n = sum(p.numel() for p in theirs.parameters())
    return ("ACRN head", n, sum(p.numel() for p in ours.parameters()), len(report.loaded)) + \
        _max_diffs(ours, Theirs(theirs), roi_features, context, rois)


# MMAction2's fbo_cfg of the LFB configs (slowonly-lfb-nl_..._ava21-rgb.py; avg / max: type only)
MM_FBO_CFG = dict(st_feat_channels=2048, lt_feat_channels=2048, latent_channels=512, num_st_feat=1,
                  num_lt_feat=300, num_non_local_layers=2, st_feat_dropout_ratio=0.2,
                  lt_feat_dropout_ratio=0.2, pre_activate=True)
MM_FBO_TYPES = {"nl": "non_local", "avg": "avg", "max": "max"}


class _Bank:
    """Stands in for MMAction2's ``LFB`` (which loads the bank's files when built): ``bank[key]``
    is the ``(N, C)`` long-term sample the test put under ``key``."""

    def __init__(self, **lfb_cfg):
        self.samples = {}

    def __getitem__(self, img_key):
        return self.samples[img_key]


class _MMLFBHead(nn.Module):
    """MMAction2's ``FBOHead`` called as stdet's: ``(roi_features, rois, long_term (B, N, C))``."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, roi_features, rois, long_term):
        img_metas = [{"img_key": f"clip{i}"} for i in range(long_term.shape[0])]
        self.head.lfb.samples = {m["img_key"]: x for m, x in zip(img_metas, long_term)}
        return self.head(roi_features, rois, img_metas)


class _LFBHead(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.shared_head = head

    def forward(self, roi_features, rois, long_term):
        return self.shared_head(roi_features, None, rois, long_term)


def compare_lfb(fbo, tmp):
    torch.manual_seed(0)
    real_lfb, mm_fbo_head.LFB = mm_fbo_head.LFB, _Bank
    try:
        theirs = mm_fbo_head.FBOHead(dict(window_size=60, max_num_sampled_feat=5, lfb_channels=2048),
                                     dict(MM_FBO_CFG, type=MM_FBO_TYPES[fbo]))
    finally:
        mm_fbo_head.LFB = real_lfb
    theirs.init_weights()
    randomize_(theirs, WEIGHT_SEED)
    holder = _LFBHead(LFBHead(2048, fbo))
    state = {f"roi_head.shared_head.{k}": v for k, v in theirs.state_dict().items()}
    loaded = 0
    if state:                                           # avg / max have no weights
        path = os.path.join(tmp, f"lfb_{fbo}.pth")
        torch.save({"state_dict": state}, path)
        loaded = len(load_checkpoint(holder, path, strict=True).loaded)
    gen = torch.Generator().manual_seed(INPUT_SEED)
    roi_features = torch.randn(5, 2048, 1, 8, 8, generator=gen)
    rois = torch.tensor([[0, 0, 0, 50, 50], [1, 10, 10, 60, 90], [0, 5, 5, 20, 20],
                         [1, 0, 0, 128, 96], [1, 30, 20, 70, 80]], dtype=torch.float32)
    long_term = torch.randn(2, 300, 2048, generator=gen)
    long_term[0, 120:] = 0                              # empty seconds are zero rows in the bank
    n = sum(p.numel() for p in theirs.parameters())
    return (f"LFB head ({fbo})", n, sum(p.numel() for p in holder.parameters()), loaded) + \
        _max_diffs(holder, _MMLFBHead(theirs), roi_features, rois, long_term)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(MODELS), help="subset of backbones")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or MODELS:
            rows.append(compare_backbone(name, tmp))
        rows.append(compare_acrn(tmp))
        for fbo in MM_FBO_TYPES:
            rows.append(compare_lfb(fbo, tmp))
    header = ("module", "params (MMAction2)", "params (stdet)", "tensors loaded",
              "max |diff| f64", "max |diff| f32", "max |output|")
    table = [header] + [(r[0], f"{r[1]:,}", f"{r[2]:,}", str(r[3]), f"{r[4]:.3g}", f"{r[5]:.3g}",
                         f"{r[6]:.3g}") for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0 if all(r[1] == r[2] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
