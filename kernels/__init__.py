"""Compute kernels used by semcodec: fused cosine VQ and masked attention."""
from .attention import masked_attention
from .cosine_vq import cosine_vq, cosine_vq_torch

__all__ = ["cosine_vq", "cosine_vq_torch", "masked_attention"]
