"""The config schema: fields with a fixed set of values are ``Literal`` types, refused when a
config is built (from Python, a config.json or ``--cfg-options``) with a :class:`ConfigError`
naming the dotted key; the LFB head follows from ``model.lfb``; config.json files of earlier
versions load; a ``--cfg-options`` typo suggests the closest keys; the mini scale lives in
:mod:`stdet.mini`."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from dataclasses import replace

import pytest

import stdet
import stdet.configs
from stdet import zoo
from stdet.cli import main
from stdet.configs import (BackboneConfig, Config, ConfigError, DataConfig, HeadConfig, LFBConfig,
                           ModelConfig, Published, ScheduleConfig, apply_overrides, config_from_dict,
                           config_to_dict, load_config, save_config, valid_keys)

SLOWONLY = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb"
LFB_NL = "lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb"
ACRN = "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb"

# str fields whose value is free text (a name, a path or URL, a note), not one of a fixed set
FREE_TEXT = {"name", "model.backbone.pretrained", "model.lfb.bank_config", "model.lfb.bank_dir",
             "data.root", "published.gpus", "published.pretrain", "published.checkpoint"}


def leaf_types(cls=Config, prefix: str = "") -> dict[str, object]:
    """Every leaf field of the schema (``model.lfb.*`` included) and its type."""
    out = {}
    for f in dataclasses.fields(cls):
        kind = typing.get_type_hints(cls)[f.name]
        sub = next((a for a in typing.get_args(kind) or (kind,) if dataclasses.is_dataclass(a)), None)
        if sub is not None:
            out.update(leaf_types(sub, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = kind
    return out


def test_every_str_field_is_free_text_or_a_literal():
    types = leaf_types()
    strings = {key for key, kind in types.items()
               if kind is str or str in typing.get_args(kind)}
    assert strings == FREE_TEXT, "a new str field: a Literal if its values are a fixed set"
    choices = {key: typing.get_args(kind) for key, kind in types.items()
               if typing.get_origin(kind) is typing.Literal}
    assert choices == {
        "model.backbone.arch": ("slowonly", "slowfast"),
        "model.head.temporal_pool": ("avg", "max"),
        "model.head.shared_head": ("none", "acrn"),
        "model.head.init": ("normal", "xavier"),
        "model.lfb.fbo": ("nl", "avg", "max"),
        "data.version": ("2.1", "2.2"),
        "data.start_method": ("auto", "fork", "forkserver", "spawn"),
        "data.frame_source": ("rawframes", "video"),
        "data.on_error": ("raise", "skip"),
        "data.custom_keyframes": ("with_classes", "all"),
        "data.preprocess": ("auto", "stdet", "mmaction2"),
        "schedule.policy": ("step", "cosine"),
        "scale": ("full", "mini"),
    }


def ranged_keys(cls=Config, prefix: str = "") -> set[str]:
    out = {prefix + name for name in getattr(cls, "_ranges", {})}
    for f in dataclasses.fields(cls):
        kind = typing.get_type_hints(cls)[f.name]
        sub = next((a for a in typing.get_args(kind) or (kind,) if dataclasses.is_dataclass(a)), None)
        if sub is not None:
            out |= ranged_keys(sub, f"{prefix}{f.name}.")
    return out


# numbers any value of their type suits; optim.lr_mult's factors are checked by OptimConfig
UNRANGED = {"published.map", "published.custom_classes_map", "optim.lr_mult"}


def test_every_number_has_a_range():
    numeric = {key for key, kind in leaf_types().items()
               if any(t in (int, float) for t in (kind, *typing.get_args(kind),
                                                  *(a for t in typing.get_args(kind)
                                                    for a in typing.get_args(t))))}
    assert numeric - UNRANGED - ranged_keys() == set(), "a new number: give it a range in _ranges"


@pytest.mark.parametrize("option, message", [
    ("data.clip_len=0", "data.clip_len must be >= 1, got 0"),
    ("schedule.epochs=-1", "schedule.epochs must be >= 1, got -1"),
    ("optim.lr=0", "optim.lr must be > 0, got 0.0"),
    ("model.head.dropout=1", "model.head.dropout must lie in [0, 1), got 1.0"),
    ("data.train_scale=(0,320)", "data.train_scale must be >= 1 (each), got (0, 320)"),
    ("data.person_det_score_thr=1.5", "data.person_det_score_thr must lie in [0, 1], got 1.5"),
    ("runtime.log_interval=0", "runtime.log_interval must be >= 1, got 0"),
    ("data.workers=-2", "data.workers must be >= 0, got -2"),
    ("optim.lr_mult=(('backbone',-1),)",
     "optim.lr_mult must be (name prefix, factor >= 0) pairs, got (('backbone', -1),)"),
])
def test_values_out_of_range_are_refused_when_the_config_is_built(option, message):
    with pytest.raises(ConfigError) as info:
        stdet.config("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb", option)
    assert str(info.value) == message


def test_config_json_out_of_range_is_refused(tmp_path):
    cfg = config_to_dict(stdet.config("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb"))
    cfg["schedule"]["epochs"] = 0
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="schedule.epochs must be >= 1, got 0"):
        stdet.config(str(path))


@pytest.mark.parametrize("build, message", [
    (lambda: BackboneConfig(arch="x3d"), "model.backbone.arch must be one of 'slowonly', 'slowfast'; got 'x3d'"),
    (lambda: HeadConfig(temporal_pool="mean"), "model.head.temporal_pool must be one of 'avg', 'max'; got 'mean'"),
    (lambda: HeadConfig(shared_head="lfb"), "model.head.shared_head must be one of 'none', 'acrn'; got 'lfb'"),
    (lambda: LFBConfig(fbo="attention"), "model.lfb.fbo must be one of 'nl', 'avg', 'max'; got 'attention'"),
    (lambda: DataConfig(version="2.0"), "data.version must be one of '2.1', '2.2'; got '2.0'"),
    (lambda: DataConfig(frame_source="mp4"), "data.frame_source must be one of 'rawframes', 'video'; got 'mp4'"),
    (lambda: DataConfig(start_method="thread"),
     "data.start_method must be one of 'auto', 'fork', 'forkserver', 'spawn'; got 'thread'"),
    (lambda: ScheduleConfig(policy="linear"), "schedule.policy must be one of 'step', 'cosine'; got 'linear'"),
    (lambda: Config("x", scale="tiny"), "scale must be one of 'full', 'mini'; got 'tiny'"),
    (lambda: replace(zoo.get(SLOWONLY).model.head, temporal_pool="MAX"), "model.head.temporal_pool"),
])
def test_a_value_outside_its_choices_is_refused_when_built(build, message):
    with pytest.raises(ConfigError) as info:
        build()
    assert str(info.value).startswith(message)


def test_config_error_is_a_key_and_a_value_error_with_its_message_unquoted():
    error = ConfigError("unknown config key 'x'")
    assert isinstance(error, KeyError) and isinstance(error, ValueError)
    assert str(error) == "unknown config key 'x'"


def test_overrides_set_literal_fields_and_refuse_other_values():
    cfg = zoo.get(SLOWONLY)
    new = apply_overrides(cfg, ["model.head.temporal_pool=max", "data.version=2.2",
                                "data.start_method=spawn", "schedule.policy=cosine"])
    assert (new.model.head.temporal_pool, new.data.version, new.data.start_method,
            new.schedule.policy) == ("max", "2.2", "spawn", "cosine")
    with pytest.raises(ConfigError, match="^model.head.temporal_pool must be one of 'avg', 'max'; got 'mean'$"):
        apply_overrides(cfg, ["model.head.temporal_pool=mean"])
    with pytest.raises(ConfigError, match="^model.lfb.fbo must be one of 'nl', 'avg', 'max'; got 'mlp'$"):
        apply_overrides(zoo.get(LFB_NL), ["model.lfb.fbo=mlp"])


def test_a_bad_choice_on_the_command_line_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "stdet", "train", f"{SLOWONLY}:mini", "--work-dir",
                           str(tmp_path / "w"), "--cfg-options", "model.head.temporal_pool=mean"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr == "error: model.head.temporal_pool must be one of 'avg', 'max'; got 'mean'\n"
    assert not (tmp_path / "w").exists()


def test_a_bad_choice_in_a_config_json_names_the_file_and_key(tmp_path):
    data = config_to_dict(zoo.get(SLOWONLY))
    data["data"]["frame_source"] = "frames"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="config.json: data.frame_source must be one of 'rawframes', 'video'"):
        load_config(path)


# ---- shared_head and model.lfb ---------------------------------------------------------------------

def test_the_lfb_head_follows_from_model_lfb():
    assert zoo.get(LFB_NL).model.shared_head == "lfb"
    assert zoo.get(LFB_NL).model.head.shared_head == "none"
    assert zoo.get(ACRN).model.shared_head == "acrn" and zoo.get(SLOWONLY).model.shared_head == "none"
    for name in zoo.names():
        model = zoo.get(name).model
        assert (model.shared_head == "lfb") == (model.lfb is not None) == name.startswith("lfb_"), name


def test_acrn_beside_a_feature_bank_is_refused_naming_both_fields(tmp_path, capsys):
    message = "model.head.shared_head='acrn' and model.lfb cannot both be set"
    with pytest.raises(ConfigError, match=message):
        ModelConfig(BackboneConfig(), HeadConfig(shared_head="acrn"), LFBConfig())
    with pytest.raises(ConfigError, match=message):
        apply_overrides(zoo.get(LFB_NL), ["model.head.shared_head=acrn"])
    argv = ["train", LFB_NL, "--work-dir", str(tmp_path / "w"), "--cfg-options", "model.head.shared_head=acrn"]
    assert main(argv) == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_config_json_of_an_earlier_version_loads(tmp_path):
    """Written before the LFB head followed from ``model.lfb`` ("lfb" in ``model.head.shared_head``)
    and with the Kinetics URL repeated in ``published.pretrained``."""
    for name in (LFB_NL, SLOWONLY, f"{LFB_NL}_mini"):
        cfg = zoo.get(name)
        old = config_to_dict(cfg)
        if cfg.model.lfb is not None:
            old["model"]["head"]["shared_head"] = "lfb"
        old["published"]["pretrained"] = cfg.model.backbone.pretrained
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(old, indent=2))
        assert load_config(path) == cfg
    # "lfb" without a bank never built a model; it still does not
    old = config_to_dict(zoo.get(SLOWONLY))
    old["model"]["head"]["shared_head"] = "lfb"
    with pytest.raises(ConfigError, match="model.head.shared_head must be one of 'none', 'acrn'; got 'lfb'"):
        config_from_dict(old)


@pytest.mark.parametrize("scale", ["full", "mini"])
def test_every_zoo_config_round_trips_through_config_json(scale, tmp_path):
    for name in zoo.names():
        cfg = zoo.get(name, scale)
        save_config(cfg, tmp_path / "config.json")
        assert load_config(tmp_path / "config.json") == cfg, name


# ---- --cfg-options typos ---------------------------------------------------------------------------

@pytest.mark.parametrize("key, message", [
    ("optim.lrr", "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
    ("model.head.dropuot", "unknown config key 'model.head.dropuot'; did you mean 'model.head.dropout'?"),
    ("optm.lr", "unknown config key 'optm.lr'; did you mean 'optim.lr'?"),
    ("lr", "unknown config key 'lr'; did you mean 'optim.lr'?"),
    ("model.hed.dropout", "unknown config key 'model.hed.dropout'; did you mean 'model.head.dropout'?"),
    ("schedule.polcy", "unknown config key 'schedule.polcy'; did you mean 'schedule.policy'?"),
    ("model.head.xyzzy", "unknown config key 'model.head.xyzzy'; model.head has: num_classes, roi_size, "
                         "temporal_pool, with_global, shared_head, dropout, focal_alpha, focal_gamma, "
                         "topk, num_rois, pos_iou, init"),
])
def test_a_typo_suggests_the_closest_keys_not_all_of_them(key, message):
    cfg = zoo.get(SLOWONLY)
    assert len(valid_keys(cfg)) > 50
    with pytest.raises(ConfigError) as info:
        apply_overrides(cfg, [f"{key}=1"])
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_a_typo_on_the_command_line(tmp_path, capsys):
    assert main(["train", SLOWONLY, "--work-dir", str(tmp_path / "w"), "--cfg-options", "optim.lrr=0.1"]) == 2
    assert capsys.readouterr().err == "error: unknown config key 'optim.lrr'; did you mean 'optim.lr'?\n"


# ---- what the schema module holds ----------------------------------------------------------------

def test_the_mini_scale_lives_in_stdet_mini():
    from stdet import mini
    assert not any(hasattr(stdet.configs, name) for name in
                   ("mini", "MINI_LR_PER_CLIP", "MINI_FINETUNE_EPOCHS", "MINI_STAGE_BLOCKS"))
    assert zoo.get(SLOWONLY, "mini") == mini.mini(zoo.get(SLOWONLY))


def test_published_holds_no_copy_of_the_backbone_initialisation():
    assert "pretrained" not in {f.name for f in dataclasses.fields(Published)}
