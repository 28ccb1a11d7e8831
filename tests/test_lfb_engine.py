"""Long-term feature banks end to end on a tiny mini-AVA: ``python -m stdet extract-lfb``, the bank
read back by the datasets, and the LFB configs through ``train`` and ``test``.

The bank model is a fresh mini SlowOnly saved as a checkpoint (seed 0): what is tested is the
plumbing (which feature lands where), not what a trained model puts in the bank.
"""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import stdet
from stdet import build_detector, cli, load_checkpoint, save_checkpoint, zoo
from stdet.data.dataset import ava_collate
from stdet.engine import train
from stdet.engine.data import build_dataset
from stdet.lfb import FeatureBank
from stdet.lfb.bank import BankWriter
from stdet.models.detector import boxes_to_rois

REPO = Path(__file__).resolve().parents[1]
BANK = "lfb_slowonly_r50_ava_infer:mini"
LFB_CONFIGS = [f"lfb_{fbo}_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb:mini"
               for fbo in ("nl", "avg", "max")]
TINY = ["data.workers=0", "optim.batch_per_gpu=4", "optim.lr=0.05", "schedule.epochs=1",
        "model.backbone.pretrained=None",
        "schedule.eval_interval=1"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tiny_ava) -> Path:
    return tiny_ava


@pytest.fixture(scope="module")
def bank_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bank_model") / "slowonly_mini.pth"
    torch.manual_seed(0)
    save_checkpoint(path, build_detector(zoo.resolve(BANK).model))
    return path


def extract(root: Path, ckpt: Path, split: str, *flags: str) -> int:
    return cli.main(["extract-lfb", BANK, str(ckpt), "--split", split, "--data-root", str(root),
                     "--device", "cpu", *flags, "--cfg-options", "data.workers=0"])


@pytest.fixture(scope="module")
def banks(root, bank_ckpt) -> Path:
    """train and val banks in ROOT/lfb (the LFB configs' default place)."""
    for split in ("train", "val"):
        assert extract(root, bank_ckpt, split) == 0
    return root / "lfb"


def read_bank(where: Path, split: str) -> tuple[np.ndarray, list]:
    bank = FeatureBank.load(where, split)
    return np.array(bank.features), [(k, bank.features_at(*k).shape[0]) for k in bank.keys]


# ------------------------------------------------------------------------------------------------
# extraction


@pytest.mark.parametrize("split", ["train", "val"])
def test_extraction_stores_each_proposals_pooled_roi_feature(banks, root, bank_ckpt, split):
    cfg = zoo.resolve(BANK, "data.workers=0", data_root=root)
    dataset = build_dataset(cfg, split, train=False)
    bank = FeatureBank.load(banks, split)
    assert bank.split == split and bank.dtype == np.float32
    assert bank.channels == build_detector(cfg.model).backbone.feature_channels
    assert sorted(bank.keys) == sorted(dataset.keys)  # every keyframe, none twice

    model = build_detector(cfg.model).eval()
    load_checkpoint(model, bank_ckpt, strict=True)
    for index in (0, len(dataset) // 2, len(dataset) - 1):
        sample = dataset[index]
        meta = sample["meta"]
        stored = bank.features_at(meta["video_id"], meta["timestamp"])
        assert stored.shape == (len(sample["proposals"]), bank.channels)
        with torch.no_grad():
            expected = model.bank_features(sample["clip"][None], boxes_to_rois([sample["proposals"]]))
        np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_dry_run_counts_the_banks_rows(banks, root, bank_ckpt, capsys):
    for split in ("train", "val"):
        capsys.readouterr()
        assert extract(root, bank_ckpt, split, "--dry-run") == 0
        bank = FeatureBank.load(banks, split)
        printed = capsys.readouterr().out
        assert f"{len(bank.keys)} keyframes, {bank.num_rows} RoIs x {bank.channels} channels" in printed
        data_bytes = bank.num_rows * bank.channels * 4
        assert f"{data_bytes / 2**20:.1f} MiB in float32" in printed
        assert 0 < bank.path_npy.stat().st_size - data_bytes <= 4096  # the file: data + header


def test_half_bank_is_the_float_bank_rounded(banks, root, bank_ckpt, tmp_path):
    assert extract(root, bank_ckpt, "val", "--half", "--out", str(tmp_path)) == 0
    half, full = FeatureBank.load(tmp_path, "val"), FeatureBank.load(banks, "val")
    assert half.dtype == np.float16 and half.keys == full.keys
    np.testing.assert_array_equal(np.asarray(half.features),
                                  np.asarray(full.features).astype(np.float16))
    assert half.path_npy.stat().st_size < 0.6 * full.path_npy.stat().st_size


def test_extraction_resumes_after_a_crash(banks, root, bank_ckpt, tmp_path, monkeypatch, capsys):
    """A run that dies after 5 keyframes (shards of 2) leaves shards; the rerun extracts only the
    rest and the bank equals an uninterrupted run's."""
    added = []
    original = BankWriter.add

    def crash_after_five(self, *args, **kwargs):
        if len(added) == 5:
            raise RuntimeError("simulated crash")
        added.append(args[:2])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BankWriter, "add", crash_after_five)
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract(root, bank_ckpt, "train", "--out", str(tmp_path), "--shard-size", "2")
    assert not (tmp_path / "lfb_train.npy").exists()
    monkeypatch.setattr(BankWriter, "add", original)
    capsys.readouterr()
    assert extract(root, bank_ckpt, "train", "--out", str(tmp_path), "--shard-size", "2") == 0
    assert "4 kept from an earlier run" in capsys.readouterr().out  # 2 full shards of 2
    resumed, reference = read_bank(tmp_path, "train"), read_bank(banks, "train")
    assert resumed[1] == reference[1]
    np.testing.assert_array_equal(resumed[0], reference[0])


