"""The public API (``stdet.config``, ``stdet.train``, ``stdet.test``, ...) against the command
line it sits under: the same run gives the same weights, results and mAP, in this process, in a
child process and in a Jupyter kernel; and every public entry point is documented with an example.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import stdet
from stdet.data import in_jupyter_kernel

from test_benchmarks import load_script

REPO = Path(__file__).resolve().parents[1]
SLOWONLY = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb:mini"
TINY = ["optim.batch_per_gpu=4", "optim.lr=0.05", "schedule.epochs=2", "schedule.eval_interval=1",
        "model.backbone.pretrained=None"]
API = ["config", "train", "test", "extract_lfb", "read_log", "mini_base_checkpoint"]

pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "stdet", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def cli_run(tiny_ava, tmp_path_factory) -> Path:
    """``python -m stdet train`` then ``test`` from another directory with the work dir's
    config.json and no --data-root: it must read the data the run trained on."""
    work = tmp_path_factory.mktemp("cli") / "work"
    cli("train", SLOWONLY, "--data-root", str(tiny_ava), "--work-dir", str(work), "--validate",
        "--seed", "0", "--cfg-options", "data.workers=0", *TINY)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    cli("test", str(work / "config.json"), str(work / "latest.pth"), "--out",
        str(work / "results_test.csv"), "--eval", "mAP", "--device", "cpu", cwd=elsewhere)
    return work


def test_config_json_records_the_data_root_it_trained_on(cli_run, tiny_ava):
    saved = json.loads((cli_run / "config.json").read_text())
    assert saved["data"]["root"] == str(tiny_ava.resolve())
    assert stdet.config(str(cli_run / "config.json")).data.root == str(tiny_ava.resolve())
    # the test run from elsewhere scored the val split the run validated on
    assert (cli_run / "results_test.csv").read_bytes() == (cli_run / "results_val.csv").read_bytes()


def test_python_api_gives_the_cli_weights_results_and_map(cli_run, tiny_ava, tmp_path):
    cfg = stdet.config(SLOWONLY, "data.workers=0", *TINY, data_root=tiny_ava)
    run = stdet.train(cfg, tmp_path / "work", seed=0, progress=False)
    assert isinstance(run, stdet.TrainResult) and run.epochs == 2 and run.best == tmp_path / "work" / "best.pth"
    assert_same_weights(run.latest, cli_run / "latest.pth")
    assert list(run.log[run.log["mode"] == "val"]["mAP"]) == list(
        stdet.read_log(cli_run / "log.jsonl").query("mode == 'val'")["mAP"])

    result = stdet.test(cfg, run.latest, out=tmp_path / "results.csv", progress=False)
    assert isinstance(result, stdet.AVAEvalResult)
    assert (tmp_path / "results.csv").read_bytes() == (cli_run / "results_test.csv").read_bytes()
    assert result.map == run.metrics["mAP"] == run.result.map
    assert result.per_class.equals(run.result.per_class)
    layout = stdet.AVALayout(tiny_ava, cfg.data.version)
    scored = stdet.evaluate(layout.ann_file("val"), cli_run / "results_test.csv",
                            layout.eval_label_file, exclude=layout.exclude_file("val"))
    assert scored.map == result.map


def test_test_scores_a_model_in_memory(tiny_ava, tmp_path):
    cfg = stdet.config(SLOWONLY, "data.workers=0", *TINY, data_root=tiny_ava)
    torch.manual_seed(0)
    model = stdet.build_detector(cfg.model)
    with pytest.raises(ValueError, match="out="):
        stdet.test(cfg, model)
    result = stdet.test(cfg, model, out=tmp_path / "untrained.csv", progress=False)
    assert 0 <= result.map <= 1 and (tmp_path / "untrained.csv").stat().st_size > 0


def test_train_in_a_jupyter_kernel_matches_the_cli(tiny_ava, tmp_path):
    """Two DataLoader workers: forked from the CLI's process, from a forkserver in the kernel;
    the weights are the same bit for bit."""
    bench = load_script("kernel_vs_cli")
    options = ["data.workers=2", *TINY]
    bench.run_cli(SLOWONLY, tiny_ava, tmp_path / "cli", 0, options)
    _, method = bench.train_in_kernel(SLOWONLY, tiny_ava, tmp_path / "kernel", 0, options)
    assert method == "forkserver"
    assert_same_weights(tmp_path / "cli" / "latest.pth", tmp_path / "kernel" / "latest.pth")
    assert bench.val_maps(tmp_path / "cli") == bench.val_maps(tmp_path / "kernel")


def test_outside_a_kernel_workers_fork():
    assert not in_jupyter_kernel()
    assert stdet.data.worker_context("auto", 2) is None          # the platform default
    assert stdet.data.worker_context("auto", 0) is None          # no workers, no context
    assert stdet.data.worker_context("spawn", 2).get_start_method() == "spawn"


@pytest.mark.parametrize("name", API + ["evaluate", "stage_shapes", "ensure_mini_ava"])
def test_public_functions_are_documented_with_an_example(name):
    function = getattr(stdet, name)
    assert name in stdet.__all__
    doc = inspect.getdoc(function) or ""
    assert ">>>" in doc, f"stdet.{name} has no example in its docstring"


def test_every_public_name_resolves():
    for name in stdet.__all__:
        assert getattr(stdet, name) is not None, name


MINI = "slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb:mini"


@pytest.mark.parametrize("argv, message", [
    (["test", MINI, "{missing}"], "checkpoint not found"),
    (["test", MINI, "{ckpt}", "--data-root", "{missing}"], "annotation file not found"),
    (["test", "{bad_json}", "{ckpt}"], "line 2, column 1: not valid JSON"),
    (["test", "{unknown_key_json}", "{ckpt}"], "unknown config keys ['modle']"),
    (["extract-lfb", "lfb_slowonly_r50_ava_infer:mini", "{missing}", "--split", "val"],
     "checkpoint not found"),
    (["convert", "{missing}", "{out}", "--config", MINI], "checkpoint not found"),
    (["convert", "{ckpt}", "{out}", "--config", "slowonly_nonsense"], "no zoo config named"),
])
def test_user_mistakes_are_one_line_with_exit_code_2(argv, message, tmp_path, capsys):
    from stdet import cli as command_line

    ckpt = tmp_path / "model.pth"
    torch.manual_seed(0)
    stdet.save_checkpoint(ckpt, stdet.build_detector(stdet.config(MINI).model))
    (tmp_path / "bad.json").write_text('{"name":\n')
    (tmp_path / "unknown.json").write_text('{"name": "x", "modle": {}}')
    paths = {"missing": tmp_path / "missing", "ckpt": ckpt, "out": tmp_path / "out.pth",
             "bad_json": tmp_path / "bad.json", "unknown_key_json": tmp_path / "unknown.json"}
    assert command_line.main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_readme_tour_trains_tests_and_evaluates(tmp_path, monkeypatch):
    """The Python block of README's tour, run as written (in a fresh directory): at most ten lines
    of code, and what it promises holds."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    tour = readme.split("## A short tour", 1)[1]
    code = tour.split("```python\n", 1)[1].split("```", 1)[0]
    lines = [l for l in code.splitlines() if l.strip() and not l.strip().startswith("#")]
    assert len(lines) <= 10, lines
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(code, "README.md", "exec"), names)
    run, result, scored = names["run"], names["result"], names["scored"]
    assert run.best.is_file() and run.metrics["mAP"] <= run.best_map
    assert result.map == run.best_map                 # the best epoch's weights, scored again
    assert 0 < scored.map <= 1 and len(scored.per_class) > 0


