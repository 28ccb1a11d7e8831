"""``AVADataset``: one sample per annotated keyframe, ready for a detector.

A sample is a dict::

    clip            float32 (C, T, H, W), normalised, T = clip_len frames frame_interval apart
    proposals       float32 (K, 4) person boxes, pixels of the transformed clip
    proposal_scores float32 (K,)
    gt_boxes        float32 (N, 4) pixels of the transformed clip
    gt_labels       float32 (N, num_classes) multi-hot (column 0 is never set)
    meta            video_id, timestamp, img_key, original_shape (h, w), img_shape (h, w),
                    frame_indices, entity_ids

Proposals are thresholded as MMAction2 does (scores >= min(thr, best score); a keyframe without
proposals gets the whole frame). :func:`ava_collate` batches samples with different box counts
(and pads clips of different sizes at the bottom/right, which leaves pixel boxes unchanged).
"""
from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .annotations import KeyframeBoxes, img_key, read_annotations, read_excluded_timestamps
from .errors import AVADataError, FrameReadError
from .frames import keyframe_to_frame_index, open_frame_source, read_keyframe_clip
from .labels import CustomClasses, read_label_map
from .layout import AVALayout
from .proposals import check_coverage, load_proposals, select_proposals
from .transforms import boxes_to_pixels, test_transforms, to_tensor, train_transforms


