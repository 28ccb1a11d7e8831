"""Models: tensors in, per-RoI action scores out (backbones, RoIAlign, RoI heads, the detector)."""
from .assign import assign_labels, box_iou, sample_rois
from .build import build_backbone, build_detector
from .complexity import model_complexity, saved_bytes, training_memory
from .detector import ActionDetector, boxes_to_rois
from .fbo import FBOAvg, FBOMax, FBONonLocal, LFBHead, NonLocalLayer
from .heads import ACRNHead, BBoxHeadAVA
from .losses import action_loss, recall_precision
from .non_local import NonLocal3d
from .resnet3d import Bottleneck3d, ResNet3d, count_parameters
from .roi_align import RoIAlign, roi_align
from .roi_extractor import RoIExtractor3D
from .shapes import stage_shapes
from .slowfast import SlowFast, SlowOnly, temporal_subsample

__all__ = [
    "ACRNHead", "ActionDetector", "BBoxHeadAVA", "Bottleneck3d", "FBOAvg", "FBOMax", "FBONonLocal",
    "LFBHead", "NonLocal3d", "NonLocalLayer", "ResNet3d",
    "RoIAlign", "RoIExtractor3D", "SlowFast", "SlowOnly", "action_loss", "assign_labels",
    "box_iou", "boxes_to_rois", "build_backbone", "build_detector", "count_parameters", "model_complexity",
    "saved_bytes", "training_memory",
    "recall_precision", "roi_align", "sample_rois", "stage_shapes", "temporal_subsample",
]
