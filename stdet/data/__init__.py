"""AVA data: annotation files, label maps, proposals, frames, transforms, the dataset, mini-AVA.

Names are imported on first use, so reading label maps or annotations does not import torch.
"""
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".annotations": ["KeyframeBoxes", "check_box", "img_key", "read_annotations",
                     "read_excluded_timestamps", "write_annotations"],
    ".dataset": ["AVADataset", "ava_collate"],
    ".errors": ["AVADataError", "FrameReadError"],
    ".frames": ["AVA_FIRST_SECOND", "FPS", "RawFrames", "VideoFile", "clip_frame_indices",
                "keyframe_to_frame_index", "open_frame_source", "read_keyframe_clip"],
    ".layout": ["AVALayout"],
    ".labels": ["AVA_ACTIONS", "AVA_EVALUATED_IDS", "CustomClasses", "action_group", "ava_label_map",
                "read_label_map", "write_label_map"],
    ".mini_ava": ["MiniAVASpec", "ensure_mini_ava", "generate_mini_ava",
                  "MINI_AVA_CLASS_GROUPS=CLASS_GROUPS"],
    ".processes": ["in_jupyter_kernel", "worker_context"],
    ".probes": ["probe_table"],
    ".proposals": ["RestrictedUnpickler", "load_proposals", "restricted_load", "save_proposals",
                   "select_proposals"],
    ".transforms": ["KINETICS_MEAN", "KINETICS_STD", "test_transforms", "train_transforms"],
})
