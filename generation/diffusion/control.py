"""The control branch and the semantic upsampler: how tokens steer the backbone (ControlNet style).

- :class:`SemanticUpsampler`: the tokenizer's decoder features ``B x T x h x w x Cf`` (frames
  folded in pairs as the latent folds them, ``B F x st Cf x h x w``) -> a VQGAN-decoder-like
  stack (conv in, two mid res blocks, per level ``res_blocks + 1`` res blocks, a PixelShuffle 2x
  between levels, GroupNorm / SiLU / conv out) -> a zero-initialised 3x3 conv to the latent
  channels: ``B x F x C x 2^k h x 2^k w``, added to the noisy latent at the control branch's input.
- :class:`ControlBranch`: a copy of the backbone's embeddings and first ``control_layers`` blocks;
  block ``i``'s video states go through a zero-initialised ``Linear(width, width, bias=False)`` and
  are added to the backbone's video states after its block ``i``.
- :class:`PixelRefiner`: (``refine_channels`` > 0) three 3x3 convs over the clean frames the
  network predicts, the last zero-initialised, added to them: the DiT's linear head draws each
  8 x 8 x 4-pixel cell on its own, and its errors are cell-shaped; the convs see across cells.
- :class:`RendererModel`: backbone + (optional) control branch and upsampler. Freshly attached, the
  branch changes nothing (both zero inits); the backbone can be frozen (stage 2 trains the branch
  and the upsampler only, as the paper does).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import RendererConfig
from .dit import DiTTrunk, VideoDiT
from .latent import from_latent, pad_frames, to_latent
from .schedule import alphas_cumprod, from_x0


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, c // 4) if c >= 4 else 1, c, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class PixelShuffleUp(nn.Module):
    """2x up: conv to 4x the channels, then PixelShuffle."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, 4 * c, 3, padding=1)

    def forward(self, x):
        return F.pixel_shuffle(self.conv(x), 2)


