"""Configs as plain dataclasses: what to build, on which data, trained how.

A :class:`Config` nests one dataclass per concern::

    Config(name, model=ModelConfig(backbone, head, lfb), data, optim, schedule, runtime, published,
           scale)

Every field has the value of the full-size AVA setting unless a zoo entry says otherwise
(:mod:`stdet.zoo` holds the named configs, :mod:`stdet.mini` derives their CPU-sized
counterparts). Configs are frozen: a variant is ``dataclasses.replace(base, ...)``, so the
difference reads in one line.

This module is the schema and nothing else: the dataclasses and their checks, files
(:func:`save_config`, :func:`load_config`) and ``--cfg-options`` overrides
(:func:`apply_overrides`). A field whose values are a fixed set is typed ``Literal[...]``; a
config holding another value is refused when it is built, with a :class:`ConfigError` naming the
field by its dotted key (``model.head.temporal_pool must be one of 'avg', 'max'; got 'mean'``),
whether the value came from Python, a ``config.json`` or the command line.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import re
import types
import typing
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

from .data.errors import StdetError


class ConfigError(StdetError, ValueError, KeyError):
    """A config that cannot be built: an unknown key or zoo name, a value that does not parse or
    is not allowed. The message names the key and what it accepts (the CLI prints it as one line
    ``error: ...``, exit code 2)."""


@functools.cache
def _choices(cls: type) -> dict[str, tuple]:
    """The ``Literal`` fields of the dataclass ``cls`` and the values each allows."""
    hints = typing.get_type_hints(cls)
    return {f.name: typing.get_args(hints[f.name]) for f in dataclasses.fields(cls)
            if typing.get_origin(hints[f.name]) is Literal}


_RULE = re.compile(r"^(>=|>|<=|<) (-?[\d.e-]+)$|^([\[(])(-?[\d.]+), (-?[\d.]+)([\])])$")


def _within(value, rule: str) -> bool:
    """Whether the number ``value`` satisfies ``rule``: ``">= 1"``, ``"> 0"``, ``"[0, 1]"``,
    ``"[0, 1)"`` (intervals closed at ``[``/``]``, open at ``(``/``)``)."""
    m = _RULE.match(rule)
    if m.group(1):
        op, bound = m.group(1), float(m.group(2))
        return {">=": value >= bound, ">": value > bound, "<=": value <= bound,
                "<": value < bound}[op]
    lo_open, lo, hi, hi_open = m.group(3) == "(", float(m.group(4)), float(m.group(5)), m.group(6) == ")"
    return (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)


class _Checked:
    """Refuses, when a config dataclass is built, a ``Literal`` field holding a value outside its
    choices, and a number outside its range (``_ranges``: field -> rule of :func:`_within`,
    applied to every element of a tuple). ``_key`` is where the dataclass sits in a
    :class:`Config` (``"model.head."``), so the error names the key that ``--cfg-options`` and
    ``config.json`` use."""

    _key: ClassVar[str] = ""
    _ranges: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        for name, allowed in _choices(type(self)).items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{self._key}{name} must be one of "
                                  f"{', '.join(map(repr, allowed))}; got {value!r}")
        for name, rule in self._ranges.items():
            value = getattr(self, name)
            numbers = value if isinstance(value, tuple) else () if value is None else (value,)
            for number in numbers:
                if isinstance(number, bool) or not isinstance(number, (int, float)):
                    raise ConfigError(f"{self._key}{name} must be a number, got {value!r}")
                if not _within(number, rule):
                    each = " (each)" if isinstance(value, tuple) else ""
                    bound = f"lie in {rule}" if rule[0] in "[(" else f"be {rule}"
                    raise ConfigError(f"{self._key}{name} must {bound}{each}, got {value!r}")


@dataclass(frozen=True)
class BackboneConfig(_Checked):
    """SlowOnly or SlowFast (see :mod:`stdet.models.slowfast`)."""

    _key: ClassVar[str] = "model.backbone."
    _ranges: ClassVar[dict[str, str]] = {
        "depth": ">= 1", "base_channels": ">= 1", "stage_blocks": ">= 1", "spatial_strides": ">= 1",
        "resample_rate": ">= 1", "speed_ratio": ">= 1", "channel_ratio": ">= 1",
        "fusion_kernel": ">= 1"}

    arch: Literal["slowonly", "slowfast"] = "slowonly"
    depth: int = 50
    base_channels: int = 64
    stage_blocks: tuple[int, ...] | None = None    # overrides depth (mini models)
    spatial_strides: tuple[int, ...] = (1, 2, 2, 1)
    non_local: tuple[tuple[int, ...], ...] | None = None   # per stage, one flag per block
    resample_rate: int = 8                 # SlowFast: τ
    speed_ratio: int = 8                   # SlowFast: α
    channel_ratio: int = 8                 # SlowFast: β
    fusion_kernel: int = 5                 # SlowFast: temporal kernel of the laterals
    pretrained: str | None = None          # Kinetics checkpoint (path or URL) for the backbone


@dataclass(frozen=True)
class HeadConfig(_Checked):
    """RoI extractor, optional shared head, classifier, loss and RoI sampling.

    ``shared_head`` is "acrn" (actor-context relations) or "none"; a model with a long-term
    feature bank gets the LFB head from ``model.lfb`` alone (:attr:`ModelConfig.shared_head`)."""

    _key: ClassVar[str] = "model.head."
    _ranges: ClassVar[dict[str, str]] = {
        "num_classes": ">= 2", "roi_size": ">= 1", "dropout": "[0, 1)", "focal_alpha": ">= 0",
        "focal_gamma": ">= 0", "topk": ">= 1", "num_rois": ">= 1", "pos_iou": "[0, 1]"}

    num_classes: int = 81                  # 80 AVA actions + index 0 (not an action)
    roi_size: int = 8                      # RoIAlign output S x S
    temporal_pool: Literal["avg", "max"] = "avg"   # over each pathway's frames
    with_global: bool = False              # concatenate a global context feature
    shared_head: Literal["none", "acrn"] = "none"
    dropout: float = 0.5
    focal_alpha: float = 1.0
    focal_gamma: float = 0.0
    topk: tuple[int, ...] = (3, 5)
    num_rois: int = 32                     # RoIs sampled per training clip
    pos_iou: float = 0.9                   # IoU making a proposal positive
    # the classifier's weights at the start (bias 0): "normal" N(0, 0.01), as MMAction2 0.x's
    # BBoxHeadAVA, with which the published runs trained; "xavier" (normal), as MMAction2 1.x's
    init: Literal["normal", "xavier"] = "normal"


@dataclass(frozen=True)
class LFBConfig(_Checked):
    """Long-term feature bank and its feature bank operator (FBO)."""

    _key: ClassVar[str] = "model.lfb."
    _ranges: ClassVar[dict[str, str]] = {
        "window_seconds": ">= 1", "max_per_second": ">= 1", "feature_channels": ">= 1",
        "latent_channels": ">= 1", "num_layers": ">= 1", "dropout": "[0, 1)"}

    fbo: Literal["nl", "avg", "max"] = "nl"
    window_seconds: int = 60               # bank window centred on the keyframe
    max_per_second: int = 5                # RoI features kept per second
    feature_channels: int = 2048
    latent_channels: int = 512             # FBO non-local
    num_layers: int = 2
    dropout: float = 0.2
    bank_config: str = "lfb_slowonly_r50_ava_infer"
    bank_dir: str = "lfb"                  # lfb_{split}.npy/.json, relative to the data root


@dataclass(frozen=True)
class ModelConfig:
    """Backbone, RoI head and, for a long-term feature bank model, the bank (``lfb``)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    lfb: LFBConfig | None = None

    def __post_init__(self) -> None:
        if self.lfb is not None and self.head.shared_head != "none":
            raise ConfigError(f"model.head.shared_head={self.head.shared_head!r} and model.lfb "
                              "cannot both be set: a model with a feature bank has the LFB head")

    @property
    def shared_head(self) -> Literal["none", "acrn", "lfb"]:
        """The module between RoIAlign and the classifier: "lfb" when the model has a feature
        bank (``lfb``), else ``head.shared_head``."""
        return "lfb" if self.lfb is not None else self.head.shared_head


