"""Training-step speed against MMAction2 1.2.0 on the same device and batch: clips/s and the ratio.

::

    PYTHONPATH=. /tmp/mmenv/bin/python benchmarks/mmaction2_speed.py [--device cuda] [--batch N]
        [--models "SlowFast R50 8x8" ACRN ...] [--steps 20] [--warmup 5] [--channels-last] [--compile]

(``/tmp/mmenv`` is the environment ``benchmarks/compare_mmaction2.py`` describes; with a CUDA
build of torch in it for ``--device cuda``.)

Two ways to run one training step of the same full-size detector, on the same synthetic batches
(``gpu_train_step.synthetic_batch``: the config's clip, 256x256 crops, 1-8 people per clip):

* **MMAction2**: MMAction2's backbone module (``ResNet3dSlowFast`` / ``ResNet3dSlowOnly`` built with
  the zoo settings, as ``compare_mmaction2.py`` builds and checks them) under **stdet's RoI head**
  (RoIAlign, and the ACRN or plain BBox head): MMAction2's own RoI head needs mmdet and mmcv's
  compiled ops, so it is replaced. The step runs as MMAction2's AVA configs train: float32 (no
  ``AmpOptimWrapper``), ``cudnn_benchmark=False``, torch's default SGD, ``clip_grad`` at 40, the
  positive RoIs picked by boolean indexing on the device, and every loss term read with
  ``.item()`` after every step (mmengine's ``MessageHub`` logging).
* **stdet**: ``stdet.engine.step.train_step`` with the config's ``runtime`` (bf16 autocast on CUDA,
  fused SGD, cuDNN autotuning; ``--channels-last`` / ``--compile`` as in ``gpu_train_step.py``), the
  positive RoIs found on the host, the losses read once per ``runtime.log_interval`` steps.

Both are timed after ``--warmup`` steps over ``--steps`` steps with CUDA events (wall clock on a
CPU), one model at a time. The table gives clips/s of each and stdet / MMAction2. On a CPU neither
side gets bf16, so the ratio there measures little beyond the same kernels.
"""
from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import compare_mmaction2 as mm  # noqa: E402  (exits 0 with a message where MMAction2 is missing)
import torch  # noqa: E402
from gpu_train_step import runtime_config, synthetic_batches, time_steps  # noqa: E402
from torch import nn  # noqa: E402

from stdet import zoo  # noqa: E402
from stdet.engine.distributed import DistInfo  # noqa: E402
from stdet.engine.schedule import build_optimizer  # noqa: E402
from stdet.engine.step import (PendingSteps, configure_backends, prepare_model,  # noqa: E402
                               train_step, use_fused)
from stdet.models import build_detector  # noqa: E402

ACRN = "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb"
# name -> (MMAction2 backbone class, its kwargs, zoo config)
MODELS = {name: (cls, kwargs, config) for name, (cls, kwargs, config, _) in mm.MODELS.items()}
MODELS["ACRN"] = (*MODELS["SlowFast R50 8x8"][:2], ACRN)
DEFAULT_MODELS = ("SlowFast R50 8x8", "ACRN")


def timed(step, batches: list[dict], args, device: torch.device) -> float:
    """Seconds per step, after ``args.warmup`` untimed steps."""
    for i in range(args.warmup):
        step(batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time_steps(step, batches, args.steps, device)[0] / args.steps


def mmaction2_run(name: str, args, device: torch.device) -> tuple[float, int]:
    """Seconds per step of MMAction2's backbone (+ stdet's RoI head) at MMAction2's settings."""
    cls, kwargs, config = MODELS[name]
    cfg = zoo.get(config)
    batch = args.batch or cfg.optim.batch_per_gpu
    torch.backends.cudnn.benchmark = False
    torch.manual_seed(args.seed)
    model = build_detector(cfg.model)
    model.backbone = cls(**kwargs)
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.scaled_lr(batch),
                                momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    batches = synthetic_batches(model, cfg, batch, device, args.distinct_batches, args.seed)

    def step(b: dict) -> dict[str, float]:
        logits = model(b["clips"], b["rois"])
        out = model.loss_of(logits, b["targets"])  # boolean indexing of the positive RoIs
        optimizer.zero_grad()
        out["loss"].backward()
        nn.utils.clip_grad_norm_(model.parameters(), 40.0)
        optimizer.step()
        return {k: v.item() for k, v in out.items()}  # logged every iteration

    return timed(step, batches, args, device), batch


def stdet_run(name: str, args, device: torch.device) -> tuple[float, int]:
    """Seconds per step of stdet's training step with the config's runtime."""
    cfg = runtime_config(zoo.get(MODELS[name][2]), args)
    batch = args.batch or cfg.optim.batch_per_gpu
    configure_backends(device, cfg.runtime, deterministic=False)
    torch.manual_seed(args.seed)
    model = build_detector(cfg.model).to(device).train()
    optimizer = build_optimizer(model, cfg.optim, cfg.optim.scaled_lr(batch),
                                fused=use_fused(model, cfg.runtime))
    prepare_model(model, cfg.runtime)
    batches = synthetic_batches(model, cfg, batch, device, args.distinct_batches, args.seed)
    pending = PendingSteps()

    def step(b: dict) -> None:
        pending.add({}, train_step(model, model, optimizer, b["clips"], b["rois"], b["targets"],
                                   b["positive"], grad_clip=cfg.optim.grad_clip,
                                   bf16=cfg.runtime.bf16))
        if len(pending) == cfg.runtime.log_interval:  # the engine's read per log interval
            pending.read(DistInfo())

    return timed(step, batches, args, device), batch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(DEFAULT_MODELS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, help="clips per step (default: the config's batch_per_gpu)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--distinct-batches", type=int, default=2)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    # runtime_config reads these gpu_train_step flags; None keeps the config's value
    args.bf16 = args.cudnn_benchmark = args.fused = None
    device = torch.device(args.device)
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}; "
          f"{args.warmup} warm-up + {args.steps} timed steps; stdet runtime: "
          f"{runtime_config(zoo.get(MODELS[args.models[0]][2]), args).runtime}\n")
    print("| model | batch | MMAction2 backbone + stdet head (clips/s) | stdet (clips/s) "
          "| stdet / MMAction2 |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models:
        theirs, batch = mmaction2_run(name, args, device)
        gc.collect()
        ours, _ = stdet_run(name, args, device)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"| {name} | {batch} | {batch / theirs:.2f} | {batch / ours:.2f} | "
              f"{theirs / ours:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
