"""stdet: spatio-temporal action detection on AVA, in one readable PyTorch package."""
from . import zoo
from .data import (AVADataset, AVALayout, AVADataError, CustomClasses, FrameReadError, MiniAVASpec, ava_collate,
                   generate_mini_ava, load_proposals, read_annotations, read_excluded_timestamps,
                   read_label_map)
from .engine.checkpoint import convert_checkpoint, load_checkpoint, save_checkpoint
from .models import build_backbone, build_detector

__version__ = "0.1.0"

__all__ = [
    "AVADataset", "AVADataError", "CustomClasses", "FrameReadError", "AVALayout", "MiniAVASpec",
    "ava_collate", "generate_mini_ava", "load_proposals", "read_annotations",
    "read_excluded_timestamps", "read_label_map", "__version__", "build_backbone", "build_detector",
    "convert_checkpoint", "load_checkpoint", "save_checkpoint", "zoo",
]
