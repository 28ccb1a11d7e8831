"""stdet: spatio-temporal action detection on AVA, in one readable PyTorch package.

Names are imported on first use (``stdet.zoo``, ``stdet.build_detector``, ...), so commands that
need no torch, such as ``python -m stdet eval``, start quickly.
"""
from ._lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".data": ["AVADataset", "AVADataError", "AVALayout", "CustomClasses", "FrameReadError",
              "MiniAVASpec", "ava_collate", "generate_mini_ava", "load_proposals", "read_annotations",
              "read_excluded_timestamps", "read_label_map"],
    ".engine.checkpoint": ["convert_checkpoint", "load_checkpoint", "save_checkpoint"],
    ".models": ["build_backbone", "build_detector"],
    ".zoo": ["zoo"],
    ".evaluation": ["evaluation"],
})
__all__ = [*__all__, "__version__"]
