"""The training step, and the switches of ``cfg.runtime`` that decide how it runs on the hardware.

One iteration of :func:`stdet.engine.train.train_one_epoch`, and what
``benchmarks/gpu_train_step.py`` times::

    clips (B, 3, T, H, W), rois (K, 5), targets (K, classes)     already on the device
      --autocast(bf16), forward-->  logits (K, classes)
      --loss_of(logits.float())-->  {"loss", "recall@thr=0.5", ...}
      --zero_grad, backward, clip_grad_norm_, SGD step-->  updated weights

Nothing in it reads a value back from the device, so the host runs ahead and queues the next
step while the GPU works: RoIAlign sizes its sampling grid from the feature map, and which RoIs
have an action (the rows the loss keeps) is worked out on the host before the targets go over.
The per-step values stay on the device in :class:`PendingSteps` until the log interval reads
them all at once; that read is also where a non-finite loss is noticed.
"""
from __future__ import annotations

import contextlib
import time
from collections import Counter

import torch
from torch import Tensor, nn

from ..configs import RuntimeConfig
from ..models.losses import positive_rows
from .distributed import DistInfo


# the tensor methods that copy a value to the host: on a GPU, each waits for the device
HOST_READS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def counting_host_reads():
    """Count the calls of :data:`HOST_READS` inside the block, by method name (a ``Counter``
    that fills as the block runs). Works on any device: a CPU run shows which calls would wait
    for a GPU."""
    reads: Counter = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(name, original):
        def read(self, *args, **kwargs):
            reads[name] += 1
            return original(self, *args, **kwargs)
        return read
    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, counting(name, original))
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def autocast(device: torch.device, bf16: bool = True):
    """bfloat16 autocast on CUDA when ``bf16`` (``runtime.bf16``); float32 everywhere else."""
    if device.type != "cuda" or not bf16:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


def to_channels_last_3d(model: nn.Module) -> nn.Module:
    """channels_last_3d for the 5-D (Conv3d) weights, in place; ``Module.to(memory_format=...)``
    refuses a model that also holds 2-D (Linear) weights. State-dict keys and values are
    unchanged; only the strides are."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 5:
                p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    return model


def prepare_model(model: nn.Module, runtime: RuntimeConfig) -> nn.Module:
    """Apply ``runtime.channels_last`` and ``runtime.compile`` to a model already on its device.
    The backbone is compiled in place (``Module.compile``), so parameter names, checkpoints and
    the optimiser's lr groups see the same keys."""
    if runtime.channels_last:
        to_channels_last_3d(model)
    if runtime.compile:
        model.backbone.compile()
    return model


def configure_backends(device: torch.device, runtime: RuntimeConfig, deterministic: bool) -> None:
    """cuDNN autotuning for the fixed training clip shape, unless the run must be deterministic."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = runtime.cudnn_benchmark and not deterministic


def use_fused(model: nn.Module, runtime: RuntimeConfig) -> bool:
    """Whether to build the optimiser with fused kernels: ``runtime.fused_optimizer`` and every
    trainable parameter on a GPU."""
    params = [p for p in model.parameters() if p.requires_grad]
    return runtime.fused_optimizer and bool(params) and all(p.is_cuda for p in params)


def to_device(clips: Tensor, rois: Tensor, targets: Tensor, device: torch.device,
              channels_last: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``clips, rois, targets`` and the indices of the positive RoIs on ``device``, queued
    without waiting: clips come pinned from the loader, the small RoI tensors are pinned here
    (a copy from pageable memory would block). The positive RoIs are found here, on the host,
    where ``training_rois`` made the targets."""
    positive = positive_rows(targets)
    small = [rois, targets, positive]
    if device.type == "cuda":
        small = [t.pin_memory() for t in small]
    clips = clips.to(device, non_blocking=True)
    if channels_last:
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
    return (clips, *(t.to(device, non_blocking=True) for t in small))


def train_step(ddp: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, clips: Tensor,
               rois: Tensor, targets: Tensor, positive: Tensor, *, grad_clip: float = 0.0,
               bf16: bool = True, **extra: Tensor) -> dict[str, Tensor]:
    """Forward, loss, backward, gradient clipping (``optim.grad_clip``; 0: none) and the
    optimiser step, on what :func:`to_device` gives; ``ddp`` is the module the forward goes
    through (a DistributedDataParallel wrapper of ``model``, or ``model``); ``bf16``:
    ``runtime.bf16``. Returns the loss terms, detached and still on the device."""
    with autocast(clips.device, bf16):
        logits = ddp(clips, rois, **extra)
    out = model.loss_of(logits.float(), targets, positive)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return {k: v.detach() for k, v in out.items()}


class PendingSteps:
    """Per-iteration log records whose loss terms are still on the device.

    ``add`` keeps a step's host-side fields (epoch, lr, data time, ...) and its loss tensors;
    ``read`` copies every pending value to the host in one transfer, checks that the loss was
    finite on every process (one all-reduce under DDP), and returns the records up to the first
    step whose loss was not finite, with that step's record or None. The wall time since the
    previous read is shared out evenly as each record's ``time``: on a GPU the host's time for
    one step is only the time to queue it.
    """

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.values: list[dict[str, Tensor]] = []
        self.since = time.perf_counter()

    def __len__(self) -> int:
        return len(self.records)

    def add(self, record: dict, values: dict[str, Tensor]) -> None:
        self.records.append(record)
        self.values.append(values)

    def read(self, info: DistInfo) -> tuple[list[dict], dict | None]:
        records, values = self.records, self.values
        self.records, self.values = [], []
        if not records:
            return [], None
        keys = list(values[0])
        table = torch.stack([torch.stack([v[k].float().reshape(()) for k in keys]) for v in values])
        finite = torch.isfinite(table[:, keys.index("loss")]).float()
        if info.distributed:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        host = torch.cat([finite[:, None], table], dim=1).cpu().tolist()  # waits for the steps
        now = time.perf_counter()
        elapsed, self.since = now - self.since, now
        out, bad = [], None
        for record, (ok, *row) in zip(records, host):
            record = {**record, "time": round(elapsed / len(records), 4),
                      **{k: round(v, 6) for k, v in zip(keys, row)}}
            if not ok:
                bad = record
                break
            out.append(record)
        return out, bad
