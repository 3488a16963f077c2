"""Cosine vector quantization: nearest codebook row by cosine similarity.

``cosine_vq(x, codebook) -> (indices, quantized)``: ``x`` N x d, ``codebook`` K x d (any float
dtype); ``indices`` N int64, ``quantized`` N x d = the L2-normalised chosen rows (dtype of x).
Ties go to the lowest index. Backward is straight-through: the gradient of ``quantized`` flows
to ``x`` unchanged; the codebook gets none here (the quantizer's losses train it).

Backends: ``torch`` (chunked over N, so the N x K score matrix never exists whole) and
``triton`` (one fused pass per row tile, see :mod:`kernels.cosine_vq_triton`); ``auto`` picks
Triton for CUDA tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK_ELEMS = 1 << 22     # scores per chunk in the torch path (16 MiB in fp32)


def cosine_vq_torch(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xn = F.normalize(x.float(), dim=-1)
    cn = F.normalize(codebook.float(), dim=-1)
    step = max(1, _CHUNK_ELEMS // max(1, cn.shape[0]))
    idx = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for s in range(0, x.shape[0], step):
        idx[s:s + step] = (xn[s:s + step] @ cn.T).argmax(dim=1)   # argmax returns the first max
    return idx, cn[idx].to(x.dtype)


def cosine_vq_naive(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Full N x K score matrix at once: the memory baseline of ``bench.kernels``."""
    xn, cn = F.normalize(x.float(), dim=-1), F.normalize(codebook.float(), dim=-1)
    idx = (xn @ cn.T).argmax(dim=1)
    return idx, cn[idx].to(x.dtype)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, codebook, impl):
        idx, q = impl(x.detach(), codebook.detach())
        ctx.mark_non_differentiable(idx)
        return idx, q

    @staticmethod
    def backward(ctx, grad_idx, grad_q):
        return grad_q, None, None


def cosine_vq(x: torch.Tensor, codebook: torch.Tensor, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() != 2 or codebook.dim() != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(f"expected x N x d and codebook K x d, got {tuple(x.shape)} and {tuple(codebook.shape)}")
    if backend == "auto":
        backend = "triton" if x.is_cuda else "torch"
    if backend == "torch":
        impl = cosine_vq_torch
    elif backend == "triton":
        from .cosine_vq_triton import cosine_vq_triton as impl
    else:
        raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
    return _StraightThrough.apply(x, codebook, impl)
