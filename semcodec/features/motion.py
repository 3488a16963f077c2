"""Motion between frames: block-matching flow (what the encoder is told) and backward warping with
a blend (how the decoder draws a P-frame from the frame before it).

Flows are ``... x 2`` (x, y) in pixels, backward: the place p of frame t comes from p + flow of
frame t-1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``img`` ``B x H x W x C`` sampled at each place plus ``flow`` (``B x H x W x 2``, x and y in
    pixels; bilinear, borders repeated): backward warping."""
    B, H, W, _ = img.shape
    ys, xs = torch.meshgrid(torch.arange(H, device=img.device, dtype=img.dtype),
                            torch.arange(W, device=img.device, dtype=img.dtype), indexing="ij")
    gx = (2 * (xs + 0.5 + flow[..., 0]) / W) - 1
    gy = (2 * (ys + 0.5 + flow[..., 1]) / H) - 1
    out = F.grid_sample(img.permute(0, 3, 1, 2), torch.stack([gx, gy], -1), mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def compensate(rgb: torch.Tensor, flow: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Motion-compensated frames: ``out[0] = rgb[0]``, ``out[t] = weight[t] * warp(out[t-1],
    flow[t]) + (1 - weight[t]) * rgb[t]``; ``rgb`` ``B x T x H x W x 3``, ``flow`` ``... x 2``,
    ``weight`` ``... x 1`` in [0, 1]."""
    out = [rgb[:, 0]]
    for t in range(1, rgb.shape[1]):
        out.append(weight[:, t] * warp(out[-1], flow[:, t]) + (1 - weight[:, t]) * rgb[:, t])
    return torch.stack(out, 1)


def block_flow(video: torch.Tensor, block: int = 4, radius: int = 4, still_bias: float = 0.02) -> torch.Tensor:
    """Whole-pixel block matching: ``video`` ``B x T x H x W x 3`` in [-1, 1] (H, W multiples of
    ``block``) -> ``B x T x H/block x W/block x 2``: for each block of frame t the shift within
    ``radius`` whose frame t-1 pixels match it best (mean absolute difference, plus
    ``still_bias`` per pixel of shift so that flat places stay still); frame 0 is zeros."""
    B, T, H, W, _ = video.shape
    out = video.new_zeros(B, T, H // block, W // block, 2, dtype=torch.float32)
    if T == 1:
        return out
    cur = video[:, 1:].reshape(-1, H, W, 3).permute(0, 3, 1, 2).float()
    prev = F.pad(video[:, :-1].reshape(-1, H, W, 3).permute(0, 3, 1, 2).float(), (radius,) * 4, mode="replicate")
    shifts = [(dx, dy) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    cost = torch.stack([F.avg_pool2d((cur - prev[:, :, radius + dy:radius + dy + H, radius + dx:radius + dx + W])
                                     .abs().mean(1, keepdim=True), block)[:, 0] + still_bias * (abs(dx) + abs(dy))
                        for dx, dy in shifts], -1)
    best = torch.tensor(shifts, dtype=torch.float32, device=video.device)[cost.argmin(-1)]
    out[:, 1:] = best.reshape(B, T - 1, H // block, W // block, 2)
    return out


def moving_flow(flow: torch.Tensor, lattice: tuple[int, int]) -> torch.Tensor:
    """Block flows ``B x T x h x w x 2`` -> the mean flow of the moving blocks (non-zero flow) in
    each part of a ``lattice`` (rows x cols) over the frame, zero where nothing moves."""
    B, T = flow.shape[:2]
    f = flow.flatten(0, 1).permute(0, 3, 1, 2)
    moving = (f.abs().sum(1, keepdim=True) > 0).float()
    mean = F.adaptive_avg_pool2d(f * moving, lattice) / F.adaptive_avg_pool2d(moving, lattice).clamp(min=1e-6)
    return mean.permute(0, 2, 3, 1).reshape(B, T, *lattice, 2)
