"""``python -m stdet COMMAND ...``: the command-line entry point.

Each subcommand is a ``add_<name>_parser(subparsers)`` that registers its arguments and a
``run`` function that calls the public API (``stdet.train``, ``stdet.test``, ...); ``main`` only
dispatches, and turns the errors a user can act on into one line ``error: ...``: exit code 2 for
a mistake in the input (a config key or value, a data file, a missing file or bank), 1 for a
fault of the run (a non-finite loss), 130 for Ctrl-C.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence

from .data.errors import StdetError


class UsageError(StdetError):
    """A command-line argument that parses but cannot be used (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line too (``error: PROG: ...``, exit 2);
    ``--help`` prints the usage."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def add_mini_ava_parser(subparsers) -> None:
    from .data.mini_ava import LONG_TERM_CUES, MiniAVASpec

    defaults = MiniAVASpec()
    p = subparsers.add_parser(
        "mini-ava", help="generate mini-AVA, a small synthetic dataset in the AVA layout",
        description="Write mini-AVA under OUT: annotations, proposals, label maps and "
                    "rawframes/VIDEO/img_%%05d.jpg, deterministic from --seed.")
    p.add_argument("out", help="output root (created; existing videos are replaced)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--train-videos", type=int, default=defaults.train_videos)
    p.add_argument("--val-videos", type=int, default=defaults.val_videos)
    p.add_argument("--seconds", type=int, default=defaults.seconds,
                   help="length of each video in seconds (AVA's cut: 901)")
    p.add_argument("--long-term", choices=LONG_TERM_CUES, default=defaults.long_term,
                   help="what decides read vs text: the item carried 9-25 s earlier (default) or "
                        "the motion 4-13 s earlier (the variant for long-term feature banks)")
    p.add_argument("--videos", action="store_true", help="also write videos_15min/VIDEO.mp4")
    p.add_argument("--workers", type=int, default=None, help="rendering processes (default: 2)")
    p.set_defaults(run=run_mini_ava)


def run_mini_ava(args: argparse.Namespace) -> int:
    from .data.mini_ava import MiniAVASpec, generate_mini_ava

    if args.seconds < 5:
        raise UsageError(f"mini-ava: --seconds must be at least 5, got {args.seconds}")
    spec = MiniAVASpec(train_videos=args.train_videos, val_videos=args.val_videos, seconds=args.seconds,
                       long_term=args.long_term)
    start = time.perf_counter()
    summary = generate_mini_ava(args.out, seed=args.seed, spec=spec, videos=args.videos,
                                workers=args.workers)
    for split, info in summary["splits"].items():
        print(f"{split}: {len(info['videos'])} videos, {info['keyframes']} keyframes, "
              f"{info['boxes']} boxes, {info['excluded']} excluded")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


def add_zoo_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "zoo", help="list the model zoo: settings, published mAP, parameters, GFLOPs",
        description="Print every zoo config with its settings and published frame-mAP, and the "
                    "parameters and GFLOPs (multiply-adds) of its model at the test input; the "
                    "LFB configs' bank model (run by extract-lfb) is listed after them, marked "
                    "in the note column.")
    p.add_argument("--scale", choices=("full", "mini"), default="full",
                   help="full-size AVA models (default) or their mini-AVA counterparts")
    p.add_argument("--filter", default="", help="only configs whose name contains this text")
    p.add_argument("--no-complexity", action="store_true", help="skip parameter/FLOP counts")
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    p.set_defaults(run=run_zoo)


def run_zoo(args: argparse.Namespace) -> int:
    import pandas as pd

    from . import zoo
    from .data.io import atomic_write_text, check_file_target

    if args.csv:
        check_file_target(args.csv)
    df = zoo.table(args.scale, complexity=not args.no_complexity, contains=args.filter,
                   progress=True)
    if args.csv:
        atomic_write_text(args.csv, df.to_csv(index=False))
    with pd.option_context("display.width", 250, "display.max_columns", None,
                           "display.max_colwidth", 100):
        print(df.to_string(index=False))
    return 0


