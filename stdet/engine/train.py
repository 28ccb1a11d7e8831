"""Training: ``python -m stdet train CONFIG [--validate] ...``, one process or many under torchrun.

The script reads top to bottom: :func:`get_args_parser`, :func:`main` (setup, resume, the epoch
loop, validation, checkpoints) and :func:`train_one_epoch`; the step itself, and the ``runtime``
switches that decide how it runs on the hardware, are in :mod:`stdet.engine.step`.

Exactness of resume: every epoch starts by seeding torch, numpy and Python's ``random`` from
(seed, epoch, rank) and the data order from (seed, epoch), so an epoch's randomness does not
depend on what ran before it. A checkpoint is written (atomically) after every epoch with model,
optimiser, scheduler, epoch, iteration, RNG states and config; ``--resume`` reloads it and replays
the next epoch exactly as an uninterrupted run would (bit for bit on CPU with
``--deterministic``).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..configs import Config, apply_overrides, load_config, save_config
from .checkpoint import init_backbone, read_checkpoint, save_checkpoint
from .data import long_term_of
from .distributed import DistInfo, barrier, broadcast_buffers, cleanup, init_distributed
from .logger import JsonlLogger
from .step import PendingSteps, configure_backends, prepare_model, to_device, train_step, use_fused


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss is not finite)."""


def resolve_config(text: str, overrides: list[str] | None = None) -> Config:
    """A zoo name (``NAME``, ``NAME:mini``, ``NAME_mini``) or a config JSON written by stdet,
    with ``--cfg-options`` applied."""
    from .. import zoo

    if text.endswith(".json") or os.path.sep in text:
        cfg = load_config(text)
    else:
        name, _, scale = text.partition(":")
        cfg = zoo.get(name, scale or "full")
    return apply_overrides(cfg, list(overrides or []))


