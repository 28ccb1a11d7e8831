"""Training: :func:`train` (``stdet.train``), which ``python -m stdet train CONFIG`` calls; one
process or, under torchrun, one per GPU.

The module reads top to bottom: :func:`train` (setup, resume, the epoch loop, validation,
checkpoints) and :func:`train_one_epoch` over a :class:`TrainRun`; the step itself, and the
``runtime`` switches that decide how it runs on the hardware, are in :mod:`stdet.engine.step`;
the command's argument parser is :func:`get_args_parser`, its body :func:`run`.

Exactness of resume: every epoch starts by seeding torch, numpy and Python's ``random`` from
(seed, epoch, rank) and the data order from (seed, epoch), so an epoch's randomness does not
depend on what ran before it. A checkpoint is written (atomically) after every epoch with model,
optimiser, scheduler, epoch, iteration, RNG states and config; ``resume`` reloads it and replays
the next epoch exactly as an uninterrupted run would (bit for bit on CPU with
``deterministic``). The same holds in a notebook kernel: there, data workers start from a
forkserver instead of a fork of the kernel (:mod:`stdet.engine.data`), with the same seeds.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from .._progress import progress_bar

from ..configs import Config, ConfigError, config_from_dict, config_to_dict, save_config
from ..data.errors import RunError
from ..evaluation import AVAEvalResult
from .checkpoint import init_backbone, read_checkpoint, save_checkpoint
from .data import long_term_of
from .distributed import (DistInfo, barrier, broadcast_buffers, cleanup, gather_objects,
                          init_distributed, main_process_lock)
from .logger import JsonlLogger, read_log
from .step import PendingSteps, configure_backends, prepare_model, to_device, train_step, use_fused


class TrainingError(RunError):
    """Training cannot go on: the loss is not finite (a fault of the run, exit code 1)."""


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
    later, by :func:`build_model`); a local path that does not exist is a ``FileNotFoundError``
    that says how to make it."""
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
                    f"`python -m stdet train {MINI_BASE}:mini --data-root DIR` "
                    f"(stdet.mini_base_checkpoint), or pass --cfg-options "
                    f"model.backbone.pretrained=PATH (None: from scratch)")
        raise FileNotFoundError(f"model.backbone.pretrained: no file {pretrained}{hint}")
    return pretrained


def build_model(cfg: Config, verbose: bool = True) -> nn.Module:
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
        if verbose:
            print(f"backbone initialised from {pretrained}:\n{report}")
    return model


@dataclass
class TrainResult:
    """What :func:`train` leaves behind.

    ``log``: every record of ``log.jsonl`` (:func:`~stdet.engine.logger.read_log`), one row per
    training iteration (``mode == "train"``) and per validation (``"val"``); ``result``: the last
    validation's :class:`~stdet.evaluation.AVAEvalResult` (AP per class, curves; None without
    validation) and ``metrics`` its mAP and group means (empty without validation); ``best``:
    ``best.pth`` (None without validation)."""

    work_dir: Path
    latest: Path
    best: Path | None
    log: pd.DataFrame
    epochs: int = 0
    iterations: int = 0
    best_map: float = float("nan")
    best_epoch: int | None = None
    result: AVAEvalResult | None = None

    @property
    def metrics(self) -> dict[str, float]:
        return self.result.metrics if self.result is not None else {}


@dataclass
class TrainRun:
    """What one training run holds while it goes through its epochs: the module the forward
    goes through (``ddp``: a DistributedDataParallel wrapper of ``model``, or ``model``), the
    optimiser and schedule, the loader, where it runs, its log and progress (``state``: epoch,
    iteration and the best validation so far, as the checkpoint stores it)."""

    cfg: Config
    model: nn.Module
    ddp: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: torch.utils.data.DataLoader
    device: torch.device
    info: DistInfo
    logger: JsonlLogger
    state: dict
    max_iters: int | None = None
    progress: bool = True