class AVADataset(Dataset):
    """AVA keyframes from an annotation CSV, frames from rawframes or video files.

    Args:
        ann_file: ``ava_{split}_v2.x.csv``.
        frames_root: ``rawframes/`` (``VIDEO/img_%05d.jpg``) or a folder of videos.
        proposal_file: proposals pickle; None uses the ground-truth boxes as proposals.
        exclude_file: excluded timestamps CSV; those keyframes are dropped.
        label_file: the full action list pbtxt, required with ``custom_classes``.
        clip_len, frame_interval: frames per clip and their spacing (4x16, 8x8, 32x2...).
        train: random frame jitter and train transforms; otherwise test transforms.
        transforms: overrides the default ``train_transforms()`` / ``test_transforms()``.
        frame_source: ``"rawframes"`` or ``"video"``.
        num_classes: label columns (81 for AVA: 80 actions + index 0).
        custom_classes: train on a subset (see :class:`~stdet.data.labels.CustomClasses`).
        custom_keyframes: with ``custom_classes``, the keyframes a test dataset holds:
            ``"with_classes"`` (default, as training and MMAction2) those where a ground-truth box
            has a custom class, ``"all"`` every keyframe. A training dataset always holds the
            former.
        on_error: ``"raise"`` (default) or ``"skip"``: a keyframe outside its video is dropped at
            construction (counted in a warning), an unreadable frame skipped when it is read
            (counted in ``skipped`` and listed in the sample, see :meth:`__getitem__`).
        feature_bank: a long-term feature bank (:class:`stdet.lfb.FeatureBank`, memory-mapped;
            workers share its pages): each sample then carries ``long_term``, the bank's features
            of ``lfb_window`` seconds around the keyframe, at most ``lfb_per_second`` a second,
            zero-padded to ``(lfb_window * lfb_per_second, C)``. Training draws them at random;
            otherwise the draw depends only on ``(lfb_seed, video, second)``, so a test run is
            reproducible whatever the batch, worker or process layout.
        min_short_side: rawframes only: JPEGs may be decoded at reduced size as long as their
            short side stays >= this (see :class:`~stdet.data.frames.RawFrames`); None decodes
            at full size.
    """

    def __init__(self, ann_file: str | os.PathLike, frames_root: str | os.PathLike, *,
                 proposal_file: str | os.PathLike | None = None,
                 exclude_file: str | os.PathLike | None = None,
                 label_file: str | os.PathLike | None = None,
                 clip_len: int = 4, frame_interval: int = 16, train: bool = False,
                 transforms: Callable | None = None, frame_source: str = "rawframes",
                 num_classes: int = 81, custom_classes: Sequence[int] | None = None,
                 person_det_score_thr: float = 0.9, max_proposals: int = 1000,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 custom_keyframes: str = "with_classes",
                 on_error: str = "raise", feature_bank=None, lfb_window: int = 60,
                 lfb_per_second: int = 5, lfb_seed: int = 0,
                 min_short_side: int | None = None) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if custom_keyframes not in ("with_classes", "all"):
            raise ValueError(f"custom_keyframes must be 'with_classes' or 'all', got "
                             f"{custom_keyframes!r}")
        if not 0 <= person_det_score_thr <= 1:
            raise ValueError(f"person_det_score_thr must lie in [0, 1], got {person_det_score_thr}")
        self.ann_file = Path(ann_file)
        self.clip_len, self.frame_interval = clip_len, frame_interval
        self.train = train
        self.transforms = transforms or (train_transforms() if train else test_transforms())
        self.norm = {k: v for k, v in (("mean", mean), ("std", std)) if v is not None}
        # reduced-size JPEG decoding is a rawframes option; a video is decoded at its own size
        self.source = open_frame_source(frames_root, frame_source, **(
            {"min_short_side": min_short_side} if frame_source == "rawframes" else {}))
        self.person_det_score_thr, self.max_proposals = person_det_score_thr, max_proposals
        self.on_error = on_error
        self.skipped = 0
        self.feature_bank = feature_bank
        self.lfb_window, self.lfb_per_second, self.lfb_seed = lfb_window, lfb_per_second, lfb_seed

        self.custom_classes = None
        if custom_classes is not None:
            if label_file is None:
                raise AVADataError(self.ann_file, "custom_classes need label_file (the full action list)")
            self.custom_classes = CustomClasses.from_ids(custom_classes, read_label_map(label_file),
                                                         label_file)
            if num_classes != self.custom_classes.num_classes:
                raise ValueError(f"num_classes must be len(custom_classes) + 1 = "
                                 f"{self.custom_classes.num_classes}, got {num_classes}")
        self.num_classes = num_classes

        annotations = read_annotations(self.ann_file)
        self._check_class_range(annotations)
        excluded = read_excluded_timestamps(exclude_file) if exclude_file else set()
        self.proposals = load_proposals(proposal_file) if proposal_file else None
        keys = [k for k in annotations if k not in excluded]
        if self.custom_classes is not None and (train or custom_keyframes == "with_classes"):
            # a keyframe whose people do none of the custom actions teaches nothing; MMAction2
            # leaves it out of testing too
            keys = [k for k in keys if self._labels(annotations[k]).any()]
        self.annotations = annotations
        self.keys = self._keyframes_inside_videos(keys)
        if self.proposals is not None:  # a wrong split's or misnamed file: error, not whole frames
            check_coverage(self.proposals, [img_key(*k) for k in self.keys], proposal_file,
                           against=self.ann_file, stacklevel=3)

    @classmethod
    def from_layout(cls, layout: "AVALayout", split: str, *, use_proposals: bool = True,
                    frame_source: str = "rawframes", **kwargs) -> "AVADataset":
        """The dataset of one split of an AVA root (real AVA or mini-AVA); ``train`` defaults to
        ``split == "train"``; other keyword arguments go to the constructor."""
        kwargs.setdefault("train", split == "train")
        exclude = layout.exclude_file(split)
        return cls(layout.ann_file(split),
                   layout.rawframes if frame_source == "rawframes" else layout.videos,
                   proposal_file=layout.proposal_file(split) if use_proposals else None,
                   exclude_file=exclude if exclude.is_file() else None,
                   label_file=layout.label_file, frame_source=frame_source, **kwargs)

    def _check_class_range(self, annotations: dict) -> None:
        if self.custom_classes is not None:
            return
        for (video, t), kf in annotations.items():
            for actions in kf.actions:
                if max(actions) >= self.num_classes:
                    raise AVADataError(self.ann_file, f"action {max(actions)} does not fit "
                                       f"num_classes={self.num_classes}", key=img_key(video, t))

    def _keyframes_inside_videos(self, keys: list) -> list:
        """Check every keyframe against its video's frame count (one directory listing per video)."""
        kept, dropped = [], []
        counts: dict[str, int] = {}
        for video, t in keys:
            try:
                if video not in counts:
                    counts[video] = self.source.num_frames(video)
                frame = keyframe_to_frame_index(t)
                ok = 1 <= frame <= counts[video]
                reason = f"frame {frame} outside 1..{counts[video]}"
            except FrameReadError as e:
                counts[video], ok, reason = 0, False, str(e)
            if ok:
                kept.append((video, t))
            elif self.on_error == "skip":
                dropped.append(f"{img_key(video, t)} ({reason})")
            else:
                raise FrameReadError(self.source.video_path(video), f"keyframe {t:04d}: {reason}",
                                     key=img_key(video, t))
        if dropped:
            self.skipped += len(dropped)
            warnings.warn(f"{self.ann_file}: skipped {len(dropped)} of {len(keys)} keyframes whose "
                          f"frames are missing: {', '.join(dropped[:5])}"
                          f"{' ...' if len(dropped) > 5 else ''}", stacklevel=3)
        return kept

    def _labels(self, kf: KeyframeBoxes) -> np.ndarray:
        index = self.custom_classes.to_new if self.custom_classes is not None else None
        return kf.multi_hot(self.num_classes, index)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict:
        """The sample of keyframe ``index``. With ``on_error="skip"`` a keyframe whose frames
        cannot be read is counted in ``skipped`` and listed in the sample's ``"skipped"``
        (``"video,%04d: reason"``): training takes the next readable keyframe in its place;
        a test sample is then only ``{"skipped": [...]}``, as a test must not score a keyframe
        twice (:func:`ava_collate` leaves it out of the batch)."""
        skipped: list[str] = []
        for attempt in range(len(self.keys)):
            key = self.keys[(index + attempt) % len(self.keys)]
            try:
                sample = self._load(key)
            except FrameReadError as e:
                if self.on_error == "raise":
                    raise
                self.skipped += 1
                skipped.append(f"{img_key(*key)}: {e}")
                if not self.train:
                    return {"skipped": skipped}
                continue
            return {**sample, "skipped": skipped} if skipped else sample
        raise AVADataError(self.ann_file, f"no readable keyframe left ({len(skipped)} skipped)")

    def proposals_of(self, key: tuple[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """The keyframe's person boxes (normalised) and scores: its selected proposals, or its
        ground-truth boxes (score 1) when the dataset has no proposal file."""
        if self.proposals is None:
            boxes = self.annotations[key].boxes
            return boxes, np.ones(len(boxes), np.float32)
        return select_proposals(self.proposals.get(img_key(*key)), self.person_det_score_thr,
                                self.max_proposals)

    def _load(self, key: tuple[str, int]) -> dict:
        video, t = key
        kf = self.annotations[key]
        # A fresh generator per sample drawn from torch's RNG: reproducible under torch.manual_seed
        # and different in every DataLoader worker (torch seeds each worker differently).
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item())) if self.train else None
        clip, indices = read_keyframe_clip(self.source, video, t, self.clip_len, self.frame_interval, rng)
        height, width = clip.shape[1:3]
        proposals, scores = self.proposals_of(key)
        labels = self._labels(kf)
        keep = labels.any(axis=1) if self.custom_classes is not None else np.ones(len(labels), bool)
        boxes = [boxes_to_pixels(proposals, width, height), boxes_to_pixels(kf.boxes[keep], width, height)]
        clip, (proposals_px, gt_px) = self.transforms(clip, boxes, rng)
        extra = {}
        if self.feature_bank is not None:
            draw = rng if rng is not None else np.random.default_rng(
                (self.lfb_seed, zlib.crc32(video.encode()), t))
            extra["long_term"] = torch.from_numpy(self.feature_bank.sample(
                video, t, draw, window=self.lfb_window, max_per_second=self.lfb_per_second))
        return {**extra,
            "clip": to_tensor(clip, **self.norm),
            "proposals": torch.from_numpy(proposals_px),
            "proposal_scores": torch.from_numpy(np.asarray(scores, np.float32)),
            "gt_boxes": torch.from_numpy(gt_px),
            "gt_labels": torch.from_numpy(labels[keep]),
            "meta": {"video_id": video, "timestamp": t, "img_key": img_key(video, t),
                     "original_shape": (height, width), "img_shape": tuple(clip.shape[1:3]),
                     "frame_indices": indices, "entity_ids": kf.entity_ids[keep]},
        }


