"""Datasets and loaders of a config: AVA (or mini-AVA) splits, samplers for one or many processes.

DataLoader workers start as :func:`stdet.data.processes.worker_context` says for
``data.start_method`` (in a Jupyter kernel, from a forkserver rather than a fork of the kernel).
Loaders are :class:`AVALoader`: a stdet error in a worker (an unreadable frame, a bad bank) is
raised in the main process as itself, one line, and keyframes skipped under
``data.on_error=skip`` are counted across workers.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .._interrupt import check as check_interrupt
from ..configs import Config, LFBConfig
from ..data.dataset import AVADataset, ava_collate
from ..data.errors import AVADataError, StdetError
from ..data.layout import AVALayout
from ..data.processes import worker_context
from ..data.transforms import test_transforms, train_transforms
from .distributed import DistInfo


def layout_of(cfg: Config) -> AVALayout:
    return AVALayout(cfg.data.root, cfg.data.version)


def build_dataset(cfg: Config, split: str, train: bool | None = None) -> AVADataset:
    """The ``split`` ("train" or "val") of the config's data (``cfg.data.root``), with its
    transforms (resized and decoded as ``data.preprocess`` says)."""
    train = split == "train" if train is None else train
    data = cfg.data
    # "auto" is settled by `test` from the checkpoint; anywhere else it means stdet's
    preprocess = "stdet" if data.preprocess == "auto" else data.preprocess
    transforms = (train_transforms(data.train_scale, data.crop_size, data.flip, preprocess)
                  if train else test_transforms(data.test_scale, preprocess))
    lfb = {}
    if cfg.model.lfb is not None:
        from ..lfb import FeatureBank
        where = bank_root(cfg)
        try:
            bank = FeatureBank.load(where, split)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{cfg.name} needs the {split} feature bank {where}/lfb_{split}.npy; build it with "
                f"`python -m stdet extract-lfb {cfg.model.lfb.bank_config} CKPT --split {split} "
                f"--out {where}`") from None
        lfb = {"feature_bank": bank, "lfb_window": cfg.model.lfb.window_seconds,
               "lfb_per_second": cfg.model.lfb.max_per_second}
    needed = max(data.train_scale) if train else data.test_scale
    dataset = AVADataset.from_layout(
        layout_of(cfg), split, train=train, transforms=transforms,
        frame_source=data.frame_source,
        # MMAction2 decodes every frame at full size
        min_short_side=needed if data.reduced_decode and preprocess == "stdet" else None,
        clip_len=data.clip_len,
        frame_interval=data.frame_interval, num_classes=cfg.model.head.num_classes,
        custom_classes=data.custom_classes, custom_keyframes=data.custom_keyframes,
        person_det_score_thr=data.person_det_score_thr,
        max_proposals=data.max_proposals, on_error=data.on_error, **lfb)
    if not len(dataset):
        raise AVADataError(dataset.ann_file, f"the {split} split has no keyframe to "
                           f"{'train on' if train else 'score'} (every row excluded, skipped or "
                           f"without the custom classes, or the file is empty)")
    return dataset


def bank_root(cfg: Config) -> Path:
    """Where the config's long-term feature bank lives: ``model.lfb.bank_dir`` (the default one
    for a config without LFB, such as the bank model's), relative to the data root unless
    absolute."""
    return Path(cfg.data.root) / (cfg.model.lfb or LFBConfig()).bank_dir


def long_term_of(batch: dict, device: torch.device) -> dict:
    """``{"long_term": (B, N, C) on device}`` for a batch that carries bank features, else {}."""
    if "long_term" not in batch:
        return {}
    return {"long_term": batch["long_term"].to(device, non_blocking=True)}


class _Failed:
    """A stdet error raised while a worker read a sample, carried to the main process as data
    (DataLoader would re-raise it wrapped in a traceback of the worker)."""

    def __init__(self, error: StdetError) -> None:
        self.error = error


class _Guarded(Dataset):
    """``dataset`` whose stdet errors come back as :class:`_Failed` samples."""

    def __init__(self, dataset) -> None:
        self.inner = dataset

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        try:
            return self.inner[index]
        except StdetError as e:
            return _Failed(e)


def _guarded_collate(samples: list):
    failed = next((s for s in samples if isinstance(s, _Failed)), None)
    return failed if failed is not None else ava_collate(samples)


class AVALoader(DataLoader):
    """A DataLoader of AVA samples (batched by :func:`ava_collate`) that raises a worker's stdet
    error in the main process as that error, and keeps in ``skipped`` the keyframes its last
    pass skipped (``data.on_error=skip``; ``"video,%04d: reason"``, from every worker; the
    dataset's ``skipped`` count in this process includes them). A batch whose samples were all
    skipped is not yielded."""

    def __init__(self, dataset, **kwargs) -> None:
        super().__init__(_Guarded(dataset), collate_fn=_guarded_collate, **kwargs)
        self.skipped: list[str] = []

    @property
    def samples(self):
        """The dataset the loader reads (``dataset`` is its guarded wrapper)."""
        return self.dataset.inner

    def __iter__(self):
        self.skipped = []
        for batch in super().__iter__():
            check_interrupt()  # a Ctrl-C that a finalizer swallowed
            if isinstance(batch, _Failed):
                raise batch.error
            skipped = batch.pop("skipped", ())
            self.skipped.extend(skipped)
            if skipped and self.num_workers:  # a worker counted them in its own copy
                dataset = getattr(self.samples, "dataset", self.samples)  # a Subset's dataset
                dataset.skipped += len(skipped)
            if "clips" in batch:
                yield batch


def gather_skipped(loader: AVALoader, info: DistInfo, what: str, total: int) -> list[str]:
    """The keyframes every process's ``loader`` skipped in its last pass (``data.on_error=skip``),
    gathered from all ranks; the main process warns with how many of ``total`` and the first
    three with their reason (``what`` names the pass)."""
    from .distributed import gather_objects

    skipped = [k for part in gather_objects(loader.skipped, info) for k in part]
    if skipped and info.is_main:
        warnings.warn(f"{what}: skipped {len(skipped)} of {total} keyframes whose frames could "
                      f"not be read (data.on_error=skip): {'; '.join(skipped[:3])}"
                      f"{' ...' if len(skipped) > 3 else ''}", stacklevel=3)
    return skipped


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every sample exactly once over all processes (a
    DistributedSampler pads with repeats, which would count as duplicate detections)."""

    def __init__(self, size: int, info: DistInfo) -> None:
        self.indices = list(range(info.rank, size, info.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_loader(dataset: AVADataset, batch_size: int, workers: int, info: DistInfo,
                 seed: int, pin_memory: bool = False, start_method: str = "auto") -> AVALoader:
    """Shuffled batches, a different shard per process; call ``reseed(loader, epoch)`` first.
    ``pin_memory`` (for a GPU) lets the clips' copy to the device overlap the step."""
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=seed)
    return AVALoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                     generator=torch.Generator(), persistent_workers=False, drop_last=False,
                     pin_memory=pin_memory,
                     multiprocessing_context=worker_context(start_method, workers))


def reseed(loader: DataLoader, epoch: int, seed: int) -> None:
    """Make the epoch's order and worker seeds a function of (seed, epoch) only, so a resumed run
    replays the epoch exactly."""
    loader.sampler.set_epoch(epoch)
    loader.generator.manual_seed(seed * 1000 + epoch)


def eval_loader(dataset: AVADataset, workers: int, info: DistInfo, batch_size: int = 1,
                start_method: str = "auto") -> AVALoader:
    """Every sample of this process's shard once, in order."""
    return AVALoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), info),
                     num_workers=workers,
                     multiprocessing_context=worker_context(start_method, workers))
