"""A learned convolutional stem and head, trained end to end with the tokenizer.

Stem: pixel-unshuffle by 4, then residual stages that halve the size down to the patch
(16 -> two stride-2 stages), ending at ``feature_dim`` channels: a coarse grid whose short
sequence keeps attention cheap on a CPU. Head: the mirror image, ending in pixel-shuffle.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .base import FeatureSpace
from .motion import compensate


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.conv2.zero_init = True          # ConvFeatures' variance-preserving init leaves it at zero

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def res_stack(ch: int, n: int) -> nn.Sequential:
    """``n`` residual blocks; each starts as the identity (zero last conv), so a stack can be
    deepened from a trained model's weights without changing its output."""
    return nn.Sequential(*(ResBlock(ch) for _ in range(n)))


class ConvFeatures(FeatureSpace):
    def __init__(self, patch: int, feature_dim: int, channels: tuple[int, ...], stem_blocks: int = 1,
                 head_blocks: int = 1, motion: bool = False, refine: int = 0):
        super().__init__()
        stages = int(math.log2(patch // 4))
        if patch < 4 or 4 * 2 ** stages != patch or len(channels) != stages:
            raise ValueError(f"conv features need patch = 4 * 2^k and k stem widths, got patch {patch}, {channels}")
        self.patch = patch
        widths = list(channels) + [feature_dim]
        stem = [nn.PixelUnshuffle(4), nn.Conv2d(48, widths[0], 3, padding=1), res_stack(widths[0], stem_blocks)]
        for a, b in zip(widths[:-1], widths[1:]):
            stem += [nn.Conv2d(a, b, 4, stride=2, padding=1)] + ([res_stack(b, stem_blocks)] if b != feature_dim else [])
        self.stem = nn.Sequential(*stem)
        head = []      # no residual stage at the grid itself: the transformer is the work there
        for a, b in zip(widths[::-1][:-1], widths[::-1][1:]):
            head += [nn.Conv2d(a, 4 * b, 3, padding=1), nn.PixelShuffle(2), res_stack(b, head_blocks)]
        head += [nn.SiLU(), nn.Conv2d(widths[0], 48, 3, padding=1), nn.PixelShuffle(4)]
        self.head = nn.Sequential(*head)
        # a full-resolution residual stage (``CodecConfig.refine_channels``): the head's pixel-shuffle
        # draws each 4 x 4 block from one place, so its picture is blocky; 3 x 3 convs at full size
        # see across the blocks. Its last conv starts at zero: a model grown from one without it
        # starts out drawing the same picture
        self.refine = nn.Sequential(nn.Conv2d(3, refine, 3, padding=1), res_stack(refine, 2), nn.SiLU(),
                                    nn.Conv2d(refine, 3, 3, padding=1)) if refine else None
        if refine:
            self.refine[-1].zero_init = True
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)
        # motion compensation (``CodecConfig.pframe_warp``): from the head's last stage (a quarter of
        # the frame size), a flow (x, y in output pixels) and a blend logit per place. Zero weights:
        # no motion, and a small blend (sigmoid(-2)), so a model without it starts out the same
        self.motion = nn.Conv2d(widths[0], 3, 3, padding=1) if motion else None
        # variance-preserving init: PyTorch's default shrinks the signal ~1/sqrt(3) per conv, and
        # through the head that leaves a near-zero picture that takes ~1000 steps to grow. Built on
        # the meta device (a checkpoint being loaded) there is nothing to initialise, and normal_
        # on meta tensors would import torch._dynamo (seconds)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d) and not getattr(mod, "zero_init", False) and not mod.weight.is_meta:
                nn.init.kaiming_normal_(mod.weight, nonlinearity="linear")
                nn.init.zeros_(mod.bias)
        if self.motion is not None and not self.motion.weight.is_meta:
            nn.init.zeros_(self.motion.weight)
            with torch.no_grad():
                self.motion.bias.copy_(torch.tensor([0.0, 0.0, -2.0]))

        self._register_load_state_dict_pre_hook(self._upgrade_keys)

    def _upgrade_keys(self, state, prefix, *args):
        # checkpoints from before the stacks held one ResBlock per stage: "stem.2.conv1.w" is now
        # "stem.2.0.conv1.w"
        for key in [k for k in state if k.startswith(prefix)]:
            parts = key[len(prefix):].split(".")
            if len(parts) == 4 and parts[0] in ("stem", "head") and parts[2].startswith("conv"):
                state[prefix + ".".join(parts[:2] + ["0"] + parts[2:])] = state.pop(key)

    def embed(self, video):
        self.check_video(video)
        B = video.shape[0]
        x = self.stem(rearrange(video, "b t h w c -> (b t) c h w"))
        return rearrange(x, "(b t) c h w -> b t h w c", b=B)

    def render(self, feats, flow=None, with_flow: bool = False):
        """Features ``B x T x h x w x C`` of a group (frame 0 its IFrame) -> ``B x T x H x W x 3``.
        With motion compensation, frame t is frame t-1's picture moved by a flow, blended with the
        frame's own picture by a predicted weight. The flow is ``flow`` (``B x T x r x c x 2``,
        pixels, on any lattice: the PFrame tokens' motion) spread over the frame, plus the head's
        correction. ``with_flow``: also return that flow at a quarter of the frame size,
        ``B x T x H/4 x W/4 x 2`` (None without motion compensation)."""
        B, T = feats.shape[:2]
        # the head's last three layers (SiLU, conv, pixel-shuffle) turn its last stage into pixels
        x = self.head[:-3](rearrange(feats, "b t h w c -> (b t) c h w"))
        rgb = self.head[-3:](x)
        if self.refine is not None:
            rgb = rgb + self.refine(rgb)
        rgb = rearrange(rgb, "(b t) c h w -> b t h w c", b=B)
        if self.motion is None or T == 1:
            return (rgb, None) if with_flow else rgb
        low = self.motion(x).float()
        if flow is not None:
            spread = F.interpolate(rearrange(flow.float(), "b t r c k -> (b t) k r c"), size=low.shape[2:],
                                   mode="bilinear", align_corners=False)
            low = torch.cat([low[:, :2] + spread, low[:, 2:]], 1)
        scale = rgb.shape[2] // x.shape[2]
        m = rearrange(F.interpolate(low, scale_factor=scale, mode="bilinear", align_corners=False),
                      "(b t) c h w -> b t h w c", b=B)
        out = compensate(rgb.float(), m[..., :2], torch.sigmoid(m[..., 2:])).to(rgb.dtype)
        return (out, rearrange(low[:, :2], "(b t) c h w -> b t h w c", b=B)) if with_flow else out
