"""The training engine end to end on a tiny mini-AVA: ``python -m stdet train|test|eval``.

One mini-AVA of 2 training videos and 1 val video of 12 s (keyframes 902..909, one excluded per
split: 15 training and 7 val keyframes) is generated once for the module. Runs are kept tiny
through ``--cfg-options`` (no data workers, 4 clips a step, 2 epochs: 4 iterations an epoch), so
nothing here depends on the ``mini()`` defaults beyond the model architecture.

What is covered:

* every model family (SlowOnly, SlowFast, ACRN, non-local) trains a couple of iterations; the
  JSON-lines log, ``latest.pth`` (readable with ``weights_only=True``) and ``config.json``
  (usable as CONFIG of ``stdet test``) are complete;
* the training step reads nothing back from the device; ``runtime.log_interval`` and
  ``runtime.channels_last`` change how it runs, not what it learns; fused SGD matches the
  default implementation and checkpoints resume across the two;
* ``stdet test`` writes a results CSV in AVA's format that ``stdet eval`` scores to the mAP
  ``test --eval mAP`` printed and :func:`~stdet.engine.test.evaluate_split` returns;
* ``--validate`` logs val records (mAP and group means) and keeps ``best.pth``;
* the learning-rate schedule against hand-computed values, and the log against it;
* exact resume after SIGKILL (bit-equal weights and momentum buffers, across processes);
* a non-finite loss stops training with a message naming the iteration, keeping the last good
  checkpoint untouched;
* custom classes from training to evaluation;
* 2-process DDP on CPU (gloo) against one process with the same global batch;
* ``--cfg-options`` typos (the closest keys suggested) and bad values, unknown zoo names: one
  line, exit 2.

In-process runs use one torch thread (the machine is shared; oversubscribed OpenMP threads make
these tiny models tens of times slower), subprocesses get ``OMP_NUM_THREADS=1``.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from stdet import build_detector, cli, zoo
from stdet.configs import ScheduleConfig, config_from_dict, config_to_dict, load_config
from stdet.data import AVALayout, MiniAVASpec, generate_mini_ava, read_label_map
from stdet.data.mini_ava import CLASS_IDS
from stdet.engine import train
from stdet.engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from stdet.engine.data import ava_collate, build_dataset
from stdet.engine.distributed import DistInfo
from stdet.engine.logger import read_records as read_log
from stdet.engine.schedule import build_optimizer, build_scheduler, load_optimizer_state, lr_factor
from stdet.engine.step import counting_host_reads, to_device, train_step
from stdet.engine.test import ACTION_THRESHOLD, evaluate_split, predict_rows, score_columns

REPO = Path(__file__).resolve().parents[1]
SLOWONLY = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb:mini"
FAMILIES = {
    "slowonly": SLOWONLY,
    "slowfast": "slowfast_kinetics_pretrained_r50_8x8x1_20e_ava_rgb:mini",
    "acrn": "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb:mini",
    "nl": "slowonly_nl_kinetics_pretrained_r50_4x16x1_10e_ava_rgb:mini",
}
# everything a run needs, independent of the mini() defaults (the later of two equal keys wins)
TINY = ["data.workers=0", "optim.batch_per_gpu=4", "optim.lr=0.05", "schedule.epochs=2",
        "model.backbone.pretrained=None",
        "schedule.eval_interval=1"]
TRAIN_KEYS = {"mode", "epoch", "iter", "step", "lr", "data_time", "time", "memory_mb", "loss",
              "recall@top3"}
CKPT_KEYS = {"state_dict", "optimizer", "scheduler", "train_state", "rng", "config"}
CSV_FLOAT = re.compile(r"^\d\.\d{4}$")
SUBPROCESS_TIMEOUT = 180


# ------------------------------------------------------------------------------------------------
# fixtures and helpers


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tiny_ava) -> Path:
    return tiny_ava


def train_argv(config: str, work_dir: Path, root: Path, *flags: str, options=()) -> list[str]:
    """``train`` arguments: ``--cfg-options`` last (it takes every following word)."""
    return [config, "--work-dir", str(work_dir), "--data-root", str(root), "--device", "cpu",
            *flags, "--cfg-options", *TINY, *options]


def train_in_process(argv: list[str]) -> train.TrainResult:
    """What ``python -m stdet train ARGV`` runs, in this process: :func:`stdet.train`."""
    args = train.get_args_parser().parse_args(argv)
    cfg = zoo.resolve(args.config, *args.cfg_options, data_root=args.data_root)
    return train.train(cfg, args.work_dir, validate=args.validate, seed=args.seed,
                       deterministic=args.deterministic, resume=args.resume or False,
                       device=args.device, max_iters=args.max_iters, progress=False)


def env_one_thread() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def stdet(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stdet", *argv], cwd=REPO, env=env_one_thread(),
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, **kwargs)


def train_records(work_dir: Path) -> list[dict]:
    return [r for r in read_log(work_dir / "log.jsonl") if r["mode"] == "train"]


def load_weights_only(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def val_keys(root: Path) -> list[tuple[str, int]]:
    """The scored val keyframes: every annotated one but the excluded."""
    cfg = zoo.resolve(SLOWONLY, *TINY)
    return list(build_dataset(zoo.resolve(cfg, data_root=root), "val", train=False).keys)


def read_results(path: Path) -> pd.DataFrame:
    """A results CSV as text columns (to check the format) with typed copies."""
    df = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    assert df.shape[1] == 8, f"{path}: {df.shape[1]} columns"
    df.columns = ["video", "ts", "x1", "y1", "x2", "y2", "action", "score"]
    for c in ("x1", "y1", "x2", "y2", "action", "score"):
        df[c + "_v"] = pd.to_numeric(df[c])
    df["ts_v"] = df["ts"].astype(int)
    return df


def check_results_csv(path: Path, root: Path, class_ids) -> pd.DataFrame:
    """AVA's results format: 8 columns, ``%04d`` timestamps, boxes in [0, 1] with 4 decimals,
    action ids among ``class_ids``, scores above the 0.002 threshold (``>=`` once rounded to 4
    decimals), no duplicated rows, every scored val keyframe present."""
    df = read_results(path)
    assert len(df)
    assert df["ts"].str.fullmatch(r"\d{4}").all()
    for c in ("x1", "y1", "x2", "y2", "score"):
        assert df[c].str.fullmatch(CSV_FLOAT).all(), c
        assert df[c + "_v"].between(0, 1).all(), c
    assert (df["x1_v"] <= df["x2_v"]).all() and (df["y1_v"] <= df["y2_v"]).all()
    assert set(df["action_v"]) <= set(class_ids)
    assert (df["score_v"] >= ACTION_THRESHOLD).all()
    assert not df.duplicated(["video", "ts", "x1", "y1", "x2", "y2", "action"]).any()
    assert sorted(set(zip(df["video"], df["ts_v"]))) == sorted(val_keys(root))
    return df


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(root, tmp_path_factory) -> tuple[Path, dict]:
    """SlowOnly mini, 2 epochs of 4 iterations, --validate, seed 0, one process x 4 clips (the
    single-process side of the DDP comparison)."""
    work = tmp_path_factory.mktemp("trained")
    summary = train_in_process(train_argv(SLOWONLY, work, root, "--validate"))
    return work, summary


# ------------------------------------------------------------------------------------------------
# 1. every family trains


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_trains_a_few_iterations(family, root, tmp_path):
    config, work = FAMILIES[family], tmp_path / "work"
    summary = train_in_process(train_argv(config, work, root, "--max-iters", "2"))
    assert summary.iterations == 2 and summary.epochs == 1

    records = train_records(work)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert TRAIN_KEYS <= set(r), TRAIN_KEYS - set(r)
        for key in ("loss", "lr", "data_time", "time", "memory_mb", "recall@top3"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), (key, r[key])
        assert r["lr"] > 0 and r["memory_mb"] > 0 and 0 <= r["recall@top3"] <= 1

    ckpt = load_weights_only(work / "latest.pth")
    assert CKPT_KEYS <= set(ckpt)
    assert ckpt["train_state"]["epoch"] == 1 and ckpt["train_state"]["iteration"] == 2
    assert ckpt["optimizer"]["state"], "no momentum buffers after 2 steps"
    assert ckpt["scheduler"]["last_epoch"] == 2

    cfg = zoo.resolve(config, *TINY, data_root=root)   # config.json records the data root
    assert load_config(work / "config.json") == cfg
    assert config_from_dict(ckpt["config"]) == cfg
    assert json.loads(json.dumps(config_to_dict(cfg))) == json.loads((work / "config.json").read_text())

    # config.json is a CONFIG for `stdet test`; the checkpoint loads without a missing key
    model = train.build_model(cfg)
    report = load_checkpoint(model, work / "latest.pth", strict=True)
    assert not report.missing and not report.unexpected
    out = tmp_path / "results.csv"
    assert cli.main(["test", str(work / "config.json"), str(work / "latest.pth"), "--out", str(out),
                     "--data-root", str(root), "--device", "cpu"]) == 0
    check_results_csv(out, root, score_columns(cfg)[1:])


# ------------------------------------------------------------------------------------------------
# 1b. the step reads nothing back; cfg.runtime changes how, not what


LFB_NL = "lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb:mini"


@pytest.mark.parametrize("config", [*FAMILIES.values(), LFB_NL])
def test_train_step_reads_nothing_back_from_the_device(config, root):
    """Every value a step makes stays a tensor: on a GPU, any of ``HOST_READS`` would make the
    host wait for the device. Checked by counting them over one step of each family."""
    cfg = zoo.resolve(config, *TINY)
    model = train.build_model(cfg)
    data_cfg = zoo.resolve(SLOWONLY, *TINY) if cfg.model.lfb else cfg  # same clips
    batch = ava_collate([build_dataset(zoo.resolve(data_cfg, data_root=root), "train")[i] for i in range(4)])
    rois, targets = model.training_rois(batch["proposals"], batch["gt_boxes"], batch["gt_labels"])
    extra = {}
    if cfg.model.lfb:
        lfb = cfg.model.lfb
        extra["long_term"] = torch.randn(4, lfb.window_seconds * lfb.max_per_second,
                                         lfb.feature_channels)
    optimizer = build_optimizer(model, cfg.optim, 0.05)
    before = [p.detach().clone() for p in model.parameters()]
    device = torch.device("cpu")

    with counting_host_reads() as reads:
        on_device = to_device(batch["clips"], rois, targets, device)
        values = train_step(model, model, optimizer, *on_device, grad_clip=cfg.optim.grad_clip,
                            bf16=cfg.runtime.bf16, **extra)
    assert not reads, f"the training step read tensors back to the host: {dict(reads)}"

    assert {"loss", "recall@top3"} <= set(values) and all(v.dim() == 0 for v in values.values())
    assert math.isfinite(values["loss"].item())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_runtime_options_change_how_the_step_runs_not_what_it_learns(root, tmp_path):
    """``runtime.log_interval=3`` reads the losses in batches (steps 1-3, 4, 5-7, 8) and logs the
    same values as a read every step; ``runtime.channels_last`` gives the same training up to
    rounding. 2 epochs of 4 steps each."""
    def run(name: str, *options: str) -> list[dict]:
        train_in_process(train_argv(SLOWONLY, tmp_path / name, root, "--seed", "5",
                                    options=options))
        return train_records(tmp_path / name)

    every = run("every", "runtime.log_interval=1")
    batched = run("batched", "runtime.log_interval=3")
    channels_last = run("channels_last", "runtime.channels_last=True")
    assert [r["step"] for r in every] == [r["step"] for r in batched] == list(range(1, 9))
    timing = {"time", "data_time", "memory_mb"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in batched] == \
        [{k: v for k, v in r.items() if k not in timing} for r in every]
    # a batch's records share its wall time evenly
    assert batched[0]["time"] == batched[1]["time"] == batched[2]["time"]
    # the first step sees the same weights in another layout: the same loss up to rounding;
    # later steps compound the rounding of other convolution kernels a little
    assert [r["lr"] for r in channels_last] == [r["lr"] for r in every]
    assert channels_last[0]["loss"] == pytest.approx(every[0]["loss"], rel=1e-5)
    for a, b in zip(channels_last, every):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-2), (a["step"], a["loss"], b["loss"])
    a = load_weights_only(tmp_path / "channels_last" / "latest.pth")["state_dict"]
    b = load_weights_only(tmp_path / "every" / "latest.pth")["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-2, atol=1e-3, msg=k)


def test_fused_sgd_matches_and_checkpoints_cross_implementations():
    """``build_optimizer(fused=True)`` (what a GPU run uses) makes the same updates as the default
    implementation, and a fused optimiser's state resumes in an unfused one and back, each
    keeping its own implementation."""
    cfg = zoo.resolve(SLOWONLY, *TINY)
    torch.manual_seed(0)
    models = [build_detector(cfg.model) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    plain, fused = (build_optimizer(m, cfg.optim, 0.1, fused=f) for m, f in zip(models, (False, True)))
    assert all(g["fused"] for g in fused.param_groups) and not any(g["fused"] for g in plain.param_groups)
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        for model, opt in zip(models, (plain, fused)):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
            g.manual_seed(step)
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    load_optimizer_state(plain, fused.state_dict())
    assert not any(g["fused"] for g in plain.param_groups)
    load_optimizer_state(fused, plain.state_dict())
    assert all(g["fused"] for g in fused.param_groups)
    for a, b in zip(plain.state.values(), fused.state.values()):
        torch.testing.assert_close(a["momentum_buffer"], b["momentum_buffer"])


def test_log_interval_must_be_positive(root, tmp_path, capsys):
    argv = ["train", *train_argv(SLOWONLY, tmp_path / "w", root, options=["runtime.log_interval=0"])]
    assert cli.main(argv) == 2
    assert "runtime.log_interval must be >= 1, got 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# 2. test -> results CSV -> eval


def test_test_writes_csv_that_eval_scores(trained, root, tmp_path, capsys):
    work, _ = trained
    cfg = load_config(work / "config.json")
    layout = AVALayout(root, cfg.data.version)
    out = tmp_path / "results.csv"
    capsys.readouterr()
    assert cli.main(["test", SLOWONLY, str(work / "latest.pth"), "--out", str(out), "--eval", "mAP",
                     "--data-root", str(root), "--device", "cpu", "--cfg-options", *TINY]) == 0
    printed = re.search(r"mAP@0\.5IoU \(activitynet\): ([\d.]+)", capsys.readouterr().out)[1]

    df = check_results_csv(out, root, range(1, cfg.model.head.num_classes))
    # the model scores every AVA class; at least mini-AVA's (those of the label map) are there
    assert set(read_label_map(layout.eval_label_file)) == set(CLASS_IDS)
    assert set(CLASS_IDS) <= set(df["action_v"])

    # the same rows straight from predict_rows: scores strictly above the threshold
    from stdet.engine.data import eval_loader
    model = train.build_model(cfg)
    load_checkpoint(model, work / "latest.pth", strict=True)
    rows = predict_rows(model, eval_loader(build_dataset(zoo.resolve(cfg, data_root=root), "val", train=False), 0, DistInfo()),
                        torch.device("cpu"), DistInfo(), score_columns(cfg))
    assert (rows["score"] > ACTION_THRESHOLD).all() and len(rows) == len(df)

    result = evaluate_split(model, zoo.resolve(cfg, data_root=root), torch.device("cpu"), DistInfo(), tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == out.read_bytes()

    js = tmp_path / "eval.json"
    assert cli.main(["eval", "--gt", str(layout.ann_file("val")), "--pred", str(out),
                     "--label-map", str(layout.eval_label_file),
                     "--exclude", str(layout.exclude_file("val")), "--json", str(js)]) == 0
    scored = json.loads(js.read_text())
    assert scored["mAP"] == result.map
    assert f"{100 * scored['mAP']:.2f}" == printed
    assert set(scored["per_class_ap"]) == {str(c) for c in CLASS_IDS}
    for key, value in result.group_map.items():
        assert scored[key] == (None if math.isnan(value) else value)
    # the last val record of training is the mAP of the weights in latest.pth
    last_val = [r for r in read_log(work / "log.jsonl") if r["mode"] == "val"][-1]
    assert last_val["mAP"] == result.map


# ------------------------------------------------------------------------------------------------
# 3. --validate


def test_validate_logs_val_records_and_keeps_best(trained, root):
    work, summary = trained
    vals = [r for r in read_log(work / "log.jsonl") if r["mode"] == "val"]
    assert [r["epoch"] for r in vals] == [1, 2]
    for r in vals:
        assert set(r) == {"mode", "epoch", "mAP", "person_movement", "object_manipulation",
                          "person_interaction"}
        assert 0 < r["mAP"] <= 1 and 0 < r["person_movement"] <= 1 and 0 < r["person_interaction"] <= 1
        assert r["object_manipulation"] is None  # no carry/read/text in this tiny val split (NaN)
        # mAP is the mean over classes, the groups are means over their classes: mAP between them
        assert min(r["person_movement"], r["person_interaction"]) <= r["mAP"]
        assert r["mAP"] <= max(r["person_movement"], r["person_interaction"])
    best = max(vals, key=lambda r: r["mAP"])
    assert summary.best_map == best["mAP"] and summary.best_epoch == best["epoch"]
    assert summary.metrics["mAP"] == vals[-1]["mAP"]

    ckpt = load_weights_only(work / "best.pth")
    assert CKPT_KEYS <= set(ckpt)
    assert ckpt["train_state"]["epoch"] == best["epoch"]
    assert ckpt["train_state"]["best_map"] == best["mAP"]
    latest = load_weights_only(work / "latest.pth")
    same = all(torch.equal(v, latest["state_dict"][k]) for k, v in ckpt["state_dict"].items())
    assert same == (best["epoch"] == 2)
    assert (work / "results_val.csv").is_file()


def test_a_new_run_in_a_used_work_dir_keeps_the_earlier_log(root, tmp_path):
    work = tmp_path / "work"
    argv = train_argv(SLOWONLY, work, root, "--max-iters", "2")
    train_in_process(argv)
    first = (work / "log.jsonl").read_text()
    train_in_process(argv)
    kept = list(work.glob("log-*.jsonl"))
    assert len(kept) == 1 and kept[0].read_text() == first
    assert [r["step"] for r in train_records(work)] == [1, 2]  # the new run's records only


# ------------------------------------------------------------------------------------------------
# 4. learning-rate schedule


def test_lr_factor_step_with_epoch_warmup():
    s = ScheduleConfig(epochs=10, policy="step", milestones=(4, 8), gamma=0.1, warmup_epochs=2,
                       warmup_ratio=0.1)
    f = [lr_factor(i, 5, s) for i in range(50)]
    # warmup over 2 epochs = 10 iterations, linear from 0.1: 0.1, 0.19, ..., 0.91
    assert f[:10] == pytest.approx([0.1 + 0.09 * i for i in range(10)], rel=1e-12)
    assert f[10:20] == [1.0] * 10
    assert f[20:40] == pytest.approx([0.1] * 20)     # epochs 4..7 (0-based): one decay
    assert f[40:50] == pytest.approx([0.01] * 10)    # from epoch 8: two decays


def test_lr_factor_warmup_overlaps_a_milestone():
    s = ScheduleConfig(epochs=4, policy="step", milestones=(1,), gamma=0.5, warmup_epochs=2,
                       warmup_ratio=0.2)
    # iteration 6 of 4 an epoch: epoch 1 (decayed once), warmup 6/8 of the way from 0.2
    assert lr_factor(6, 4, s) == pytest.approx(0.5 * (1 - 0.8 * (1 - 6 / 8)))
    assert lr_factor(8, 4, s) == 0.5


def test_lr_factor_cosine():
    s = ScheduleConfig(epochs=4, policy="cosine", milestones=(), warmup_epochs=0)
    total = 20
    assert lr_factor(0, 5, s) == 1.0
    assert lr_factor(5, 5, s) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_factor(10, 5, s) == pytest.approx(0.5)
    assert lr_factor(19, 5, s) == pytest.approx((1 + math.cos(math.pi * 19 / total)) / 2)
    assert lr_factor(20, 5, s) == pytest.approx(0, abs=1e-15)   # 0 at the end
    assert lr_factor(25, 5, s) == pytest.approx(0, abs=1e-15)   # and not back up after
    values = [lr_factor(i, 5, s) for i in range(21)]
    assert all(a > b for a, b in zip(values, values[1:]))
    # cosine with a 1-epoch warmup from 0.1: the product of both
    w = ScheduleConfig(epochs=4, policy="cosine", milestones=(), warmup_epochs=1, warmup_ratio=0.1)
    assert lr_factor(2, 5, w) == pytest.approx((1 + math.cos(math.pi * 2 / total)) / 2
                                               * (1 - 0.9 * (1 - 2 / 5)))


def test_lr_factor_iteration_warmup():
    # warmup_iters wins over warmup_epochs
    s = ScheduleConfig(epochs=3, policy="step", milestones=(2,), gamma=0.1, warmup_epochs=5,
                       warmup_iters=4, warmup_ratio=0.01)
    assert [lr_factor(i, 100, s) for i in range(5)] == pytest.approx([0.01, 0.2575, 0.505, 0.7525, 1])
    assert lr_factor(50, 100, s) == 1.0 and lr_factor(200, 100, s) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="policy"):
        lr_factor(0, 10, ScheduleConfig(policy="poly"))


def test_lr_mult_groups_follow_the_schedule():
    """``optim.lr_mult`` puts matching parameters in their own group at ``lr * factor``; the
    first group is the base rate and the scheduler keeps every group's ratio."""
    cfg = zoo.resolve(FAMILIES["slowfast"], "optim.lr_mult=(('backbone.fast.', 0.1),)")
    model = build_detector(cfg.model)
    optimizer = build_optimizer(model, cfg.optim, 2.0)
    assert [g["lr"] for g in optimizer.param_groups] == [2.0, pytest.approx(0.2)]
    fast = {id(p) for n, p in model.named_parameters() if n.startswith("backbone.fast.")}
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == fast
    assert len(optimizer.param_groups[0]["params"]) + len(fast) == len(list(model.parameters()))
    scheduler = build_scheduler(optimizer, 10, cfg.schedule)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    base, fast_lr = (g["lr"] for g in optimizer.param_groups)
    assert base == pytest.approx(2.0 * lr_factor(7, 10, cfg.schedule))
    assert fast_lr == pytest.approx(0.1 * base)


