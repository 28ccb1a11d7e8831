"""The model zoo: every AVA config of MMAction2's model zoo, under its exact (0.x) name.

Values are those of MMAction2 0.x's config files (the ones the published checkpoints were trained
with): batch per GPU, learning rate for the 8 GPUs the file was written for, schedule, and the
published frame-mAP. ``published.gpus`` is how many GPUs the published run used ("8x2" = 16).
Variants derive from a base with ``dataclasses.replace``, so each difference is one line.

>>> from stdet import zoo
>>> cfg = zoo.get("slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb")
>>> small = zoo.get("slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb", scale="mini")
>>> zoo.table()          # a DataFrame: settings, published mAP, parameters, GFLOPs
"""
from __future__ import annotations

import os
from dataclasses import replace

from .configs import (BackboneConfig, Config, ConfigError, DataConfig, HeadConfig, LFBConfig, ModelConfig,
                      OptimConfig, Published, ScheduleConfig, mini)

DL = "https://download.openmmlab.com/mmaction"
K400_SLOWONLY_R50_4x16 = (f"{DL}/recognition/slowonly/slowonly_r50_4x16x1_256e_kinetics400_rgb/"
                          "slowonly_r50_4x16x1_256e_kinetics400_rgb_20200704-a69556c6.pth")
K400_SLOWFAST_R50_4x16 = (f"{DL}/recognition/slowfast/slowfast_r50_4x16x1_256e_kinetics400_rgb/"
                          "slowfast_r50_4x16x1_256e_kinetics400_rgb_20200704-bcde7ed7.pth")
K400_SLOWFAST_R50_8x8 = (f"{DL}/recognition/slowfast/slowfast_r50_8x8x1_256e_kinetics400_rgb/"
                         "slowfast_r50_8x8x1_256e_kinetics400_rgb_20200716-73547d2b.pth")

# Non-local blocks after blocks 0 and 2 of layer2, blocks 0, 2 and 4 of layer3.
NON_LOCAL_R50 = ((0, 0, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 0, 0))


def _ckpt(name: str, stamp: str, folder: str = "ava") -> str:
    """URL of a published detector checkpoint ``{name}_{stamp}.pth`` (``stamp`` like
    ``20201217-40061d5f``; a stamp starting with "-" is appended without the underscore)."""
    sep = "" if stamp.startswith("-") else "_"
    return f"{DL}/detection/{folder}/{name}/{name}{sep}{stamp}.pth"