def test_extraction_with_two_processes_equals_one(banks, root, bank_ckpt, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
         "127.0.0.1", "--master_port", str(port), "-m", "stdet", "extract-lfb", BANK,
         str(bank_ckpt), "--split", "val", "--data-root", str(root), "--out", str(tmp_path),
         "--device", "cpu", "--cfg-options", "data.workers=0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    two, one = read_bank(tmp_path, "val"), read_bank(banks, "val")
    assert two[1] == one[1]
    np.testing.assert_allclose(two[0], one[0], rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "lfb_val.parts").exists()


# ------------------------------------------------------------------------------------------------
# the bank in the data pipeline


def test_datasets_sample_the_bank(banks, root):
    cfg = zoo.resolve(LFB_CONFIGS[0], *TINY, data_root=root)
    lfb = cfg.model.lfb
    n = lfb.window_seconds * lfb.max_per_second
    val = build_dataset(cfg, "val", train=False)
    bank = val.feature_bank
    sample = val[0]
    video, t = sample["meta"]["video_id"], sample["meta"]["timestamp"]
    assert sample["long_term"].shape == (n, bank.channels) and sample["long_term"].dtype == torch.float32
    # at test time the draw depends on (video, second) only: reproducible
    expected = bank.sample(video, t, np.random.default_rng((0, zlib.crc32(video.encode()), t)),
                           window=lfb.window_seconds, max_per_second=lfb.max_per_second)
    np.testing.assert_array_equal(sample["long_term"].numpy(), expected)
    np.testing.assert_array_equal(val[0]["long_term"].numpy(), expected)
    # the bank crosses to DataLoader workers as paths, not as a copy of its array
    assert len(pickle.dumps(bank)) < 0.5 * bank.num_rows * bank.channels * 4
    batches = list(DataLoader(val, batch_size=3, num_workers=2, collate_fn=ava_collate))
    assert batches[0]["long_term"].shape == (3, n, bank.channels)
    np.testing.assert_array_equal(batches[0]["long_term"][0].numpy(), expected)

    training = build_dataset(cfg, "train")
    torch.manual_seed(0)
    first = training[0]["long_term"]
    torch.manual_seed(1)
    assert first.shape == (n, bank.channels) and not torch.equal(first, training[0]["long_term"])


def test_missing_bank_names_the_command(root, tmp_path):
    copy = tmp_path / "ava"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("lfb"))
    cfg = zoo.resolve(LFB_CONFIGS[0], *TINY, data_root=copy)
    with pytest.raises(FileNotFoundError, match="extract-lfb lfb_slowonly_r50_ava_infer"):
        build_dataset(cfg, "train")


# ------------------------------------------------------------------------------------------------
# the LFB configs train and test through the same commands


@pytest.mark.parametrize("config", LFB_CONFIGS)
def test_lfb_config_trains_and_tests_reproducibly(config, banks, root, tmp_path, capsys):
    work = tmp_path / "work"
    summary = stdet.train(stdet.config(config, *TINY, data_root=root), work, device="cpu",
                          progress=False)
    assert summary.iterations > 0 and 0 <= summary.best_map <= 1
    outs = []
    for i in range(2):
        out = tmp_path / f"results{i}.csv"
        assert cli.main(["test", config, str(work / "latest.pth"), "--out", str(out),
                         "--data-root", str(root), "--device", "cpu", "--cfg-options", *TINY]) == 0
        outs.append(out.read_bytes())
    assert outs[0] and outs[0] == outs[1]  # seeded long-term sampling: the same detections