def test_convert_checks_against_mini_names_and_config_json(tmp_path, capsys):
    """``convert --config`` resolves what every other command resolves: NAME:mini, config.json."""
    from stdet import cli as command_line
    from stdet.configs import save_config

    cfg = stdet.config(MINI)
    torch.manual_seed(0)
    stdet.save_checkpoint(tmp_path / "model.pth", stdet.build_detector(cfg.model))
    save_config(cfg, tmp_path / "config.json")
    for config in (MINI, str(tmp_path / "config.json")):
        capsys.readouterr()
        assert command_line.main(["convert", str(tmp_path / "model.pth"), str(tmp_path / "out.pth"),
                                  "--config", config]) == 0
        out = capsys.readouterr().out
        n = len(stdet.build_detector(cfg.model).state_dict())
        assert f"loaded {n} tensors" in out and f"wrote {n} tensors" in out, out
    # a full-size config does not fit the mini weights: the mismatch is reported by name
    (tmp_path / "out.pth").unlink()
    assert command_line.main(["convert", str(tmp_path / "model.pth"), str(tmp_path / "out.pth"),
                              "--config", MINI.split(":")[0]]) == 2
    captured = capsys.readouterr()
    assert "head.classifier.weight: file (81, 256) vs model (81, 2048)" in captured.out + captured.err
    assert not (tmp_path / "out.pth").exists()


def test_deterministic_is_for_the_run_only(tiny_ava, tmp_path):
    cfg = stdet.config(SLOWONLY, "data.workers=0", *TINY, data_root=tiny_ava)
    assert not torch.are_deterministic_algorithms_enabled()
    run = stdet.train(cfg, tmp_path / "work", deterministic=True, validate=False, max_iters=1,
                      progress=False)
    assert run.iterations == 1 and not torch.are_deterministic_algorithms_enabled()