def _build_zoo() -> dict[str, Config]:
    zoo: dict[str, Config] = {}

    def add(cfg: Config) -> Config:
        # the backbone starts from the Kinetics checkpoint the published run started from
        backbone = replace(cfg.model.backbone, pretrained=cfg.published.pretrained)
        cfg = replace(cfg, model=replace(cfg.model, backbone=backbone))
        zoo[cfg.name] = cfg
        return cfg

    # ---- SlowOnly, AVA 2.1: 4x16 clips, step schedule 20 epochs --------------------------------
    slowonly = add(Config(
        name="slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
        model=ModelConfig(BackboneConfig("slowonly", depth=50), HeadConfig()),
        data=DataConfig(version="2.1", clip_len=4, frame_interval=16),
        optim=OptimConfig(lr=0.2, batch_per_gpu=16, reference_batch=8 * 16),
        schedule=ScheduleConfig(epochs=20, policy="step", milestones=(10, 15), warmup_epochs=5),
        published=Published(map=20.1, gpus="8", pretrained=K400_SLOWONLY_R50_4x16,
                            checkpoint=_ckpt("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
                                             "20201217-40061d5f"))))

    # Non-local: 10 epochs, nesterov, wd 1e-6, steps at 4/6/8, 800-iteration warmup from 0.01 lr.
    nl_backbone = BackboneConfig("slowonly", depth=50, non_local=NON_LOCAL_R50)
    nl_schedule = ScheduleConfig(epochs=10, policy="step", milestones=(4, 6, 8), warmup_epochs=0,
                                 warmup_iters=800, warmup_ratio=0.01)
    nl_kinetics = f"{DL}/recognition/slowonly/slowonly_nl_embedded_gaussian_r50_{{s}}_150e_kinetics400_rgb/" \
                  "slowonly_nl_embedded_gaussian_r50_{s}_150e_kinetics400_rgb_{stamp}.pth"
    add(replace(slowonly, name="slowonly_nl_kinetics_pretrained_r50_4x16x1_10e_ava_rgb",
                model=ModelConfig(nl_backbone, HeadConfig()),
                optim=OptimConfig(lr=0.3, batch_per_gpu=12, reference_batch=8 * 12, nesterov=True,
                                  weight_decay=1e-6),
                schedule=nl_schedule,
                published=Published(
                    map=21.75, gpus="8",
                    pretrained=nl_kinetics.format(s="4x16x1", stamp="20210308-0d6e5a69"),
                    checkpoint=_ckpt("slowonly_nl_kinetics_pretrained_r50_4x16x1_10e_ava_rgb",
                                     "20210316-959829ec"))))
    add(replace(slowonly, name="slowonly_nl_kinetics_pretrained_r50_8x8x1_10e_ava_rgb",
                model=ModelConfig(nl_backbone, HeadConfig()),
                data=DataConfig(version="2.1", clip_len=8, frame_interval=8),
                optim=OptimConfig(lr=0.15, batch_per_gpu=6, reference_batch=8 * 6, nesterov=True,
                                  weight_decay=1e-6),
                schedule=replace(nl_schedule, warmup_iters=1600),
                published=Published(
                    map=23.79, gpus="8x2",
                    pretrained=nl_kinetics.format(s="8x8x1", stamp="20210308-e8dd9e82"),
                    checkpoint=_ckpt("slowonly_nl_kinetics_pretrained_r50_8x8x1_10e_ava_rgb",
                                     "20210316-5742e4dd"))))

    # ---- SlowOnly R101, 8x8 clips ------------------------------------------------------------
    r101 = add(replace(
        slowonly, name="slowonly_kinetics_pretrained_r101_8x8x1_20e_ava_rgb",
        model=ModelConfig(BackboneConfig("slowonly", depth=101), HeadConfig()),
        data=DataConfig(version="2.1", clip_len=8, frame_interval=8),
        optim=OptimConfig(lr=0.075, batch_per_gpu=6, reference_batch=8 * 6),
        published=Published(
            map=24.6, gpus="8x2",
            pretrained=f"{DL}/recognition/slowonly/omni/"
                       "slowonly_r101_without_omni_8x8x1_kinetics400_rgb_20200926-0c730aef.pth",
            checkpoint=_ckpt("slowonly_kinetics_pretrained_r101_8x8x1_20e_ava_rgb",
                             "20201217-1c9b4117"))))

    # OmniSource-pretrained twins: same model and schedule, another backbone initialisation
    for base, omni, map_, stamp in (
            (slowonly, "r50_omni_4x16x1_kinetics400_rgb_20200926-51b1f7ea", 21.8, "20201217-0c6d2e98"),
            (r101, "r101_omni_8x8x1_kinetics400_rgb_20200926-b5dbb701", 25.9, "20201217-16378594")):
        name = base.name.replace("_kinetics_", "_omnisource_")
        add(replace(base, name=name, published=replace(
            base.published, map=map_, pretrain="OmniSource", checkpoint=_ckpt(name, stamp),
            pretrained=f"{DL}/recognition/slowonly/omni/slowonly_{omni}.pth")))

    # ---- SlowFast R50, AVA 2.1: 32x2 clips ---------------------------------------------------
    sf_4x16 = BackboneConfig("slowfast", depth=50, resample_rate=8, speed_ratio=8, fusion_kernel=5)
    sf_8x8 = BackboneConfig("slowfast", depth=50, resample_rate=4, speed_ratio=4, fusion_kernel=7)
    slowfast = add(replace(
        slowonly, name="slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
        model=ModelConfig(sf_4x16, HeadConfig()),
        data=DataConfig(version="2.1", clip_len=32, frame_interval=2),
        optim=OptimConfig(lr=0.1125, batch_per_gpu=9, reference_batch=8 * 9),
        published=Published(
            map=24.4, gpus="8x2", pretrained=K400_SLOWFAST_R50_4x16,
            checkpoint=_ckpt("slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
                             "20201217-6e7c704d"))))
    add(replace(slowfast, name="slowfast_context_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
                model=ModelConfig(sf_4x16, HeadConfig(with_global=True)),
                published=replace(slowfast.published, map=25.4, checkpoint=_ckpt(
                    "slowfast_context_kinetics_pretrained_r50_4x16x1_20e_ava_rgb",
                    "20201222-f4d209c9"))))
    add(replace(slowfast, name="slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb",
                model=ModelConfig(sf_8x8, HeadConfig()),
                optim=OptimConfig(lr=0.075, batch_per_gpu=5, reference_batch=8 * 5),
                published=Published(
                    map=25.5, gpus="8x2", pretrained=K400_SLOWFAST_R50_8x8,
                    checkpoint=_ckpt("slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb",
                                     "20201217-ae225e97"))))

    # ---- AVA 2.2 / cosine 10 epochs: SlowFast 8x8, temporal max, focal, ACRN -----------------
    cosine = ScheduleConfig(epochs=10, policy="cosine", milestones=(), warmup_epochs=2)
    sf22 = add(replace(
        slowfast, name="slowfast_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
        model=ModelConfig(sf_8x8, HeadConfig()),
        data=DataConfig(version="2.2", clip_len=32, frame_interval=2),
        optim=OptimConfig(lr=0.075, batch_per_gpu=6, reference_batch=8 * 6),
        schedule=cosine,
        published=Published(
            map=26.1, gpus="8", pretrained=K400_SLOWFAST_R50_8x8,
            checkpoint=_ckpt("slowfast_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
                             "-b987b516"))))
    tmax = add(replace(
        sf22, name="slowfast_temporal_max_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
        model=ModelConfig(sf_8x8, HeadConfig(temporal_pool="max")),
        published=replace(sf22.published, map=26.4, checkpoint=_ckpt(
            "slowfast_temporal_max_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
            "-874e0845"))))
    add(replace(
        tmax, name="slowfast_temporal_max_focal_alpha3_gamma1_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
        model=ModelConfig(sf_8x8, HeadConfig(temporal_pool="max", focal_alpha=3.0, focal_gamma=1.0)),
        published=replace(sf22.published, map=26.8, checkpoint=_ckpt(
            "slowfast_temporal_max_focal_alpha3_gamma1_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
            "-345618cd"))))
    acrn_model = ModelConfig(sf_8x8, HeadConfig(temporal_pool="max", shared_head="acrn"))
    acrn22 = add(replace(
        tmax, name="slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
        model=acrn_model,
        published=replace(sf22.published, map=27.8, checkpoint=_ckpt(
            "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb", "-2be32625",
            folder="acrn"))))
    add(replace(
        acrn22, name="slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava_rgb",
        data=replace(acrn22.data, version="2.1"),
        published=replace(sf22.published, map=27.1, checkpoint=_ckpt(
            "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava_rgb", "-49b07bf2",
            folder="acrn"))))

    # ---- Long-term feature bank (SlowOnly R50 4x16 + FBO) ------------------------------------
    lfb_optim = OptimConfig(lr=0.15, batch_per_gpu=12, reference_batch=8 * 12)
    for fbo, map_, stamp in (("nl", 24.11, "20210224-2ae136d9"), ("avg", 20.17, "20210301-19c330b7"),
                             ("max", 22.15, "20210301-37efcd15")):
        name = f"lfb_{fbo}_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb"
        add(replace(slowonly, name=name,
                    model=ModelConfig(slowonly.model.backbone, HeadConfig(shared_head="lfb"),
                                      lfb=LFBConfig(fbo=fbo)),
                    optim=lfb_optim,
                    published=replace(slowonly.published, map=map_,
                                      checkpoint=_ckpt(name, stamp, folder="lfb"))))

    # ---- custom classes (AVA 2.1): 16 classes whose AP lies in (0.1, 0.3) --------------------
    custom = (3, 6, 10, 27, 29, 38, 41, 48, 51, 53, 54, 59, 61, 64, 70, 72)
    for base, stamp, map_all, map_custom, warmup_ratio in (
            (slowonly, "-4ab80419", 19.48, 33.11, 0.1),
            (slowfast, "20210305-c6225546", 18.64, 37.85, 0.05)):  # %, as every published map
        name = f"{base.name}_custom_classes"
        add(replace(base, name=name,
                    model=replace(base.model, head=replace(base.model.head, num_classes=len(custom) + 1)),
                    data=replace(base.data, custom_classes=custom),
                    schedule=replace(base.schedule, warmup_ratio=warmup_ratio),
                    published=replace(base.published, map=map_custom, custom_classes_map=map_all,
                                      checkpoint=_ckpt(name, stamp))))
    return zoo


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


