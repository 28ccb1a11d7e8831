"""Distributed setup in a few lines around torchrun's environment variables.

``torchrun --nproc_per_node N -m stdet train ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; without them everything runs in one process. NCCL on GPUs, gloo on CPUs.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..data.errors import StdetError, WorkDirBusyError
from ..data.io import LOCK_NAME, work_dir_lock

_DEVICE = re.compile(r"(cpu|cuda)(?::(\d+))?")


class DeviceError(StdetError):
    """A ``--device`` that is not ``cpu``, ``cuda`` or ``cuda:N``, or a GPU that is not there."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (if any) and pick this process's device.

    ``device``: ``cpu``, ``cuda`` or ``cuda:N``; None picks ``cuda`` when a GPU is visible. Under
    torchrun each process takes GPU ``LOCAL_RANK``. An unknown device or a missing GPU is a
    :class:`DeviceError` (one line), raised before any process group is joined.
    """
    info = DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                    int(os.environ.get("WORLD_SIZE", 1)))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = pick_device(str(device), info)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if info.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return info, dev


def pick_device(device: str, info: DistInfo) -> torch.device:
    """The ``torch.device`` of a ``--device`` string, checked against the GPUs this process sees:
    ``cuda:N`` by itself, ``cuda`` (and any ``cuda:N`` under torchrun) as ``cuda:LOCAL_RANK``."""
    match = _DEVICE.fullmatch(device.strip())
    if match is None:
        raise DeviceError(f"--device {device}: unknown device; use cpu, cuda or cuda:N "
                          "(N: a GPU index)")
    if match[1] == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise DeviceError(f"--device {device}: no CUDA GPU is available ({_no_cuda_reason()}); "
                          "use --device cpu")
    index = info.local_rank if info.distributed or match[2] is None else int(match[2])
    if index >= count:
        who = f"LOCAL_RANK {info.local_rank} needs" if info.distributed else "asks for"
        raise DeviceError(f"--device {device}: {who} GPU {index}, but only {count} CUDA "
                          f"GPU{'s are' if count > 1 else ' is'} visible (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def _no_cuda_reason() -> str:
    """Why torch sees no GPU: a CPU-only build, or no device visible to this process."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (f"torch {torch.__version__} with CUDA {torch.version.cuda}: no device visible"
            + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""))


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order (a one-item list without distribution)."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(module: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Rank ``src``'s buffers (BatchNorm running statistics) on every rank. DDP broadcasts them
    only before each training forward, which then updates each rank's copy with its own batch;
    evaluating without this, each rank would score its shard with different statistics than the
    checkpoint rank 0 writes."""
    if info.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src)


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def main_process_lock(directory, command: str, info: DistInfo, *, name: str = LOCK_NAME,
                      advice: str = "wait for it or use another work dir"):
    """:func:`~stdet.data.io.work_dir_lock` on ``directory``, held by the main process for the
    ``with`` block (the others write nothing there alone). A busy lock stops every process, not
    only the main one, which would otherwise wait for the others forever."""
    stack = contextlib.ExitStack()
    busy = None
    if info.is_main:
        try:
            stack.enter_context(work_dir_lock(directory, command, name=name, advice=advice))
        except WorkDirBusyError as e:
            busy = e
    busy = broadcast_object(busy, info)
    if busy is not None:
        raise busy
    return stack
