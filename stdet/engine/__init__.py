"""Loops and their plumbing: checkpoints (training, testing and LFB extraction build on these)."""
from .checkpoint import (LoadReport, convert_checkpoint, convert_state_dict, load_checkpoint,
                         load_state_dict_file, read_checkpoint, save_checkpoint)

__all__ = ["LoadReport", "convert_checkpoint", "convert_state_dict", "load_checkpoint",
           "load_state_dict_file", "read_checkpoint", "save_checkpoint"]
