"""The pixel latent: a lossless, weight-free stand-in for a video VAE.

No video VAE weights exist offline, so the renderer diffuses pixels. To keep the DiT's token count
what a VAE would give, the frames are folded into cells (space-to-depth, like the 8x spatial
reduction of CogVideoX's VAE, and time-to-depth): a group of ``T x H x W x 3`` pixels becomes
``F x C x h x w`` with ``F = ceil(T / st)``, ``C = 3 st s^2``, ``h = H / s``, ``w = W / s``.
Decoding is the exact inverse, so nothing is lost and nothing blurs.

Layouts: videos ``B x T x H x W x 3`` float in [-1, 1] (semcodec's); latents ``B x F x C x h x w``
(diffusers' CogVideoX layout).
"""
from __future__ import annotations

import torch
from einops import rearrange


def pad_frames(x: torch.Tensor, multiple: int, dim: int = 1) -> torch.Tensor:
    """Pad ``dim`` to a multiple by repeating the last frame (as semcodec pads a short group)."""
    n = x.shape[dim]
    extra = -n % multiple
    if not extra:
        return x
    last = x.narrow(dim, n - 1, 1)
    return torch.cat([x, last.expand(*[extra if d == dim else -1 for d in range(x.dim())])], dim=dim)


def to_latent(video: torch.Tensor, s: int, st: int) -> torch.Tensor:
    """``B x T x H x W x 3`` -> ``B x F x (st s s 3) x H/s x W/s`` (T padded to a multiple of st)."""
    video = pad_frames(video, st)
    return rearrange(video, "b (f pt) (h ph) (w pw) c -> b f (pt ph pw c) h w", pt=st, ph=s, pw=s)


def from_latent(latent: torch.Tensor, s: int, st: int, frames: int | None = None) -> torch.Tensor:
    """Inverse of :func:`to_latent`: ``B x F x C x h x w`` -> ``B x frames x H x W x 3``."""
    video = rearrange(latent, "b f (pt ph pw c) h w -> b (f pt) (h ph) (w pw) c", pt=st, ph=s, pw=s)
    return video if frames is None else video[:, :frames]
