"""Inference over a split, the results CSV, and its evaluation: :func:`test` (``stdet.test``).

``python -m stdet test CONFIG CKPT [--eval mAP] [--out results.csv]`` mirrors MMAction2's
``tools/test.py``: scores every proposal of every keyframe of the val split, writes the rows
``video_id,timestamp,x1,y1,x2,y2,action_id,score`` (normalised boxes, 4 decimals; classes scoring
above ``action_thr``, 0.002 as in MMAction2's AVA configs) and evaluates them.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from .._progress import progress_bar

from ..configs import Config
from ..evaluation.ava_ap import PROTOCOLS
from ..data.io import atomic_write_text
from .data import long_term_of
from .distributed import DistInfo, broadcast_object, gather_objects, init_distributed
from .step import autocast

ACTION_THRESHOLD = 0.002


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


@torch.no_grad()
def predict_rows(model: nn.Module, loader, device: torch.device, info: DistInfo,
                 class_ids: list[int], action_thr: float = ACTION_THRESHOLD,
                 desc: str = "test", bf16: bool = True, progress: bool = True) -> pd.DataFrame:
    """Detections of this process's shard: one row per (proposal, class) scoring above
    ``action_thr``. ``class_ids[i]`` is the action id of score column ``i`` (column 0 unused)."""
    detector = _unwrap(model)
    detector.eval()
    ids = np.asarray(class_ids)
    frames = []
    for batch in progress_bar(loader, enabled=progress and info.is_main, desc=desc, leave=False):
        clips = batch["clips"].to(device, non_blocking=True)
        with autocast(device, bf16):
            scores = detector.predict(clips, [p.to(device) for p in batch["proposals"]],
                                      **long_term_of(batch, device))
        for s, boxes, meta in zip(scores, batch["proposals"], batch["meta"]):
            h, w = meta["img_shape"]
            norm = (boxes.numpy() / np.array([w, h, w, h], dtype=np.float64)).clip(0, 1)
            s = s.float().cpu().numpy()[:, 1:]
            box_index, column = np.nonzero(s > action_thr)
            frames.append(pd.DataFrame({
                "video": meta["video_id"], "timestamp": int(meta["timestamp"]),
                "x1": norm[box_index, 0], "y1": norm[box_index, 1], "x2": norm[box_index, 2],
                "y2": norm[box_index, 3], "action": ids[column + 1],
                "score": s[box_index, column]}))
    columns = ["video", "timestamp", "x1", "y1", "x2", "y2", "action", "score"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def write_results(rows: pd.DataFrame, path: str | os.PathLike) -> None:
    """The results CSV (no header; ``%04d`` timestamps, 4-decimal boxes and scores), atomically."""
    rows = rows.sort_values(["video", "timestamp", "action", "score"], ascending=[True, True, True, False],
                            kind="stable")
    rows = rows.assign(timestamp=rows["timestamp"].map("{:04d}".format))  # as AVA's CSVs: 0902
    text = rows.to_csv(header=False, index=False, float_format="%.4f")
    atomic_write_text(path, text)


def score_columns(cfg: Config) -> list[int]:
    """Action id of each score column: the identity, or the custom classes after column 0."""
    if cfg.data.custom_classes:
        return [0, *cfg.data.custom_classes]
    return list(range(cfg.model.head.num_classes))


def predict_split(model: nn.Module, cfg: Config, device: torch.device, info: DistInfo,
                  out: str | os.PathLike, split: str = "val", desc: str = "test",
                  progress: bool = True) -> Path | None:
    """Score every proposal of ``split`` on every process and write the results CSV ``out``
    (the main process; returns its path there, None elsewhere)."""
    from .data import build_dataset, eval_loader, gather_skipped

    dataset = build_dataset(cfg, split, train=False)
    loader = eval_loader(dataset, cfg.data.workers, info, start_method=cfg.data.start_method)
    rows = predict_rows(model, loader, device, info, score_columns(cfg), desc=desc,
                        bf16=cfg.runtime.bf16, progress=progress)
    shards = gather_objects(rows, info)
    # the people of skipped keyframes get no detections: missed ground truth in the evaluation
    gather_skipped(loader, info, f"{desc} {split}", len(dataset))
    if not info.is_main:
        return None
    write_results(pd.concat(shards, ignore_index=True), out)
    return Path(out)


def evaluate_split(model: nn.Module, cfg: Config, device: torch.device, info: DistInfo,
                   out: str | os.PathLike, split: str = "val", protocol: str = "activitynet",
                   desc: str = "val", progress: bool = True):
    """Predict ``split`` on every process, write ``out`` and evaluate it on the main process; the
    :class:`~stdet.evaluation.AVAEvalResult` is broadcast, so every process returns it."""
    from ..evaluation import evaluate
    from .data import layout_of

    result = None
    if predict_split(model, cfg, device, info, out, split, desc, progress) is not None:
        layout = layout_of(cfg)
        custom = list(cfg.data.custom_classes) if cfg.data.custom_classes else None
        label_map = layout.label_file if custom else layout.eval_label_file
        exclude = layout.exclude_file(split)
        result = evaluate(layout.ann_file(split), out, label_map,
                          exclude=exclude if exclude.is_file() else None,
                          protocol=protocol, custom_classes=custom)
    return broadcast_object(result, info)


def resolve_preprocess(cfg: Config, checkpoint: str | os.PathLike | nn.Module,
                       verbose: bool = True, origin: dict | None = None) -> Config:
    """``cfg`` with ``data.preprocess="auto"`` settled for scoring ``checkpoint``: MMAction2's
    preprocessing for an MMAction2 checkpoint, raw or converted (its model learnt from frames made
    that way; one line on stderr says so), stdet's otherwise. A ``data.preprocess`` set to
    ``"stdet"`` or ``"mmaction2"`` is kept. ``origin``: what loading the file found
    (``LoadReport.origin``), so that it is not read again."""
    if cfg.data.preprocess != "auto":
        return cfg
    if origin is None and not isinstance(checkpoint, nn.Module):
        from .checkpoint import mmaction2_origin, read_checkpoint

        origin = mmaction2_origin(read_checkpoint(checkpoint))
    how = (origin or {}).get("version")
    if how and verbose:
        print(f"{checkpoint} is an MMAction2 checkpoint ({how}): frames are preprocessed as "
              f"MMAction2's test pipeline does (data.preprocess=mmaction2: full-size decode, "
              f"OpenCV's bilinear resize); data.preprocess=stdet overrides", file=sys.stderr)
    data = dataclasses.replace(cfg.data, preprocess="mmaction2" if how else "stdet")
    return dataclasses.replace(cfg, data=data)


def load_model(cfg: Config, checkpoint: str | os.PathLike, device: torch.device,
               verbose: bool = True, strict: bool = True):
    """The detector of ``cfg`` on ``device`` with the weights of ``checkpoint`` (stdet or
    MMAction2), and the :class:`~stdet.engine.checkpoint.LoadReport`. ``strict``: a file that
    does not cover the model (a weight missing or of another shape: a checkpoint of another
    config) is refused in one line; otherwise the partial match is reported on stderr. Weights
    the model has no place for are reported."""
    from ..data.errors import AVADataError
    from ..models import build_detector
    from .checkpoint import load_checkpoint

    model = build_detector(cfg.model).to(device)
    report = load_checkpoint(model, checkpoint)
    if strict and not report.covers:
        raise AVADataError(checkpoint, f"does not fit {cfg.name}: {report.summary()}; is it a "
                           f"checkpoint of another config? (--lenient loads what fits)")
    if verbose and (report.missing or report.unexpected or report.mismatched):
        print(report, file=sys.stderr)
    for note in report.notes:  # an MMAction2 file trained with another setting than cfg's
        warnings.warn(note, stacklevel=2)
    return model, report


def test(cfg: Config | str, checkpoint: str | os.PathLike | nn.Module, *, split: str = "val",
         out: str | os.PathLike | None = None, device: str | None = None,
         protocol: str = "activitynet", progress: bool = True, strict: bool = True):
    """Score ``split`` of ``cfg.data.root`` with ``checkpoint``, write the results CSV ``out``
    (default: ``results.csv`` next to the checkpoint) and evaluate it (frame-mAP@0.5 with
    ``protocol``); returns the :class:`~stdet.evaluation.AVAEvalResult`. Under torchrun every
    process scores its shard. ``strict``: refuse a checkpoint that does not cover the model
    (False loads the weights that fit and reports the rest).

    ``checkpoint`` is a file (stdet or MMAction2) or a detector in memory (e.g. an untrained one,
    as a baseline; ``out`` is then required).
    With ``data.preprocess="auto"`` (the default) an MMAction2 checkpoint, raw or converted, is
    scored on frames preprocessed as MMAction2 does (:func:`resolve_preprocess`).

    >>> import stdet
    >>> cfg = stdet.config("work_dirs/slowonly_mini/config.json")   # the data root it trained on
    >>> result = stdet.test(cfg, "work_dirs/slowonly_mini/best.pth")
    >>> result.map, result.per_class
    """
    from .. import zoo

    cfg = zoo.resolve(cfg)
    info, dev = init_distributed(device)
    if isinstance(checkpoint, nn.Module):
        if out is None:
            raise ValueError("test(cfg, model): pass out=, the results CSV to write")
        model, origin = checkpoint.to(dev), {}
    else:
        model, report = load_model(cfg, checkpoint, dev, verbose=info.is_main, strict=strict)
        origin = report.origin
    cfg = resolve_preprocess(cfg, checkpoint, verbose=info.is_main, origin=origin)
    out = out or Path(checkpoint).with_name("results.csv")
    return evaluate_split(model, cfg, dev, info, out, split, protocol, desc="test",
                          progress=progress)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m stdet test", add_help=add_help,
                                description="Score the val split with a checkpoint, write the "
                                            "results CSV and evaluate it.")
    p.add_argument("config", help="zoo name (NAME or NAME:mini) or a config.json written by stdet")
    p.add_argument("checkpoint", help="stdet or MMAction2 checkpoint")
    p.add_argument("--eval", choices=("mAP",), help="evaluate the results (frame-mAP@0.5)")
    p.add_argument("--out", help="results CSV (default: results.csv next to the checkpoint)")
    p.add_argument("--data-root", help="AVA root (default: the config's data.root)")
    p.add_argument("--split", default="val")
    p.add_argument("--protocol", choices=PROTOCOLS, default="activitynet",
                   help="frame-mAP protocol: activitynet (official, default), mmaction2-0.x (the "
                        "published zoo table's) or mmaction2 (MMAction2 1.x)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--lenient", action="store_true",
                   help="load the weights that fit when the checkpoint does not cover the model "
                        "(default: refuse it)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    return p


def run(args: argparse.Namespace) -> int:
    """The ``test`` command: :func:`test` with ``--eval``, else only the results CSV."""
    from .. import zoo

    cfg = zoo.resolve(args.config, *args.cfg_options, data_root=args.data_root)
    out = args.out or str(Path(args.checkpoint).with_name("results.csv"))
    if args.eval:
        result = test(cfg, args.checkpoint, split=args.split, out=out, device=args.device,
                      protocol=args.protocol, strict=not args.lenient)
        if int(os.environ.get("RANK", 0)) == 0:
            print(result.table())
    else:
        info, device = init_distributed(args.device)
        model, report = load_model(cfg, args.checkpoint, device, verbose=info.is_main,
                                   strict=not args.lenient)
        cfg = resolve_preprocess(cfg, args.checkpoint, verbose=info.is_main, origin=report.origin)
        predict_split(model, cfg, device, info, out, args.split)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"wrote {out}")
    return 0


test.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