@dataclass(frozen=True)
class DataConfig(_Checked):
    """Which AVA files and how a clip is sampled and augmented."""

    _key: ClassVar[str] = "data."
    _ranges: ClassVar[dict[str, str]] = {
        "clip_len": ">= 1", "frame_interval": ">= 1", "train_scale": ">= 1", "crop_size": ">= 1",
        "test_scale": ">= 1", "flip": "[0, 1]", "person_det_score_thr": "[0, 1]",
        "max_proposals": ">= 1", "custom_classes": ">= 1", "workers": ">= 0"}

    root: str = "data/ava"
    version: Literal["2.1", "2.2"] = "2.1"  # annotation files
    clip_len: int = 4
    frame_interval: int = 16
    train_scale: tuple[int, int] = (256, 320)   # random rescale of the short side
    crop_size: int = 256
    test_scale: int = 256                  # test: short side, whole frame
    flip: float = 0.5
    person_det_score_thr: float = 0.9
    max_proposals: int = 1000
    custom_classes: tuple[int, ...] | None = None
    # with custom_classes, the keyframes a test or validation scores: "with_classes" those with a
    # ground-truth box of a custom class, as training and MMAction2 (every split) do; "all" every
    # keyframe, the ones without the classes included, as a deployed detector meets them
    custom_keyframes: Literal["with_classes", "all"] = "with_classes"
    workers: int = 2                       # data loading processes per GPU
    # how workers start: "auto" forks them, except in a Jupyter kernel (a forkserver; see
    # stdet.data.processes); "fork" | "forkserver" | "spawn" force one
    start_method: Literal["auto", "fork", "forkserver", "spawn"] = "auto"
    frame_source: Literal["rawframes", "video"] = "rawframes"   # root/rawframes | root/videos
    # a keyframe whose frames cannot be read: "raise" stops the run with one line naming the
    # file; "skip" leaves it out (training takes the next one), counted and reported each epoch
    on_error: Literal["raise", "skip"] = "raise"
    # decode JPEG frames at 1/2, 1/4 or 1/8 size when the short side stays >= the size the
    # transforms rescale it to (max(train_scale) for training, test_scale for testing)
    reduced_decode: bool = True
    # how frames become the model's input: "stdet" (reduced_decode as set, antialiased resize),
    # "mmaction2" (MMAction2's pipeline bit for bit: full-size decode, OpenCV's bilinear without
    # antialiasing, mmcv's size rounding), "auto": "mmaction2" when `test` scores an MMAction2
    # checkpoint (raw or converted), else "stdet"
    preprocess: Literal["auto", "stdet", "mmaction2"] = "auto"


