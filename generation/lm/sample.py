"""Sampling token sequences from the LM: KV cache, classifier-free guidance, forced specials.

    from generation.lm import load_lm, sample
    lm = load_lm("lm.safetensors").model
    out = sample(lm, ["A small red circle moves left on a blue background."], seed=0)
    out.groups[0]          # the first prompt's groups: token arrays for Codec.decode_group
    out.ids                # B x L: BOS <SOI> ... EOS, parse_lm_sequence gives the groups back

- The sequence's layout is fixed before sampling (``valids``: frames per group; by default one
  full group): every special (``SOI EOI SOP EOP EOS``) is forced at its place and only codes are
  sampled where codes go, so every sample parses into its I- and P-frame groups.
- Guidance: the conditional and unconditional rows of every prompt run in one batch; the
  unconditional row's text is the learned null vector repeated over the prompt's length (the
  micro-conditions are kept, as in the release). Logits ``u + s (c - u)``, ``s = cfg_scale``
  (6.5 by default, the paper's; 1 runs the conditional rows alone), optionally restricted to the
  codes the conditional rows find plausible (``cfg_plausibility``, as contrastive decoding does).
- Then ``temperature`` (1; 0 is greedy), optional ``top_k`` / ``top_p``, and one uniform draw per
  row and sampled position from that row's own generator (``seed + row``, or a list of seeds),
  inverted through the cumulative distribution in float64: a row's tokens depend on its seed
  alone, and the KV-cache and the full-recompute paths draw the same tokens.
- :func:`generate` yields each :class:`Group` as soon as its last code is drawn (streaming);
  :func:`sample` collects them.
- Long videos: ``prefix_groups`` (per row, groups of a previous chunk, teacher-forced before the new
  ones) and ``prefix_codes`` (per row, codes forced at the start of the first new group, e.g. the
  I-frame of the overlap).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .layout import parse_lm_sequence, valid_of
from .model import TokenLM


@dataclass
class Group:
    """Group ``index`` (counted among the generated ones) of prompt ``row``: its codes (int64)."""
    row: int
    index: int
    tokens: np.ndarray


@dataclass
class Samples:
    ids: torch.Tensor                 # B x L int64: BOS <SOI> ... EOS (prefix groups included)
    groups: list[list[np.ndarray]]    # per row, the generated groups' codes


@lru_cache(maxsize=2)
def _default_encoder(spec: str, max_tokens: int):
    from .text import get_text_encoder
    return get_text_encoder(spec, max_tokens)


def _encode(model: TokenLM, prompts, text_states, text_encoder):
    cfg = model.config
    if text_states is None:
        from .text import compatible
        if prompts is None or isinstance(prompts, str):
            raise ValueError("give the prompts as a list of strings, or their text_states")
        if text_encoder is None:
            text_encoder = _default_encoder(cfg.text_encoder, cfg.max_text_tokens)
        if not compatible(text_encoder.spec, cfg.text_encoder) or text_encoder.dim != cfg.text_dim:
            raise ValueError(f"text encoder {text_encoder.spec} ({text_encoder.dim}-wide states) is not the one the "
                             f"model was trained with: {cfg.text_encoder} ({cfg.text_dim})")
        text_states = text_encoder.encode(list(prompts))
    return [t[:cfg.max_text_tokens].float() for t in text_states]


def _plan(model: TokenLM, B: int, valids, prefix_groups, prefix_codes):
    """The ids to produce: B x L int64, -1 where a code is to be drawn; and where each generated
    group's codes end."""
    vocab = model.vocab
    prefix_groups = prefix_groups or [[] for _ in range(B)]
    pv = [valid_of(len(g), vocab) for g in prefix_groups[0]]
    if any([valid_of(len(g), vocab) for g in row] != pv for row in prefix_groups):
        raise ValueError("every row's prefix groups must hold the same frame counts")
    valids = list(valids) if valids is not None else [vocab.group]
    if not valids or not all(1 <= v <= vocab.group for v in valids):
        raise ValueError(f"frames per group must be 1..{vocab.group}, not {valids}")
    tmpl = vocab.template(pv + valids)
    code_pos = np.flatnonzero(tmpl < 0)
    sizes = [vocab.group_tokens(v) for v in pv + valids]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    known = np.tile(tmpl, (B, 1))
    n_pre = int(bounds[len(pv)])
    if prefix_codes is not None and len({len(c) for c in prefix_codes}) > 1:
        raise ValueError("every row's prefix codes must be as many")
    for r in range(B):
        if pv:
            known[r, code_pos[:n_pre]] = np.concatenate(prefix_groups[r])
        if prefix_codes is not None and len(prefix_codes[r]):
            c = np.asarray(prefix_codes[r], np.int64)
            if len(c) > sizes[len(pv)]:
                raise ValueError(f"{len(c)} prefix codes do not fit a group of {sizes[len(pv)]} codes")
            known[r, code_pos[n_pre:n_pre + len(c)]] = c
    if ((known[:, code_pos] < -1) | (known[:, code_pos] >= vocab.codebook_size)).any():
        raise ValueError(f"prefix codes must lie in 0..{vocab.codebook_size - 1}")
    ends = {int(code_pos[bounds[g + 1] - 1]): g - len(pv) for g in range(len(pv), len(sizes))}
    return known, ends, pv, valids