def train(cfg: Config | str, work_dir: str | os.PathLike, *, validate: bool = True, seed: int = 0,
          deterministic: bool = False, resume: bool | str | os.PathLike = False,
          device: str | None = None, max_iters: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train ``cfg`` (a :class:`~stdet.configs.Config`, or anything :func:`stdet.config`
    resolves) on ``cfg.data.root``, writing ``log.jsonl``, ``latest.pth`` (every epoch),
    ``best.pth`` and ``results_val.csv`` (with ``validate``: val mAP every
    ``schedule.eval_interval`` epochs) and ``config.json`` into ``work_dir``.

    ``resume``: True continues from ``work_dir/latest.pth``, a path from that checkpoint;
    ``max_iters`` stops early (the checkpoint then written counts the epoch as finished);
    ``progress``: progress bars and printed summaries (rank 0 only). Under torchrun every
    process calls this and trains its shard (DDP); each returns the same result.

    >>> import stdet
    >>> cfg = stdet.config("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb:mini",
    ...                    data_root="data/mini-ava")
    >>> result = stdet.train(cfg, "work_dirs/slowonly_mini", seed=0)
    >>> result.metrics["mAP"], result.best
    """
    from .. import zoo
    from .data import build_dataset, reseed, train_loader
    from .schedule import build_optimizer, build_scheduler, load_optimizer_state

    cfg = zoo.resolve(cfg)
    pretrained_file(cfg)  # before the work dir is touched
    info, dev = init_distributed(device)
    work_dir = Path(work_dir)
    with contextlib.ExitStack() as stack:
        stack.callback(cleanup, info)
        # one run per work dir: a second one would interleave checkpoints and logs
        stack.enter_context(main_process_lock(work_dir, "train", info))
        verbose = progress and info.is_main
        configure_backends(dev, cfg.runtime, deterministic)
        seed_everything(seed + info.rank)
        model = prepare_model(build_model(cfg, verbose).to(dev), cfg.runtime)
        ckpt = None
        if resume:
            resume_path = work_dir / "latest.pth" if resume in (True, "auto") else Path(resume)
            ckpt = read_checkpoint(resume_path)
            changes = check_resume(ckpt, resume_path, cfg, model)
        if info.is_main:
            work_dir.mkdir(parents=True, exist_ok=True)
            # the data root as an absolute path: `stdet test WORK/config.json CKPT` reads the
            # same data
            save_config(zoo.resolve(cfg, data_root=os.path.abspath(cfg.data.root)),
                        work_dir / "config.json")
            if ckpt is None:
                keep_earlier_log(work_dir / "log.jsonl")
            else:
                truncate_log(work_dir / "log.jsonl", ckpt["train_state"])
        logger = JsonlLogger(work_dir / "log.jsonl" if info.is_main else None)

        dataset = build_dataset(cfg, "train")
        batch = cfg.optim.batch_per_gpu
        loader = train_loader(dataset, batch, cfg.data.workers, info, seed,
                              pin_memory=dev.type == "cuda", start_method=cfg.data.start_method)
        global_batch = batch * info.world_size
        lr = cfg.optim.scaled_lr(global_batch)
        if verbose:
            print(f"{cfg.name}: {len(dataset)} training keyframes, {len(loader)} iterations "
                  f"an epoch")
            print(f"lr {cfg.optim.lr:g} for {cfg.optim.reference_batch} clips a step (linear "
                  f"scaling rule) -> {lr:g} for {global_batch} ({info.world_size} process"
                  f"{'es' if info.world_size > 1 else ''} x {batch})")
        optimizer = build_optimizer(model, cfg.optim, lr, fused=use_fused(model, cfg.runtime))
        scheduler = build_scheduler(optimizer, len(loader), cfg.schedule)
        state = {"epoch": 0, "iteration": 0, "best_map": float("nan"), "best_epoch": None}

        if ckpt is not None:
            model.load_state_dict(ckpt["state_dict"])
            load_optimizer_state(optimizer, ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            state.update(ckpt["train_state"])
            rng = ckpt["rng"]
            set_rng_state(rng[info.rank] if info.rank < len(rng) else rng[0])
            logger.log(mode="resume", epoch=state["epoch"], step=state["iteration"],
                       checkpoint=str(resume_path), changes=changes)
            if verbose:
                print(f"resumed from {resume_path} at epoch {state['epoch']}, iteration "
                      f"{state['iteration']}" + "".join(f"\n  changed {c}" for c in changes))

        ddp = model
        if info.distributed:
            ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None)
        run = TrainRun(cfg, model, ddp, optimizer, scheduler, loader, dev, info, logger, state,
                       max_iters, progress)
        result = None
        # for this run only: a notebook that trains again gets its own setting back
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(deterministic or was_deterministic)
        try:
            for epoch in range(state["epoch"], cfg.schedule.epochs):
                seed_everything(seed * 1000 + epoch * 100 + info.rank)
                reseed(loader, epoch, seed)
                stop = train_one_epoch(run, epoch)
                state["epoch"] = epoch + 1
                if validate and (state["epoch"] % cfg.schedule.eval_interval == 0
                                 or state["epoch"] == cfg.schedule.epochs):
                    result = validate_epoch(run, work_dir)
                _save(work_dir / "latest.pth", run)
                if stop:
                    break
            barrier(info)
        except TrainingError as e:
            logger.log(mode="error", message=str(e))
            raise
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
            logger.close()
        best = work_dir / "best.pth"
        if verbose:
            print(f"done: {state['epoch']} epochs, {state['iteration']} iterations"
                  + (f", best val mAP {100 * state['best_map']:.2f} (epoch {state['best_epoch']})"
                     if math.isfinite(state["best_map"]) else "") + f"; {work_dir}")
        return TrainResult(work_dir, work_dir / "latest.pth", best if best.is_file() else None,
                           read_log(work_dir / "log.jsonl"), state["epoch"], state["iteration"],
                           state["best_map"], state["best_epoch"], result)


# fields a resumed run may change: where and how it runs, and the schedule from the resumed
# epoch on (more epochs, other milestones); the model, its data and the optimiser may not
RESUMABLE_CHANGES = ("data.root", "data.workers", "data.start_method", "data.on_error",
                     "model.backbone.pretrained", "schedule.", "runtime.", "published.")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def check_resume(ckpt: dict, path: Path, cfg: Config, model: nn.Module) -> list[str]:
    """Refuse, in one line, a resume from a checkpoint that is not this run's: one of another
    model (its weights do not fit) or whose config differs in a field that changes what is
    computed, naming the fields and both values. Returns the changes that are allowed
    (``RESUMABLE_CHANGES``: the schedule, where and how the run goes on) as ``"key: old -> new"``:
    they apply from the resumed epoch on."""
    from ..data.errors import AVADataError
    from .checkpoint import match_state

    missing = [k for k in ("state_dict", "optimizer", "scheduler", "train_state", "rng")
               if k not in ckpt]
    if missing:
        raise AVADataError(path, f"not a training checkpoint of stdet (lacks "
                           f"{', '.join(missing)}); --resume continues a run; to start from "
                           f"these weights use --cfg-options model.backbone.pretrained={path}")
    report, _ = match_state(model.state_dict(), ckpt["state_dict"], path)
    saved = ckpt.get("config", {}) or {}
    if report.missing or report.unexpected or report.mismatched:
        raise AVADataError(path, f"cannot resume {cfg.name} from a checkpoint of "
                           f"{saved.get('name', 'another model')}: {report.summary()}")
    if not saved:
        return []
    try:  # as this version writes it (fields added since take their defaults)
        saved = config_to_dict(config_from_dict(saved))
    except ConfigError:
        pass
    old, new = _flatten(saved), _flatten(config_to_dict(cfg))
    differ = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    changed = [k for k in differ if not k.startswith(RESUMABLE_CHANGES)]
    if changed:
        fields = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:6])
        raise ConfigError(f"--resume: the config differs from the checkpoint's ({path}) in "
                          f"{fields}{' ...' if len(changed) > 6 else ''}; resume with the "
                          f"checkpoint's settings, or train in a new work dir")
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ
            if k.startswith(("schedule.", "runtime.", "data.on_error"))]


def truncate_log(path: Path, train_state: dict) -> None:
    """Drop the records a run wrote after the checkpoint it resumes from (a killed run's
    iterations of the epoch that is replayed), so no step or validation appears twice."""
    from ..data.io import atomic_write_text
    from .logger import read_records

    if not path.is_file():
        return
    epoch, step = train_state["epoch"], train_state["iteration"]
    records = read_records(path)
    kept = [r for r in records
            if (r.get("step", 0) <= step if r.get("mode") == "train"
                else r.get("epoch", 0) <= epoch)]
    if len(kept) != len(records):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def validate_epoch(run: TrainRun, work_dir: Path) -> AVAEvalResult:
    """Val mAP of the weights the checkpoint holds, logged; ``best.pth`` when it is the best so
    far."""
    from .test import evaluate_split

    state, info = run.state, run.info
    broadcast_buffers(run.model, info)  # evaluate the weights the checkpoint holds
    result = evaluate_split(run.model, run.cfg, run.device, info, work_dir / "results_val.csv",
                            progress=run.progress)
    run.logger.log(mode="val", epoch=state["epoch"], **result.metrics)
    if run.progress and info.is_main:
        print(f"epoch {state['epoch']}: val mAP {100 * result.map:.2f}")
    if not math.isfinite(state["best_map"]) or result.map > state["best_map"]:
        state["best_map"], state["best_epoch"] = result.map, state["epoch"]
        _save(work_dir / "best.pth", run)
    return result


def _save(path: Path, run: TrainRun) -> None:
    """All processes contribute their RNG state; the main process writes the file atomically."""
    states = gather_objects(rng_state(), run.info)
    if run.info.is_main:
        save_checkpoint(path, run.model, meta={"config": run.cfg.name},
                        optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict(),
                        train_state=dict(run.state), rng=states, config=config_to_dict(run.cfg))
    barrier(run.info)


def train_one_epoch(run: TrainRun, epoch: int) -> bool:
    """One pass over the training shard; returns True when ``run.max_iters`` is reached.

    The step reads nothing back from the device (:mod:`stdet.engine.step`): loss values, the
    finite-loss check and the progress bar wait for the log interval, the end of the epoch or
    ``max_iters``. A non-finite loss stops training there, naming the first step that had one;
    nothing is saved after it, so ``latest.pth`` keeps the last good epoch."""
    cfg, state, model, loader = run.cfg, run.state, run.model, run.loader
    interval = cfg.runtime.log_interval
    run.ddp.train()
    pending = PendingSteps()
    end = time.perf_counter()
    bar = progress_bar(loader, enabled=run.progress and run.info.is_main,
                       desc=f"epoch {epoch + 1}/{cfg.schedule.epochs}", leave=False)
    stop = False
    for i, batch in enumerate(bar):
        data_time = time.perf_counter() - end
        rois, targets = model.training_rois(batch["proposals"], batch["gt_boxes"], batch["gt_labels"])
        on_device = to_device(batch["clips"], rois, targets, run.device, cfg.runtime.channels_last)
        lr = run.optimizer.param_groups[0]["lr"]
        values = train_step(run.ddp, model, run.optimizer, *on_device, grad_clip=cfg.optim.grad_clip,
                            bf16=cfg.runtime.bf16, **long_term_of(batch, run.device))
        run.scheduler.step()
        state["iteration"] += 1
        pending.add({"mode": "train", "epoch": epoch + 1, "iter": i + 1, "step": state["iteration"],
                     "lr": lr, "data_time": round(data_time, 4),
                     "memory_mb": round(memory_mb(run.device), 1)}, values)
        stop = run.max_iters is not None and state["iteration"] >= run.max_iters
        if len(pending) == interval or stop or i + 1 == len(loader):
            _write_pending(pending, run, bar)
        end = time.perf_counter()
        if stop:
            break
    report_epoch_skips(run, epoch)
    return stop


def report_epoch_skips(run: TrainRun, epoch: int) -> None:
    """Keyframes the epoch skipped (``data.on_error=skip``) on every process: logged (mode
    "skip": how many, the first 20 with their reason) and printed as a warning."""
    from .data import gather_skipped

    skipped = gather_skipped(run.loader, run.info, f"epoch {epoch + 1}", len(run.loader.samples))
    if skipped:
        run.logger.log(mode="skip", epoch=epoch + 1, skipped=len(skipped), keyframes=skipped[:20])


def _write_pending(pending: PendingSteps, run: TrainRun, bar) -> None:
    """Log the pending steps; raise TrainingError at the first one whose loss was not finite on
    some process (every process reads at the same step, so all of them stop together)."""
    records, bad = pending.read(run.info)
    for record in records:
        run.logger.log(**record)
    if records:
        bar.set_postfix(loss=f"{records[-1]['loss']:.4f}", lr=f"{records[-1]['lr']:.3g}")
    if bad is not None:
        epoch = run.state["epoch"]
        kept = (f"the last good checkpoint, latest.pth of epoch {epoch}, is kept"
                if epoch else "no checkpoint had been written yet")
        where = " on one of the processes" if run.info.distributed else ""
        raise TrainingError(f"loss is {bad['loss']} at epoch {bad['epoch']}, iteration "
                            f"{bad['iter']} (step {bad['step']}){where}; training stopped; {kept}")


def mini_base_checkpoint(data_root: str | os.PathLike, work_dir: str | os.PathLike | None = None,
                         seed: int = 0, progress: bool = True) -> Path:
    """The last checkpoint of the mini SlowOnly (``zoo.MINI_BASE:mini``), which the other mini
    configs fine-tune from: the one in ``work_dir`` (default ``work_dirs/NAME``) if a run there
    finished every epoch, else trained now, in this process, by :func:`train` with validation and
    ``seed`` (what ``python -m stdet train NAME:mini --validate`` does).

    >>> import stdet
    >>> base = stdet.mini_base_checkpoint("data/mini-ava")     # work_dirs/..._mini/latest.pth
    >>> cfg = stdet.config("slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb:mini",
    ...                    f"model.backbone.pretrained={base}", data_root="data/mini-ava")
    """
    from .. import zoo

    cfg = zoo.resolve(f"{zoo.MINI_BASE}:mini", data_root=data_root)
    work_dir = Path(work_dir or Path("work_dirs") / cfg.name)
    path = work_dir / "latest.pth"
    if path.is_file():
        done = read_checkpoint(path).get("train_state", {}).get("epoch")
        if done == cfg.schedule.epochs:
            return path
    train(cfg, work_dir, validate=True, seed=seed, progress=progress)
    return path


def run(args: argparse.Namespace) -> int:
    """The ``train`` command: :func:`train` on the resolved config."""
    from .. import zoo

    cfg = zoo.resolve(args.config, *args.cfg_options, data_root=args.data_root)
    train(cfg, args.work_dir or Path("work_dirs") / cfg.name, validate=args.validate,
          seed=args.seed, deterministic=args.deterministic, resume=args.resume or False,
          device=args.device, max_iters=args.max_iters)
    return 0