@dataclass(frozen=True)
class OptimConfig(_Checked):
    """SGD with the reference learning rate for the reference total batch (linear scaling rule)."""

    _key: ClassVar[str] = "optim."
    _ranges: ClassVar[dict[str, str]] = {
        "lr": "> 0", "reference_batch": ">= 1", "momentum": "[0, 1)", "weight_decay": ">= 0",
        "grad_clip": ">= 0", "batch_per_gpu": ">= 1"}

    lr: float = 0.2
    reference_batch: int = 128             # total clips per step the lr was set for
    momentum: float = 0.9
    weight_decay: float = 1e-5
    nesterov: bool = False
    grad_clip: float = 40.0
    batch_per_gpu: int = 16
    # (name prefix, factor): parameters whose name starts with the prefix train at lr * factor
    # (mmengine's paramwise_cfg custom_keys lr_mult); the first matching prefix wins
    lr_mult: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        for pair in self.lr_mult:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
                    and isinstance(pair[1], (int, float)) and not isinstance(pair[1], bool)
                    and pair[1] >= 0):
                raise ConfigError(f"optim.lr_mult must be (name prefix, factor >= 0) pairs, "
                                  f"got {self.lr_mult!r}")

    def scaled_lr(self, total_batch: int) -> float:
        """Learning rate for ``total_batch`` clips per step: ``lr * total_batch / reference_batch``."""
        return self.lr * (total_batch / self.reference_batch)  # exactly lr at the reference batch


@dataclass(frozen=True)
class ScheduleConfig(_Checked):
    """Epochs, linear warmup from ``warmup_ratio * lr``, then step decay or cosine annealing."""

    _key: ClassVar[str] = "schedule."
    _ranges: ClassVar[dict[str, str]] = {
        "epochs": ">= 1", "milestones": ">= 1", "gamma": "> 0", "warmup_epochs": ">= 0",
        "warmup_iters": ">= 0", "warmup_ratio": "(0, 1]", "eval_interval": ">= 1"}

    epochs: int = 20
    policy: Literal["step", "cosine"] = "step"
    milestones: tuple[int, ...] = (10, 15)
    gamma: float = 0.1
    warmup_epochs: float = 5.0
    warmup_iters: int = 0                  # warmup in iterations instead (used when > 0)
    warmup_ratio: float = 0.1
    eval_interval: int = 1                 # --validate: evaluate every this many epochs


