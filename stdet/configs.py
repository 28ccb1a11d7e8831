"""Configs as plain dataclasses: what to build, on which data, trained how.

A :class:`Config` nests one dataclass per concern::

    Config(name, model=ModelConfig(backbone, head, lfb), data, optim, schedule, published, scale)

Every field has the value of the full-size AVA setting unless a zoo entry says otherwise
(:mod:`stdet.zoo` holds the named configs). Configs are frozen: a variant is
``dataclasses.replace(base, ...)``, so the difference reads in one line. :func:`mini` derives the
CPU-sized counterpart of any config: same code path, smaller depth, width and frames.
:func:`apply_overrides` applies ``--cfg-options`` style ``key=value`` strings.
"""
from __future__ import annotations

import ast
import dataclasses
import types
import typing
from dataclasses import dataclass, field, replace


class ConfigError(ValueError, KeyError):
    """A config that cannot be built: an unknown key or zoo name, a value that does not parse or
    is not allowed. The message names the key and what it accepts (the CLI prints it as one line
    ``error: ...``, exit code 2)."""

    __str__ = BaseException.__str__


@dataclass(frozen=True)
class BackboneConfig:
    """SlowOnly or SlowFast (see :mod:`stdet.models.slowfast`)."""

    arch: str = "slowonly"                 # "slowonly" | "slowfast"
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
class HeadConfig:
    """RoI extractor, optional shared head, classifier, loss and RoI sampling."""

    num_classes: int = 81                  # 80 AVA actions + index 0 (not an action)
    roi_size: int = 8                      # RoIAlign output S x S
    temporal_pool: str = "avg"             # "avg" | "max" over each pathway's frames
    with_global: bool = False              # concatenate a global context feature
    shared_head: str = "none"              # "none" | "acrn" | "lfb"
    dropout: float = 0.5
    focal_alpha: float = 1.0
    focal_gamma: float = 0.0
    topk: tuple[int, ...] = (3, 5)
    num_rois: int = 32                     # RoIs sampled per training clip
    pos_iou: float = 0.9                   # IoU making a proposal positive


@dataclass(frozen=True)
class LFBConfig:
    """Long-term feature bank and its feature bank operator (FBO)."""

    fbo: str = "nl"                        # "nl" | "avg" | "max"
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
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    lfb: LFBConfig | None = None


@dataclass(frozen=True)
class DataConfig:
    """Which AVA files and how a clip is sampled and augmented."""

    root: str = "data/ava"
    version: str = "2.1"                   # annotation files: "2.1" | "2.2"
    clip_len: int = 4
    frame_interval: int = 16
    train_scale: tuple[int, int] = (256, 320)   # random rescale of the short side
    crop_size: int = 256
    test_scale: int = 256                  # test: short side, whole frame
    flip: float = 0.5
    person_det_score_thr: float = 0.9
    max_proposals: int = 1000
    custom_classes: tuple[int, ...] | None = None
    workers: int = 2                       # data loading processes per GPU
    # how workers start: "auto" forks them, except in a Jupyter kernel (a forkserver; see
    # stdet.data.processes); "fork" | "forkserver" | "spawn" force one
    start_method: str = "auto"
    frame_source: str = "rawframes"        # "rawframes" (root/rawframes) | "video" (root/videos)
    # decode JPEG frames at 1/2, 1/4 or 1/8 size when the short side stays >= the size the
    # transforms rescale it to (max(train_scale) for training, test_scale for testing)
    reduced_decode: bool = True


@dataclass(frozen=True)
class OptimConfig:
    """SGD with the reference learning rate for the reference total batch (linear scaling rule)."""

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

    def scaled_lr(self, total_batch: int) -> float:
        """Learning rate for ``total_batch`` clips per step: ``lr * total_batch / reference_batch``."""
        return self.lr * (total_batch / self.reference_batch)  # exactly lr at the reference batch


@dataclass(frozen=True)
class ScheduleConfig:
    """Epochs, linear warmup from ``warmup_ratio * lr``, then step decay or cosine annealing."""

    epochs: int = 20
    policy: str = "step"                   # "step" | "cosine"
    milestones: tuple[int, ...] = (10, 15)
    gamma: float = 0.1
    warmup_epochs: float = 5.0
    warmup_iters: int = 0                  # warmup in iterations instead (used when > 0)
    warmup_ratio: float = 0.1
    eval_interval: int = 1                 # --validate: evaluate every this many epochs


