"""The output shape of every stage of a backbone on one clip, recorded by forward hooks.

>>> from stdet import build_backbone, zoo
>>> backbone = build_backbone(zoo.get("slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb").model.backbone)
>>> stage_shapes(backbone, (3, 32, 256, 341))       # rows stem, res2..res5; columns slow, fast
"""
from __future__ import annotations

import torch
from torch import nn

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
STAGE_NAMES = {"stem": "stem", "layer1": "res2", "layer2": "res3", "layer3": "res4", "layer4": "res5"}


def pathways(backbone: nn.Module) -> dict[str, nn.Module]:
    """``{"slow": ..., "fast": ...}`` of a SlowFast, ``{"SlowOnly": backbone}`` of a SlowOnly."""
    if hasattr(backbone, "slow"):
        return {"slow": backbone.slow, "fast": backbone.fast}
    return {type(backbone).__name__: backbone}


@torch.no_grad()
def stage_shapes(backbone: nn.Module, clip_shape: tuple[int, int, int, int]):
    """A ``pandas.DataFrame`` of output shapes ``(batch, channels, T, H, W)``: one row per stage
    (stem, res2 ... res5), one column per pathway, for one clip ``(3, T, H, W)`` of zeros.

    >>> import stdet
    >>> cfg = stdet.config("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb")
    >>> stdet.stage_shapes(stdet.build_backbone(cfg.model.backbone), (3, 4, 256, 256))
    """
    import pandas as pd

    shapes: dict[str, dict[str, str]] = {}
    hooks = []
    for path, module in pathways(backbone).items():
        column = shapes.setdefault(path, {})
        for stage in STAGES:
            hooks.append(getattr(module, stage).register_forward_hook(
                lambda m, i, out, column=column, stage=stage: column.__setitem__(
                    STAGE_NAMES[stage], tuple(out.shape))))
    was_training = backbone.training
    try:
        backbone.eval()(torch.zeros(1, *clip_shape))
    finally:
        backbone.train(was_training)
        for hook in hooks:
            hook.remove()
    return pd.DataFrame(shapes)
