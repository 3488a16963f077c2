"""The language model over token streams (DESIGN.md §5): a LLaMA-style decoder, top to bottom.

One sample is one sequence of ``d``-wide vectors, fed at RoPE positions ``0, 1, 2, ...``::

    BOS | frames motion | text_1 .. text_n | SOI  I codes  EOI  (SOP  P codes  EOP)*  ... EOS
    ids   micro-conditions  text states      ids (generation.lm.layout)

- ids (codes ``0..K-1`` and the specials ``K..K+6``) go through one embedding table;
- the micro-conditions (semantic frames, motion score): sinusoidal embedding (256) -> Linear ->
  SiLU -> Linear (zero-initialised), one vector each;
- the text: a frozen encoder's per-token states (``generation.lm.text``) -> Linear -> GELU-tanh ->
  Linear, one vector per prompt token (prefix tokens, no cross-attention).
Then ``n_layers`` pre-norm blocks (RMSNorm, attention with 1-D RoPE theta 1e4 on interleaved
pairs, RMSNorm, gated MLP ``down(gelu_tanh(gate(x)) * up(x))``), a final LayerNorm and an untied
head to the ``K + 7`` ids. The loss is on the ids after ``BOS`` (codes and specials).

Classifier-free guidance: each condition has a learned null embedding. Training drops the text
(10%: the null vector repeated over as many positions as the prompt has), the motion score (50%)
and the frame count (50%: the null replaces their sinusoidal embedding, before the MLP).

The KV cache belongs to the model (gpt-fast style): :meth:`TokenLM.setup_cache` gives every
attention layer a fixed ``B x H x S x hd`` buffer, and :meth:`TokenLM.forward` with ``slots``
writes the new keys and values there. Build the ``landiff`` preset on the meta device
(``with torch.device("meta"): TokenLM(cfg)``) to count its 2B parameters without allocating them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semcodec.config_dict import ConfigDict

from .layout import LMVocab

MICRO_KEYS = ("frames", "motion")          # the order of the micro-condition vectors after BOS


# ----------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class LMConfig(ConfigDict):
    kind = "LM config"
    """Everything that fixes the model's tensors and its token layout."""
    name: str = "custom"
    codebook_size: int = 2048          # K: codes 0..K-1, specials K..K+6
    n_layers: int = 24
    dim: int = 2048
    n_heads: int = 16
    mlp_dim: int = 11008
    norm_eps: float = 1e-5
    rope_theta: float = 1e4
    max_seq_len: int = 4096            # longest sequence (conditions included) sampling plans for
    text_encoder: str = "t5"           # spec for generation.lm.text.get_text_encoder
    text_dim: int = 4096               # width of the text encoder's states
    max_text_tokens: int = 512         # prompt tokens kept (the rest is cut)
    micro_freq: int = 256              # sinusoidal embedding width of a micro-condition
    micro_hidden: int = 512            # its MLP's hidden width
    text_drop: float = 0.1             # condition dropout for classifier-free guidance
    motion_drop: float = 0.5
    frames_drop: float = 0.5
    iframe_tokens: int = 330           # token layout of the codec (nI, nP, frames per group)
    pframe_tokens: int = 74
    group: int = 13
    codec: str = ""                    # the codec model whose tokens this LM models (name, hash)
    codec_hash: str = ""

    @property
    def vocab(self) -> LMVocab:
        return LMVocab(self.codebook_size, self.iframe_tokens, self.pframe_tokens, self.group)

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def __post_init__(self):
        if self.dim % self.n_heads or self.head_dim % 2:
            raise ValueError(f"dim {self.dim} must split into {self.n_heads} heads of an even width")
        if self.micro_freq % 2:
            raise ValueError("micro_freq must be even")


PRESETS: dict[str, LMConfig] = {
    # the paper / the authors' release: 24 x 2048, 16 heads, MLP 11008, flan-T5-XXL text (~2.05B)
    "landiff": LMConfig(name="landiff"),
    # trains on a CPU over the world tokenizer's tokens (96 + 15 x 8 per group): 4.7M parameters,
    # 9.4 MB shipped in float16
    "lm-world": LMConfig(name="lm-world", n_layers=4, dim=256, n_heads=4, mlp_dim=704, max_seq_len=1024,
                         text_encoder="minilm", text_dim=384, max_text_tokens=64, micro_hidden=256,
                         iframe_tokens=96, pframe_tokens=8, group=16),
    # for tests: the `tiny` codec's layout (K = 64, 8 + 3 x 4), a hashing text encoder
    "lm-tiny": LMConfig(name="lm-tiny", codebook_size=64, n_layers=2, dim=32, n_heads=2, mlp_dim=64,
                        max_seq_len=256, text_encoder="hash:16", text_dim=16, max_text_tokens=32, micro_freq=16,
                        micro_hidden=32, iframe_tokens=8, pframe_tokens=4, group=4),
}


