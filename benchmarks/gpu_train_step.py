"""Speed of one full-size training step (forward + backward + optimiser) of a zoo config.

::

    .venv/bin/python benchmarks/gpu_train_step.py CONFIG [--device cuda|cpu] [--batch N]
        [--steps N] [--warmup N] [--compile] [--channels-last] [--bf16/--no-bf16]
        [--cudnn-benchmark/--no-cudnn-benchmark] [--fused/--no-fused] [--all]
    # every zoo config at its reference per-GPU batch, one markdown table:
    .venv/bin/python benchmarks/gpu_train_step.py --all --device cuda --channels-last
    # CPU smoke check (a full-size step takes seconds on a CPU):
    .venv/bin/python benchmarks/gpu_train_step.py slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb \\
        --device cpu --batch 1 --steps 1 --warmup 0

What runs is the step of ``stdet.engine.train.train_one_epoch``, the same function:
``stdet.engine.step.train_step`` on the full-size detector (``stdet.zoo.get(name)`` ->
``build_detector``, then ``prepare_model``): autocast(bfloat16) around the forward (CUDA;
``--no-bf16`` for float32), ``model.loss_of(logits.float(), targets)``,
``zero_grad(set_to_none=True)``, ``backward``, ``clip_grad_norm_(grad_clip)``, ``optimizer.step``
with the optimiser of ``stdet.engine.schedule.build_optimizer`` (SGD, the config's momentum, weight
decay and lr groups; fused kernels on CUDA, as training). The flags set the config's ``runtime``
switches (``--channels-last`` is ``runtime.channels_last=True`` and so on), so a faster setting
found here is one ``--cfg-options`` away from a training run. Left out: what training does once
per log interval (reading the losses back, the finite-loss check, the log line).

Inputs are synthetic and seeded: clips ``(B, 3, clip_len, crop, crop)`` (the config's clip length,
256x256 crops), 1-8 persons per clip (ground-truth boxes with random multi-hot labels, 1-3 actions
each), proposals = jittered persons plus 0-2 false positives, turned into training RoIs by the
model's own ``training_rois`` (RoI sampling as in training), and, for LFB configs, a random
``long_term`` feature sample. A few such batches are prepared on the device before timing and
cycled, so the timed loop has no host-to-device copies.

Timing: ``--warmup`` untimed steps (cuDNN autotuning, ``torch.compile``), then ``--steps`` steps
timed with CUDA events around the whole loop (one synchronisation at the end) or the wall clock
on CPU. Peak memory is ``torch.cuda.max_memory_allocated`` over the timed steps (CPU: the
process's peak RSS).

Model FLOPs utilisation: ``MFU = 3 x 2 x MACs_fwd x clips/s / peak``, where ``MACs_fwd`` are the
forward multiply-adds per training clip (``stdet.models.complexity.model_complexity`` at
``(3, clip_len, crop, crop)`` with the batch's mean RoIs per clip; the zoo table counts one
multiply-add as one FLOP, hence the factor 2 to compare with a matmul's ``2*M*N*K`` FLOPs),
the 3 counts forward + backward (2x forward), and ``peak`` is MEASURED here: the throughput of a
loop of large square matmuls in the step's compute dtype (bf16 with autocast, else fp32) on the
same device, never a datasheet number.

``--check-syncs`` (default on) runs one extra step and reports how often it waits for the device:
on CUDA the synchronisations ``torch.cuda.set_sync_debug_mode("warn")`` reports, on a CPU the
calls that would be one on a GPU (``item``, ``tolist``, ``bool(tensor)``, ...). Both should be 0.
"""
from __future__ import annotations

import argparse
import gc
import math
import resource
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stdet import zoo  # noqa: E402
from stdet.configs import Config  # noqa: E402
from stdet.engine.schedule import build_optimizer  # noqa: E402
from stdet.engine.step import (configure_backends, counting_host_reads,  # noqa: E402
                               prepare_model, to_device, train_step, use_fused)
