"""``python -m stdet extract-lfb CONFIG CKPT --split train|val``: build a long-term feature bank.

A trained short-term detector (the bank config's: SlowOnly R50 4x16 trained on AVA) runs over
every keyframe of a split with the person detector's proposals, as at test time, and the bank
keeps one feature per proposal: its RoI feature map averaged over time and max-pooled over space
(MMAction2's LFB inference head). The result is ``OUT/lfb_{split}.npy`` + ``.json``
(:class:`~stdet.lfb.bank.FeatureBank`).

Extraction is resumable and works under torchrun: each process writes shards of its keyframes
every ``--shard-size`` keyframes; a rerun skips the keyframes already in a shard; when every
process is done, the first one merges the shards into the bank.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Subset
from tqdm.auto import tqdm

from ..configs import Config, RuntimeConfig
from ..engine.distributed import DistInfo, barrier, cleanup, init_distributed
from ..engine.step import autocast
from .bank import BankWriter, bank_nbytes, merge_shards


def bank_model_config(text: str, overrides: list[str] | None = None) -> Config:
    """The short-term config whose model fills the bank. CONFIG may name the bank config
    (``lfb_slowonly_r50_ava_infer``), an LFB config (its bank's model) or any other config
    (``NAME``, ``NAME:mini`` or a config JSON), whose own model is used."""
    from .. import zoo
    from ..engine.train import resolve_config

    def bank_model(mini: bool) -> Config:
        return resolve_config(f"{zoo.LFB_BANK_BACKBONE}{':mini' if mini else ''}", overrides)

    name, _, scale = text.partition(":")
    if name.removesuffix("_mini") == zoo.LFB_BANK_CONFIG:
        return bank_model(scale == "mini" or name.endswith("_mini"))
    cfg = resolve_config(text, overrides)
    return bank_model(cfg.scale == "mini") if cfg.model.lfb is not None else cfg


def count_rois(dataset) -> int:
    """How many features the bank of ``dataset``'s keyframes will hold (its proposal selection:
    score threshold, at most ``max_proposals``, the whole frame where a keyframe has none),
    counted without reading a frame."""
    return sum(len(dataset.proposals_of(key)[0]) for key in dataset.keys)


def roi_bank_features(model: nn.Module, clips: Tensor, rois: Tensor) -> Tensor:
    """``(K, C)``: each RoI's feature map, averaged over time (by the RoI extractor) and
    max-pooled over space."""
    roi_features, _ = model.roi_extractor(model.backbone(clips), rois)
    return roi_features.amax(dim=(2, 3, 4))


@torch.no_grad()
def extract(model: nn.Module, dataset, writer: BankWriter, device: torch.device, info: DistInfo,
            workers: int = 0, desc: str = "lfb", runtime: RuntimeConfig = RuntimeConfig()) -> int:
    """Write the features of this process's share of ``dataset``'s keyframes that ``writer``
    does not hold yet; returns how many keyframes were written."""
    from ..engine.data import eval_loader
    from ..models.detector import boxes_to_rois

    model.eval()
    todo = [i for i, key in enumerate(dataset.keys) if key not in writer.done]
    loader = eval_loader(Subset(dataset, todo), workers, info)  # this process's share
    written = 0
    for batch in tqdm(loader, desc=desc, disable=not info.is_main, leave=False):
        meta, proposals = batch["meta"][0], batch["proposals"][0]
        features = proposals.new_zeros((0, writer.channels))
        if len(proposals):
            rois = boxes_to_rois([proposals.to(device)])
            with autocast(device, runtime):
                features = roi_bank_features(model, batch["clips"].to(device), rois)
        writer.add(meta["video_id"], int(meta["timestamp"]), features.float().cpu().numpy())
        written += 1
    writer.close()
    return written


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m stdet extract-lfb", add_help=add_help,
                                description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("config", help="lfb_slowonly_r50_ava_infer[:mini], an LFB config (its bank "
                                  "model) or any config NAME[:mini] / config.json")
    p.add_argument("checkpoint", help="the trained short-term detector (stdet or MMAction2)")
    p.add_argument("--split", choices=("train", "val"), required=True)
    p.add_argument("--half", action="store_true", help="store float16 (half the size)")
    p.add_argument("--out", help="bank directory (default: DATA_ROOT/lfb)")
    p.add_argument("--data-root", help="AVA root (default: the config's data.root)")
    p.add_argument("--shard-size", type=int, default=256, help="keyframes per resumable shard")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dry-run", action="store_true",
                   help="only count the keyframes and RoIs and print the bank's size")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    return p


def main(args: argparse.Namespace) -> int:
    from ..engine.checkpoint import load_checkpoint
    from ..engine.data import bank_root, build_dataset
    from ..models import build_detector

    cfg = bank_model_config(args.config, args.cfg_options)
    out = Path(args.out) if args.out else bank_root(cfg, args.data_root)
    if args.dry_run:
        from ..models import build_backbone

        dataset = build_dataset(cfg, args.split, args.data_root, train=False)
        rois = count_rois(dataset)
        channels = int(build_backbone(cfg.model.backbone).feature_channels)
        sizes = ", ".join(f"{bank_nbytes(rois, channels, d) / 2**20:.1f} MiB in {d}"
                          for d in ("float32", "float16"))
        print(f"{args.split}: {len(dataset)} keyframes, {rois} RoIs x {channels} channels: {sizes}")
        return 0
    info, device = init_distributed(args.device)
    try:
        model = build_detector(cfg.model).to(device)
        report = load_checkpoint(model, args.checkpoint)
        if info.is_main and (report.missing or report.unexpected or report.mismatched):
            print(report, file=sys.stderr)
        dataset = build_dataset(cfg, args.split, args.data_root, train=False)
        writer = BankWriter(out, args.split, int(model.backbone.feature_channels),
                            "float16" if args.half else "float32", rank=info.rank,
                            shard_size=args.shard_size)
        skipped = len(writer.done)
        barrier(info)  # every process has read the same shards before any writes a new one
        written = extract(model, dataset, writer, device, info, cfg.data.workers,
                          desc=f"lfb {args.split}", runtime=cfg.runtime)
        barrier(info)
        if info.is_main:
            bank = merge_shards(out, args.split)
            size = bank_nbytes(bank.num_rows, bank.channels, bank.dtype)
            print(f"{cfg.name}: {written} keyframes extracted"
                  f"{f', {skipped} kept from an earlier run' if skipped else ''}; "
                  f"bank {bank.path_npy}: {bank.num_rows} features x {bank.channels} "
                  f"({bank.dtype.name}, {size / 2**20:.1f} MiB)")
    finally:
        cleanup(info)
    return 0

