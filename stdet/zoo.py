"""The model zoo: every AVA config of MMAction2's model zoo, under its exact (0.x) name.

Values are those of MMAction2 0.x's config files (the ones the published checkpoints were trained
with): batch per GPU, learning rate for the 8 GPUs the file was written for, schedule, and the
backbone's Kinetics (or OmniSource) initialisation, ``model.backbone.pretrained``. Each family
is one function: its base config, then each variant as one ``dataclasses.replace`` of its base,
so each difference is one line. What the reference documentation reports for a config (frame-mAP,
GPUs of the run, checkpoint) is :data:`PUBLISHED`, one row per config.

>>> from stdet import zoo
>>> cfg = zoo.get("slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb")
>>> small = zoo.get("slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb", scale="mini")
>>> zoo.table()          # a DataFrame: settings, published mAP, parameters, GFLOPs
"""
from __future__ import annotations

import os
from dataclasses import replace

from .configs import (BackboneConfig, Config, ConfigError, DataConfig, LFBConfig, ModelConfig,
                      OptimConfig, Published, ScheduleConfig)
from .mini import mini

# Backbone initialisations of the published runs: Kinetics-400 (or OmniSource) recognizers.
DL = "https://download.openmmlab.com/mmaction"
_SLOWONLY, _SLOWFAST = f"{DL}/recognition/slowonly", f"{DL}/recognition/slowfast"
_NL = "slowonly_nl_embedded_gaussian_r50_{0}_150e_kinetics400_rgb/slowonly_nl_embedded_gaussian_r50_{0}"
K400_SLOWONLY_R50_4x16 = (f"{_SLOWONLY}/slowonly_r50_4x16x1_256e_kinetics400_rgb/"
                          "slowonly_r50_4x16x1_256e_kinetics400_rgb_20200704-a69556c6.pth")
K400_SLOWONLY_NL_R50_4x16 = f"{_SLOWONLY}/{_NL.format('4x16x1')}_150e_kinetics400_rgb_20210308-0d6e5a69.pth"
K400_SLOWONLY_NL_R50_8x8 = f"{_SLOWONLY}/{_NL.format('8x8x1')}_150e_kinetics400_rgb_20210308-e8dd9e82.pth"
K400_SLOWONLY_R101_8x8 = (f"{_SLOWONLY}/omni/"
                          "slowonly_r101_without_omni_8x8x1_kinetics400_rgb_20200926-0c730aef.pth")
OMNI_SLOWONLY_R50_4x16 = f"{_SLOWONLY}/omni/slowonly_r50_omni_4x16x1_kinetics400_rgb_20200926-51b1f7ea.pth"
OMNI_SLOWONLY_R101_8x8 = f"{_SLOWONLY}/omni/slowonly_r101_omni_8x8x1_kinetics400_rgb_20200926-b5dbb701.pth"
K400_SLOWFAST_R50_4x16 = (f"{_SLOWFAST}/slowfast_r50_4x16x1_256e_kinetics400_rgb/"
                          "slowfast_r50_4x16x1_256e_kinetics400_rgb_20200704-bcde7ed7.pth")
K400_SLOWFAST_R50_8x8 = (f"{_SLOWFAST}/slowfast_r50_8x8x1_256e_kinetics400_rgb/"
                         "slowfast_r50_8x8x1_256e_kinetics400_rgb_20200716-73547d2b.pth")

# Non-local blocks after blocks 0 and 2 of layer2, blocks 0, 2 and 4 of layer3.
NON_LOCAL_R50 = ((0, 0, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 0, 0))
# The 16 classes whose AP lies in (0.1, 0.3) for the 80-class model (AVA 2.1).
CUSTOM_CLASSES = (3, 6, 10, 27, 29, 38, 41, 48, 51, 53, 54, 59, 61, 64, 70, 72)

STEP_20E = ScheduleConfig(epochs=20, policy="step", milestones=(10, 15), warmup_epochs=5)
COSINE_10E = ScheduleConfig(epochs=10, policy="cosine", milestones=(), warmup_epochs=2)


