"""Where the files of an AVA root live (MMAction2's layout; mini-AVA writes the same)::

    ROOT/annotations/ava_{split}_v{version}.csv
    ROOT/annotations/ava_{split}_excluded_timestamps_v{version}.csv
    ROOT/annotations/ava_action_list_v{version}.pbtxt                        (all actions)
    ROOT/annotations/ava_action_list_v{version}_for_activitynet_{year}.pbtxt (evaluated ones)
    ROOT/annotations/ava_dense_proposals_{split}.FAIR.recall_93.9.pkl
    ROOT/rawframes/VIDEO/img_%05d.jpg    ROOT/videos_15min/VIDEO.mkv
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_ACTIVITYNET_YEAR = {"2.1": 2018, "2.2": 2019}


@dataclass(frozen=True)
class AVALayout:
    root: Path
    version: str = "2.2"

    def __init__(self, root: str | os.PathLike, version: str = "2.2") -> None:
        if version not in _ACTIVITYNET_YEAR:
            raise ValueError(f"AVA version must be one of {sorted(_ACTIVITYNET_YEAR)}, got {version!r}")
        object.__setattr__(self, "root", Path(root))
        object.__setattr__(self, "version", version)

    @property
    def annotations(self) -> Path:
        return self.root / "annotations"

    def ann_file(self, split: str) -> Path:
        return self.annotations / f"ava_{split}_v{self.version}.csv"

    def exclude_file(self, split: str) -> Path:
        return self.annotations / f"ava_{split}_excluded_timestamps_v{self.version}.csv"

    def proposal_file(self, split: str) -> Path:
        return self.annotations / f"ava_dense_proposals_{split}.FAIR.recall_93.9.pkl"

    @property
    def label_file(self) -> Path:
        """The full action list (use it for ground truth and custom classes)."""
        return self.annotations / f"ava_action_list_v{self.version}.pbtxt"

    @property
    def eval_label_file(self) -> Path:
        """ActivityNet's list of evaluated classes."""
        year = _ACTIVITYNET_YEAR[self.version]
        return self.annotations / f"ava_action_list_v{self.version}_for_activitynet_{year}.pbtxt"

    @property
    def rawframes(self) -> Path:
        return self.root / "rawframes"

    @property
    def videos(self) -> Path:
        return self.root / "videos_15min"
