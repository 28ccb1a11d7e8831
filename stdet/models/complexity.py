"""Parameters and FLOPs of a detector at a given input size, without running the backbone.

The model is built on PyTorch's ``meta`` device (shapes only, no memory, no arithmetic) and the
backbone runs there under ``torch.utils.flop_counter.FlopCounterMode``; the RoI part
(:meth:`~stdet.models.detector.ActionDetector.roi_logits`: extractor, shared head, classifier) runs
on the CPU on zero features of the backbone's output shape, since it is small. FLOPs are
counted as multiply-adds (one multiply-add = one FLOP), the convention of MMAction2's and fvcore's
model-zoo tables; convolutions and matrix products are counted, element-wise ops are not.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..configs import ModelConfig
from .build import build_detector
from .resnet3d import count_parameters


def _multiply_adds(fn, *args) -> tuple[int, object]:
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return counter.get_total_flops() // 2, out


@torch.no_grad()
def model_complexity(cfg: ModelConfig, clip_shape: tuple[int, int, int, int],
                     num_rois: int = 1) -> dict[str, float]:
    """``{"params": n, "gflops": g}`` of the detector of ``cfg`` on one clip ``(3, T, H, W)`` with
    ``num_rois`` whole-frame RoIs."""
    with torch.device("meta"):
        model = build_detector(cfg).eval()
        backbone_flops, features = _multiply_adds(model.backbone, torch.zeros(1, *clip_shape))
    params = count_parameters(model)
    # the RoI part runs on the CPU; its weights' values do not change the count
    for part in model.roi_modules():
        part.to_empty(device="cpu")
    features = tuple(torch.zeros(f.shape) for f in (features if isinstance(features, tuple)
                                                     else (features,)))
    _, _, h, w = clip_shape
    rois = torch.tensor([[0.0, 0.0, 0.0, w, h]]).repeat(num_rois, 1)
    # an LFB head reads a (1, N, C_lt) long-term sample (zeros: only shapes matter here)
    long_term = None
    if cfg.lfb is not None:
        long_term = torch.zeros(1, cfg.lfb.window_seconds * cfg.lfb.max_per_second,
                                cfg.lfb.feature_channels)
    head_flops, _ = _multiply_adds(model.roi_logits, features, rois, long_term)
    return {"params": params, "gflops": (backbone_flops + head_flops) / 1e9}