def with_backbone(cfg: Config, **changes) -> ModelConfig:
    """``cfg.model`` with ``changes`` to its backbone."""
    return replace(cfg.model, backbone=replace(cfg.model.backbone, **changes))


def with_head(cfg: Config, **changes) -> ModelConfig:
    """``cfg.model`` with ``changes`` to its RoI head."""
    return replace(cfg.model, head=replace(cfg.model.head, **changes))


def slowonly_family() -> list[Config]:
    """SlowOnly, AVA 2.1: R50 4x16 (the base of the LFB and a custom-class config), non-local
    blocks, R101 8x8 and the OmniSource-pretrained twins."""
    r50 = Config(
        name="slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
        model=ModelConfig(BackboneConfig("slowonly", depth=50, pretrained=K400_SLOWONLY_R50_4x16)),
        data=DataConfig(version="2.1", clip_len=4, frame_interval=16),
        optim=OptimConfig(lr=0.2, batch_per_gpu=16, reference_batch=8 * 16),
        schedule=STEP_20E)
    # non-local: 10 epochs, nesterov, wd 1e-6, steps at 4/6/8, 800-iteration warmup from 0.01 lr
    nl = replace(r50, name="slowonly_nl_kinetics_pretrained_r50_4x16x1_10e_ava_rgb",
                 model=with_backbone(r50, non_local=NON_LOCAL_R50, pretrained=K400_SLOWONLY_NL_R50_4x16),
                 optim=replace(r50.optim, lr=0.3, batch_per_gpu=12, reference_batch=8 * 12,
                               nesterov=True, weight_decay=1e-6),
                 schedule=replace(r50.schedule, epochs=10, milestones=(4, 6, 8), warmup_epochs=0,
                                  warmup_iters=800, warmup_ratio=0.01))
    nl_8x8 = replace(nl, name="slowonly_nl_kinetics_pretrained_r50_8x8x1_10e_ava_rgb",
                     model=with_backbone(nl, pretrained=K400_SLOWONLY_NL_R50_8x8),
                     data=replace(nl.data, clip_len=8, frame_interval=8),
                     optim=replace(nl.optim, lr=0.15, batch_per_gpu=6, reference_batch=8 * 6),
                     schedule=replace(nl.schedule, warmup_iters=1600))
    r101 = replace(r50, name="slowonly_kinetics_pretrained_r101_8x8x1_20e_ava_rgb",
                   model=with_backbone(r50, depth=101, pretrained=K400_SLOWONLY_R101_8x8),
                   data=replace(r50.data, clip_len=8, frame_interval=8),
                   optim=replace(r50.optim, lr=0.075, batch_per_gpu=6, reference_batch=8 * 6))
    # OmniSource twins: same model and schedule, another backbone initialisation
    omni_r50 = replace(r50, name="slowonly_omnisource_pretrained_r50_4x16x1_20e_ava_rgb",
                       model=with_backbone(r50, pretrained=OMNI_SLOWONLY_R50_4x16))
    omni_r101 = replace(r101, name="slowonly_omnisource_pretrained_r101_8x8x1_20e_ava_rgb",
                        model=with_backbone(r101, pretrained=OMNI_SLOWONLY_R101_8x8))
    return [r50, nl, nl_8x8, r101, omni_r50, omni_r101]


