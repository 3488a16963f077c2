"""Raw pixel patches: an exact, parameter-free feature space."""
from __future__ import annotations

import torch
from einops import rearrange

from .base import FeatureSpace


def patchify(video: torch.Tensor, p: int) -> torch.Tensor:
    """``B x T x H x W x 3`` -> ``B x T x H/p x W/p x (p*p*3)``."""
    return rearrange(video, "b t (h p) (w q) c -> b t h w (p q c)", p=p, q=p)


def unpatchify(feats: torch.Tensor, p: int) -> torch.Tensor:
    """Exact inverse of :func:`patchify`."""
    return rearrange(feats, "b t h w (p q c) -> b t (h p) (w q) c", p=p, q=p)


class PixelPatches(FeatureSpace):
    trainable = False

    def __init__(self, patch: int):
        super().__init__()
        self.patch = patch

    def embed(self, video):
        self.check_video(video)
        return patchify(video, self.patch)

    def render(self, feats):
        return unpatchify(feats, self.patch)