from stdet.models import build_detector  # noqa: E402
from stdet.models.complexity import model_complexity  # noqa: E402


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------

def synthetic_batch(model, cfg: Config, batch: int, crop: int, rng: np.random.Generator,
                    device: torch.device, channels_last: bool, max_persons: int = 8) -> dict:
    """One training batch on ``device``: clips, sampled RoIs and their targets (and long_term)."""
    proposals, gt_boxes, gt_labels = [], [], []
    num_classes = cfg.model.head.num_classes
    for _ in range(batch):
        n = int(rng.integers(1, max_persons + 1))
        x1 = rng.uniform(0, crop * 0.8, n)
        y1 = rng.uniform(0, crop * 0.5, n)
        boxes = np.stack([x1, y1, np.minimum(crop, x1 + rng.uniform(20, 60, n)),
                          np.minimum(crop, y1 + rng.uniform(60, 130, n))], 1)
        labels = np.zeros((n, num_classes), np.float32)
        for i in range(n):
            labels[i, rng.choice(np.arange(1, num_classes), int(rng.integers(1, 4)), replace=False)] = 1
        props = boxes + rng.normal(0, 2, boxes.shape)
        extra = int(rng.integers(0, 3))
        fp = np.stack([rng.uniform(0, crop / 2, extra), rng.uniform(0, crop / 2, extra)], 1)
        fp = np.concatenate([fp, fp + rng.uniform(20, 100, (extra, 2))], 1)
        proposals.append(torch.from_numpy(np.concatenate([props, fp]).astype(np.float32)))
        gt_boxes.append(torch.from_numpy(boxes.astype(np.float32)))
        gt_labels.append(torch.from_numpy(labels))
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**31)))
    rois, targets = model.training_rois(proposals, gt_boxes, gt_labels, gen)
    clips = torch.from_numpy(rng.standard_normal(
        (batch, 3, cfg.data.clip_len, crop, crop), dtype=np.float32))
    clips, rois, targets, positive = to_device(clips, rois, targets, device, channels_last)
    out = {"clips": clips, "rois": rois, "targets": targets, "positive": positive}
    if cfg.model.lfb is not None:
        lfb = cfg.model.lfb
        out["long_term"] = torch.from_numpy(rng.standard_normal(
            (batch, lfb.window_seconds * lfb.max_per_second, lfb.feature_channels),
            dtype=np.float32)).to(device)
    return out


# --------------------------------------------------------------------------------------------
# measured peak
# --------------------------------------------------------------------------------------------

def matmul_peak(device: torch.device, dtype: torch.dtype, size: int | None = None,
                seconds: float = 1.0) -> tuple[float, int]:
    """Measured FLOP/s (2*n^3 per product) of a loop of ``n x n`` matmuls in ``dtype``."""
    if size is None:
        size = 8192 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    c = torch.empty(size, size, device=device, dtype=dtype)
    flops = 2.0 * size ** 3

    def run(n: int) -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                torch.matmul(a, b, out=c)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000
        t = time.perf_counter()
        for _ in range(n):
            torch.matmul(a, b, out=c)
        return time.perf_counter() - t

    run(3)  # warm-up (cuBLAS heuristics, clocks)
    n = 3
    elapsed = run(n)
    n = max(3, int(n * seconds / max(elapsed, 1e-6)))
    best = 0.0
    for _ in range(3):
        best = max(best, n * flops / run(n))
    return best, size


# --------------------------------------------------------------------------------------------
# the step
# --------------------------------------------------------------------------------------------

def count_syncs(step, device: torch.device) -> int:
    """How many times ``step()`` waits for the device: CUDA's sync debug mode on a GPU; on a CPU,
    the tensor-to-host reads that would be a sync on a GPU."""
    if device.type != "cuda":
        with counting_host_reads() as reads:
            step()
        return sum(reads.values())
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    messages = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    for message in dict.fromkeys(messages):  # what waited, to find it (stderr, once each)
        print(f"    sync: {message.splitlines()[0][:200]}", file=sys.stderr)
    return len(messages)


