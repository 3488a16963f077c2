"""3D rotary position embedding: the head dim is split t:h:w, each part rotates by its own axis."""
from __future__ import annotations

import torch


def rope_angles(positions: torch.Tensor, split: tuple[int, int, int], theta: float = 10000.0) -> torch.Tensor:
    """``positions`` L x 3 (t, h, w) -> angles L x (head_dim / 2)."""
    parts = []
    for axis, dim in enumerate(split):
        # 1 / theta^(2i/d), written as the release writes it: float32 rounding alike, which matters for
        # the far positions (query n at (n, n, n), n up to 1217 in landiff)
        inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim)
        parts.append(positions[:, axis:axis + 1].float() * inv_freq)
    return torch.cat(parts, dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x`` B x H x L x D; ``cos, sin`` L x D/2 (rotate-half convention)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)