def _pick(logits: torch.Tensor, gens, temperature: float, top_k, top_p) -> torch.Tensor:
    """One code per row from B x K logits."""
    x = logits.double()
    if temperature == 0:
        return x.argmax(-1)
    x = x / temperature
    if top_k:
        kth = x.topk(min(top_k, x.shape[-1]), -1).values[:, -1:]
        x = x.masked_fill(x < kth, -np.inf)
    p = torch.softmax(x, -1)
    if top_p is not None and top_p < 1:
        ps, order = p.sort(-1, descending=True)
        drop = (ps.cumsum(-1) - ps) >= top_p                   # keep the smallest head reaching top_p
        p = p.scatter(-1, order, ps.masked_fill(drop, 0))
    cdf = p.cumsum(-1)
    u = torch.tensor([[float(torch.rand((), generator=g, dtype=torch.float64))] for g in gens], dtype=torch.float64)
    return torch.searchsorted(cdf, u * cdf[:, -1:]).clamp_(max=x.shape[-1] - 1)[:, 0]


@torch.no_grad()
def generate(model: TokenLM, prompts=None, *, text_states=None, text_encoder=None, valids=None, frames=None,
             motion=None, cfg_scale: float = 6.5, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed=0, use_cache: bool = True, prefix_groups=None, prefix_codes=None,
             cfg_plausibility: float = 0.0, result: dict | None = None):
    """Sample one sequence per prompt; yield a :class:`Group` per row as each group completes.

    ``prompts``: B strings (encoded by ``text_encoder``, default the model's), or ``text_states``:
    B tensors ``n_i x text_dim``. ``valids``: frames of each generated group (default one full
    group). ``frames``: the frame-count micro-condition (int or B values; default the frames of
    the sequence); ``motion``: the motion score (float, B values, or None for the null
    embedding). ``seed``: an int (row r uses ``seed + r``) or B ints. ``cfg_plausibility``: with
    guidance, codes whose conditional probability is below this fraction of the most likely code's
    are never drawn (guidance then sharpens the prompt's own candidates instead of lifting codes
    the prompt finds implausible; 0: off). ``result``: a dict that receives ``ids`` (B x L
    LongTensor) at the end.
    """
    model.eval()
    text = _encode(model, prompts, text_states, text_encoder)
    B, vocab, dev = len(text), model.vocab, model.tok_emb.weight.device
    known, ends, pv, valids = _plan(model, B, valids, prefix_groups, prefix_codes)
    L = known.shape[1]
    seeds = [seed + r for r in range(B)] if isinstance(seed, int) else list(seed)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    per_row = lambda v: None if v is None else torch.as_tensor(v, dtype=torch.float32).expand(B).to(dev)  # noqa
    frames_c, motion_c = per_row(sum(pv + valids) if frames is None else frames), per_row(motion)

    guided = cfg_scale != 1
    rows = model.prefix(text, frames_c, motion_c)
    if guided:
        rows += model.unconditional_prefix([len(t) for t in text], frames_c, motion_c)
    R, P = len(rows), max(len(p) for p in rows)
    S = P + L - 2                                   # every position but the last (EOS) is fed
    if S > model.config.max_seq_len:
        raise ValueError(f"the sequence needs {S} positions, the model takes {model.config.max_seq_len}")
    x0 = rows[0].new_zeros(R, P, rows[0].shape[1])
    pad = torch.tensor([P - len(p) for p in rows], device=dev)
    for r, p in enumerate(rows):
        x0[r, P - len(p):] = p                      # left-padded, so that every row ends at slot P - 1
    slot = torch.arange(S, device=dev)
    pos = slot[None] - pad[:, None]                 # RoPE positions: 0 at each row's BOS
    usable = slot[None] >= pad[:, None]             # R x S: keys that are not padding
    causal = torch.ones(S, S, dtype=torch.bool, device=dev).tril()

    def mask_for(q: torch.Tensor, n_keys: int) -> torch.Tensor:
        m = causal[q][:, :n_keys][None] & usable[:, None, :n_keys]
        return (m | (q[:, None] == torch.arange(n_keys, device=dev))[None])[:, None]    # R x 1 x T x keys

    ids = torch.from_numpy(known.copy())
    fed = 0                                         # ids after BOS already in the cache
    if use_cache:
        model.setup_cache(R, S)
    try:
        for j in range(1, L):
            if known[0, j] < 0:                     # a code to draw: logits at position j - 1
                new = ids[:, fed + 1:j].to(dev)
                new = torch.cat([new, new]) if guided else new
                if use_cache:
                    x = model.embed(new)
                    q = torch.arange(P + fed, P + j - 1, device=dev)
                    if fed == 0:
                        x, q = torch.cat([x0, x], 1), torch.arange(P + j - 1, device=dev)
                    h = model(x, pos[:, q], mask_for(q, S), q)[:, -1]
                    fed = j - 1
                else:
                    x = torch.cat([x0, model.embed(torch.cat([ids[:, 1:j]] * (2 if guided else 1)).to(dev))], 1)
                    q = torch.arange(x.shape[1], device=dev)
                    h = model(x, pos[:, q], mask_for(q, len(q)))[:, -1]
                logits = h[:, :vocab.codebook_size].float().cpu()
                if guided:
                    c, u = logits[:B], logits[B:]
                    logits = u + cfg_scale * (c - u)
                    if cfg_plausibility > 0:
                        logits = logits.masked_fill(c < c.max(-1, keepdim=True).values
                                                    + float(np.log(cfg_plausibility)), float("-inf"))
                ids[:, j] = _pick(logits, gens, temperature, top_k, top_p)
            g = ends.get(j)
            if g is not None:
                lo = max(k for k in range(j + 1) if known[0, k] == vocab.SOI)
                for r in range(B):
                    row = ids[r, lo:j + 1].numpy()
                    yield Group(r, g, row[(row >= 0) & (row < vocab.codebook_size)].copy())
    finally:
        if use_cache:
            model.clear_cache()
    if result is not None:
        result["ids"] = ids


def sample(model: TokenLM, prompts=None, **kw) -> Samples:
    """:func:`generate` run to the end: ``Samples(ids, groups)`` (see the module docstring)."""
    res: dict = {}
    groups: dict[int, list] = {}
    for g in generate(model, prompts, result=res, **kw):
        groups.setdefault(g.row, []).append(g.tokens)
    ids = res["ids"]
    for r in range(len(ids)):                       # by construction; a cheap guarantee
        parse_lm_sequence(ids[r], model.vocab)
    return Samples(ids, [groups.get(r, []) for r in range(len(ids))])