@dataclass(frozen=True)
class RuntimeConfig:
    """How the computation runs on the hardware; none of it changes what is computed beyond
    floating-point rounding (bf16 autocast aside). Every switch can be set with ``--cfg-options``."""

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
    """What the reference documentation reports for this config."""

    map: float | None = None               # frame-mAP@0.5 (%) on the AVA val set
    gpus: str = "8"                        # GPUs of the published run ("8x2" = 16)
    pretrain: str = "Kinetics-400"
    pretrained: str | None = None          # URL of the Kinetics backbone initialisation
    checkpoint: str | None = None          # URL of the published detector weights
    custom_classes_map: float | None = None   # custom-class configs: mAP (%) of the all-80 model on them


@dataclass(frozen=True)
class Config:
    name: str
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    published: Published = field(default_factory=Published)
    scale: str = "full"                    # "full" | "mini"


def _mini_non_local(non_local: tuple[tuple[int, ...], ...] | None, blocks: tuple[int, ...]):
    """One block per stage keeps a non-local block where any block of the full stage had one."""
    if non_local is None:
        return None
    return tuple((int(any(flags)),) * n for flags, n in zip(non_local, blocks))


MINI_STAGE_BLOCKS = (1, 1, 1, 1)


MINI_WIDTH_DIVISOR = 8      # base width 64 -> 8
MINI_LR_PER_CLIP = 0.8      # from scratch; 3.2 at the default batch of 4
MINI_FINETUNE_LR_PER_CLIP = 0.1   # from the mini SlowOnly; 0.4 at the default batch of 4
MINI_FINETUNE_EPOCHS = 2
MINI_FAST_LR_MULT = 0.1     # SlowFast's fast pathway and laterals