def slowfast_family() -> list[Config]:
    """SlowFast R50, 32x2 clips: 4x16 (τ = α = 8, the base of a custom-class config), + global
    context, 8x8 (τ = α = 4, lateral kernel 7); AVA 2.2 with a cosine schedule, + temporal max
    pooling, + focal loss."""
    sf = Config(
        name="slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
        model=ModelConfig(BackboneConfig("slowfast", depth=50, resample_rate=8, speed_ratio=8,
                                         fusion_kernel=5, pretrained=K400_SLOWFAST_R50_4x16)),
        data=DataConfig(version="2.1", clip_len=32, frame_interval=2),
        optim=OptimConfig(lr=0.1125, batch_per_gpu=9, reference_batch=8 * 9),
        schedule=STEP_20E)
    context = replace(sf, name="slowfast_context_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
                      model=with_head(sf, with_global=True))
    sf_8x8 = replace(sf, name="slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb",
                     model=with_backbone(sf, resample_rate=4, speed_ratio=4, fusion_kernel=7,
                                         pretrained=K400_SLOWFAST_R50_8x8),
                     optim=replace(sf.optim, lr=0.075, batch_per_gpu=5, reference_batch=8 * 5))
    ava22 = replace(sf_8x8, name="slowfast_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
                    data=replace(sf_8x8.data, version="2.2"), schedule=COSINE_10E,
                    optim=replace(sf_8x8.optim, batch_per_gpu=6, reference_batch=8 * 6))
    tmax = replace(ava22, name="slowfast_temporal_max_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
                   model=with_head(ava22, temporal_pool="max"))
    focal = replace(tmax, name="slowfast_temporal_max_focal_alpha3_gamma1_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
                    model=with_head(tmax, focal_alpha=3.0, focal_gamma=1.0))
    return [sf, context, sf_8x8, ava22, tmax, focal]


def acrn_family(tmax: Config) -> list[Config]:
    """ACRN on SlowFast 8x8 with temporal max pooling (``tmax``), cosine 10 epochs: AVA 2.2, 2.1."""
    ava22 = replace(tmax, name="slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
                    model=with_head(tmax, shared_head="acrn"))
    ava21 = replace(ava22, name="slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava_rgb",
                    data=replace(ava22.data, version="2.1"))
    return [ava22, ava21]


def lfb_family(slowonly: Config) -> list[Config]:
    """SlowOnly R50 4x16 (``slowonly``) with a long-term feature bank read by a feature bank
    operator: non-local, avg or max. The bank comes from :data:`LFB_BANK_CONFIG`."""
    nl = replace(slowonly, name="lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb",
                 model=replace(slowonly.model, lfb=LFBConfig(fbo="nl")),
                 optim=replace(slowonly.optim, lr=0.15, batch_per_gpu=12, reference_batch=8 * 12))
    avg = replace(nl, name="lfb_avg_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb",
                  model=replace(nl.model, lfb=LFBConfig(fbo="avg")))
    max_ = replace(nl, name="lfb_max_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb",
                   model=replace(nl.model, lfb=LFBConfig(fbo="max")))
    return [nl, avg, max_]


def custom_classes_family(slowonly: Config, slowfast: Config) -> list[Config]:
    """SlowOnly and SlowFast R50 4x16 trained on :data:`CUSTOM_CLASSES` only (index 0 plus 16
    classes); the SlowFast run warms up from 0.05 lr."""

    def custom(base: Config, warmup_ratio: float) -> Config:
        return replace(base, name=f"{base.name}_custom_classes",
                       model=with_head(base, num_classes=len(CUSTOM_CLASSES) + 1),
                       data=replace(base.data, custom_classes=CUSTOM_CLASSES),
                       schedule=replace(base.schedule, warmup_ratio=warmup_ratio))

    return [custom(slowonly, warmup_ratio=0.1), custom(slowfast, warmup_ratio=0.05)]


def _published(name: str, map_: float, gpus: str, stamp: str, folder: str = "ava",
               **extra) -> tuple[str, Published]:
    """``(name, Published)``; the checkpoint is ``detection/{folder}/{name}/{name}_{stamp}.pth``
    (a stamp starting with "-" follows the name without the underscore)."""
    sep = "" if stamp.startswith("-") else "_"
    checkpoint = f"{DL}/detection/{folder}/{name}/{name}{sep}{stamp}.pth"
    return name, Published(map=map_, gpus=gpus, checkpoint=checkpoint, **extra)


