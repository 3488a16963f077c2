"""The authors' released LM checkpoint layout <-> ours.

The release (``Semantic1DLM``, loaded with ``load_state_dict(strict=True)`` from one
safetensors file) names its tensors::

    visual_embedding_model.tok_emb_code.weight          V x d      (V = K + 7, ids as ours)
    transformer.blocks.N.norm0.weight                   d          RMSNorm before attention
    transformer.blocks.N.wqkv.weight                    3d x d     q, k, v stacked (heads inside)
    transformer.blocks.N.wo.weight                      d x d
    transformer.blocks.N.norm1.weight                   d          RMSNorm before the MLP
    transformer.blocks.N.mlp.w1.weight / w3 / w2        F x d, F x d, d x F: w2(gelu_tanh(w1 x) * w3 x)
    transformer.layer_norm.weight / .bias               d          final LayerNorm
    transformer.head.weight                             V x d      untied head
    cond_model.embeddings.fc0.weight / .bias            d x text_dim, d
    cond_model.embeddings.fc1.weight / .bias            d x d, d
    cond_model.null_text_embedding                      d
    micro_condition.mlps.{frames,motion_score}.0.*      512 x 256, 512
    micro_condition.mlps.{frames,motion_score}.2.*      d x 512, d
    micro_condition.null_cond_embeddings.*              256 (only when trained with dropout)
    tokenizer.*, cond_model.text_encoder.*              the frozen video tokenizer and text
                                                        encoder: not the LM's (left out)

RoPE (head dim 128, theta 1e4, pairs ``(2i, 2i+1)`` as complex numbers) has no tensors. Our names
are :class:`generation.lm.model.TokenLM`'s; the mapping is one to one, shapes unchanged.
"""
from __future__ import annotations

import re

import torch

from .model import LMConfig

_BLOCK = {"norm0.weight": "attn_norm.weight", "wqkv.weight": "attn.wqkv.weight", "wo.weight": "attn.wo.weight",
          "norm1.weight": "mlp_norm.weight", "mlp.w1.weight": "mlp.gate.weight", "mlp.w3.weight": "mlp.up.weight",
          "mlp.w2.weight": "mlp.down.weight"}
_MICRO = {"frames": "frames", "motion_score": "motion"}
_FIXED = {"visual_embedding_model.tok_emb_code.weight": "tok_emb.weight",
          "transformer.layer_norm.weight": "norm.weight", "transformer.layer_norm.bias": "norm.bias",
          "transformer.head.weight": "output.weight",
          "cond_model.embeddings.fc0.weight": "text.fc1.weight", "cond_model.embeddings.fc0.bias": "text.fc1.bias",
          "cond_model.embeddings.fc1.weight": "text.fc2.weight", "cond_model.embeddings.fc1.bias": "text.fc2.bias",
          "cond_model.null_text_embedding": "text.null"}
for _r, _o in _MICRO.items():
    for _p in ("weight", "bias"):
        _FIXED[f"micro_condition.mlps.{_r}.0.{_p}"] = f"micro.{_o}.fc1.{_p}"
        _FIXED[f"micro_condition.mlps.{_r}.2.{_p}"] = f"micro.{_o}.fc2.{_p}"
    _FIXED[f"micro_condition.null_cond_embeddings.{_r}"] = f"micro.{_o}.null"
_IGNORED = ("tokenizer.", "cond_model.text_encoder.")
_WRAPPERS = ("module.", "_orig_mod.", "model.")
_BLOCK_KEY = re.compile(r"transformer\.blocks\.(\d+)\.(.+)")


def release_name(ours: str) -> str:
    """Our tensor name -> the release's."""
    for r, o in _FIXED.items():
        if o == ours:
            return r
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", ours)
    if m:
        for r, o in _BLOCK.items():
            if o == m.group(2):
                return f"transformer.blocks.{m.group(1)}.{r}"
    raise KeyError(f"no release name for {ours!r}")


def our_name(release: str) -> str | None:
    """The release's tensor name -> ours (None for the frozen parts the LM does not hold)."""
    if release.startswith(_IGNORED):
        return None
    if release in _FIXED:
        return _FIXED[release]
    m = _BLOCK_KEY.fullmatch(release)
    if m and m.group(2) in _BLOCK:
        return f"layers.{m.group(1)}.{_BLOCK[m.group(2)]}"
    raise KeyError(f"unknown tensor in a release checkpoint: {release!r}")


def _strip(state: dict) -> dict:
    for w in _WRAPPERS:                     # DDP / torch.compile / wrapper prefixes on every key
        if state and all(k.startswith(w) for k in state) and not any(k.startswith(_IGNORED) for k in state):
            state = {k[len(w):]: v for k, v in state.items()}
    return state


def from_release(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A release state dict -> ``(ours, ignored)``: our state dict (same tensors, renamed) and the
    release names left out (frozen tokenizer and text encoder). Unknown names raise KeyError."""
    out, ignored = {}, []
    for k, v in _strip(state).items():
        name = our_name(k)
        if name is None:
            ignored.append(k)
        else:
            out[name] = v
    return out, sorted(ignored)


def to_release(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> the release's names (the inverse of :func:`from_release`)."""
    return {release_name(k): v for k, v in state.items()}


def config_from_release(state: dict[str, torch.Tensor], n_heads: int | None = None, **kw) -> LMConfig:
    """The :class:`LMConfig` a release state dict fits, read from its shapes. Heads are not in the
    shapes: ``n_heads`` defaults to width / 128 (the release's head width). Other fields (token
    layout, text encoder spec, ...) from ``kw``, else the ``landiff`` defaults."""
    s = _strip(state)
    layers = {int(m.group(1)) for k in s if (m := _BLOCK_KEY.fullmatch(k))}
    V, d = s["transformer.head.weight"].shape
    cfg = dict(name="landiff-release", codebook_size=V - 7, n_layers=len(layers), dim=d,
               n_heads=n_heads or max(1, d // 128), mlp_dim=s["transformer.blocks.0.mlp.w1.weight"].shape[0],
               text_dim=s["cond_model.embeddings.fc0.weight"].shape[1],
               micro_freq=s["micro_condition.mlps.frames.0.weight"].shape[1],
               micro_hidden=s["micro_condition.mlps.frames.0.weight"].shape[0])
    cfg.update(kw)
    return LMConfig(**cfg)


def load_release(path, n_heads: int | None = None, **kw):
    """A release ``.safetensors`` -> ``(TokenLM, report)``: the model with every tensor of the file,
    and ``{"ignored": [...release names left out], "kept_init": [...our tensors the file lacks,
    e.g. the micro-condition nulls of a model trained without their dropout]}``."""
    from safetensors.torch import load_file
    from .model import TokenLM
    state = load_file(str(path))
    cfg = config_from_release(state, n_heads, **kw)
    ours, ignored = from_release(state)
    model = TokenLM(cfg)
    res = model.load_state_dict({k: v.float() for k, v in ours.items()}, strict=False)
    if res.unexpected_keys:
        raise ValueError(f"tensors the model lacks: {res.unexpected_keys[:5]}")
    return model, {"ignored": ignored, "kept_init": sorted(res.missing_keys)}
