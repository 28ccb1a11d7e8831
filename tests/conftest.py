"""Fixtures shared by the engine and feature-bank tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stdet.data.mini_ava import MiniAVASpec, generate_mini_ava


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module (the machine is shared; oversubscribed OpenMP threads
    make tiny models tens of times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_ava(tmp_path_factory) -> Path:
    """mini-AVA with 2 training and 1 val video of 12 s (keyframes 902..909, one excluded per
    split: 15 training and 7 val keyframes)."""
    out = tmp_path_factory.mktemp("mini_ava")
    generate_mini_ava(out, seed=0, spec=MiniAVASpec(train_videos=2, val_videos=1, seconds=12),
                      progress=False)
    return out
