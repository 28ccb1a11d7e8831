"""Inference over a split, the results CSV, and its evaluation.

``python -m stdet test CONFIG CKPT [--eval mAP] [--out results.csv]`` mirrors MMAction2's
``tools/test.py``: scores every proposal of every keyframe of the val split, writes the rows
``video_id,timestamp,x1,y1,x2,y2,action_id,score`` (normalised boxes, 4 decimals; classes scoring
above ``action_thr``, 0.002 as in MMAction2's AVA configs) and evaluates them.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..configs import Config, RuntimeConfig
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
                 desc: str = "test", runtime: RuntimeConfig = RuntimeConfig()) -> pd.DataFrame:
    """Detections of this process's shard: one row per (proposal, class) scoring above
    ``action_thr``. ``class_ids[i]`` is the action id of score column ``i`` (column 0 unused)."""
    detector = _unwrap(model)
    detector.eval()
    ids = np.asarray(class_ids)
    frames = []
    for batch in tqdm(loader, desc=desc, disable=not info.is_main, leave=False):
        clips = batch["clips"].to(device, non_blocking=True)
        with autocast(device, runtime):
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


def evaluate_split(model: nn.Module, cfg: Config, root, device: torch.device, info: DistInfo,
                   out: str | os.PathLike, split: str = "val", protocol: str = "activitynet",
                   desc: str = "val"):
    """Predict ``split`` on every process, write ``out`` and evaluate it on the main process; the
    :class:`~stdet.evaluation.AVAEvalResult` is broadcast, so every process returns it."""
    from ..evaluation import evaluate
    from .data import build_dataset, eval_loader, layout_of

    dataset = build_dataset(cfg, split, root, train=False)
    loader = eval_loader(dataset, cfg.data.workers, info)
    rows = predict_rows(model, loader, device, info, score_columns(cfg), desc=desc,
                       runtime=cfg.runtime)
    shards = gather_objects(rows, info)
    result = None
    if info.is_main:
        write_results(pd.concat(shards, ignore_index=True), out)
        layout = layout_of(cfg, root)
        custom = list(cfg.data.custom_classes) if cfg.data.custom_classes else None
        label_map = layout.label_file if custom else layout.eval_label_file
        exclude = layout.exclude_file(split)
        result = evaluate(layout.ann_file(split), out, label_map,
                          exclude=exclude if exclude.is_file() else None,
                          protocol=protocol, custom_classes=custom)
    return broadcast_object(result, info)


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
    p.add_argument("--protocol", choices=("activitynet", "mmaction2"), default="activitynet")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    return p


def main(args: argparse.Namespace) -> int:
    from ..models import build_detector
    from .checkpoint import load_checkpoint
    from .train import resolve_config

    cfg = resolve_config(args.config, args.cfg_options)
    info, device = init_distributed(args.device)
    model = build_detector(cfg.model).to(device)
    report = load_checkpoint(model, args.checkpoint)
    if info.is_main and (report.missing or report.unexpected or report.mismatched):
        print(report, file=sys.stderr)
    out = args.out or str(Path(args.checkpoint).with_name("results.csv"))
    if args.eval:
        result = evaluate_split(model, cfg, args.data_root, device, info, out, args.split,
                                args.protocol, desc="test")
        if info.is_main:
            print(result.table())
    else:
        from .data import build_dataset, eval_loader
        dataset = build_dataset(cfg, args.split, args.data_root, train=False)
        rows = predict_rows(model, eval_loader(dataset, cfg.data.workers, info), device, info,
                            score_columns(cfg), runtime=cfg.runtime)
        shards = gather_objects(rows, info)
        if info.is_main:
            write_results(pd.concat(shards, ignore_index=True), out)
    if info.is_main:
        print(f"wrote {out}")
    return 0