def mini(cfg: Config, root: str = "_data/mini-ava", epochs: int | None = None,
         batch_size: int = 4, pretrained: str | None = None) -> Config:
    """The CPU counterpart of ``cfg`` for mini-AVA (128x96 frames at 30 fps).

    Same architecture family and code path; one block per stage and an eighth of the width
    (SlowFast keeps channel ratio 4 for its fast pathway); the clip's frame sampling is unchanged
    (mini-AVA has AVA's frame rate) and frames keep their 96-pixel short side. The crop (128)
    keeps the frame's whole height, as the zoo's 256 crop of a 256-320 short side keeps most of
    AVA's frame: a tighter crop cuts off the other actors that interaction classes depend on.

    Every zoo model fine-tunes a Kinetics-pretrained backbone. At mini scale one model, the mini
    SlowOnly, trains from scratch (``pretrained=None``) and stands in for Kinetics: the other mini
    configs fine-tune from its checkpoint (``pretrained``; a SlowFast backbone takes it as its
    slow pathway, see :func:`stdet.engine.checkpoint.init_backbone`).

    - From scratch: a few hundred steps on about 200 training keyframes. The zoo's learning rate,
      scaled linearly to the mini batch (0.0125 per clip), is a fine-tuning rate and leaves a
      model trained from scratch near chance; ``MINI_LR_PER_CLIP`` per clip, which a sweep from
      0.0125 to 3.2 per clip found best, for ``epochs`` (default 8).
    - Fine-tuning: ``MINI_FINETUNE_LR_PER_CLIP`` per clip for ``epochs`` (default
      ``MINI_FINETUNE_EPOCHS``). Only a conv+BN chain trains stably at the from-scratch rate:
      SlowFast, ACRN, non-local and long-term-feature-bank models trained from scratch at it stay
      near chance on mini-AVA.
    """
    if cfg.scale == "mini":
        return cfg
    if epochs is None:
        epochs = 8 if pretrained is None else MINI_FINETUNE_EPOCHS
    bb = cfg.model.backbone
    backbone = replace(bb, stage_blocks=MINI_STAGE_BLOCKS,
                       base_channels=bb.base_channels // MINI_WIDTH_DIVISOR,
                       channel_ratio=min(bb.channel_ratio, 4),
                       non_local=_mini_non_local(bb.non_local, MINI_STAGE_BLOCKS),
                       pretrained=pretrained)
    head = cfg.model.head
    lfb = cfg.model.lfb
    if lfb is not None:
        lfb = replace(lfb, feature_channels=backbone.base_channels * 32,
                      latent_channels=lfb.latent_channels // 8, bank_config=f"{lfb.bank_config}_mini")
    data = replace(cfg.data, root=root, version="2.2", train_scale=(96, 120), crop_size=128,
                   test_scale=96)
    # SlowFast: the fast pathway (2 channels wide at its stem) and its laterals train at a tenth
    # of the rate; at the full rate their BN scales and shifts grow until the lateral features
    # are 10-20 times the slow pathway's and the model learns little motion
    lr_mult = ((("backbone.fast.", MINI_FAST_LR_MULT), ("backbone.laterals.", MINI_FAST_LR_MULT))
               if bb.arch == "slowfast" else ())
    per_clip = MINI_LR_PER_CLIP if pretrained is None else MINI_FINETUNE_LR_PER_CLIP
    optim = replace(cfg.optim, lr=per_clip * batch_size, reference_batch=batch_size,
                    batch_per_gpu=batch_size, lr_mult=lr_mult)
    # a half-epoch warmup, and step decays in the last quarter: from scratch, the model needs
    # most of its few hundred steps at the full rate (the zoo's decays at 1/2 and 3/4 of training
    # leave a mini SlowOnly at 0.37 val mAP instead of 0.43); a 2-epoch fine-tune has no decay
    k = len(cfg.schedule.milestones)
    milestones = tuple(sorted({round(epochs * (0.75 + 0.25 * i / k)) for i in range(k)}))
    schedule = replace(cfg.schedule, epochs=epochs, warmup_epochs=0.5, warmup_iters=0,
                       milestones=milestones)
    pretrain = "none" if pretrained is None else "mini SlowOnly"
    return replace(cfg, name=f"{cfg.name}_mini", model=replace(cfg.model, backbone=backbone,
                   head=head, lfb=lfb), data=data, optim=optim, schedule=schedule,
                   published=Published(gpus="0 (CPU)", pretrain=pretrain), scale="mini")


# --- files -----------------------------------------------------------------------------------

def config_to_dict(cfg: Config) -> dict:
    """A JSON-ready dict of ``cfg`` (tuples become lists)."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict, cls=Config, where: str = ""):
    """Rebuild a config from :func:`config_to_dict`'s output; unknown keys raise ``KeyError``."""
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


def _as_tuples(value):
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    return value


def save_config(cfg: Config, path) -> None:
    import json

    from .data.io import atomic_write_text
    atomic_write_text(path, json.dumps(config_to_dict(cfg), indent=2) + "\n")


def load_config(path) -> Config:
    import json
    return config_from_dict(json.loads(open(path, encoding="utf-8").read()))


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
    """Apply ``["model.head.dropout=0.3", "optim.lr=0.01"]``; a typo raises an error listing the
    valid keys."""
    for option in options:
        key, sep, text = option.partition("=")
        if not sep:
            raise ConfigError(f"override {option!r} is not KEY=VALUE")
        parts = key.strip().split(".")
        cfg = _replace_path(cfg, parts, text.strip(), key.strip(), cfg)
    return cfg


def _replace_path(obj, parts: list[str], text: str, key: str, root: Config):
    names = {f.name for f in dataclasses.fields(obj)}
    if parts[0] not in names:
        raise ConfigError(f"unknown config key {key!r}; valid keys:\n  " + "\n  ".join(valid_keys(root)))
    value = getattr(obj, parts[0])
    if len(parts) == 1:
        if dataclasses.is_dataclass(value):
            raise ConfigError(f"{key!r} is a group; set one of its fields, e.g. {key}."
                           f"{dataclasses.fields(value)[0].name}=...")
        return replace(obj, **{parts[0]: _parse_value(text, _field_types(type(obj))[parts[0]], key)})
    if not dataclasses.is_dataclass(value):
        if value is None:
            raise ConfigError(f"{'.'.join(parts[:1])!r} of this config is None; {key!r} cannot be set")
        raise ConfigError(f"unknown config key {key!r}; valid keys:\n  " + "\n  ".join(valid_keys(root)))
    return replace(obj, **{parts[0]: _replace_path(value, parts[1:], text, key, root)})
