"""stdet: spatio-temporal action detection on AVA, in one readable PyTorch package.

The public API, in the order a run uses it::

    import stdet
    stdet.data.ensure_mini_ava("data/mini-ava")                      # or real AVA (data_scripts/)
    cfg = stdet.config("slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb:mini",
                       "optim.lr=3.2", data_root="data/mini-ava")   # NAME[:mini] | config.json
    run = stdet.train(cfg, "work_dirs/slowonly_mini", seed=0)       # TrainResult: log, best, metrics
    result = stdet.test(cfg, run.best)                               # AVAEvalResult: map, per_class
    stdet.viz.training_curves(stdet.read_log(run.work_dir / "log.jsonl"))

``python -m stdet train|test|extract-lfb|eval|...`` is a thin layer over these functions, and
under torchrun they run one process per GPU. Names are imported on first use (``stdet.zoo``,
``stdet.train``, ...), so commands that need no torch, such as ``python -m stdet eval``, start
quickly.
"""
import os

from ._lazy import lazy_exports

# OpenMP threads that wait by sleeping, unless the user chose otherwise: spinning threads made a
# mini training three times slower on a machine busy with other work (the same time on an idle
# one). It takes effect when stdet is imported before torch (``python -m stdet``, scripts that
# import stdet first); the Makefile sets it for the book and the tests.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".zoo": ["zoo", "config=resolve"],
    ".configs": ["Config", "ConfigError"],
    ".engine.train": ["train", "TrainResult", "TrainingError", "mini_base_checkpoint"],
    ".engine.test": ["test"],
    ".engine.lfb": ["extract_lfb"],
    ".engine.logger": ["read_log"],
    ".data": ["data", "AVADataset", "AVADataError", "AVALayout", "CustomClasses", "FrameReadError",
              "MiniAVASpec", "ava_collate", "ensure_mini_ava", "generate_mini_ava",
              "load_proposals", "read_annotations", "read_excluded_timestamps", "read_label_map"],
    ".engine.checkpoint": ["convert_checkpoint", "init_backbone", "load_checkpoint", "read_checkpoint",
                           "save_checkpoint"],
    ".models": ["models", "build_backbone", "build_detector", "stage_shapes"],
    ".evaluation": ["evaluation", "AVAEvalResult", "evaluate"],
    ".viz": ["viz"],
    ".lfb": ["lfb"],
})
__all__ = [*__all__, "__version__"]