def time_steps(step, batches: list[dict], steps: int, device: torch.device):
    """``steps`` calls of ``step`` cycling over ``batches``: (seconds in all, the last result).
    CUDA events around the whole loop (one synchronisation at the end), else the wall clock."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0 = time.perf_counter()
    for i in range(steps):
        result = step(batches[i % len(batches)])
    if device.type == "cuda":
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000, result
    return time.perf_counter() - t0, result


def synthetic_batches(model, cfg: Config, batch: int, device: torch.device, count: int,
                      seed: int) -> list[dict]:
    """``count`` seeded :func:`synthetic_batch` es, laid out as ``cfg.runtime`` asks."""
    rng = np.random.default_rng(seed)
    return [synthetic_batch(model, cfg, batch, cfg.data.crop_size, rng, device,
                            cfg.runtime.channels_last) for _ in range(count)]


def runtime_config(cfg: Config, args) -> Config:
    """``cfg`` with the ``runtime`` switches the flags give (None: the config's own)."""
    flags = {"bf16": args.bf16, "channels_last": args.channels_last or None,
             "compile": args.compile or None, "cudnn_benchmark": args.cudnn_benchmark,
             "fused_optimizer": args.fused}
    runtime = replace(cfg.runtime, **{k: v for k, v in flags.items() if v is not None})
    return replace(cfg, runtime=runtime)


def bench_config(name: str, args, device: torch.device, peak: float | None) -> dict:
    cfg = runtime_config(zoo.get(name), args)
    batch = args.batch or cfg.optim.batch_per_gpu
    cuda = device.type == "cuda"
    bf16 = cuda and cfg.runtime.bf16
    crop = cfg.data.crop_size
    torch.manual_seed(args.seed)

    configure_backends(device, cfg.runtime, deterministic=False)
    model = build_detector(cfg.model).to(device).train()
    fused = use_fused(model, cfg.runtime)
    optimizer = build_optimizer(model, cfg.optim, cfg.optim.scaled_lr(batch), fused=fused)
    prepare_model(model, cfg.runtime)
    batches = synthetic_batches(model, cfg, batch, device, args.distinct_batches, args.seed)
    rois_per_clip = float(np.mean([b["rois"].shape[0] / batch for b in batches]))
    macs = model_complexity(cfg.model, (3, cfg.data.clip_len, crop, crop),
                            num_rois=max(1, round(rois_per_clip)))["gflops"]

    def step(b: dict) -> torch.Tensor:
        extra = {"long_term": b["long_term"]} if "long_term" in b else {}
        return train_step(model, model, optimizer, b["clips"], b["rois"], b["targets"],
                          b["positive"], grad_clip=cfg.optim.grad_clip, bf16=cfg.runtime.bf16,
                          **extra)["loss"]

    for i in range(args.warmup):
        step(batches[i % len(batches)])
    syncs = count_syncs(lambda: step(batches[0]), device) if args.check_syncs else None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    elapsed, loss = time_steps(step, batches, args.steps, device)
    if cuda:
        memory_gib = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        memory_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    final_loss = float(loss)
    clips_per_s = batch * args.steps / elapsed
    mfu = 3 * 2 * macs * 1e9 * clips_per_s / peak if peak else float("nan")
    row = {"config": cfg.name, "arch": cfg.model.backbone.arch,
           "clip": f"{cfg.data.clip_len}x{cfg.data.frame_interval}", "batch": batch,
           "rois/clip": rois_per_clip, "GMACs fwd/clip": macs, "ms/step": 1000 * elapsed / args.steps,
           "clips/s": clips_per_s, "peak mem GiB": memory_gib, "MFU": mfu, "syncs/step": syncs,
           "loss": final_loss, "bf16": bf16, "fused": fused,
           "channels_last": cfg.runtime.channels_last, "compile": cfg.runtime.compile}
    return row


def select_device(name: str) -> torch.device:
    """The device ``name`` names, made current; ``"cuda"`` names no card, and
    ``torch.cuda.set_device`` needs its index (torch 2.11 refuses a bare ``"cuda"``)."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device")
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None
                              else device.index)
        torch.cuda.set_device(device)
    return device


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="zoo config name (or --all)")
    p.add_argument("--all", action="store_true",
                   help="every zoo config at its reference per-GPU batch (optim.batch_per_gpu)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, help="clips per step (default: the config's batch_per_gpu)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    p.add_argument("--channels-last", action="store_true", help="channels_last_3d model and clips")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast around the forward (default: on for CUDA, as training)")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=None,
                   help="cuDNN autotuning (default: on, as training)")
    p.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                   help="fused SGD (default: on for CUDA)")
    p.add_argument("--check-syncs", action=argparse.BooleanOptionalAction, default=True,
                   help="count the host syncs of one extra step")
    p.add_argument("--distinct-batches", type=int, default=2)
    p.add_argument("--peak-size", type=int, help="matmul size of the peak measurement")
    p.add_argument("--no-peak", action="store_true", help="skip the peak measurement (no MFU)")
    p.add_argument("--threads", type=int, help="CPU: torch threads")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.all and not args.config:
        p.error("give a CONFIG or --all")
    if args.batch is not None and args.batch < 1:
        p.error("--batch must be >= 1")
    if args.steps < 1:
        p.error("--steps must be >= 1")

    device = select_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    names = zoo.names() if args.all else [args.config]
    runtime = runtime_config(zoo.get(names[0]), args).runtime
    bf16 = device.type == "cuda" and runtime.bf16
    peak = None
    if not args.no_peak:
        dtype = torch.bfloat16 if bf16 else torch.float32
        peak, size = matmul_peak(device, dtype, args.peak_size)
        print(f"measured peak: {peak / 1e12:.2f} TFLOP/s ({str(dtype).split('.')[-1]} "
              f"{size}x{size} matmul loop on {device_name(device)})")
    cuda = device.type == "cuda"
    print(f"device {device_name(device)}; bf16 autocast {bf16}; channels_last_3d "
          f"{runtime.channels_last}; cudnn.benchmark {cuda and runtime.cudnn_benchmark}; "
          f"compile {runtime.compile}; fused SGD {cuda and runtime.fused_optimizer}; "
          f"{args.warmup} warm-up + {args.steps} timed steps\n", flush=True)

    rows = []
    for name in names:
        try:
            rows.append(bench_config(name, args, device, peak))
        except torch.OutOfMemoryError as e:
            rows.append({"config": zoo.get(name).name, "error": f"out of memory: {str(e)[:80]}"})
        gc.collect()  # the model and batches of this config, before the next one
        if device.type == "cuda":
            torch.cuda.empty_cache()
        r = rows[-1]
        if "error" not in r:
            print(f"  {r['config']}: {r['clips/s']:.2f} clips/s, {r['ms/step']:.1f} ms/step",
                  file=sys.stderr, flush=True)

    mem = "peak mem (GiB)" if device.type == "cuda" else "process peak RSS so far (GiB)"
    print(f"| config | clip | batch | RoIs/clip | GMACs fwd/clip | ms/step | clips/s | {mem} | "
          f"MFU | syncs/step |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['config']} | {r['error']} |||||||||")
            continue
        syncs = "-" if r["syncs/step"] is None else str(r["syncs/step"])
        mfu = "-" if math.isnan(r["MFU"]) else f"{100 * r['MFU']:.1f}%"
        print(f"| {r['config']} | {r['clip']} | {r['batch']} | {r['rois/clip']:.1f} | "
              f"{r['GMACs fwd/clip']:.1f} | {r['ms/step']:.1f} | {r['clips/s']:.2f} | "
              f"{r['peak mem GiB']:.2f} | {mfu} | {syncs} |")
    return 0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    raise SystemExit(main())
