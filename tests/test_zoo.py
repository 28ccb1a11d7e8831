"""The zoo's structure: one function per family whose variants differ from their base in the
fields their names say; the published record apart from the settings, the backbone initialisation
stored once (``model.backbone.pretrained``); the LFB bank model listed by ``zoo.table()`` and
``python -m stdet zoo``. (Names, settings, mini counterparts, complexity: tests/test_models.py.)"""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from stdet import zoo
from stdet.cli import main
from stdet.configs import Config, config_to_dict

SLOWONLY = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb"
SLOWFAST = "slowfast_kinetics_pretrained_r50_4x16x1_20e_ava_rgb"
SF_8x8 = "slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb"
AVA22 = "slowfast_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb"
TMAX = "slowfast_temporal_max_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb"
ACRN22 = "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb"
LFB_NL = "lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb"
R101 = "slowonly_kinetics_pretrained_r101_8x8x1_20e_ava_rgb"


def leaves(cfg: Config) -> dict[str, object]:
    """``cfg``'s settings as dotted keys (``published`` and ``name`` left out)."""
    out = {}

    def walk(value, prefix):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = value

    data = config_to_dict(cfg)
    del data["name"], data["published"]
    walk(data, "")
    return out


def differences(variant: str, base: str) -> set[str]:
    a, b = leaves(zoo.get(variant)), leaves(zoo.get(base))
    return {k for k in a.keys() | b.keys() if a.get(k, "absent") != b.get(k, "absent")}


@pytest.mark.parametrize("variant, base, changed", [
    ("slowonly_omnisource_pretrained_r50_4x16x1_20e_ava_rgb", SLOWONLY, {"model.backbone.pretrained"}),
    ("slowonly_omnisource_pretrained_r101_8x8x1_20e_ava_rgb", R101, {"model.backbone.pretrained"}),
    (R101, SLOWONLY, {"model.backbone.depth", "model.backbone.pretrained", "data.clip_len",
                      "data.frame_interval", "optim.lr", "optim.batch_per_gpu", "optim.reference_batch"}),
    ("slowfast_context_kinetics_pretrained_r50_4x16x1_20e_ava_rgb", SLOWFAST, {"model.head.with_global"}),
    (SF_8x8, SLOWFAST, {"model.backbone.resample_rate", "model.backbone.speed_ratio",
                        "model.backbone.fusion_kernel", "model.backbone.pretrained", "optim.lr",
                        "optim.batch_per_gpu", "optim.reference_batch"}),
    (AVA22, SF_8x8, {"data.version", "optim.batch_per_gpu", "optim.reference_batch", "schedule.epochs",
                     "schedule.policy", "schedule.milestones", "schedule.warmup_epochs"}),
    (TMAX, AVA22, {"model.head.temporal_pool"}),
    ("slowfast_temporal_max_focal_alpha3_gamma1_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb", TMAX,
     {"model.head.focal_alpha", "model.head.focal_gamma"}),
    (ACRN22, TMAX, {"model.head.shared_head"}),
    ("slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava_rgb", ACRN22, {"data.version"}),
    (LFB_NL, SLOWONLY, {"model.lfb", "optim.lr", "optim.batch_per_gpu", "optim.reference_batch"}),
    ("lfb_avg_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb", LFB_NL, {"model.lfb.fbo"}),
    ("lfb_max_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb", LFB_NL, {"model.lfb.fbo"}),
    (f"{SLOWONLY}_custom_classes", SLOWONLY, {"model.head.num_classes", "data.custom_classes"}),
    (f"{SLOWFAST}_custom_classes", SLOWFAST, {"model.head.num_classes", "data.custom_classes",
                                              "schedule.warmup_ratio"}),
])
def test_a_variant_differs_from_its_base_in_what_its_name_says(variant, base, changed):
    diff = differences(variant, base)
    if zoo.get(base).model.lfb is None:  # None -> an LFBConfig changes every model.lfb.* key
        diff = {"model.lfb" if k.startswith("model.lfb.") else k for k in diff}
    assert diff == changed