def test_log_lr_follows_the_schedule(trained, root):
    work, _ = trained
    cfg = load_config(work / "config.json")
    iters = math.ceil(len(build_dataset(zoo.resolve(cfg, data_root=root), "train")) / 4)
    records = train_records(work)
    assert len(records) == cfg.schedule.epochs * iters
    base = cfg.optim.scaled_lr(4)
    assert base == pytest.approx(cfg.optim.lr * 4 / cfg.optim.reference_batch)
    for r in records:
        assert r["lr"] == pytest.approx(base * lr_factor(r["step"] - 1, iters, cfg.schedule), rel=1e-12)
    assert records[0]["lr"] == pytest.approx(base * cfg.schedule.warmup_ratio)


# ------------------------------------------------------------------------------------------------
# 5. exact resume after SIGKILL


RESUME = ["--deterministic", "--seed", "3"]
# 2 clips a step: 8 iterations an epoch, so the kill lands inside epoch 2; a step decay at epoch 2
# so the resumed run must also get the schedule right
RESUME_OPTIONS = ["optim.batch_per_gpu=2", "schedule.epochs=3", "schedule.milestones=(2,)",
                  "schedule.warmup_epochs=1", "runtime.log_interval=1"]


def test_exact_resume_after_kill(root, tmp_path):
    """Run A trains 3 epochs uninterrupted; run B is killed (SIGKILL) in epoch 2 and resumed: the
    final weights, momentum buffers, scheduler and RNG states are bit-for-bit A's. Both runs are
    separate processes with the same thread count; A runs while B is being killed."""
    work_a = tmp_path / "a"
    argv_a = ["train", *train_argv(SLOWONLY, work_a, root, *RESUME, options=RESUME_OPTIONS)]
    run_a = subprocess.Popen([sys.executable, "-m", "stdet", *argv_a], cwd=REPO, env=env_one_thread(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for attempt in range(3):
            work_b = tmp_path / f"b{attempt}"
            argv_b = ["train", *train_argv(SLOWONLY, work_b, root, *RESUME, options=RESUME_OPTIONS)]
            run_b = subprocess.Popen([sys.executable, "-m", "stdet", *argv_b], cwd=REPO,
                                     env=env_one_thread(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
            deadline, killed = time.monotonic() + SUBPROCESS_TIMEOUT, False
            try:
                while run_b.poll() is None and time.monotonic() < deadline:
                    log = work_b / "log.jsonl"
                    if log.is_file() and any(r.get("epoch") == 2 and r["mode"] == "train"
                                             for r in read_log(log)):
                        run_b.send_signal(signal.SIGKILL)
                        killed = True
                        break
                    time.sleep(0.005)
            finally:
                run_b.kill()
                run_b.wait()
            assert killed, f"run B ended (exit {run_b.returncode}) or hung before epoch 2"
            if read_checkpoint(work_b / "latest.pth")["train_state"]["epoch"] == 1:
                break  # killed inside epoch 2, before its checkpoint
        else:
            pytest.fail("could not kill run B inside epoch 2 in 3 attempts")

        # what the kill left: epoch 1's checkpoint, whole (atomic_write_bytes writes
        # .latest.pth.XXXX.tmp then renames it; a kill mid-write can only leave that behind),
        # and the work dir's lock file, which the OS released with the process
        left = {p.name for p in work_b.iterdir() if not re.fullmatch(r"\.latest\.pth\..+\.tmp", p.name)}
        assert left <= {"config.json", "log.jsonl", "latest.pth", ".stdet.lock"}
        killed = load_weights_only(work_b / "latest.pth")
        assert killed["train_state"]["epoch"] == 1 and killed["train_state"]["iteration"] == 8
        assert any(r["epoch"] == 2 for r in train_records(work_b))

        resumed = stdet("train", *train_argv(SLOWONLY, work_b, root, *RESUME, "--resume",
                                             options=RESUME_OPTIONS))
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resumed from" in resumed.stdout and "at epoch 1, iteration 8" in resumed.stdout
        assert not list(work_b.glob(".*.tmp")) and not (work_b / ".stdet.lock").exists()
        assert run_a.wait(timeout=SUBPROCESS_TIMEOUT) == 0, run_a.stderr.read()[-3000:]
    finally:
        if run_a.poll() is None:
            run_a.kill()
            run_a.wait()
        run_a.stderr.close()

    a, b = load_weights_only(work_a / "latest.pth"), load_weights_only(work_b / "latest.pth")
    state_a, state_b = dict(a["train_state"]), dict(b["train_state"])
    assert math.isnan(state_a.pop("best_map")) and math.isnan(state_b.pop("best_map"))  # no --validate
    assert state_a == state_b and state_a["iteration"] == 24
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differing = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differing, differing[:5]
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for i, sa in a["optimizer"]["state"].items():
        assert torch.equal(sa["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"]), i
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    # the resumed epochs logged what A logged (loss, lr, recall: all of it but the timings)
    untimed = [[{k: v for k, v in r.items() if k not in ("data_time", "time", "memory_mb")}
                for r in records] for records in (train_records(work_a)[8:], train_records(work_b)[-16:])]
    assert untimed[0] == untimed[1]
    # and a step decay at epoch 2 (0-based), across the resume
    lrs = {r["epoch"]: r["lr"] for r in train_records(work_a)}
    assert lrs[3] == pytest.approx(0.1 * lrs[2])


# ------------------------------------------------------------------------------------------------
# 6. non-finite loss


def test_nan_stop_keeps_the_last_good_checkpoint(root, tmp_path, capsys):
    """Epoch 1 trains normally (``schedule.epochs=1``); resuming for a second epoch with a step
    "decay" of gamma=1e30 at epoch 1 makes the lr 1e30 times larger from epoch 2's second step,
    and the loss non-finite one step later. The schedule is the only part of a resumed run taken
    from the command line rather than the checkpoint (``optim.lr`` would not do: the optimiser
    and scheduler states restore the checkpoint's lr), so this needs no monkeypatching."""
    work = tmp_path / "work"
    train_in_process(train_argv(SLOWONLY, work, root, options=["schedule.epochs=1"]))
    latest = work / "latest.pth"
    before, mtime = latest.read_bytes(), latest.stat().st_mtime_ns
    capsys.readouterr()

    argv = ["train", *train_argv(
        SLOWONLY, work, root, "--resume",
        options=["schedule.epochs=2", "schedule.milestones=(1,)", "schedule.gamma=1e30"])]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    message = re.search(r"error: loss is (nan|inf|-inf) at epoch (\d+), iteration (\d+) "
                        r"\(step (\d+)\); training stopped; the last good checkpoint, latest.pth "
                        r"of epoch 1, is kept", err)
    assert message, err[-2000:]
    epoch, iteration, step = map(int, message.groups()[1:])
    assert epoch == 2 and step == 4 + iteration

    assert latest.read_bytes() == before and latest.stat().st_mtime_ns == mtime
    assert not list(work.glob(".*.tmp"))
    log = read_log(work / "log.jsonl")
    assert log[-1]["mode"] == "error" and f"iteration {iteration}" in log[-1]["message"]
    # every logged step was finite; the failing one is not logged as a train record
    assert [r["step"] for r in log if r["mode"] == "train"] == list(range(1, step))
    assert all(math.isfinite(r["loss"]) for r in log if r["mode"] == "train")


def test_nan_stop_before_any_checkpoint(root, tmp_path, capsys):
    work = tmp_path / "work"
    argv = ["train", *train_argv(SLOWONLY, work, root, options=["optim.lr=1e30"])]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(r"loss is \S+ at epoch 1, iteration \d+ .*no checkpoint had been written yet", err)
    assert not (work / "latest.pth").exists()
    assert read_log(work / "log.jsonl")[-1]["mode"] == "error"


# ------------------------------------------------------------------------------------------------
# 7. custom classes


def test_custom_classes_end_to_end(root, tmp_path):
    """The zoo's custom classes are AVA ids mini-AVA lacks; 3 of mini-AVA's stand in."""
    custom = [12, 14, 80]
    work = tmp_path / "work"
    config = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb_custom_classes:mini"
    options = ["schedule.epochs=1", "data.custom_classes=[12,14,80]", "model.head.num_classes=4",
               "model.head.topk=(1,2)"]
    summary = train_in_process(train_argv(config, work, root, "--validate", options=options))
    cfg = load_config(work / "config.json")
    assert cfg.data.custom_classes == tuple(custom) and score_columns(cfg) == [0, *custom]

    df = check_results_csv(work / "results_val.csv", root, custom)
    assert set(df["action_v"]) == set(custom)

    (val,) = [r for r in read_log(work / "log.jsonl") if r["mode"] == "val"]
    assert val["mAP"] == summary.best_map
    assert val["object_manipulation"] is None  # none of 12, 14, 80 is an object class

    model = train.build_model(cfg)
    load_checkpoint(model, work / "latest.pth", strict=True)
    result = evaluate_split(model, zoo.resolve(cfg, data_root=root), torch.device("cpu"), DistInfo(), tmp_path / "r.csv")
    assert list(result.per_class["class_id"]) == custom
    assert result.map == val["mAP"]

    layout = AVALayout(root, cfg.data.version)
    js = tmp_path / "eval.json"
    assert cli.main(["eval", "--gt", str(layout.ann_file("val")), "--pred", str(work / "results_val.csv"),
                     "--label-map", str(layout.label_file), "--exclude", str(layout.exclude_file("val")),
                     "--custom-classes", "12,14,80", "--json", str(js)]) == 0
    scored = json.loads(js.read_text())
    assert set(scored["per_class_ap"]) == {"12", "14", "80"}
    assert scored["mAP"] == val["mAP"]


# ------------------------------------------------------------------------------------------------
# 8. DDP


def test_ddp_two_processes_match_one(trained, root, tmp_path):
    """``torchrun --nproc_per_node 2`` with 2 clips per process against the module's one-process
    run with 4 clips (same seed, global batch, scaled lr and iterations an epoch).

    The two runs see different shards and augmentation draws, so their weights differ as with
    another seed. What must hold exactly: the lr of every step, the number of steps, and the
    evaluation. DDP's val results CSV must be byte-equal to a one-process evaluation of DDP's
    latest.pth: rank 1 scores its keyframes with its own model copy, so this fails if the ranks'
    weights or BatchNorm statistics drift apart, if a keyframe is scored twice (padding
    sampler) or not at all, or if the gather loses a shard.

    "Same mAP within noise": on this data the epoch-2 val mAP of one process ranges over
    0.39-0.57 with seeds 0-5 (measured), so a correct DDP run lies within 0.2 of the
    one-process run; a broken one (e.g. half the keyframes missing) falls far outside."""
    single_work, single = trained
    work = tmp_path / "ddp"
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
         "127.0.0.1", "--master_port", str(port), "-m", "stdet", "train",
         *train_argv(SLOWONLY, work, root, "--validate", options=["optim.batch_per_gpu=2"])],
        cwd=REPO, env=env_one_thread(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    cfg = load_config(work / "config.json")
    lr = cfg.optim.scaled_lr(4)
    assert f"-> {lr:g} for 4 (2 processes x 2)" in proc.stdout

    ddp_records, single_records = train_records(work), train_records(single_work)
    assert [r["step"] for r in ddp_records] == [r["step"] for r in single_records]
    assert [r["lr"] for r in ddp_records] == [r["lr"] for r in single_records]
    assert all(math.isfinite(r["loss"]) for r in ddp_records)

    vals = [r for r in read_log(work / "log.jsonl") if r["mode"] == "val"]
    single_vals = [r for r in read_log(single_work / "log.jsonl") if r["mode"] == "val"]
    assert [r["epoch"] for r in vals] == [1, 2]
    assert (work / "best.pth").is_file()

    df = check_results_csv(work / "results_val.csv", root, range(1, 81))
    single_df = read_results(single_work / "results_val.csv")
    key = ["video", "ts", "x1", "y1", "x2", "y2"]
    assert set(map(tuple, df[key].values)) == set(map(tuple, single_df[key].values))

    model = train.build_model(cfg)
    load_checkpoint(model, work / "latest.pth", strict=True)
    result = evaluate_split(model, zoo.resolve(cfg, data_root=root), torch.device("cpu"), DistInfo(), tmp_path / "one.csv")
    assert (tmp_path / "one.csv").read_bytes() == (work / "results_val.csv").read_bytes()
    assert result.map == vals[-1]["mAP"]

    print(f"val mAP one process {[round(r['mAP'], 4) for r in single_vals]}, "
          f"DDP {[round(r['mAP'], 4) for r in vals]}")
    assert abs(vals[-1]["mAP"] - single.metrics["mAP"]) < 0.2


# ------------------------------------------------------------------------------------------------
# 9, 10. command-line errors


def test_cfg_options_typo_suggests_the_closest_key(tmp_path):
    proc = stdet("train", SLOWONLY, "--work-dir", str(tmp_path / "w"), "--cfg-options",
                 "model.head.dropuot=0.3")
    assert proc.returncode == 2
    assert proc.stderr == "error: unknown config key 'model.head.dropuot'; did you mean 'model.head.dropout'?\n"
    assert "optim.lr" not in proc.stderr and "schedule.epochs" not in proc.stderr  # not all the keys
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("option, message", [
    ("model.head.dropout=abc", "model.head.dropout: cannot parse 'abc'"),
    ("schedule.epochs=2.5", "schedule.epochs: expected <class 'int'>, got '2.5'"),
    ("optim.nesterov=maybe", "optim.nesterov: expected true/false, got 'maybe'"),
    ("optim.lr", "override 'optim.lr' is not KEY=VALUE"),
    ("model.head=3", "'model.head' is a group"),
])
def test_cfg_options_bad_values_are_one_line(option, message, tmp_path, capsys):
    assert cli.main(["train", SLOWONLY, "--work-dir", str(tmp_path / "w"), "--cfg-options", option]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


def test_unknown_zoo_name(tmp_path, capsys):
    assert cli.main(["train", "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rbg:mini",
                     "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "no zoo config named 'slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rbg'" in err
    assert "did you mean slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb" in err
    proc = stdet("train", "slowfast_r50_nonsense", "--work-dir", str(tmp_path / "w"))
    assert proc.returncode == 2 and "error: no zoo config named 'slowfast_r50_nonsense'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mini_configs_fine_tune_from_the_mini_slowonly(root, tmp_path, monkeypatch, capsys):
    """A mini SlowFast takes its backbone from the mini SlowOnly's default work dir; without that
    checkpoint, ``train`` says which command makes it and writes nothing."""
    monkeypatch.chdir(tmp_path)
    tiny = [o for o in TINY if not o.startswith("model.backbone.pretrained")]
    argv = ["train", FAMILIES["slowfast"], "--work-dir", "sf", "--data-root", str(root),
            "--device", "cpu", "--cfg-options", *tiny, "schedule.epochs=1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"no file work_dirs/{zoo.MINI_BASE}_mini/latest.pth" in err
    assert f"python -m stdet train {zoo.MINI_BASE}:mini" in err and "Traceback" not in err
    assert not Path("sf").exists()

    assert cli.main(["train", f"{zoo.MINI_BASE}:mini", "--data-root", str(root), "--device", "cpu",
                     "--cfg-options", *tiny, "schedule.epochs=1"]) == 0
    base = Path("work_dirs", f"{zoo.MINI_BASE}_mini", "latest.pth")
    assert base.is_file()
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"backbone initialised from work_dirs/{zoo.MINI_BASE}_mini/latest.pth" in out
    assert "missing (kept the model's values)" in out  # the fast pathway and the laterals


def test_mini_base_checkpoint_reuses_only_a_finished_run(tmp_path, monkeypatch):
    """A finished run is reused; anything else trains ``MINI_BASE:mini`` in this process, as
    ``python -m stdet train NAME:mini --data-root ROOT --work-dir WORK --validate --seed S``."""
    work = tmp_path / "base"
    work.mkdir()
    epochs = zoo.resolve(f"{zoo.MINI_BASE}:mini").schedule.epochs
    calls = []
    monkeypatch.setattr(train, "train", lambda cfg, work_dir, **kwargs: calls.append(
        (cfg, Path(work_dir), kwargs)))
    for done, trains in ((epochs - 1, True), (epochs, False)):
        save_checkpoint(work / "latest.pth", {"w": torch.zeros(1)}, train_state={"epoch": done})
        calls.clear()
        assert train.mini_base_checkpoint("ROOT", work, seed=3) == work / "latest.pth"
        assert bool(calls) == trains, done
    calls.clear()
    train.mini_base_checkpoint("ROOT", tmp_path / "fresh", seed=3, progress=False)
    (cfg, work_dir, kwargs), = calls
    assert cfg == zoo.resolve(f"{zoo.MINI_BASE}:mini", data_root="ROOT")
    assert work_dir == tmp_path / "fresh"
    assert kwargs == {"validate": True, "seed": 3, "progress": False}


def test_build_dataset_decodes_frames_at_the_size_its_transforms_need(tiny_ava, tmp_path):
    cfg = zoo.resolve(SLOWONLY, *TINY)
    assert build_dataset(zoo.resolve(cfg, data_root=tiny_ava), "train").source.min_short_side == max(cfg.data.train_scale)
    reduced = build_dataset(zoo.resolve(cfg, data_root=tiny_ava), "val", train=False)
    assert reduced.source.min_short_side == cfg.data.test_scale
    full = build_dataset(zoo.resolve(SLOWONLY, *TINY, "data.reduced_decode=false", data_root=tiny_ava),
                         "val", train=False)
    assert full.source.min_short_side is None
    # mini-AVA's frames are no larger than the test scale, so nothing is decoded smaller
    torch.testing.assert_close(reduced[0]["clip"], full[0]["clip"], rtol=0, atol=0)


def test_build_dataset_reads_videos_with_frame_source_video(tmp_path):
    root = tmp_path / "ava"
    generate_mini_ava(root, seed=0, spec=MiniAVASpec(train_videos=1, val_videos=1, seconds=8),
                      videos=True, progress=False)
    cfg = zoo.resolve(SLOWONLY, *TINY, "data.frame_source=video")
    from_video = build_dataset(zoo.resolve(cfg, data_root=root), "val", train=False)
    from_frames = build_dataset(zoo.resolve(SLOWONLY, *TINY, data_root=root), "val", train=False)
    assert from_video.source.video_path(from_video.keys[0][0]).suffix == ".mp4"
    assert list(from_video.keys) == list(from_frames.keys)
    a, b = from_video[0]["clip"], from_frames[0]["clip"]
    assert a.shape == b.shape
    # the same frames through two lossy codecs (mini-AVA's mp4 is small and coarsely coded)
    assert type(from_video.source).__name__ == "VideoFile"
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.85
    assert (a - b).abs().mean() < 0.25  # normalised units: about 15 grey levels
