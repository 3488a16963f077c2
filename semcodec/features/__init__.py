"""Feature spaces: what the query tokenizer sees (DESIGN.md §3).

Every feature space maps a video ``B x T x H x W x 3`` float in ``[-1, 1]`` (H, W multiples of
the patch) to a grid ``B x T x H/p x W/p x C`` (``embed``); those that can, map a grid back to
pixels (``render``).
"""
from __future__ import annotations

from ..presets import CodecConfig
from .backbone import HFViT, PretrainedBackbone, ViTBackbone, ViTConfig, load_backbone
from .base import FeatureSpace
from .conv import ConvFeatures
from .pixels import PixelPatches, patchify, unpatchify


def build_feature_space(cfg: CodecConfig, backbone=None) -> FeatureSpace:
    """The feature space ``cfg.features`` names. ``backbone`` (a local path or a loaded module) is
    the pretrained backbone of ``"backbone"`` features: given at load time, never in the config."""
    if cfg.features == "pixels":
        return PixelPatches(cfg.patch)
    if cfg.features == "conv":
        return ConvFeatures(cfg.patch, cfg.feature_dim, cfg.stem_channels, cfg.stem_blocks, cfg.head_blocks,
                            motion=cfg.pframe_warp, refine=cfg.refine_channels)
    if cfg.features == "backbone":
        return PretrainedBackbone(backbone, cfg.patch, cfg.feature_dim, cfg.backbone_fit)
    raise ValueError(f"unknown feature space '{cfg.features}' (known: pixels, conv, backbone)")


__all__ = ["FeatureSpace", "PixelPatches", "ConvFeatures", "PretrainedBackbone", "HFViT", "ViTBackbone", "ViTConfig",
           "load_backbone",
           "build_feature_space", "patchify", "unpatchify"]