# What the reference documentation reports: frame-mAP (%) on AVA val, GPUs of the run ("8x2" = 16),
# the detector checkpoint; custom-class configs also the mAP of the 80-class model on their classes.
PUBLISHED: dict[str, Published] = dict([
    _published("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb", 20.1, "8", "20201217-40061d5f"),
    _published("slowonly_nl_kinetics_pretrained_r50_4x16x1_10e_ava_rgb", 21.75, "8", "20210316-959829ec"),
    _published("slowonly_nl_kinetics_pretrained_r50_8x8x1_10e_ava_rgb", 23.79, "8x2", "20210316-5742e4dd"),
    _published("slowonly_kinetics_pretrained_r101_8x8x1_20e_ava_rgb", 24.6, "8x2", "20201217-1c9b4117"),
    _published("slowonly_omnisource_pretrained_r50_4x16x1_20e_ava_rgb", 21.8, "8", "20201217-0c6d2e98",
               pretrain="OmniSource"),
    _published("slowonly_omnisource_pretrained_r101_8x8x1_20e_ava_rgb", 25.9, "8x2", "20201217-16378594",
               pretrain="OmniSource"),
    _published("slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb", 24.4, "8x2", "20201217-6e7c704d"),
    _published("slowfast_context_kinetics_pretrained_r50_4x16x1_20e_ava_rgb", 25.4, "8x2",
               "20201222-f4d209c9"),
    _published("slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb", 25.5, "8x2", "20201217-ae225e97"),
    _published("slowfast_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb", 26.1, "8", "-b987b516"),
    _published("slowfast_temporal_max_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb", 26.4, "8",
               "-874e0845"),
    _published("slowfast_temporal_max_focal_alpha3_gamma1_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
               26.8, "8", "-345618cd"),
    _published("slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb", 27.8, "8", "-2be32625",
               folder="acrn"),
    _published("slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava_rgb", 27.1, "8", "-49b07bf2",
               folder="acrn"),
    _published("lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb", 24.11, "8", "20210224-2ae136d9",
               folder="lfb"),
    _published("lfb_avg_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb", 20.17, "8", "20210301-19c330b7",
               folder="lfb"),
    _published("lfb_max_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb", 22.15, "8", "20210301-37efcd15",
               folder="lfb"),
    _published("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes", 33.11, "8", "-4ab80419",
               custom_classes_map=19.48),
    _published("slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes", 37.85, "8x2",
               "20210305-c6225546", custom_classes_map=18.64),
])


def _build_zoo() -> dict[str, Config]:
    """Every family, in :data:`PUBLISHED`'s order, each config with its published record."""
    slowonly, slowfast = slowonly_family(), slowfast_family()
    tmax = next(c for c in slowfast if c.model.head.temporal_pool == "max")  # ACRN's base
    configs = [*slowonly, *slowfast, *acrn_family(tmax), *lfb_family(slowonly[0]),
               *custom_classes_family(slowonly[0], slowfast[0])]
    names = [cfg.name for cfg in configs]
    if names != list(PUBLISHED):  # a renamed config or a row without its config
        raise AssertionError(f"zoo configs and PUBLISHED disagree: {set(names) ^ set(PUBLISHED)}")
    return {cfg.name: replace(cfg, published=PUBLISHED[cfg.name]) for cfg in configs}


ZOO: dict[str, Config] = _build_zoo()

# The backbone (at full size) each LFB config needs to build its bank; run once per split.
LFB_BANK_CONFIG = "lfb_slowonly_r50_ava_infer"
LFB_BANK_BACKBONE = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb"


# The mini SlowOnly trains from scratch and stands in for the Kinetics checkpoints: every other
# mini config fine-tunes from it, except the custom-classes one, which is compared with it.
MINI_BASE = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb"
MINI_FROM_SCRATCH = (MINI_BASE, f"{MINI_BASE}_custom_classes")


