"""Parameters, FLOPs and training memory of a detector at a given input size, without running the
backbone.

The model is built on PyTorch's ``meta`` device (shapes only, no memory, no arithmetic) and the
backbone runs there under ``torch.utils.flop_counter.FlopCounterMode``; the RoI part
(:meth:`~stdet.models.detector.ActionDetector.roi_logits`: extractor, shared head, classifier) runs
on the CPU on zero features of the backbone's output shape, since it is small. FLOPs are
counted as multiply-adds (one multiply-add = one FLOP), the convention of MMAction2's and fvcore's
model-zoo tables; convolutions and matrix products are counted, element-wise ops are not.

:func:`training_memory` counts, the same way, the bytes autograd keeps for the backward pass
(:func:`saved_bytes`), which is what a GPU holds beside the model's state during a step.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.flop_counter import FlopCounterMode

from ..configs import ModelConfig
from .build import build_detector
from .resnet3d import count_parameters


def _multiply_adds(fn, *args) -> tuple[int, object]:
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return counter.get_total_flops() // 2, out


def _roi_inputs(model: nn.Module, cfg: ModelConfig, features, clip_shape: tuple[int, int, int, int],
                num_rois: int, box: tuple[float, float, float, float] | None, grad: bool = False):
    """The RoI part of ``model`` moved to the CPU (its weights' values do not change what is
    counted), and its inputs for one clip: zero features of the backbone's output shapes,
    ``num_rois`` RoIs on ``box`` (default the whole clip) and, for an LFB head, a zero
    ``(1, N, C_lt)`` long-term sample."""
    for part in model.roi_modules():
        part.to_empty(device="cpu")
    maps = tuple(torch.zeros(1, *f.shape[1:], requires_grad=grad)
                 for f in (features if isinstance(features, tuple) else (features,)))
    _, _, h, w = clip_shape
    rois = torch.tensor([[0.0, *(box or (0.0, 0.0, w, h))]]).repeat(num_rois, 1)
    long_term = None
    if cfg.lfb is not None:
        long_term = torch.zeros(1, cfg.lfb.window_seconds * cfg.lfb.max_per_second,
                                cfg.lfb.feature_channels)
    return maps, rois, long_term


def model_complexity(cfg: ModelConfig, clip_shape: tuple[int, int, int, int],
                     num_rois: int = 1) -> dict[str, float]:
    """``{"params": n, "gflops": g}`` of the detector of ``cfg`` on one clip ``(3, T, H, W)`` with
    ``num_rois`` whole-frame RoIs.

    >>> import stdet
    >>> cfg = stdet.config("slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb")
    >>> stdet.models.model_complexity(cfg.model, (3, 32, 256, 256))     # params, GMACs
    """
    cfg = replace(cfg, backbone=replace(cfg.backbone, pretrained=None))
    return dict(_complexity(cfg, tuple(clip_shape), num_rois))


@functools.lru_cache(maxsize=256)
@torch.no_grad()
def _complexity(cfg: ModelConfig, clip_shape: tuple[int, int, int, int], num_rois: int
                ) -> dict[str, float]:
    with torch.device("meta"):
        model = build_detector(cfg).eval()
        backbone_flops, features = _multiply_adds(model.backbone, torch.zeros(1, *clip_shape))
    params = count_parameters(model)
    maps, rois, long_term = _roi_inputs(model, cfg, features, clip_shape, num_rois, None)
    head_flops, _ = _multiply_adds(model.roi_logits, maps, rois, long_term)
    return {"params": params, "gflops": (backbone_flops + head_flops) / 1e9}


def saved_bytes(fn: Callable[[], object], exclude: Iterable[Tensor] = ()) -> tuple[int, object]:
    """Bytes of the distinct storages autograd saves for the backward pass while ``fn()`` runs
    (each storage once, however many tensors view it), leaving out those of ``exclude`` (e.g. the
    weights, which are the model's state); and ``fn()``'s output.

    >>> x = torch.randn(1000, requires_grad=True)
    >>> saved_bytes(lambda: (x.exp() * 2).sum())[0]       # exp saves its output: 1000 x 4 bytes
    4000
    """
    skip = {StorageWeakRef(t.untyped_storage()) for t in exclude}
    sizes: dict[StorageWeakRef, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        ref = StorageWeakRef(tensor.untyped_storage())
        if ref not in skip:
            sizes[ref] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return sum(sizes.values()), out


def training_memory(cfg: ModelConfig, clip_shape: tuple[int, int, int, int], batch: int = 1,
                    num_rois: int = 1, box: tuple[float, float, float, float] | None = None
                    ) -> dict[str, int]:
    """What one fp32 training step of ``batch`` clips ``(3, T, H, W)`` holds, in bytes, counted
    without full-size arithmetic: the backbone runs on the meta device, the RoI part on the CPU
    on one clip's features.

    - ``params``: the number of parameters; ``state``: 4 copies of them in 4 bytes (weights,
      gradients, SGD's momentum, DDP's gradient buckets);
    - ``backbone``: the activations autograd keeps for backward in the backbone;
    - ``roi_part``: the same in the RoI part, ``num_rois`` RoIs on ``box`` ``(x1, y1, x2, y2)``
      in input pixels (default the whole clip) per clip, for all ``batch`` clips (RoIAlign's
      sampling grid, and so its memory, grows with the box);
    - ``total``: their sum. Under bf16 autocast the activations shrink toward half.

    Each pass is counted once per distinct model and input (a loop over the zoo repeats few).

    >>> import stdet
    >>> cfg = stdet.config("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb")
    >>> memory = stdet.models.training_memory(cfg.model, (3, 4, 256, 256), batch=16, num_rois=32)
    >>> memory["total"] / 2**30                                          # GiB
    """
    # where the backbone's weights come from changes nothing counted here
    cfg = replace(cfg, backbone=replace(cfg.backbone, pretrained=None))
    params, backbone, shapes = _backbone_memory(cfg, tuple(clip_shape), batch)
    roi_part = batch * _roi_part_memory(cfg, tuple(clip_shape), shapes, num_rois,
                                        None if box is None else tuple(box))
    state = 4 * 4 * params
    return {"params": params, "state": state, "backbone": backbone, "roi_part": roi_part,
            "total": state + backbone + roi_part}


@functools.lru_cache(maxsize=256)
def _backbone_memory(cfg: ModelConfig, clip_shape: tuple[int, int, int, int], batch: int
                     ) -> tuple[int, int, tuple[torch.Size, ...]]:
    """Parameters of the detector, the backbone's saved bytes, its output shapes (meta device)."""
    with torch.device("meta"):
        model = build_detector(cfg).train()
        clips = torch.zeros(batch, *clip_shape)
        nbytes, features = saved_bytes(lambda: model.backbone(clips),
                                       exclude=model.state_dict().values())
    shapes = tuple(f.shape for f in (features if isinstance(features, tuple) else (features,)))
    return count_parameters(model), nbytes, shapes


@functools.lru_cache(maxsize=1024)
def _roi_part_memory(cfg: ModelConfig, clip_shape: tuple[int, int, int, int],
                     shapes: tuple[torch.Size, ...], num_rois: int,
                     box: tuple[float, float, float, float] | None) -> int:
    """Saved bytes of the RoI part for one clip with ``num_rois`` RoIs (CPU)."""
    with torch.device("meta"):
        model = build_detector(cfg).train()
    features = tuple(torch.zeros(shape) for shape in shapes)
    maps, rois, long_term = _roi_inputs(model, cfg, features, clip_shape, num_rois, box, grad=True)
    weights = [t for part in model.roi_modules() for t in part.state_dict().values()]
    nbytes, _ = saved_bytes(lambda: model.roi_logits(maps if len(maps) > 1 else maps[0], rois,
                                                     long_term), exclude=[*maps, *weights])
    return nbytes
