from __future__ import annotations

import torch
import torch.nn as nn


class FeatureSpace(nn.Module):
    """``embed``: video ``B x T x H x W x 3`` in [-1, 1] -> features ``B x T x h x w x C``;
    ``render``: features -> video (only where the space can be inverted or is learned)."""

    patch: int
    can_render: bool = True
    trainable: bool = True

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def render(self, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot render features back to pixels")

    def check_video(self, video: torch.Tensor) -> None:
        if video.dim() != 5 or video.shape[-1] != 3:
            raise ValueError(f"expected video B x T x H x W x 3, got {tuple(video.shape)}")
        if video.shape[2] % self.patch or video.shape[3] % self.patch:
            raise ValueError(f"frame size {tuple(video.shape[2:4])} is not a multiple of the patch {self.patch}")