def add_convert_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert an MMAction2 checkpoint to stdet's names",
        description="Read an MMAction2 0.x/1.x detector or Kinetics recognizer checkpoint without "
                    "executing pickled code, rename its weights to stdet's modules and write "
                    "OUT (a torch file readable with weights_only=True).")
    p.add_argument("checkpoint", help="MMAction2 .pth file")
    p.add_argument("out", help="output .pth file")
    p.add_argument("--config", help="config to check the weights against (NAME, NAME:mini or a "
                                    "config.json; reports missing and unexpected keys by name)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    p.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from .data.io import check_file_target
    from .engine.checkpoint import convert_checkpoint, load_checkpoint

    check_file_target(args.out)  # OUT a directory: say so before reading or checking anything
    if args.config:
        from . import zoo
        from .models import build_detector

        model = build_detector(zoo.resolve(args.config, *args.cfg_options).model)
        report = load_checkpoint(model, args.checkpoint)
        print(report)
        for note in report.notes:
            warnings.warn(note)
        if report.mismatched:
            print(f"error: {args.checkpoint}: {len(report.mismatched)} tensor shapes do not match "
                  f"{args.config} (listed above); nothing written", file=sys.stderr)
            return 2
    state = convert_checkpoint(args.checkpoint, args.out)
    print(f"wrote {len(state)} tensors to {args.out}")
    return 0


def add_eval_parser(subparsers) -> None:
    from .evaluation.ava_ap import PROTOCOLS

    p = subparsers.add_parser(
        "eval", help="frame-mAP of a results CSV against AVA ground truth",
        description="Frame-AP@0.5 per class and the means, from a results CSV "
                    "(video_id,timestamp,x1,y1,x2,y2,action_id,score) and the ground-truth CSV.")
    p.add_argument("--gt", required=True, help="ground-truth CSV (e.g. ava_val_v2.2.csv)")
    p.add_argument("--pred", required=True, help="results CSV")
    p.add_argument("--label-map", required=True, help="label map pbtxt of the evaluated classes")
    p.add_argument("--exclude", help="excluded timestamps CSV")
    p.add_argument("--protocol", choices=PROTOCOLS, default="activitynet",
                   help="activitynet (official AVA, default), mmaction2-0.x (MMAction2 0.x's "
                        "ava_eval, behind the published zoo table) or mmaction2 (1.x's)")
    p.add_argument("--custom-classes", help="comma-separated class ids to evaluate, e.g. 3,6,10")
    p.add_argument("--json", metavar="OUT", help="write mAP, per-class AP and group means as JSON")
    p.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from .data.io import check_file_target
    from .evaluation import evaluate

    if args.json:
        check_file_target(args.json)  # before the evaluation, not after it
    custom = None
    if args.custom_classes:
        try:
            custom = [int(c) for c in args.custom_classes.split(",") if c.strip()]
        except ValueError:
            raise UsageError(f"eval: --custom-classes must be integers, got {args.custom_classes!r}") from None
    result = evaluate(args.gt, args.pred, args.label_map, exclude=args.exclude,
                      protocol=args.protocol, custom_classes=custom)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(result.table())
    if args.json:
        result.write_json(args.json)
    return 0


def add_train_parser(subparsers) -> None:
    from .engine import train

    p = subparsers.add_parser("train", parents=[train.get_args_parser(add_help=False)],
                              help="train a zoo config (torchrun for several GPUs)",
                              description=train.__doc__.splitlines()[0])
    p.set_defaults(run=train.run)


def add_test_parser(subparsers) -> None:
    from .engine import test

    p = subparsers.add_parser("test", parents=[test.get_args_parser(add_help=False)],
                              help="score the val split with a checkpoint, write results.csv",
                              description=test.__doc__.splitlines()[0])
    p.set_defaults(run=test.run)


def add_extract_lfb_parser(subparsers) -> None:
    from .engine import lfb

    p = subparsers.add_parser("extract-lfb", parents=[lfb.get_args_parser(add_help=False)],
                              help="build a long-term feature bank with a trained detector",
                              description=lfb.__doc__.splitlines()[0])
    p.set_defaults(run=lfb.run)


COMMANDS = {"train": add_train_parser, "test": add_test_parser,
            "extract-lfb": add_extract_lfb_parser, "mini-ava": add_mini_ava_parser,
            "zoo": add_zoo_parser, "convert": add_convert_parser, "eval": add_eval_parser}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of command ``only`` (a command's parser may import the
    module it drives, so ``python -m stdet eval`` builds just its own and starts quickly)."""
    parser = Parser(
        prog="python -m stdet",
        description="Spatio-temporal action detection on AVA: data, models, training, evaluation.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"stdet {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, add in COMMANDS.items():
        if only is None or name == only:
            add(subparsers)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = _one_line_warning  # a degraded result is one line too
    from ._interrupt import install

    install()
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        return args.run(args)
    except known_errors() as e:  # one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (MemoryError, out_of_gpu_memory()) as e:
        where = "host" if isinstance(e, MemoryError) else "GPU"
        print(f"error: out of {where} memory; lower optim.batch_per_gpu (and data.workers) with "
              f"--cfg-options", file=sys.stderr)
        return 1


def out_of_gpu_memory() -> type[BaseException]:
    """``torch.OutOfMemoryError`` where torch is loaded (a command that never imported it
    cannot raise it); a class nothing raises otherwise."""
    torch = sys.modules.get("torch")
    return getattr(torch, "OutOfMemoryError", _NeverRaised)


class _NeverRaised(Exception):
    pass


def known_errors() -> tuple[type[BaseException], ...]:
    """The errors a command reports as one line: every :class:`~stdet.data.errors.StdetError`
    (bad input: a config key or value, a data file, a feature bank; a fault of the run: a
    non-finite loss, a full disk) and a missing file."""
    from .data.errors import StdetError

    return StdetError, FileNotFoundError


if __name__ == "__main__":
    sys.exit(main())
