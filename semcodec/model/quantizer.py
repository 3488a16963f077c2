"""Cosine vector quantizer with usage counters and dead-code re-seeding."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels import cosine_vq


class CosineQuantizer(nn.Module):
    """Codebook ``K x d``; inputs and codes are L2-normalised, nearest by cosine similarity.

    ``forward(z)``: ``z`` ... x d -> ``(zq, indices, commit_loss)`` where ``zq`` (unit vectors,
    straight-through gradient to ``z``) has the shape of ``z`` and ``indices`` its leading shape.
    ``commit_loss`` = ||sg(q) - z||^2 (commitment) + ||q - sg(z)||^2 (codebook), on normalised vectors.
    """

    def __init__(self, codebook_size: int, dim: int, usage_decay: float = 0.99, backend: str = "auto"):
        super().__init__()
        self.codebook = nn.Parameter(F.normalize(torch.randn(codebook_size, dim), dim=-1))
        self.register_buffer("usage", torch.zeros(codebook_size))       # EMA of code counts per batch
        self.usage_decay, self.backend = usage_decay, backend

    @property
    def size(self) -> int:
        return self.codebook.shape[0]

    def normalized_codebook(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1)

    def forward(self, z: torch.Tensor):
        shape = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1])
        idx, _ = cosine_vq(flat, self.codebook, backend=self.backend)
        zn = F.normalize(flat.float(), dim=-1)
        q = self.normalized_codebook()[idx].float()          # differentiable w.r.t. the codebook
        commit = F.mse_loss(zn, q.detach()) + F.mse_loss(q, zn.detach())
        zq = zn + (q - zn).detach()
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(idx, minlength=self.size).float()
                self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        return zq.reshape(*shape, -1).to(z.dtype), idx.reshape(shape), commit

    @torch.no_grad()
    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """``indices`` any shape -> unit code vectors of shape ``indices.shape + (d,)``."""
        return self.normalized_codebook()[indices]

    @torch.no_grad()
    def init_from(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Data-seeded initialisation: codes = random normalised encoder outputs (N x d, N >= 1)."""
        z = F.normalize(z.reshape(-1, z.shape[-1]).float(), dim=-1)
        pick = torch.randint(0, z.shape[0], (self.size,), generator=generator, device="cpu").to(z.device)
        noise = 0.01 * torch.randn(self.size, z.shape[1], generator=generator, device="cpu").to(z.device)
        self.codebook.copy_(F.normalize(z[pick] + noise, dim=-1))
        self.usage.fill_(1.0 / self.size)

    @torch.no_grad()
    def reseed_dead_codes(self, z: torch.Tensor, threshold: float = 1e-3,
                          generator: torch.Generator | None = None) -> int:
        """Replace codes whose usage EMA is below ``threshold`` x mean usage with random recent
        encoder outputs ``z`` (N x d). Returns how many were re-seeded. Deterministic given the
        generator, so every DDP rank that passes the same ``z`` and seed gets the same codebook."""
        dead = (self.usage < threshold * self.usage.mean().clamp(min=1e-12)).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        z = F.normalize(z.reshape(-1, z.shape[-1]).float(), dim=-1)
        pick = torch.randint(0, z.shape[0], (dead.numel(),), generator=generator, device="cpu").to(z.device)
        noise = 0.01 * torch.randn(dead.numel(), z.shape[1], generator=generator, device="cpu").to(z.device)
        self.codebook[dead] = F.normalize(z[pick] + noise, dim=-1).to(self.codebook.dtype)
        self.usage[dead] = self.usage.mean()
        return int(dead.numel())

    @torch.no_grad()
    def perplexity(self) -> float:
        p = self.usage / self.usage.sum().clamp(min=1e-12)
        return float(torch.exp(-(p * (p + 1e-12).log()).sum()))