def test_every_family_function_gives_the_configs_of_its_names():
    families = {"slowonly": zoo.slowonly_family(), "slowfast": zoo.slowfast_family()}
    assert all(c.name.startswith("slowonly_") for c in families["slowonly"])
    assert all(c.name.startswith("slowfast_") for c in families["slowfast"])
    acrn = zoo.acrn_family(zoo.ZOO[TMAX])
    lfb = zoo.lfb_family(zoo.ZOO[SLOWONLY])
    custom = zoo.custom_classes_family(zoo.ZOO[SLOWONLY], zoo.ZOO[SLOWFAST])
    assert all("_acrn_" in c.name for c in acrn) and all(c.name.startswith("lfb_") for c in lfb)
    assert all(c.name.endswith("_custom_classes") for c in custom)
    everything = [*families["slowonly"], *families["slowfast"], *acrn, *lfb, *custom]
    assert [c.name for c in everything] == zoo.names() == list(zoo.PUBLISHED)
    for cfg in everything:  # the settings; the published record is attached by the zoo
        assert dataclasses.replace(cfg, published=zoo.PUBLISHED[cfg.name]) == zoo.get(cfg.name)


def test_the_backbone_initialisation_is_stored_once():
    for name in zoo.names():
        cfg = zoo.get(name)
        assert not hasattr(cfg.published, "pretrained")
        url = cfg.model.backbone.pretrained
        assert url.startswith(f"{zoo.DL}/recognition/") and url.endswith(".pth"), name
        assert ("omni" in url.split("/")[-1] and "without_omni" not in url) == (
            cfg.published.pretrain == "OmniSource"), name
    assert zoo.get(SLOWONLY).model.backbone.pretrained == zoo.K400_SLOWONLY_R50_4x16
    assert zoo.get(LFB_NL).model.backbone.pretrained == zoo.K400_SLOWONLY_R50_4x16
    assert zoo.get(TMAX).model.backbone.pretrained == zoo.K400_SLOWFAST_R50_8x8


def test_published_checkpoints_are_named_after_their_config():
    for name, published in zoo.PUBLISHED.items():
        folder = "acrn" if "_acrn_" in name else "lfb" if name.startswith("lfb_") else "ava"
        assert published.checkpoint.startswith(f"{zoo.DL}/detection/{folder}/{name}/{name}"), name
        assert published.map is not None and published.gpus in ("8", "8x2"), name


def test_the_table_lists_the_bank_model_after_the_lfb_configs():
    names = zoo.table_names()
    i = names.index(zoo.LFB_BANK_CONFIG)
    assert names[i - 1].startswith("lfb_") and names[:i] + names[i + 1:] == zoo.names()
    for scale, suffix in (("full", ""), ("mini", "_mini")):
        df = zoo.table(scale, complexity=False).set_index("config")
        row = df.loc[zoo.LFB_BANK_CONFIG + suffix]
        assert row["note"] == "bank model (extract-lfb)"
        assert (df.drop(zoo.LFB_BANK_CONFIG + suffix)["note"] == "").all()
        assert row["backbone"] == df.loc[zoo.LFB_BANK_BACKBONE + suffix, "backbone"]
    full = zoo.table("full", complexity=False).set_index("config")
    assert full["mAP"].isna().sum() == 1 and pd.isna(full.loc[zoo.LFB_BANK_CONFIG, "mAP"])
    assert list(zoo.table(contains="lfb_", complexity=False)["config"]) == [
        n for n in names if n.startswith("lfb_")]


def test_the_zoo_command_lists_the_bank_model(capsys):
    assert main(["zoo", "--no-complexity"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.lstrip().startswith(zoo.LFB_BANK_CONFIG))
    assert "bank model (extract-lfb)" in line
    assert all(name in out for name in zoo.names())