def keep_earlier_log(path: Path) -> Path | None:
    """A new run (not a resume) in a used work dir starts its own log: an earlier ``log.jsonl``
    is renamed ``log-YYYYmmdd-HHMMSS.jsonl`` after its last write, and that name returned."""
    if not path.is_file():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    target = path.with_name(f"log-{stamp}.jsonl")
    n = 1
    while target.exists():
        target, n = path.with_name(f"log-{stamp}-{n}.jsonl"), n + 1
    path.rename(target)
    return target


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m stdet train", add_help=add_help,
                                description="Train a zoo config on AVA or mini-AVA.")
    p.add_argument("config", help="zoo name (NAME or NAME:mini) or a config.json written by stdet")
    p.add_argument("--work-dir", help="checkpoints, log and results (default: work_dirs/NAME)")
    p.add_argument("--validate", action="store_true",
                   help="evaluate val mAP every schedule.eval_interval epochs, keep best.pth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms (bit-exact resume on CPU)")
    p.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue from CKPT (default: WORK_DIR/latest.pth)")
    p.add_argument("--data-root", help="AVA root (default: the config's data.root)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config fields, e.g. optim.lr=0.01 model.head.dropout=0.3")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max-iters", type=int,
                   help="stop after this many iterations (smoke tests; the checkpoint then written "
                        "counts the interrupted epoch as finished)")
    return p


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    # numpy's uint32 key as int64: a uint32 tensor cannot go through plain pickle (the
    # all_gather_object of every rank's state under torchrun), only through torch.save
    state = {"torch": torch.get_rng_state(), "random": random.getstate(),
             "numpy": {k: (torch.from_numpy(v.astype(np.int64)) if isinstance(v, np.ndarray) else v)
                       for k, v in zip(("kind", "keys", "pos", "gauss", "cached"), np.random.get_state())}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["random"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pretrained_file(cfg: Config) -> str | None:
    """The local file of ``model.backbone.pretrained`` (a URL is downloaded to torch's hub cache
    later, by :func:`build_model`); a local path that does not exist is a ``TrainingError`` that
    says how to make it."""
    pretrained = cfg.model.backbone.pretrained
    if not pretrained:
        return None
    if "://" in pretrained:
        return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(pretrained))
    if not os.path.exists(pretrained):
        hint = ""
        if cfg.scale == "mini":
            from ..zoo import MINI_BASE
            hint = (f"; a mini config fine-tunes from the mini SlowOnly: train it first with "
                    f"`python -m stdet train {MINI_BASE}:mini --data-root DIR`, or pass "
                    f"--cfg-options model.backbone.pretrained=PATH (None: from scratch)")
        raise TrainingError(f"model.backbone.pretrained: no file {pretrained}{hint}")
    return pretrained


def build_model(cfg: Config, info: DistInfo) -> nn.Module:
    """The detector, with its backbone initialised from ``model.backbone.pretrained``."""
    from ..models import build_detector

    model = build_detector(cfg.model)
    path = pretrained_file(cfg)
    if path is not None:
        pretrained = cfg.model.backbone.pretrained
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.hub.download_url_to_file(pretrained, path)
        report = init_backbone(model, path)
        if info.is_main:
            print(f"backbone initialised from {pretrained}:\n{report}")
    return model


def main(args: argparse.Namespace) -> dict:
    """Train; returns ``{"epochs": ..., "best_map": ..., "last_map": ..., "work_dir": ...}``."""
    from .data import build_dataset, reseed, train_loader
    from .schedule import build_optimizer, build_scheduler, load_optimizer_state
    from .test import evaluate_split

    cfg = resolve_config(args.config, args.cfg_options)
    pretrained_file(cfg)  # before the work dir is touched
    if cfg.runtime.log_interval < 1:
        raise ValueError(f"runtime.log_interval must be >= 1, got {cfg.runtime.log_interval}")
    info, device = init_distributed(args.device)
    work_dir = Path(args.work_dir or Path("work_dirs") / cfg.name)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
    configure_backends(device, cfg.runtime, args.deterministic)
    seed_everything(args.seed + info.rank)
    if info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, work_dir / "config.json")
    if info.is_main and not args.resume:
        keep_earlier_log(work_dir / "log.jsonl")
    logger = JsonlLogger(work_dir / "log.jsonl" if info.is_main else None)

    model = prepare_model(build_model(cfg, info).to(device), cfg.runtime)
    dataset = build_dataset(cfg, "train", args.data_root)
    batch = cfg.optim.batch_per_gpu
    loader = train_loader(dataset, batch, cfg.data.workers, info, args.seed,
                          pin_memory=device.type == "cuda")
    global_batch = batch * info.world_size
    lr = cfg.optim.scaled_lr(global_batch)
    if info.is_main:
        print(f"{cfg.name}: {len(dataset)} training keyframes, {len(loader)} iterations an epoch")
        print(f"lr {cfg.optim.lr:g} for {cfg.optim.reference_batch} clips a step (linear scaling "
              f"rule) -> {lr:g} for {global_batch} ({info.world_size} process"
              f"{'es' if info.world_size > 1 else ''} x {batch})")
    optimizer = build_optimizer(model, cfg.optim, lr, fused=use_fused(model, cfg.runtime))
    scheduler = build_scheduler(optimizer, len(loader), cfg.schedule)
    state = {"epoch": 0, "iteration": 0, "best_map": float("nan"), "best_epoch": None}

    if args.resume:
        path = work_dir / "latest.pth" if args.resume == "auto" else Path(args.resume)
        ckpt = read_checkpoint(path)
        model.load_state_dict(ckpt["state_dict"])
        load_optimizer_state(optimizer, ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state.update(ckpt["train_state"])
        set_rng_state(ckpt["rng"][info.rank] if info.rank < len(ckpt["rng"]) else ckpt["rng"][0])
        if info.is_main:
            print(f"resumed from {path} at epoch {state['epoch']}, iteration {state['iteration']}")

    ddp = model
    if info.distributed:
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    last_map = float("nan")
    try:
        for epoch in range(state["epoch"], cfg.schedule.epochs):
            seed_everything(args.seed * 1000 + epoch * 100 + info.rank)
            reseed(loader, epoch, args.seed)
            stop = train_one_epoch(ddp, model, optimizer, scheduler, loader, device, epoch, state,
                                   cfg, info, logger, args.max_iters)
            state["epoch"] = epoch + 1
            if args.validate and (state["epoch"] % cfg.schedule.eval_interval == 0
                                  or state["epoch"] == cfg.schedule.epochs):
                broadcast_buffers(model, info)  # evaluate the weights the checkpoint holds
                result = evaluate_split(model, cfg, args.data_root, device, info,
                                        work_dir / "results_val.csv")
                last_map = result.map
                logger.log(mode="val", epoch=state["epoch"], mAP=result.map, **result.group_map)
                if info.is_main:
                    print(f"epoch {state['epoch']}: val mAP {100 * result.map:.2f}")
                if not math.isfinite(state["best_map"]) or result.map > state["best_map"]:
                    state["best_map"], state["best_epoch"] = result.map, state["epoch"]
                    _save(work_dir / "best.pth", model, optimizer, scheduler, state, cfg, info)
            _save(work_dir / "latest.pth", model, optimizer, scheduler, state, cfg, info)
            if stop:
                break
    except TrainingError as e:
        logger.log(mode="error", message=str(e))
        logger.close()
        cleanup(info)
        raise
    logger.close()
    barrier(info)
    cleanup(info)
    return {"epochs": state["epoch"], "iterations": state["iteration"], "best_map": state["best_map"],
            "best_epoch": state["best_epoch"], "last_map": last_map, "work_dir": str(work_dir)}


def _save(path: Path, model, optimizer, scheduler, state: dict, cfg: Config, info: DistInfo) -> None:
    """All processes contribute their RNG state; the main process writes the file atomically."""
    from ..configs import config_to_dict
    from .distributed import gather_objects

    states = gather_objects(rng_state(), info)
    if info.is_main:
        save_checkpoint(path, model, meta={"config": cfg.name},
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        train_state=dict(state), rng=states, config=config_to_dict(cfg))
    barrier(info)


def train_one_epoch(ddp: nn.Module, model: nn.Module, optimizer, scheduler, loader,
                    device: torch.device, epoch: int, state: dict, cfg: Config, info: DistInfo,
                    logger: JsonlLogger, max_iters: int | None = None) -> bool:
    """One pass over the training shard; returns True when ``max_iters`` is reached.

    The step reads nothing back from the device (:mod:`stdet.engine.step`): loss values, the
    finite-loss check and the progress bar wait for the log interval, the end of the epoch or
    ``max_iters``. A non-finite loss stops training there, naming the first step that had one;
    nothing is saved after it, so ``latest.pth`` keeps the last good epoch."""
    interval = cfg.runtime.log_interval
    ddp.train()
    pending = PendingSteps()
    end = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.schedule.epochs}", disable=not info.is_main,
               leave=False)
    stop = False
    for i, batch in enumerate(bar):
        data_time = time.perf_counter() - end
        rois, targets = model.training_rois(batch["proposals"], batch["gt_boxes"], batch["gt_labels"])
        on_device = to_device(batch["clips"], rois, targets, device, cfg.runtime.channels_last)
        lr = optimizer.param_groups[0]["lr"]
        values = train_step(ddp, model, optimizer, *on_device, cfg, device,
                            **long_term_of(batch, device))
        scheduler.step()
        state["iteration"] += 1
        pending.add({"mode": "train", "epoch": epoch + 1, "iter": i + 1, "step": state["iteration"],
                     "lr": lr, "data_time": round(data_time, 4),
                     "memory_mb": round(memory_mb(device), 1)}, values)
        stop = max_iters is not None and state["iteration"] >= max_iters
        if len(pending) == interval or stop or i + 1 == len(loader):
            _write_pending(pending, logger, bar, state, info)
        end = time.perf_counter()
        if stop:
            break
    return stop


