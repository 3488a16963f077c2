"""Picture quality as the project measures it (the quality bar of the training issue).

Frames are ``T x H x W x 3`` uint8. ``at_short_side`` area-downsamples to a short side of 128 px;
PSNR is RGB PSNR per frame (peak 255), averaged over frames; SSIM is the Gaussian-window SSIM of
Wang et al. (11 x 11, sigma 1.5, K1 0.01, K2 0.03) on each RGB channel, averaged.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def at_short_side(frames: np.ndarray, short: int = 128) -> torch.Tensor:
    """``T x H x W x 3`` uint8 -> ``T x 3 x h x w`` float in [0, 255], area-downsampled."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    if min(h, w) <= short:
        return x
    k = short / min(h, w)
    return F.interpolate(x, size=(round(h * k), round(w * k)), mode="area")


def psnr_per_frame(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    mse = ((a.float() - b.float()) ** 2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
    return (10 * torch.log10(255.0 ** 2 / mse)).numpy()


def ssim_per_frame(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    g = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    g = (g / g.sum())
    win = (g[:, None] * g[None, :]).expand(3, 1, 11, 11)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda x: F.conv2d(x, win, groups=3)
    out = []
    for i in range(0, len(a), 32):
        x, y = a[i:i + 32].float(), b[i:i + 32].float()
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
        out.append(s.mean(dim=(1, 2, 3)))
    return torch.cat(out).numpy()


def compare(src: np.ndarray, dec: np.ndarray, short: int | None = 128) -> dict:
    """PSNR / SSIM of decoded frames against the source, at ``short`` px (None: source size)."""
    if len(src) != len(dec):
        raise ValueError(f"frame counts differ: {len(src)} vs {len(dec)}")
    a = at_short_side(src, short) if short else torch.from_numpy(src).permute(0, 3, 1, 2).float()
    b = at_short_side(dec, short) if short else torch.from_numpy(dec).permute(0, 3, 1, 2).float()
    return {"psnr": float(np.mean(psnr_per_frame(a, b))), "ssim": float(np.mean(ssim_per_frame(a, b)))}