@dataclass(frozen=True)
class RuntimeConfig(_Checked):
    """How the computation runs on the hardware; none of it changes what is computed beyond
    floating-point rounding (bf16 autocast aside). Every switch can be set with ``--cfg-options``."""

    _key: ClassVar[str] = "runtime."
    _ranges: ClassVar[dict[str, str]] = {"log_interval": ">= 1"}

    bf16: bool = True                      # CUDA: autocast the forward to bfloat16 (train, test, LFB)
    channels_last: bool = False            # training: channels_last_3d weights and clips
    compile: bool = False                  # training: torch.compile the backbone in place
    cudnn_benchmark: bool = True           # CUDA: cuDNN autotuning (off under --deterministic)
    fused_optimizer: bool = True           # fused SGD kernels when every parameter is on a GPU
    # the training step reads nothing back from the device; losses, the finite-loss check and
    # the progress bar are read once every this many iterations (and at the end of an epoch)
    log_interval: int = 20


@dataclass(frozen=True)
class Published:
    """What the reference documentation reports for this config. The backbone initialisation
    the published run started from is the config's ``model.backbone.pretrained``, its one copy."""

    map: float | None = None               # frame-mAP@0.5 (%) on the AVA val set
    gpus: str = "8"                        # GPUs of the published run ("8x2" = 16)
    pretrain: str = "Kinetics-400"         # what that initialisation was trained on
    checkpoint: str | None = None          # URL of the published detector weights
    custom_classes_map: float | None = None   # custom-class configs: mAP (%) of the all-80 model on them


@dataclass(frozen=True)
class Config(_Checked):
    name: str
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    published: Published = field(default_factory=Published)
    scale: Literal["full", "mini"] = "full"


# --- files -----------------------------------------------------------------------------------

def config_to_dict(cfg: Config) -> dict:
    """A JSON-ready dict of ``cfg`` (tuples become lists)."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict, cls=Config, where: str = ""):
    """Rebuild a config from :func:`config_to_dict`'s output (also one written by an earlier
    stdet, see :func:`_upgrade`); an unknown key or a value outside its choices raises
    :class:`ConfigError`."""
    if cls is Config:
        data = _upgrade(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config keys {[where + k for k in unknown]}")
    values = {}
    for name, value in data.items():
        kind = hints[name]
        sub = next((a for a in typing.get_args(kind) or (kind,) if dataclasses.is_dataclass(a)), None)
        if sub is not None and isinstance(value, dict):
            values[name] = config_from_dict(value, sub, f"{where}{name}.")
        else:
            values[name] = _as_tuples(value)
    return cls(**values)


def _upgrade(data: dict) -> dict:
    """A config dict as this version writes it, from one an earlier version wrote:

    - ``model.head.shared_head`` was "lfb" beside ``model.lfb``; the LFB head now follows from
      ``model.lfb`` alone, and the head's own field is "none";
    - ``published.pretrained`` repeated ``model.backbone.pretrained``; it is dropped.
    """
    model, published = data.get("model"), data.get("published")
    head = model.get("head") if isinstance(model, dict) else None
    if isinstance(head, dict) and head.get("shared_head") == "lfb" and model.get("lfb") is not None:
        data = {**data, "model": {**model, "head": {**head, "shared_head": "none"}}}
    if isinstance(published, dict) and "pretrained" in published:
        data = {**data, "published": {k: v for k, v in published.items() if k != "pretrained"}}
    return data


def _as_tuples(value):
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    return value


def save_config(cfg: Config, path) -> None:
    import json

    from .data.io import atomic_write_text
    atomic_write_text(path, json.dumps(config_to_dict(cfg), indent=2) + "\n")


def load_config(path) -> Config:
    """A config saved by :func:`save_config` (a work dir's ``config.json``); a file that is not
    such a config is a :class:`ConfigError` naming the file and the line."""
    import json

    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a stdet config (a JSON object was expected)")
    try:
        return config_from_dict(data)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{path}: {e.args[0] if e.args else e}") from None


# --- command-line overrides -------------------------------------------------------------------

def _field_types(cls) -> dict[str, typing.Any]:
    return typing.get_type_hints(cls)


def valid_keys(cfg: Config) -> list[str]:
    """Every dotted key ``--cfg-options`` accepts for ``cfg`` (nested dataclass fields)."""
    keys = []

    def walk(obj, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                keys.append(f"{prefix}{f.name}")

    walk(cfg, "")
    return keys


def _parse_value(text: str, annotation, key: str):
    """Parse ``text`` as the field's type: numbers, bools, None, tuples, strings."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if text in ("None", "none", "null") and type(None) in args:
        return None
    union = origin in (typing.Union, types.UnionType)  # Optional[str] or str | None
    if annotation is str or (union and str in args):
        return text
    if origin is Literal and all(isinstance(a, str) for a in args):
        return text  # the config refuses a value outside the choices when it is built
    if annotation is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {text!r}")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ConfigError(f"{key}: cannot parse {text!r} as {annotation}") from None
    if annotation is float and isinstance(value, (int, float)):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if origin is tuple and isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,)  # `milestones=4` means (4,)
    if isinstance(value, (int, float)) and union and (float in args or int in args):
        return value
    raise ConfigError(f"{key}: expected {annotation}, got {text!r}")


