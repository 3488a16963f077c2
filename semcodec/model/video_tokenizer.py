"""Video <-> tokens for one group: a feature space around the semantic tokenizer."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..features import build_feature_space
from ..presets import CodecConfig
from .tokenizer import SemanticTokenizer


class VideoTokenizer(nn.Module):
    """``features`` (stem / head or a fixed space) + ``tokenizer`` (:class:`SemanticTokenizer`).
    ``backbone``: the local pretrained backbone of ``features="backbone"`` (see
    :mod:`semcodec.features.backbone`).

    ``encode(video)``: ``B x T x H x W x 3`` float in [-1, 1] (T <= group, H and W multiples of
    the patch) -> ``B x N`` int64 token ids. ``decode(indices, size)``: -> ``B x T x H x W x 3``
    in [-1, 1] (clamped). ``forward(video)`` -> dict of losses and the reconstruction.
    """

    def __init__(self, config: CodecConfig, backbone=None):
        super().__init__()
        self.config = config
        self.features = build_feature_space(config, backbone)
        self.tokenizer = SemanticTokenizer(config)

    def grid_for(self, size: tuple[int, int]) -> tuple[int, int]:
        p = self.config.patch
        return size[0] // p, size[1] // p

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(self.features.embed(video))

    def decode(self, indices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        feats = self.tokenizer.decode(indices, self.grid_for(size))
        return self.features.render(feats).clamp(-1, 1)

    def forward(self, video: torch.Tensor) -> dict:
        feats = self.features.embed(video)
        out = self.tokenizer(feats)
        if self.features.can_render and self.features.trainable:
            # end to end: the loss is on pixels, through the learned head
            recon = self.features.render(out["recon"])
            out["video"] = recon
            out["recon_loss"] = torch.nn.functional.mse_loss(recon.float(), video.float())
        elif self.features.can_render:
            out["video"] = self.features.render(out["recon"])
        return out
