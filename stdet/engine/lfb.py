"""Build a long-term feature bank: :func:`extract_lfb` (``stdet.extract_lfb``), which
``python -m stdet extract-lfb CONFIG CKPT --split train|val`` calls.

A trained short-term detector (the bank config's: SlowOnly R50 4x16 trained on AVA) runs over
every keyframe of a split with the person detector's proposals, as at test time, and the bank
keeps one feature per proposal: its RoI feature map averaged over time and max-pooled over space
(MMAction2's LFB inference head). The result is ``OUT/lfb_{split}.npy`` + ``.json``
(:class:`~stdet.lfb.bank.FeatureBank`).

Extraction is resumable and works under torchrun: each process writes shards of its keyframes
every ``--shard-size`` keyframes; a rerun skips the keyframes already in a shard; when every
process is done, the first one merges the shards into the bank. Every shard records what
produced it (:func:`bank_identity`: hashes of the checkpoint and of the model's config), and a
rerun with another checkpoint or config is refused instead of mixing two models' features. One
extraction per split and bank directory runs at a time (a lock file ``OUT/.stdet.lfb_S.lock``).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Subset

from .._progress import progress_bar
from ..configs import Config, config_to_dict
from ..lfb.bank import BankWriter, FeatureBank, bank_nbytes, merge_shards
from .distributed import DistInfo, barrier, cleanup, init_distributed, main_process_lock
from .step import autocast


def count_rois(dataset) -> int:
    """How many features the bank of ``dataset``'s keyframes will hold (its proposal selection:
    score threshold, at most ``max_proposals``, the whole frame where a keyframe has none),
    counted without reading a frame."""
    return sum(len(dataset.proposals_of(key)[0]) for key in dataset.keys)


@torch.no_grad()
def extract(model: nn.Module, dataset, writer: BankWriter, device: torch.device, info: DistInfo,
            workers: int = 0, desc: str = "lfb", bf16: bool = True, start_method: str = "auto",
            progress: bool = True) -> int:
    """Write the features of this process's share of ``dataset``'s keyframes that ``writer``
    does not hold yet; returns how many keyframes were written."""
    from ..models.detector import boxes_to_rois
    from .data import eval_loader, gather_skipped

    model.eval()
    todo = [i for i, key in enumerate(dataset.keys) if key not in writer.done]
    # this process's share
    loader = eval_loader(Subset(dataset, todo), workers, info, start_method=start_method)
    written = 0
    for batch in progress_bar(loader, enabled=progress and info.is_main, desc=desc, leave=False):
        meta, proposals = batch["meta"][0], batch["proposals"][0]
        features = proposals.new_zeros((0, writer.channels))
        if len(proposals):
            rois = boxes_to_rois([proposals.to(device)])
            with autocast(device, bf16):
                features = model.bank_features(batch["clips"].to(device), rois)
        writer.add(meta["video_id"], int(meta["timestamp"]), features.float().cpu().numpy())
        written += 1
    writer.close()
    gather_skipped(loader, info, desc, len(dataset))  # the bank holds no feature of these
    return written


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, read in chunks (a checkpoint may be hundreds of MiB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# config keys that do not change a bank's features: where the data is, how it is loaded, the
# runtime switches, and the names (a config.json copy of the same model is the same model)
_NOT_IN_IDENTITY = {"data": ("root", "workers", "start_method"), "runtime": None, "name": None,
                    "published": None}


def config_sha256(cfg: Config) -> str:
    """The sha256 of the bank model's config as sorted JSON, without :data:`_NOT_IN_IDENTITY`."""
    data = config_to_dict(cfg)
    for key, subkeys in _NOT_IN_IDENTITY.items():
        if subkeys is None:
            data.pop(key, None)
        else:
            for sub in subkeys:
                data.get(key, {}).pop(sub, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def bank_identity(cfg: Config, checkpoint: str | os.PathLike) -> dict:
    """What produces a bank's features: the first 16 hex digits of the sha256 of the checkpoint
    file and of the bank model's config (:func:`config_sha256`). Stored in every shard; a
    resumed extraction must match it."""
    return {"checkpoint_sha256": file_sha256(checkpoint)[:16],
            "config_sha256": config_sha256(cfg)[:16]}


def bank_lock(out: Path, split: str, info: DistInfo) -> contextlib.AbstractContextManager:
    """The lock of ``split``'s bank in ``out`` (``OUT/.stdet.lfb_S.lock``: the train and val
    banks of one directory can be extracted at once), see :func:`main_process_lock`."""
    return main_process_lock(out, f"extract-lfb --split {split}", info,
                             name=f".stdet.lfb_{split}.lock", advice="wait for it or use another --out")


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


def lfb_plan(cfg: Config, split: str) -> dict:
    """What :func:`extract_lfb` would write for ``split``, without running the model:
    ``{"keyframes", "rois", "channels", "bytes": {"float32": n, "float16": n}}``."""
    from .. import zoo
    from ..models import build_backbone
    from .data import build_dataset

    cfg = zoo.bank_model(zoo.resolve(cfg))
    dataset = build_dataset(cfg, split, train=False)
    rois = count_rois(dataset)
    channels = int(build_backbone(cfg.model.backbone).feature_channels)
    return {"keyframes": len(dataset), "rois": rois, "channels": channels,
            "bytes": {d: bank_nbytes(rois, channels, d) for d in ("float32", "float16")}}


def extract_lfb(cfg: Config | str, checkpoint: str | os.PathLike, split: str, *, half: bool = False,
                out: str | os.PathLike | None = None, shard_size: int = 256,
                device: str | None = None, progress: bool = True) -> FeatureBank:
    """Fill the long-term feature bank of ``split`` with ``checkpoint``'s RoI features and return
    it. ``cfg`` is an LFB config (its bank model, ``model.lfb.bank_config``, runs), the bank
    model's config, or any other config, whose own model runs; ``out`` defaults to the bank
    directory the LFB configs read (``DATA_ROOT/lfb``). ``half`` stores float16. Resumable: a
    rerun keeps the shards already written. Under torchrun each process writes its share.

    >>> import stdet
    >>> cfg = stdet.config("lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb:mini",
    ...                    data_root="data/mini-ava")
    >>> for split in ("train", "val"):
    ...     bank = stdet.extract_lfb(cfg, "work_dirs/slowonly_mini/best.pth", split)
    """
    from .. import zoo
    from .data import bank_root

    cfg = zoo.resolve(cfg)
    out = Path(out) if out else bank_root(cfg)
    cfg = zoo.bank_model(cfg)
    info, dev = init_distributed(device)
    try:
        with bank_lock(out, split, info):
            bank, written, skipped = _extract_split(cfg, checkpoint, split, out, half, shard_size,
                                                    dev, info, progress)
    finally:
        cleanup(info)
    if progress and info.is_main:
        size = bank_nbytes(bank.num_rows, bank.channels, bank.dtype)
        print(f"{cfg.name}: {written} keyframes extracted"
              f"{f', {skipped} kept from an earlier run' if skipped else ''}; "
              f"bank {bank.path_npy}: {bank.num_rows} features x {bank.channels} "
              f"({bank.dtype.name}, {size / 2**20:.1f} MiB)")
    return bank


def _extract_split(cfg: Config, checkpoint, split: str, out: Path, half: bool, shard_size: int,
                   dev: torch.device, info: DistInfo, progress: bool) -> tuple[FeatureBank, int, int]:
    """The body of :func:`extract_lfb` under the bank's lock: ``(bank, written, kept)``."""
    from .data import build_dataset
    from .test import load_model

    model, _ = load_model(cfg, checkpoint, dev, verbose=info.is_main)
    dataset = build_dataset(cfg, split, train=False)
    writer = BankWriter(out, split, int(model.backbone.feature_channels),
                        "float16" if half else "float32", rank=info.rank, shard_size=shard_size,
                        identity=bank_identity(cfg, checkpoint))
    skipped = len(writer.done)
    barrier(info)  # every process has read the same shards before any writes a new one
    written = extract(model, dataset, writer, dev, info, cfg.data.workers, desc=f"lfb {split}",
                      bf16=cfg.runtime.bf16, start_method=cfg.data.start_method,
                      progress=progress)
    barrier(info)
    bank = merge_shards(out, split) if info.is_main else None
    barrier(info)
    if not info.is_main:
        bank = FeatureBank.load(out, split)
    return bank, written, skipped


def run(args: argparse.Namespace) -> int:
    """The ``extract-lfb`` command: :func:`extract_lfb`, or :func:`lfb_plan` with ``--dry-run``."""
    from .. import zoo

    cfg = zoo.resolve(args.config, *args.cfg_options, data_root=args.data_root)
    if args.dry_run:
        plan = lfb_plan(cfg, args.split)
        sizes = ", ".join(f"{n / 2**20:.1f} MiB in {d}" for d, n in plan["bytes"].items())
        print(f"{args.split}: {plan['keyframes']} keyframes, {plan['rois']} RoIs x "
              f"{plan['channels']} channels: {sizes}")
        return 0
    extract_lfb(cfg, args.checkpoint, args.split, half=args.half, out=args.out,
                shard_size=args.shard_size, device=args.device)
    return 0