def table(scale: str = "full", complexity: bool = True, contains: str = "", progress: bool = False):
    """The zoo as a ``pandas.DataFrame``, one row per config (whose name has ``contains``):
    settings, published mAP, and (with ``complexity``) parameters in millions and GFLOPs
    (multiply-adds) at :func:`test_clip_shape`; an LFB config's count includes its feature bank
    operator reading the 300 long-term features. ``progress`` shows a progress bar while the
    models are measured."""
    import pandas as pd
    from tqdm.auto import tqdm

    from .models.complexity import model_complexity

    rows = []
    selected = [n for n in names() if contains in n]
    for name in tqdm(selected, desc="measuring models", disable=not (progress and complexity),
                     leave=False):
        cfg = get(name, scale)
        schedule = cfg.schedule
        if schedule.policy == "step":
            sched = f"step {','.join(map(str, schedule.milestones))}"
        else:
            sched = "cosine"
        row = {
            "config": cfg.name,
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
            "mAP": cfg.published.map,
        }
        if complexity:
            shape = test_clip_shape(cfg)
            stats = model_complexity(cfg.model, shape)
            row["params (M)"] = round(stats["params"] / 1e6, 2)
            row["GFLOPs"] = round(stats["gflops"], 1)
            row["test input"] = "x".join(map(str, shape[1:]))
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
    bank = resolve(cfg.model.lfb.bank_config.removesuffix("_mini"))
    if cfg.scale == "mini":
        bank = resolve(f"{bank.name}:mini")
    return replace(bank, data=cfg.data, runtime=cfg.runtime)