def get_preset(name: str) -> LMConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown LM preset {name!r}; known: {', '.join(PRESETS)}") from None


# ----------------------------------------------------------------------------------- pieces
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.square().mean(-1, keepdim=True) + self.eps)
        return (y * self.weight).type_as(x)


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate ``x`` (B x T x H x hd) by its positions ``pos`` (B x T): pair ``(2i, 2i+1)`` of a
    head turns by ``pos * theta^(-2i/hd)`` (the release's complex-number RoPE)."""
    hd = x.shape[-1]
    freqs = theta ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
    ang = pos.to(torch.float32)[..., None] * freqs                   # B x T x hd/2
    cos, sin = ang.cos()[:, :, None], ang.sin()[:, :, None]           # B x T x 1 x hd/2
    a, b = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2).type_as(x)


class KVCache(nn.Module):
    """Keys and values of every position so far: two ``B x H x S x hd`` buffers, written at
    ``slots`` (gpt-fast style: fixed size, no concatenation)."""

    def __init__(self, batch: int, heads: int, length: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, heads, length, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self.k[:, :, slots] = k.to(self.k.dtype)
        self.v[:, :, slots] = v.to(self.v.dtype)
        return self.k, self.v


class Attention(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.n_heads, self.theta = cfg.n_heads, cfg.rope_theta
        self.wqkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)      # rows: q (all heads), k, v
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(self, x, pos, mask=None, slots=None):
        """``x`` B x T x d, ``pos`` B x T RoPE positions, ``mask`` B x 1 x T x S bool (True: may
        attend; None: causal over the T positions), ``slots`` (T,) cache slots when cached."""
        B, T, D = x.shape
        q, k, v = self.wqkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).unbind(2)
        q, k = rope(q, pos, self.theta), rope(k, pos, self.theta)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # B x H x T x hd
        if slots is not None:
            k, v = self.kv_cache.update(slots, k, v)
            k, v = k.to(q.dtype), v.to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.wo(y.transpose(1, 2).reshape(B, T, D))


class GatedMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down(F.gelu(self.gate(x), approximate="tanh") * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = GatedMLP(cfg.dim, cfg.mlp_dim)

    def forward(self, x, pos, mask=None, slots=None):
        x = x + self.attn(self.attn_norm(x), pos, mask, slots)
        return x + self.mlp(self.mlp_norm(x))


def sinusoidal(values: torch.Tensor, dim: int, max_period: float = 1e4) -> torch.Tensor:
    """``values`` (B,) -> B x dim: ``[cos(v f_i), sin(v f_i)]`` with ``f_i = max_period^(-i/(dim/2))``."""
    half = dim // 2
    f = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    a = values.float()[:, None] * f[None]
    return torch.cat([torch.cos(a), torch.sin(a)], -1)


class MicroCondition(nn.Module):
    """One scalar condition -> one d-wide vector; ``null`` stands for a dropped value."""

    def __init__(self, freq: int, hidden: int, dim: int):
        super().__init__()
        self.freq = freq
        self.fc1 = nn.Linear(freq, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.null = nn.Parameter(torch.randn(freq) / freq ** 0.5)

    def forward(self, values: torch.Tensor | None, keep: torch.Tensor | None = None, batch: int = 1):
        """``values`` (B,) float, or None for B nulls; ``keep`` (B,) bool: False -> the null."""
        if values is None:
            e = self.null.expand(batch, -1)
        else:
            e = sinusoidal(values, self.freq).to(self.null.dtype)
            if keep is not None:
                e = torch.where(keep[:, None], e, self.null)
        return self.fc2(F.silu(self.fc1(e)))


class TextProjection(nn.Module):
    """Per-token text states (text_dim) -> d-wide prefix vectors; ``null`` for a dropped prompt."""

    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(text_dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.null = nn.Parameter(torch.randn(dim) / dim ** 0.5)

    def forward(self, states: list[torch.Tensor], keep: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``states``: B tensors n_i x text_dim; ``keep`` (B,) bool, False -> the null vector
        repeated n_i times. Returns B tensors n_i x d."""
        out = []
        for i, s in enumerate(states):
            h = self.fc2(F.gelu(self.fc1(s.to(self.fc1.weight.dtype)), approximate="tanh"))
            if keep is not None:           # torch.where: the null takes part (and gets a gradient) always
                h = torch.where(keep[i], h, self.null.to(h.dtype).expand_as(h))
            out.append(h)
        return out

    def unconditional(self, lengths: list[int]) -> list[torch.Tensor]:
        """The null vector repeated over each prompt's length (the CFG branch)."""
        return [self.null.expand(n, -1) for n in lengths]


# ----------------------------------------------------------------------------------- the model
class TokenLM(nn.Module):
    """The language model. ``forward`` maps input vectors (B x T x d, from :meth:`prefix` and
    :meth:`embed`) to logits (B x T x V, float32) over the ``V = K + 7`` ids."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.text = TextProjection(cfg.text_dim, cfg.dim)
        self.micro = nn.ModuleDict({k: MicroCondition(cfg.micro_freq, cfg.micro_hidden, cfg.dim) for k in MICRO_KEYS})
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        if self.tok_emb.weight.is_meta:
            return
        std = 0.02
        nn.init.normal_(self.tok_emb.weight, std=std)
        for layer in self.layers:
            for lin in (layer.attn.wqkv, layer.mlp.gate, layer.mlp.up):
                nn.init.normal_(lin.weight, std=std)
            for lin in (layer.attn.wo, layer.mlp.down):           # residual branches: GPT-2 scaling
                nn.init.normal_(lin.weight, std=std / math.sqrt(2 * max(1, self.config.n_layers)))
        nn.init.normal_(self.output.weight, std=std)
        for lin in (self.text.fc1, self.text.fc2):
            nn.init.trunc_normal_(lin.weight, std=math.sqrt(2 / lin.in_features))
            nn.init.zeros_(lin.bias)
        for m in self.micro.values():
            nn.init.zeros_(m.fc2.weight)                            # micro-conditions start silent
            nn.init.zeros_(m.fc2.bias)

    @property
    def vocab(self) -> LMVocab:
        return self.config.vocab

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- inputs
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (any shape) -> vectors (shape + (d,))."""
        return self.tok_emb(ids)

    def prefix(self, text: list[torch.Tensor], frames=None, motion=None,
               keep: dict | None = None) -> list[torch.Tensor]:
        """The conditioning prefix of each sample: ``BOS, frames, motion, text_1..text_n`` as a
        ``(3 + n_i) x d`` tensor.

        ``text``: B tensors ``n_i x text_dim`` of the frozen encoder's states (already cut to
        ``max_text_tokens``); ``frames``, ``motion``: (B,) tensors, or None for the null
        embedding; ``keep``: optional ``{"text", "frames", "motion"}`` -> (B,) bool, False where
        that condition is dropped (classifier-free guidance training).
        """
        keep = keep or {}
        dev = self.tok_emb.weight.device
        return self._assemble(self._micro(len(text), frames, motion, keep),
                              self.text([t.to(dev) for t in text], keep.get("text")))

    def unconditional_prefix(self, text_lengths: list[int], frames=None, motion=None) -> list[torch.Tensor]:
        """:meth:`prefix` with the text replaced by the null vector over each prompt's length
        (the micro-conditions kept, as the release samples)."""
        return self._assemble(self._micro(len(text_lengths), frames, motion, {}),
                              self.text.unconditional(text_lengths))

    def _micro(self, B: int, frames, motion, keep: dict) -> list[torch.Tensor]:
        dev = self.tok_emb.weight.device
        vals = {"frames": frames, "motion": motion}
        return [self.micro[k](None if vals[k] is None else torch.as_tensor(vals[k], device=dev).float(),
                              keep.get(k), B) for k in MICRO_KEYS]                      # each B x d

    def _assemble(self, micro: list[torch.Tensor], text: list[torch.Tensor]) -> list[torch.Tensor]:
        bos = self.tok_emb.weight[self.vocab.BOS][None]
        return [torch.cat([bos, *(m[i:i + 1] for m in micro), t]) for i, t in enumerate(text)]

    # -- the transformer
    def forward(self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None = None,
                slots: torch.Tensor | None = None, head: bool = True) -> torch.Tensor:
        """``x`` B x T x d input vectors at RoPE positions ``pos`` (B x T); ``mask`` B x 1 x T x S
        bool (True: may attend) or None (causal); ``slots`` (T,) KV-cache slots (after
        :meth:`setup_cache`; S is then the cache length). Returns B x T x V float32 logits, or the
        normed B x T x d states when ``head`` is False."""
        for layer in self.layers:
            x = layer(x, pos, mask, slots)
        x = self.norm(x)
        return self.output(x).float() if head else x

    def setup_cache(self, batch: int, length: int, dtype=None):
        """Give every attention layer a KV cache of ``batch`` rows and ``length`` slots."""
        w = self.tok_emb.weight
        for layer in self.layers:
            layer.attn.kv_cache = KVCache(batch, self.config.n_heads, length, self.config.head_dim,
                                          dtype or w.dtype, w.device)

    def clear_cache(self):
        for layer in self.layers:
            layer.attn.kv_cache = None


def build_model(cfg: LMConfig | str, device="cpu") -> TokenLM:
    """``TokenLM`` of a config or preset name; ``device="meta"`` allocates nothing."""
    cfg = get_preset(cfg) if isinstance(cfg, str) else cfg
    with torch.device(device):
        return TokenLM(cfg)


# ----------------------------------------------------------------------------------- teacher forcing
def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing packing of sequences of ``lengths`` into rows of ``capacity``
    positions (a longer sequence gets a row of its own). Returns the sample indices per row."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r in range(len(rows)):
            if lengths[i] <= room[r]:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def packed_inputs(model: TokenLM, ids: list[torch.Tensor], prefixes: list[torch.Tensor], capacity: int | None = None):
    """Teacher-forcing inputs of several samples packed into rows.

    Sample ``i`` is ``prefixes[i]`` (``BOS`` + conditions, ``p_i x d``) followed by the
    embeddings of ``ids[i][1:-1]`` (its ids after ``BOS``, ``EOS`` left out: nothing follows it);
    its targets are ``ids[i][1:]``, predicted from the last prefix position onwards. Samples are
    packed into rows of ``capacity`` positions (default: the longest sample), each sample with its
    own RoPE positions from 0 and attending only to itself.

    Returns ``x`` R x T x d, ``pos`` R x T, ``mask`` R x 1 x T x T bool (None when every row holds
    one unpadded sample), ``targets`` R x T long (-100 where there is none), ``owner`` R x T
    (the sample index of each position, -1 for padding).
    """
    n = len(ids)
    seq = [torch.cat([prefixes[i], model.embed(ids[i][1:-1].to(prefixes[i].device))]) for i in range(n)]
    lengths = [len(s) for s in seq]
    cap = max(capacity or 0, max(lengths))
    rows = pack(lengths, cap)
    T = max(sum(lengths[i] for i in r) for r in rows)
    R, D = len(rows), seq[0].shape[1]
    dev = seq[0].device
    x = seq[0].new_zeros(R, T, D)
    pos = torch.zeros(R, T, dtype=torch.long, device=dev)
    owner = torch.full((R, T), -1, dtype=torch.long, device=dev)
    targets = torch.full((R, T), -100, dtype=torch.long, device=dev)
    for r, members in enumerate(rows):
        p = 0
        for i in members:
            L, P = lengths[i], len(prefixes[i])
            x[r, p:p + L] = seq[i]
            pos[r, p:p + L] = torch.arange(L, device=dev)
            owner[r, p:p + L] = i
            targets[r, p + P - 1:p + L] = ids[i][1:].to(dev)
            p += L
    simple = all(len(m) == 1 for m in rows) and all(lengths[m[0]] == T for m in rows)
    mask = None if simple else attention_mask(owner)
    return x, pos, mask, targets, owner


def attention_mask(owner: torch.Tensor) -> torch.Tensor:
    """R x T sample ids (-1: padding) -> R x 1 x T x T: causal within each sample; a padding
    position sees itself only (so that no row of the softmax is empty)."""
    T = owner.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=owner.device).tril()
    same = (owner[:, :, None] == owner[:, None, :]) & (owner[:, None, :] >= 0)
    eye = torch.eye(T, dtype=torch.bool, device=owner.device)
    return ((same & causal) | eye)[:, None]