class SemanticUpsampler(nn.Module):
    """Per frame: features ``N x Cin x h x w`` -> ``N x latent_channels x 2^k h x 2^k w`` (zero at
    initialisation), ``k = len(mult) - 1``. The release: ``channels`` 512, ``mult`` (0.25, 1),
    ``res_blocks`` 4, ``out`` 64, to 16 latent channels."""

    def __init__(self, in_channels: int, latent_channels: int, channels: int = 512,
                 mult: tuple[float, ...] = (0.25, 1.0), res_blocks: int = 4, out: int = 64):
        super().__init__()
        ch = [max(1, int(channels * m)) for m in mult]
        c = ch[-1]
        self.conv_in = nn.Conv2d(in_channels, c, 3, padding=1)
        self.mid = nn.Sequential(ResBlock(c, c), ResBlock(c, c))
        up = []
        for level in reversed(range(len(ch))):
            for _ in range(res_blocks + 1):
                up.append(ResBlock(c, ch[level]))
                c = ch[level]
            if level:
                up.append(PixelShuffleUp(c))
        self.up = nn.Sequential(*up)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, out, 3, padding=1)
        self.zero_conv = nn.Conv2d(out, latent_channels, 3, padding=1)
        nn.init.zeros_(self.zero_conv.weight)
        nn.init.zeros_(self.zero_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(self.mid(self.conv_in(x.to(self.conv_in.weight.dtype))))
        return self.zero_conv(self.conv_out(F.silu(self.norm_out(x))))


class ControlBranch(DiTTrunk):
    """``forward(latent_plus_semantic, t, text, text_mask)`` -> one residual ``B x L x width`` per
    layer (after its zero-initialised projection)."""

    def __init__(self, cfg: RendererConfig):
        super().__init__(cfg, cfg.control_layers)
        self.zero = nn.ModuleList(nn.Linear(cfg.width, cfg.width, bias=False) for _ in range(cfg.control_layers))
        for lin in self.zero:
            nn.init.zeros_(lin.weight)

    @classmethod
    def from_backbone(cls, backbone: VideoDiT) -> "ControlBranch":
        """A branch whose embeddings and blocks start as copies of the backbone's first layers."""
        branch = cls(backbone.cfg).to(next(backbone.parameters()).device)
        own = backbone.state_dict()
        missing, _ = branch.load_state_dict({k: v for k, v in own.items() if k in branch.state_dict()}, strict=False)
        assert all(k.startswith("zero.") for k in missing), missing
        return branch

    def forward(self, x, t, text, text_mask) -> list[torch.Tensor]:
        vid, txt, temb, (cos, sin, mask) = self.embed(x, t, text, text_mask)
        out = []
        for blk, zero in zip(self.blocks, self.zero):
            vid, txt = blk(vid, txt, temb, cos, sin, mask)
            out.append(zero(vid))
        return out


class PixelRefiner(nn.Module):
    """``x0`` latent ``B x F x C x h x w`` -> the same plus convs over its frames (``B T x 3 x H x W``).
    Freshly made it is the identity (last conv zero)."""

    def __init__(self, channels: int, space_to_depth: int, time_to_depth: int):
        super().__init__()
        self.s, self.st = space_to_depth, time_to_depth
        self.net = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(channels, 3, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        v = from_latent(x0, self.s, self.st)                       # B x T x H x W x 3
        B, T, H, W, _ = v.shape
        d = self.net(v.reshape(B * T, H, W, 3).permute(0, 3, 1, 2).to(self.net[0].weight.dtype))
        return x0 + to_latent(d.permute(0, 2, 3, 1).reshape(B, T, H, W, 3).to(x0.dtype), self.s, self.st)


class RendererModel(nn.Module):
    """Backbone, and after :meth:`attach_control` the control branch and semantic upsampler.

    ``forward(latent, t, text, text_mask, sem=None)`` -> the prediction ``cfg.prediction`` (what
    the schedulers read), ``B x F x C x h x w``. ``sem`` is :meth:`semantic` of the tokenizer's
    features (computed once per group: it does not depend on the timestep); without it, or without
    a branch, the backbone alone (text-conditioned video diffusion, stage 1). With
    ``cfg.parameterization == "x0"`` the network's output is the clean latent, converted here.
    """

    def __init__(self, cfg: RendererConfig, control: bool = False):
        super().__init__()
        self.cfg = cfg
        self.backbone = VideoDiT(cfg)
        self.control: ControlBranch | None = None
        self.upsampler: SemanticUpsampler | None = None
        self.refiner = (PixelRefiner(cfg.refine_channels, cfg.space_to_depth, cfg.time_to_depth)
                        if cfg.refine_channels else None)
        self.register_buffer("alpha_bar", alphas_cumprod(cfg), persistent=False)
        if control:
            self.attach_control()

    @property
    def has_control(self) -> bool:
        return self.control is not None

    def attach_control(self) -> None:
        c = self.cfg
        self.control = ControlBranch.from_backbone(self.backbone)
        dev = next(self.backbone.parameters()).device
        self.upsampler = SemanticUpsampler(c.time_to_depth * c.feature_dim, c.latent_channels, c.up_channels,
                                           c.up_mult, c.up_res_blocks, c.up_out).to(dev)

    def freeze_backbone(self, frozen: bool = True) -> None:
        self.backbone.requires_grad_(not frozen)

    def semantic(self, features: torch.Tensor) -> torch.Tensor:
        """Decoder features ``B x T x h x w x Cf`` -> the control input ``B x F x C x h' x w'``: frames
        folded ``time_to_depth`` at a time into channels (T padded), as the latent folds them."""
        st = self.cfg.time_to_depth
        x = pad_frames(features, st)
        B, T, h, w, Cf = x.shape
        x = x.view(B, T // st, st, h, w, Cf).permute(0, 1, 2, 5, 3, 4).reshape(B * T // st, st * Cf, h, w)
        x = self.upsampler(x)
        return x.view(B, T // st, *x.shape[1:])

    def forward(self, latent, t, text, text_mask, sem: torch.Tensor | None = None):
        residuals = None
        if self.control is not None and sem is not None:
            residuals = self.control(latent + sem.to(latent.dtype), t, text, text_mask)
        out = self.backbone(latent, t, text, text_mask, control=residuals)
        if self.refiner is not None:
            out = self.refiner(out)
        if self.cfg.parameterization == "x0":
            out = from_x0(out.float(), latent.float(), self.alpha_bar[t.long()], self.cfg.prediction)
        return out

    def n_params(self, trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable)