def mini_pretrained(name: str) -> str | None:
    """Where the mini config ``name`` takes its backbone from: None (from scratch), or the last
    checkpoint of the mini SlowOnly in its default work dir (``python -m stdet train
    MINI_BASE:mini`` writes it; ``--cfg-options model.backbone.pretrained=PATH`` picks another)."""
    return None if name in MINI_FROM_SCRATCH else f"work_dirs/{MINI_BASE}_mini/latest.pth"


def names() -> list[str]:
    """Every zoo config name, grouped by family (SlowOnly, SlowFast, AVA 2.2, LFB, custom classes)."""
    return list(ZOO)


def get(name: str, scale: str = "full") -> Config:
    """The config ``name`` at ``scale`` "full" (real AVA, GPUs) or "mini" (mini-AVA, CPU)."""
    if name.endswith("_mini") and name[: -len("_mini")] in ZOO:
        name, scale = name[: -len("_mini")], "mini"
    if name not in ZOO:
        import difflib
        close = difflib.get_close_matches(name, ZOO, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `python -m stdet zoo`"
        raise ConfigError(f"no zoo config named {name!r}{hint}")
    if scale == "full":
        return ZOO[name]
    if scale == "mini":
        return mini(ZOO[name], pretrained=mini_pretrained(name))
    raise ConfigError(f"scale must be 'full' or 'mini', got {scale!r}")


def describe_backbone(cfg: Config) -> str:
    """e.g. "SlowFast R50 (τ4 α4 k7)", "SlowOnly R50 + NL"."""
    bb = cfg.model.backbone
    arch = {"slowonly": "SlowOnly", "slowfast": "SlowFast"}[bb.arch]
    text = f"{arch} R{bb.depth}"
    if bb.stage_blocks:
        text = f"{arch} {'-'.join(map(str, bb.stage_blocks))}x{bb.base_channels}"
    if bb.arch == "slowfast":
        text += f" (τ{bb.resample_rate} α{bb.speed_ratio} k{bb.fusion_kernel})"
    if bb.non_local:
        text += " + NL"
    return text


def describe_head(cfg: Config) -> str:
    """What the RoI head adds to the plain RoIAlign + linear head."""
    head, parts = cfg.model.head, []
    if head.temporal_pool == "max":
        parts.append("temporal max")
    if head.with_global:
        parts.append("global context")
    if head.shared_head == "acrn":
        parts.append("ACRN")
    if cfg.model.lfb is not None:
        parts.append(f"LFB {cfg.model.lfb.fbo}")
    if head.focal_gamma or head.focal_alpha != 1:
        parts.append(f"focal α{head.focal_alpha:g} γ{head.focal_gamma:g}")
    if cfg.data.custom_classes:
        parts.append(f"{len(cfg.data.custom_classes)} custom classes")
    return ", ".join(parts) or "-"


def test_clip_shape(cfg: Config) -> tuple[int, int, int, int]:
    """The input the zoo table is measured at: one test clip with the short side at
    ``data.test_scale`` and a 4:3 frame, ``(3, clip_len, H, W)``."""
    h = cfg.data.test_scale
    return (3, cfg.data.clip_len, h, round(h * 4 / 3))


test_clip_shape.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def table_names() -> list[str]:
    """The rows of :func:`table`: every zoo config, and after the LFB configs the bank model
    :data:`LFB_BANK_CONFIG` they need (``python -m stdet extract-lfb`` runs it)."""
    rows = names()
    after_lfb = max(i for i, name in enumerate(rows) if ZOO[name].model.lfb is not None) + 1
    return rows[:after_lfb] + [LFB_BANK_CONFIG] + rows[after_lfb:]


def table(scale: str = "full", complexity: bool = True, contains: str = "", progress: bool = False):
    """The zoo as a ``pandas.DataFrame``, one row per config (whose name has ``contains``):
    settings, published mAP, and (with ``complexity``) parameters in millions and GFLOPs
    (multiply-adds) at :func:`test_clip_shape`; an LFB config's count includes its feature bank
    operator reading the 300 long-term features. The bank model :data:`LFB_BANK_CONFIG` has a
    row too, marked in the ``note`` column, without a mAP of its own (it runs the trained
    :data:`LFB_BANK_BACKBONE`). ``progress`` shows a progress bar while the models are
    measured."""
    import pandas as pd
    from ._progress import progress_bar

    from .models.complexity import model_complexity

    rows = []
    selected = [n for n in table_names() if contains in n]
    for name in progress_bar(selected, enabled=progress and complexity, desc="measuring models",
                             leave=False):
        bank = name == LFB_BANK_CONFIG
        cfg = resolve(f"{name}:{scale}")
        schedule = cfg.schedule
        if schedule.policy == "step":
            sched = f"step {','.join(map(str, schedule.milestones))}"
        else:
            sched = "cosine"
        row = {
            "config": f"{name}_mini" if cfg.scale == "mini" else name,
            "AVA": cfg.data.version,
            "backbone": describe_backbone(cfg),
            "input": f"{cfg.data.clip_len}x{cfg.data.frame_interval}",
            "head": describe_head(cfg),
            "pretrain": cfg.published.pretrain,
            "GPUs": cfg.published.gpus,
            "batch/GPU": cfg.optim.batch_per_gpu,
            "lr": cfg.optim.lr,
            "epochs": schedule.epochs,
            "schedule": sched,
            "mAP": None if bank else cfg.published.map,
        }
        if complexity:
            shape = test_clip_shape(cfg)
            stats = model_complexity(cfg.model, shape)
            row["params (M)"] = round(stats["params"] / 1e6, 2)
            row["GFLOPs"] = round(stats["gflops"], 1)
            row["test input"] = "x".join(map(str, shape[1:]))
        row["note"] = "bank model (extract-lfb)" if bank else ""
        rows.append(row)
    return pd.DataFrame(rows)


def resolve(text: str | Config, *overrides: str, data_root: str | os.PathLike | None = None) -> Config:
    """The one place a config is resolved (``stdet.config`` and every command call it).

    ``text`` is a zoo name (``NAME``, ``NAME:mini`` or ``NAME_mini``), the bank model's name
    (``lfb_slowonly_r50_ava_infer[:mini]``: the SlowOnly that fills a long-term feature bank), a
    ``config.json`` written by stdet, or a :class:`Config` itself. ``overrides`` are
    ``--cfg-options`` strings (``"optim.lr=0.01"``); ``data_root`` becomes ``cfg.data.root``.

    >>> cfg = resolve("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb:mini", "optim.lr=0.1",
    ...               data_root="data/mini-ava")
    >>> cfg.name, cfg.optim.lr, cfg.data.root
    ('slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_mini', 0.1, 'data/mini-ava')
    """
    from .configs import apply_overrides, load_config

    if isinstance(text, Config):
        cfg = text
    elif str(text).endswith(".json") or os.path.sep in str(text):
        cfg = load_config(text)
    else:
        name, _, scale = str(text).partition(":")
        if name.removesuffix("_mini") == LFB_BANK_CONFIG:
            name = LFB_BANK_BACKBONE + name[len(LFB_BANK_CONFIG):]
        cfg = get(name, scale or "full")
    flat = [o for item in overrides for o in ([item] if isinstance(item, str) else item)]
    cfg = apply_overrides(cfg, flat)
    if data_root is not None:
        cfg = replace(cfg, data=replace(cfg.data, root=str(data_root)))
    return cfg


def bank_model(cfg: Config) -> Config:
    """The config whose model fills ``cfg``'s long-term feature bank (``model.lfb.bank_config``
    at ``cfg``'s scale, reading ``cfg``'s data), or ``cfg`` itself when it has no bank."""
    if cfg.model.lfb is None:
        return cfg
    scale = ":mini" if cfg.scale == "mini" else ""
    bank = resolve(cfg.model.lfb.bank_config.removesuffix("_mini") + scale)
    return replace(bank, data=cfg.data, runtime=cfg.runtime)
