"""The mini scale: every zoo config's CPU counterpart for mini-AVA.

:func:`mini` derives it from the full-size config (same architecture family and code path, one
block per stage, an eighth of the width, mini-AVA's frames) and the ``MINI_*`` constants are its
settings. ``zoo.get(name, scale="mini")`` (or ``NAME:mini`` on the command line) calls it; which
mini model starts from which checkpoint is the zoo's business (``zoo.mini_pretrained``).
"""
from __future__ import annotations

from dataclasses import replace

from .configs import Config, Published


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
    # the full configs start the classifier at N(0, 0.01), as the published runs fine-tuning from
    # Kinetics did; a mini model trains from scratch or from the mini SlowOnly, where the two
    # starts end level (mini SlowOnly, best val mAP for training seeds 0 and 1: xavier 42.40 and
    # 42.73, N(0, 0.01) 43.84 and 42.47), and keeps xavier, MMAction2 1.x's start
    head = replace(cfg.model.head, init="xavier")
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
