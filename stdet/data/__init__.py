"""AVA data: annotation files, label maps, proposals, frames, transforms, the dataset, mini-AVA."""
from .annotations import (KeyframeBoxes, check_box, img_key, read_annotations,
                          read_excluded_timestamps, write_annotations)
from .dataset import AVADataset, ava_collate
from .errors import AVADataError, FrameReadError
from .frames import (AVA_FIRST_SECOND, FPS, RawFrames, VideoFile, clip_frame_indices,
                     keyframe_to_frame_index, open_frame_source, read_keyframe_clip)
from .layout import AVALayout
from .labels import (AVA_ACTIONS, AVA_EVALUATED_IDS, CustomClasses, action_group, ava_label_map,
                     read_label_map, write_label_map)
from .mini_ava import CLASS_GROUPS as MINI_AVA_CLASS_GROUPS
from .mini_ava import MiniAVASpec, generate_mini_ava
from .proposals import RestrictedUnpickler, load_proposals, restricted_load, save_proposals, select_proposals
from .transforms import test_transforms, train_transforms

__all__ = [
    "AVADataset", "AVALayout", "ava_collate", "AVADataError", "FrameReadError", "KeyframeBoxes", "check_box",
    "img_key", "read_annotations", "read_excluded_timestamps", "write_annotations", "FPS",
    "AVA_FIRST_SECOND", "RawFrames", "VideoFile", "clip_frame_indices", "keyframe_to_frame_index",
    "open_frame_source", "read_keyframe_clip", "AVA_ACTIONS", "AVA_EVALUATED_IDS", "CustomClasses",
    "action_group", "ava_label_map", "read_label_map", "write_label_map", "MINI_AVA_CLASS_GROUPS",
    "MiniAVASpec", "generate_mini_ava", "RestrictedUnpickler", "load_proposals", "restricted_load",
    "save_proposals", "select_proposals", "test_transforms", "train_transforms",
]
