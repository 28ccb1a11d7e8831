"""Build a model from its config with ordinary constructors (no registry)."""
from __future__ import annotations

from torch import nn

from ..configs import BackboneConfig, ModelConfig
from .detector import ActionDetector
from .fbo import LFBHead
from .heads import ACRNHead, BBoxHeadAVA
from .roi_extractor import RoIExtractor3D
from .slowfast import SlowFast, SlowOnly

NO_NON_LOCAL = (0, 0, 0, 0)


def build_backbone(cfg: BackboneConfig) -> SlowOnly | SlowFast:
    if cfg.arch == "slowonly":
        return SlowOnly(cfg.depth, cfg.base_channels, non_local=cfg.non_local or NO_NON_LOCAL,
                        stage_blocks=cfg.stage_blocks, spatial_strides=cfg.spatial_strides)
    if cfg.arch == "slowfast":
        if cfg.non_local:
            raise ValueError("non-local blocks are only built into SlowOnly backbones")
        return SlowFast(cfg.depth, cfg.base_channels, resample_rate=cfg.resample_rate,
                        speed_ratio=cfg.speed_ratio, channel_ratio=cfg.channel_ratio,
                        fusion_kernel=cfg.fusion_kernel, stage_blocks=cfg.stage_blocks,
                        spatial_strides=cfg.spatial_strides)
    raise ValueError(f"backbone arch must be 'slowonly' or 'slowfast', got {cfg.arch!r}")


def build_detector(cfg: ModelConfig) -> ActionDetector:
    """Backbone, RoI extractor, optional shared head and BBoxHeadAVA for ``cfg``: the LFB head
    when the model has a feature bank (``cfg.lfb``), ACRN when ``cfg.head.shared_head`` says so.

    The classifier reads what the shared head gives: ACRN keeps the RoI channels, an LFB head
    concatenates the FBO's output to them (2048 + 512 for non-local, 2048 + 2048 for avg / max).
    """
    backbone = build_backbone(cfg.backbone)
    head_cfg = cfg.head
    channels = backbone.feature_channels                 # 2048, or 2048 + 256 for SlowFast
    roi_channels = channels * (2 if head_cfg.with_global else 1)
    extractor = RoIExtractor3D(head_cfg.roi_size, 1 / backbone.feature_stride, head_cfg.temporal_pool,
                               head_cfg.with_global)
    shared_head: nn.Module | None = None
    head_channels = roi_channels
    if cfg.lfb is not None:                              # cfg.shared_head == "lfb"
        lfb = cfg.lfb
        shared_head = LFBHead(roi_channels, lfb.fbo, lfb.window_seconds * lfb.max_per_second,
                              lfb.feature_channels, lfb.latent_channels, lfb.num_layers,
                              lfb.dropout)
        head_channels = shared_head.out_channels
    elif head_cfg.shared_head == "acrn":
        shared_head = ACRNHead(2 * roi_channels, roi_channels)
    head = BBoxHeadAVA(head_channels, head_cfg.num_classes, head_cfg.dropout, init=head_cfg.init)
    return ActionDetector(backbone, extractor, head, shared_head, num_rois=head_cfg.num_rois,
                          pos_iou=head_cfg.pos_iou, focal_alpha=head_cfg.focal_alpha,
                          focal_gamma=head_cfg.focal_gamma, topk=head_cfg.topk)
