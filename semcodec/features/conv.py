"""A learned convolutional stem and head, trained end to end with the tokenizer.

Stem: pixel-unshuffle by 4, then residual stages that halve the size down to the patch
(16 -> two stride-2 stages), ending at ``feature_dim`` channels: a coarse grid whose short
sequence keeps attention cheap on a CPU. Head: the mirror image, ending in pixel-shuffle.
"""
from __future__ import annotations

import math

import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .base import FeatureSpace


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class ConvFeatures(FeatureSpace):
    def __init__(self, patch: int, feature_dim: int, channels: tuple[int, ...]):
        super().__init__()
        stages = int(math.log2(patch // 4))
        if patch < 4 or 4 * 2 ** stages != patch or len(channels) != stages:
            raise ValueError(f"conv features need patch = 4 * 2^k and k stem widths, got patch {patch}, {channels}")
        self.patch = patch
        widths = list(channels) + [feature_dim]
        stem = [nn.PixelUnshuffle(4), nn.Conv2d(48, widths[0], 3, padding=1), ResBlock(widths[0])]
        for a, b in zip(widths[:-1], widths[1:]):
            stem += [nn.Conv2d(a, b, 4, stride=2, padding=1)] + ([ResBlock(b)] if b != feature_dim else [])
        self.stem = nn.Sequential(*stem)
        head = []      # no residual stage at the grid itself: the transformer is the work there
        for a, b in zip(widths[::-1][:-1], widths[::-1][1:]):
            head += [nn.Conv2d(a, 4 * b, 3, padding=1), nn.PixelShuffle(2), ResBlock(b)]
        head += [nn.SiLU(), nn.Conv2d(widths[0], 48, 3, padding=1), nn.PixelShuffle(4)]
        self.head = nn.Sequential(*head)
        # variance-preserving init: PyTorch's default shrinks the signal ~1/sqrt(3) per conv, and
        # through the head that leaves a near-zero picture that takes ~1000 steps to grow
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d) and mod.weight.abs().sum() > 0:
                nn.init.kaiming_normal_(mod.weight, nonlinearity="linear")
                nn.init.zeros_(mod.bias)

    def embed(self, video):
        self.check_video(video)
        B = video.shape[0]
        x = self.stem(rearrange(video, "b t h w c -> (b t) c h w"))
        return rearrange(x, "(b t) c h w -> b t h w c", b=B)

    def render(self, feats):
        B = feats.shape[0]
        x = self.head(rearrange(feats, "b t h w c -> (b t) c h w"))
        return rearrange(x, "(b t) c h w -> b t h w c", b=B)
