"""Masked multi-head attention: one entry point for the tokenizer.

``backend="flex"`` runs :func:`torch.nn.attention.flex_attention.flex_attention` with the mask's
``BlockMask`` (compiled where that works: CUDA; on CPU compiled flex has no backward, so it is used
for inference only). ``backend="sdpa"`` runs ``scaled_dot_product_attention`` with the dense
boolean mask. ``"auto"`` = flex (compiled) on CUDA, SDPA elsewhere.

Where the masks live, and why: in :mod:`semcodec.model.masks`, next to the token layout, not
here. The rule (who may see whom) is a property of the layout (visual / IFrame / PFrame tokens and
their frames), so it is written once as a ``mask_mod`` there, checked against a dense reference
written from the rule text, and kept per (layout, role) by the model that uses it (its
``LayoutCache``); this module stays mask-agnostic and only consumes the two forms of one mask object:
``dense(device) -> L x L bool`` (SDPA; L*L bytes: 352 MB at the landiff length 18768) and
``block_mask(device) -> BlockMask`` (flex; block indices only, 340 KiB at 18768; empty blocks skipped).
Both are built once per shape and device, never per call.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "flex", "sdpa")


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def _flex(q, k, v, block_mask, compiled: bool, score_mod=None):
    if compiled:
        return _compiled_flex()(q, k, v, score_mod=score_mod, block_mask=block_mask)
    import warnings
    from torch.nn.attention.flex_attention import flex_attention
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the eager path warns that it is unfused: we know
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)


def resolve_backend(backend: str, device: torch.device, needs_grad: bool) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "flex" if device.type == "cuda" else "sdpa"
    if backend == "flex" and needs_grad and device.type == "cpu":
        raise ValueError("flex attention has no backward on CPU: use backend='sdpa' for training there")
    return backend


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, backend: str = "auto",
                     compile_flex: bool | None = None) -> torch.Tensor:
    """``q, k, v``: B x H x L x D. ``mask``: see module doc. Returns B x H x L x D."""
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    b = resolve_backend(backend, q.device, needs_grad)
    if b == "flex":
        compiled = (q.device.type == "cuda") if compile_flex is None else compile_flex
        score_mod = mask.score_mod(q.device) if hasattr(mask, "score_mod") else None
        return _flex(q, k, v, mask.block_mask(q.device), compiled, score_mod)
    attn_mask = mask.sdpa_mask(q.device) if hasattr(mask, "sdpa_mask") else mask.dense(q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype) if attn_mask.is_floating_point() else attn_mask)
