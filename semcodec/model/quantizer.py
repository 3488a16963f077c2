"""Vector quantizers with usage counters and dead-code re-seeding: cosine (the paper, the default)
and Euclidean with the rotation trick (the authors' release). Both hold ``codebook`` (K x d) and
``usage`` (K), so training code treats them alike; ``make_quantizer(config)`` picks one."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels import cosine_vq

from .init import randn


class CosineQuantizer(nn.Module):
    """Codebook ``K x d``; inputs and codes are L2-normalised, nearest by cosine similarity.

    ``forward(z)``: ``z`` ... x d -> ``(zq, indices, commit_loss)`` where ``zq`` (unit vectors,
    straight-through gradient to ``z``) has the shape of ``z`` and ``indices`` its leading shape.
    ``commit_loss`` = ||sg(q) - z||^2 (commitment) + ||q - sg(z)||^2 (codebook), on normalised vectors.
    """

    # True: the encoder's output passes through unquantized (as_code(z), ids 0, no loss): the
    # autoencoder phase of TrainConfig.continuous_steps. Never saved; training sets it per step
    bypass = False

    def __init__(self, codebook_size: int, dim: int, usage_decay: float = 0.99, backend: str = "auto"):
        super().__init__()
        codes = randn(codebook_size, dim)
        self.codebook = nn.Parameter(codes if codes.is_meta else F.normalize(codes, dim=-1))
        self.register_buffer("usage", torch.zeros(codebook_size))       # EMA of code counts per batch
        self.usage_decay, self.backend = usage_decay, backend

    @property
    def size(self) -> int:
        return self.codebook.shape[0]

    def normalized_codebook(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1)

    def passed_through(self, z: torch.Tensor):
        """``forward``'s result while ``bypass`` is set."""
        return (self.as_code(z.float()).to(z.dtype), torch.zeros(z.shape[:-1], dtype=torch.long, device=z.device),
                z.new_zeros((), dtype=torch.float32))

    def forward(self, z: torch.Tensor):
        if self.bypass:
            return self.passed_through(z)
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

    def as_code(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder outputs as codebook rows (unit vectors here)."""
        return F.normalize(z, dim=-1)

    @torch.no_grad()
    def init_from(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Data-seeded initialisation: codes = random (normalised) encoder outputs (N x d, N >= 1)."""
        z = self.as_code(z.reshape(-1, z.shape[-1]).float())
        pick = torch.randint(0, z.shape[0], (self.size,), generator=generator, device="cpu").to(z.device)
        noise = 0.01 * torch.randn(self.size, z.shape[1], generator=generator, device="cpu").to(z.device)
        self.codebook.copy_(self.as_code(z[pick] + noise))
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
        z = self.as_code(z.reshape(-1, z.shape[-1]).float())
        pick = torch.randint(0, z.shape[0], (dead.numel(),), generator=generator, device="cpu").to(z.device)
        noise = 0.01 * torch.randn(dead.numel(), z.shape[1], generator=generator, device="cpu").to(z.device)
        self.codebook[dead] = self.as_code(z[pick] + noise).to(self.codebook.dtype)
        self.usage[dead] = self.usage.mean()
        return int(dead.numel())

    @torch.no_grad()
    def perplexity(self) -> float:
        p = self.usage / self.usage.sum().clamp(min=1e-12)
        return float(torch.exp(-(p * (p + 1e-12).log()).sum()))


class EuclideanQuantizer(CosineQuantizer):
    """Codebook ``K x d`` used as is: nearest code by Euclidean distance (the authors' release,
    ``vector_quantize_pytorch.VectorQuantize`` with its defaults).

    ``forward(z)`` -> ``(zq, indices, commit_loss)`` as :class:`CosineQuantizer`, on raw vectors;
    in training the gradient reaches ``z`` by the rotation trick (Fifty et al. 2024: ``zq`` is
    ``z`` rotated onto its code and rescaled, the rotation and scale held constant), so the
    encoder sees how its output sits relative to the code, not a plain copy of the code's
    gradient. The release updates its codebook by EMA; here the codebook term of
    ``commit_loss`` trains it, as for the cosine quantizer. Inference is the same either way.
    """

    def __init__(self, codebook_size: int, dim: int, usage_decay: float = 0.99):
        super().__init__(codebook_size, dim, usage_decay)
        if not self.codebook.is_meta:
            with torch.no_grad():
                self.codebook.copy_(torch.randn(codebook_size, dim))

    def as_code(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def normalized_codebook(self) -> torch.Tensor:
        return self.codebook

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """``N x d`` float32 -> ``N`` ids of the nearest codes (squared distances written as the
        release writes them, so ties break alike)."""
        cb = self.codebook.float()
        d2 = (flat * flat).sum(-1)[:, None] + (cb * cb).sum(-1)[None, :] + (flat @ cb.t()) * -2
        return d2.argmin(-1)

    def forward(self, z: torch.Tensor):
        if self.bypass:
            return self.passed_through(z)
        shape = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1]).float()
        with torch.no_grad():
            idx = self.nearest(flat)
        q = self.codebook[idx].float()                      # differentiable w.r.t. the codebook
        commit = F.mse_loss(flat, q.detach()) + F.mse_loss(q, flat.detach())
        zq = rotate_onto(flat, q.detach()) if self.training else q.detach()
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(idx, minlength=self.size).float()
                self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        return zq.reshape(*shape, -1).to(z.dtype), idx.reshape(shape), commit


def rotate_onto(e: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The rotation trick: ``N x d`` vectors ``e`` -> their codes ``q`` in value, with the gradient
    of ``e`` passed through the rotation taking ``e``'s direction to ``q``'s and the ratio of the
    norms (both held constant): ``R e * |q| / |e|`` with ``R = I - 2 w w^T + 2 q^ u^T``,
    ``u = e / |e|``, ``q^ = q / |q|``, ``w = (u + q^) / |u + q^|``."""
    ne, nq = e.norm(dim=-1, keepdim=True), q.norm(dim=-1, keepdim=True)
    u, qh = (e / ne.clamp(min=eps)).detach(), q / nq.clamp(min=eps)
    w = F.normalize(u + qh, dim=-1, eps=eps).detach()
    rot = e - 2 * (e * w).sum(-1, keepdim=True) * w + 2 * (e * u).sum(-1, keepdim=True) * qh
    return rot * (nq / ne.clamp(min=eps)).detach()


def make_quantizer(config) -> CosineQuantizer:
    """The quantizer ``config.quantizer`` names (``"cosine"`` or ``"euclidean"``)."""
    if config.quantizer == "euclidean":
        return EuclideanQuantizer(config.codebook_size, config.codebook_dim)
    return CosineQuantizer(config.codebook_size, config.codebook_dim)