def ava_collate(samples: list[dict]) -> dict:
    """Batch samples: clips stacked to (B, C, T, H, W) (zero-padded to the largest H, W); boxes,
    scores and labels stay lists (one tensor per sample), as their counts differ; ``long_term``
    features (when the dataset has a bank) are stacked to (B, N, C); ``skipped`` lists the
    keyframes the samples skipped (``on_error="skip"``). A sample that is only a skip record
    is left out; a batch of nothing else is ``{"skipped": [...]}``."""
    skipped = [entry for s in samples for entry in s.get("skipped", ())]
    samples = [s for s in samples if "clip" in s]
    if not samples:
        return {"skipped": skipped}
    h = max(s["clip"].shape[2] for s in samples)
    w = max(s["clip"].shape[3] for s in samples)
    clips = samples[0]["clip"].new_zeros((len(samples), samples[0]["clip"].shape[0],
                                          samples[0]["clip"].shape[1], h, w))
    for i, s in enumerate(samples):
        clips[i, :, :, :s["clip"].shape[2], :s["clip"].shape[3]] = s["clip"]
    batch = {"clips": clips}
    for key in ("proposals", "proposal_scores", "gt_boxes", "gt_labels", "meta"):
        batch[key] = [s[key] for s in samples]
    if "long_term" in samples[0]:
        batch["long_term"] = torch.stack([s["long_term"] for s in samples])
    if skipped:
        batch["skipped"] = skipped
    return batch
