"""Each idea of the zoo against the same model without it, on mini-AVA: the gain on the class group
the idea is for, per data seed and training seed. Prints one table (and writes it as JSON).

    python benchmarks/mini_lessons.py --data-seeds 0 1 --train-seeds 0 1 --out _data/lessons

Every row is what a chapter of the book trains, with the same recipe: the mini SlowOnly and the
mini SlowFast from scratch (the same learning rate and epochs), the SlowFast variants fine-tuned
from the mini SlowFast, the long-term models from the mini SlowOnly. ``--jobs 2`` runs two
(data seed, training seed) pairs at once, one thread each.

=========  ===================================  ====================================  ============
lesson     with                                 without                               group
=========  ===================================  ====================================  ============
time       SlowOnly 4x16 (from scratch)         the same on 1 frame (from scratch)    motion
fast       SlowFast 8x8 (from scratch)          SlowOnly 4x16 (from scratch)          brief_motion
context    SlowFast 8x8 + context (fine-tuned)  SlowFast 8x8 (fine-tuned)             scene
relations  ACRN (fine-tuned)                    SlowFast temporal max (fine-tuned)    interaction
long-term  LFB-NL (mini fine-tuning)            SlowOnly 4x16 (as long, as fast)      long_term
appearance SlowOnly 4x16 (from scratch)         class frequency                       appearance
=========  ===================================  ====================================  ============
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

THRESHOLDS = {"time": 0.20, "fast": 0.15, "context": 0.10, "relations": 0.10, "long-term": 0.10,
              "appearance": 0.30}
LESSONS = tuple(THRESHOLDS)
FINETUNE_EPOCHS, FINETUNE_LR_MULT = None, 1  # the mini fine-tuning recipe (stdet.mini)


def group_ap(result, group: str) -> float:
    """Mean AP over the classes of a mini-AVA group."""
    from stdet.data import MINI_AVA_CLASS_GROUPS

    per_class = result.per_class.set_index("class_id")["ap"]
    return float(per_class.loc[list(MINI_AVA_CLASS_GROUPS[group])].mean())


def run_pair(root: Path, work: Path, data_seed: int, train_seed: int, lessons,
             finetune_epochs: int = FINETUNE_EPOCHS, lr_mult: float = FINETUNE_LR_MULT) -> dict:
    import stdet
    from stdet.data import AVALayout, read_annotations

    stdet.data.ensure_mini_ava(root, seed=data_seed, progress=False)
    zoo = stdet.zoo
    base = stdet.mini_base_checkpoint(root, work / "slowonly", seed=train_seed, progress=False)
    rows, seconds = {}, {}

    def train(label, name, *options, **kwargs):
        start = time.perf_counter()
        cfg = stdet.config(f"{name}:mini", *options, data_root=root)
        run = stdet.train(cfg, work / label, seed=train_seed, validate=True, progress=False, **kwargs)
        seconds[label] = round(time.perf_counter() - start, 1)
        return run.result

    def finetune(label, name, start, *options):
        mini = stdet.config(f"{name}:mini")
        epochs = finetune_epochs or mini.schedule.epochs
        return train(label, name, f"model.backbone.pretrained={start}", f"schedule.epochs={epochs}",
                     f"optim.lr={lr_mult * mini.optim.lr:g}", *options)

    base_result = stdet.test(stdet.config(f"{zoo.MINI_BASE}:mini", data_root=root), base, progress=False,
                             out=work / "slowonly" / "results_val.csv")
    if "time" in lessons:
        one = train("slowonly_1frame", zoo.MINI_BASE, "data.clip_len=1")
        rows["time"] = (group_ap(base_result, "motion"), group_ap(one, "motion"))
    slowfast = "slowfast_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb"
    if {"fast", "context", "relations"} & set(lessons):
        so = stdet.config(f"{zoo.MINI_BASE}:mini")  # the mini SlowOnly's recipe, from scratch
        sf = train("slowfast", slowfast, "model.backbone.pretrained=None", f"optim.lr={so.optim.lr:g}",
                   f"schedule.epochs={so.schedule.epochs}")
        sf_base = work / "slowfast" / "latest.pth"
    if "fast" in lessons:
        rows["fast"] = (group_ap(sf, "brief_motion"), group_ap(base_result, "brief_motion"))
    if "context" in lessons:
        ctx = finetune("slowfast_context", slowfast, sf_base, "model.head.with_global=true")
        sf_ft = finetune("slowfast_ft", slowfast, sf_base)
        rows["context"] = (group_ap(ctx, "scene"), group_ap(sf_ft, "scene"))
    if "relations" in lessons:
        tmax = finetune("slowfast_tmax", "slowfast_temporal_max_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb",
                        sf_base)
        acrn = finetune("acrn", "slowfast_acrn_kinetics_pretrained_r50_8x8x1_cosine_10e_ava22_rgb", sf_base)
        rows["relations"] = (group_ap(acrn, "interaction"), group_ap(tmax, "interaction"))
    if "long-term" in lessons:
        bank_cfg = stdet.config(f"{zoo.LFB_BANK_CONFIG}:mini", data_root=root)
        for split in ("train", "val"):
            stdet.extract_lfb(bank_cfg, base, split, progress=False)
        nl_name = "lfb_nl_kinetics_pretrained_slowonly_r50_4x16x1_20e_ava_rgb"
        nl_mini = stdet.config(f"{nl_name}:mini")
        nl = train("lfb_nl", nl_name, f"model.backbone.pretrained={base}")
        short = train("lfb_no_bank", zoo.MINI_BASE, f"model.backbone.pretrained={base}",
                      f"schedule.epochs={nl_mini.schedule.epochs}", f"optim.lr={nl_mini.optim.lr:g}")
        rows["long-term"] = (group_ap(nl, "long_term"), group_ap(short, "long_term"))
    if "appearance" in lessons:
        layout = AVALayout(root)
        boxes = [a for kf in read_annotations(layout.ann_file("val")).values() for a in kf.actions]
        from stdet.data import MINI_AVA_CLASS_GROUPS

        freq = sum(any(c in a for c in MINI_AVA_CLASS_GROUPS["appearance"]) for a in boxes) / len(boxes)
        rows["appearance"] = (group_ap(base_result, "appearance"), freq)
    return {"data_seed": data_seed, "train_seed": train_seed, "base_map": base_result.map,
            "lessons": {k: {"with": w, "without": wo, "gain": w - wo} for k, (w, wo) in rows.items()},
            "seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--lessons", nargs="+", choices=LESSONS, default=list(LESSONS))
    p.add_argument("--out", type=Path, default=Path("_data/lessons"))
    p.add_argument("--finetune-epochs", type=int, default=FINETUNE_EPOCHS,
                   help="epochs of every fine-tuning (default: the mini config's)")
    p.add_argument("--finetune-lr-mult", type=float, default=FINETUNE_LR_MULT)
    p.add_argument("--jobs", type=int, default=1, help="pairs run at once (one thread each)")
    p.add_argument("--pair", type=int, nargs=2, help=argparse.SUPPRESS)  # one pair, in this process
    args = p.parse_args(argv)

    if args.pair:
        data_seed, train_seed = args.pair
        out = args.out / f"data{data_seed}_train{train_seed}.json"
        result = run_pair(args.out / f"mini-ava-{data_seed}", args.out / f"work-{data_seed}-{train_seed}",
                          data_seed, train_seed, args.lessons, args.finetune_epochs,
                          args.finetune_lr_mult)
        out.write_text(json.dumps(result, indent=1))
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    for data_seed in args.data_seeds:  # each data build once, before the pairs share it
        import stdet

        stdet.data.ensure_mini_ava(args.out / f"mini-ava-{data_seed}", seed=data_seed, progress=False)
    pairs = [(d, t) for d in args.data_seeds for t in args.train_seeds]
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if args.jobs > 1 else {})}
    running: list[subprocess.Popen] = []
    for d, t in pairs:
        while sum(r.poll() is None for r in running) >= args.jobs:
            time.sleep(5)
        epochs = ["--finetune-epochs", str(args.finetune_epochs)] if args.finetune_epochs else []
        running.append(subprocess.Popen([sys.executable, __file__, "--pair", str(d), str(t), "--out", str(args.out),
                                         *epochs, "--finetune-lr-mult", str(args.finetune_lr_mult),
                                         "--lessons", *args.lessons], env=env))
    failed = sum(r.wait() != 0 for r in running)
    print_table(args.out, pairs)
    return 1 if failed else 0


def print_table(out: Path, pairs) -> None:
    import pandas as pd

    rows = []
    for d, t in pairs:
        path = out / f"data{d}_train{t}.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        for lesson, r in result["lessons"].items():
            rows.append({"lesson": lesson, "data seed": d, "train seed": t, "with": r["with"],
                         "without": r["without"], "gain": r["gain"], "threshold": THRESHOLDS[lesson],
                         "holds": r["gain"] >= THRESHOLDS[lesson]})
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(table.round(3).to_string(index=False))
    (out / "lessons.json").write_text(table.to_json(orient="records", indent=1))


if __name__ == "__main__":
    sys.exit(main())