def apply_overrides(cfg: Config, options: list[str]) -> Config:
    """Apply ``["model.head.dropout=0.3", "optim.lr=0.01"]``. A typo raises a :class:`ConfigError`
    that suggests the closest valid keys (``unknown config key 'optim.lrr'; did you mean
    'optim.lr'?``), a value that does not parse or is not allowed one that names the key."""
    for option in options:
        key, sep, text = option.partition("=")
        if not sep:
            raise ConfigError(f"override {option!r} is not KEY=VALUE")
        parts = key.strip().split(".")
        cfg = _replace_path(cfg, parts, text.strip(), key.strip(), cfg)
    return cfg


def unknown_key(key: str, cfg: Config) -> ConfigError:
    """The error for a key ``cfg`` does not have, with the closest valid keys: first among the
    fields of the group the key names (``optim.lrr`` -> ``optim.lr``), then the keys of the same
    last name (``lr`` -> ``optim.lr``), then among all keys (``optm.lrr`` -> ``optim.lr``); when
    none is close, the fields of the group."""
    group, obj = "", cfg
    for part in key.split(".")[:-1]:
        value = getattr(obj, part, None)
        if not dataclasses.is_dataclass(value):
            break
        group, obj = f"{group}{part}.", value
    fields = [f.name for f in dataclasses.fields(obj)]
    leaves = [name for name in fields if not dataclasses.is_dataclass(getattr(obj, name))]
    keys = valid_keys(cfg)
    close = [group + k for k in difflib.get_close_matches(key[len(group):], leaves, n=3, cutoff=0.6)]
    close = close or [k for k in keys if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:3]
    close = close or difflib.get_close_matches(key, keys, n=3, cutoff=0.8)
    if close:
        return ConfigError(f"unknown config key {key!r}; did you mean {' or '.join(map(repr, close))}?")
    return ConfigError(f"unknown config key {key!r}; {group.rstrip('.') or 'a config'} has: "
                       + ", ".join(fields))


def _replace_path(obj, parts: list[str], text: str, key: str, root: Config):
    names = {f.name for f in dataclasses.fields(obj)}
    if parts[0] not in names:
        raise unknown_key(key, root)
    value = getattr(obj, parts[0])
    if len(parts) == 1:
        if dataclasses.is_dataclass(value):
            raise ConfigError(f"{key!r} is a group; set one of its fields, e.g. {key}."
                              f"{dataclasses.fields(value)[0].name}=...")
        return replace(obj, **{parts[0]: _parse_value(text, _field_types(type(obj))[parts[0]], key)})
    if not dataclasses.is_dataclass(value):
        group = key.rsplit(".", len(parts) - 1)[0]
        if value is None:
            raise ConfigError(f"{group!r} of this config is None; {key!r} cannot be set")
        raise unknown_key(key, root)
    return replace(obj, **{parts[0]: _replace_path(value, parts[1:], text, key, root)})