def _write_pending(pending: PendingSteps, logger: JsonlLogger, bar, state: dict,
                   info: DistInfo) -> None:
    """Log the pending steps; raise TrainingError at the first one whose loss was not finite on
    some process (every process reads at the same step, so all of them stop together)."""
    records, bad = pending.read(info)
    for record in records:
        logger.log(**record)
    if records:
        bar.set_postfix(loss=f"{records[-1]['loss']:.4f}", lr=f"{records[-1]['lr']:.3g}")
    if bad is not None:
        kept = (f"the last good checkpoint, latest.pth of epoch {state['epoch']}, is kept"
                if state["epoch"] else "no checkpoint had been written yet")
        where = " on one of the processes" if info.distributed else ""
        raise TrainingError(f"loss is {bad['loss']} at epoch {bad['epoch']}, iteration "
                            f"{bad['iter']} (step {bad['step']}){where}; training stopped; {kept}")


def mini_base_checkpoint(data_root: str | os.PathLike, work_dir: str | os.PathLike | None = None,
                         seed: int = 0) -> Path:
    """The last checkpoint of the mini SlowOnly (``zoo.MINI_BASE:mini``), which the other mini
    configs fine-tune from: the one in ``work_dir`` (default ``work_dirs/NAME``) if a run there
    finished every epoch, else trained now by ``python -m stdet train NAME:mini --validate --seed
    seed`` in a child process (a notebook kernel that forks DataLoader workers itself is several
    times slower and leaves stray worker errors behind)."""
    from ..zoo import MINI_BASE

    cfg = resolve_config(f"{MINI_BASE}:mini")
    work_dir = Path(work_dir or Path("work_dirs") / cfg.name)
    path = work_dir / "latest.pth"
    if path.is_file():
        done = read_checkpoint(path).get("train_state", {}).get("epoch")
        if done == cfg.schedule.epochs:
            return path
    command = [sys.executable, "-m", "stdet", "train", f"{MINI_BASE}:mini", "--data-root",
               str(data_root), "--work-dir", str(work_dir), "--validate", "--seed", str(seed)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise TrainingError(f"{' '.join(command[1:])} failed (exit {done.returncode}):\n"
                            + done.stderr[-4000:])
    return path


def run(args: argparse.Namespace) -> int:
    """The ``train`` command: errors a user can fix are one line, not a traceback."""
    try:
        summary = main(args)
    except (TrainingError, KeyError, ValueError) as e:  # ValueError: e.g. a bad --cfg-options value
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", 0)) != 0:
        return 0
    print(f"done: {summary['epochs']} epochs, {summary['iterations']} iterations"
          + (f", best val mAP {100 * summary['best_map']:.2f} (epoch {summary['best_epoch']})"
             if math.isfinite(summary["best_map"]) else "") + f"; {summary['work_dir']}")
    return 0
