"""Encoder-side token search: a group's token ids chosen for the picture the decoder draws from them.

The encoder picks, for each query, the code nearest its output. Those ids are a good start but not
the best ones for the decoder: the decoder is fixed once trained, so the encoder can ask it. This
is analysis by synthesis (a classic encoder's rate-distortion mode decision), on the decoder's own
gradient:

1. decode the group, take the gradient of the pixel error with respect to each token's code vector.
   The error is scored on what a viewer sees (:class:`ShownFrames`): every source frame the group
   is shown as, the in-between ones blended from two decoded frames as the decoder blends them and
   the overlap cross-faded with the group before. Scoring the semantic frames alone leaves the
   in-betweens (two thirds of a 25 fps source at 8 semantic fps) to chance;
2. for each token, predict the change of error for each of its ``neighbours`` nearest codes
   (first order: ``grad . (c_new - c_old)``) and of its bits under the context model (exact for
   that token, the other tokens held);
3. swap the tokens with the best predicted gains (a fraction of them, adapted: grown after a round
   that helped, halved until one does), keep the swap only if the true cost fell. The cost is
   ``-PSNR + rate_slope x log2(bits)``: a swap must buy ``rate_slope`` dB per doubling of the
   group's bits. Without a context model the cost is the error alone;
4. stop after ``steps`` rounds or when no fraction helps.

``relax_steps`` adds a first phase: the encoder's outputs moved by Adam on the decoder's gradient,
each step's ids those nearest the moved outputs (straight through), the best step kept. It reaches
codes no neighbour step does: more quality, at more bits.

Only the encoder changes: a stream it writes is an ordinary stream of the model, decoded as any
other. Measured (seventh session, ``s128``, ``docs/models.md``): on one group of bikes, the error
alone, 12 rounds, 8 neighbours gave +0.85 dB, 4 neighbours +0.78, 16 +0.65, 128 +0.06, the whole
codebook nothing (the first-order prediction holds for near codes only). Whole clips, 12 rounds:
slope 0 (error alone) bikes +0.27 dB at +15% bits; slope 0.5 (the default) bikes +0.24 dB at -2%,
carphone +0.26 dB at +2%; slope 1.5 holds the PSNR and saves 17-31% of the bits. Scored on the
frames shown (eighth session) rather than the semantic frames: bikes 21.67 -> 21.89 dB (8.37 ->
8.82 kbit/s), carphone 21.86 -> 21.89 dB (5.77 -> 5.99); at 2 semantic fps bikes gains 0.62 dB
over the encoder's ids instead of 0.16 (``bench.rd``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .precision import fast_bf16

DEFAULT_STEPS = 12
DEFAULT_NEIGHBOURS = 8
DEFAULT_RATE_SLOPE = 0.5
SHOWN_PER_INTERVAL = 4          # source frames scored per semantic frame, at most (240 fps at 8 semantic fps: 4 of every 30)


@dataclass
class SearchStats:
    """What a search did to one group: mean squared error (``[-1, 1]`` units) and bits before and
    after (bits None without a rate model), rounds run, tokens changed."""
    mse_before: float
    mse_after: float
    bits_before: float | None
    bits_after: float | None
    rounds: int
    changed: int

    @property
    def gain_db(self) -> float:
        return 10 * math.log10(self.mse_before / max(self.mse_after, 1e-12))


class GroupRate:
    """Bits of a group's tokens under a context model (``bitstream.context``), given the previous
    group's tokens where the stream links them: ``table(ids)`` (``N x K``: each slot's cost of every
    code, the other tokens held) and ``bits(ids)`` (the group's total, as the coder spends it to
    within its rounding)."""

    def __init__(self, context, layout, valid: int, link: list[np.ndarray] | None):
        self.context, self.layout, self.valid, self.link = context, layout, valid, link
        self._last: tuple[bytes, list] | None = None     # the ids last priced: a kept trial's, next asked for its table

    def _rows(self, ids: np.ndarray) -> list:
        """``(slots, probability rows)`` per coding pass of ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        key = ids.tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        frames = self.layout.split(ids, self.valid)
        offset = np.cumsum([0] + [f.size for f in frames])
        rows = []
        for f, rr, cc in self.layout.order(self.valid):
            taps, flags = self.layout.taps(frames, f, rr, cc, self.link)
            rows.append((offset[f] + rr * frames[f].shape[1] + cc, self.context.probabilities(taps, flags)))
        self._last = key, rows
        return rows

    def table(self, ids: np.ndarray) -> torch.Tensor:
        out = np.empty((len(ids), self.context.codebook_size), dtype=np.float32)
        for slots, p in self._rows(ids):
            out[slots] = 24 - np.log2(p)
        return torch.from_numpy(out)

    def bits(self, ids: np.ndarray) -> float:
        total = 0.0
        for slots, p in self._rows(ids):
            total += float((24 - np.log2(p[np.arange(len(slots)), ids[slots]])).sum())
        return total


@dataclass
class ShownFrames:
    """The source frames a decoded group becomes: ``target`` (``S x H x W x 3`` float in [-1, 1],
    the model's padded size) ~ ``mix @ decoded + offset``, where ``mix`` (``S x T``) blends the
    group's ``T`` decoded frames to the source's instants (the decoder's linear in-betweens and
    overlap cross-fade) and ``offset`` (``S x H x W x 3`` or None) is what other groups add;
    ``index``: the source frame numbers."""
    target: torch.Tensor
    mix: torch.Tensor
    offset: torch.Tensor | None = None
    index: tuple[int, ...] = ()

    @classmethod
    def for_group(cls, g, plan_len: int, overlap: int, semantic_frames: int, k: float,
                  source: dict[int, torch.Tensor], before: dict[int, torch.Tensor]) -> "ShownFrames | None":
        """What the decoder shows of group ``g`` (:class:`~semcodec.gop.Group`): each held source
        frame ``i`` (``source``: model-space frames by source index) whose two semantic frames
        ``floor(i k)``, ``+1`` (``k`` = semantic / source fps) both lie in the group. An overlap
        frame is cross-faded with the group before (``before``: its decoded frames by semantic
        index, fixed) and with the group after (taken to draw it as this one does). None when no
        held frame is shown by this group alone."""
        from .gop import fade_weights
        from .video import blend_at
        fade = fade_weights(g, plan_len, overlap)
        own = np.ones(g.valid)
        for j in range(g.valid):
            if g.start + j in before:                       # the ramps of two groups sum to 1
                own[j] = fade[j]
        rows, idx, offs = [], [], []
        for i in sorted(source):
            a, b, w = blend_at(i * k, semantic_frames)             # as the decoder blends
            if not (g.start <= a and b < g.stop):
                continue
            r = np.zeros(g.valid)
            off = None
            for j, wj in ((a - g.start, 1.0 - w), (b - g.start, w)):
                if wj <= 0:
                    continue
                r[j] += wj * own[j]
                if own[j] < 1:
                    f = before[g.start + j] * (wj * (1 - own[j]))
                    off = f if off is None else off + f
            rows.append(r)
            idx.append(i)
            offs.append(off)
        if not rows:
            return None
        target = torch.stack([source[i] for i in idx])
        offset = None
        some = next((o for o in offs if o is not None), None)
        if some is not None:
            offset = torch.stack([o if o is not None else torch.zeros_like(some) for o in offs])
        return cls(target, torch.tensor(np.stack(rows), dtype=torch.float32), offset, tuple(idx))


def searchable(model) -> bool:
    """Whether ``model`` draws pixels itself from a cosine codebook (a search needs both)."""
    from .model.quantizer import CosineQuantizer, EuclideanQuantizer
    tok = getattr(model, "tokenizer", None)
    q = getattr(tok, "quantizer", None)
    return (isinstance(q, CosineQuantizer) and not isinstance(q, EuclideanQuantizer)
            and getattr(getattr(model, "features", None), "can_render", False))


class TokenSearch:
    """The search for one model (:class:`~semcodec.model.video_tokenizer.VideoTokenizer` with a
    cosine codebook). ``steps`` 0 leaves the encoder's ids as they are."""

    def __init__(self, model, steps: int = DEFAULT_STEPS, neighbours: int = DEFAULT_NEIGHBOURS,
                 rate_slope: float = DEFAULT_RATE_SLOPE, start_fraction: float = 0.1,
                 relax_steps: int = 0, relax_lr: float = 0.005):
        if steps < 0 or neighbours < 1:
            raise ValueError(f"search steps must be >= 0 and neighbours >= 1, got {steps}, {neighbours}")
        self.model, self.steps, self.rate_slope, self.start_fraction = model, steps, rate_slope, start_fraction
        self.relax_steps, self.relax_lr = relax_steps, relax_lr
        with torch.inference_mode(False), torch.no_grad():    # normal tensors, wherever it is built
            codes = model.tokenizer.quantizer.normalized_codebook().detach().float()
            self.codes = codes
            k = min(neighbours + 1, codes.shape[0])           # a code is its own nearest: kept as a choice
            self.neighbours = (codes @ codes.t()).topk(k, dim=-1).indices
        self.bf16 = fast_bf16(codes.device)   # the decodes it compares: bfloat16 only where that is native

    def _relax(self, x, cur, error, evaluate, total, start):
        """The encoder's outputs moved by the decoder's gradient (Adam, ``relax_steps`` steps), each
        step's ids those nearest the moved outputs (a straight-through estimate): far jumps the
        neighbour search cannot make. Returns the state (ids, vectors, error, bits) of the best
        step by the cost, or ``start`` when none beat it."""
        with torch.no_grad():
            z = F.normalize(self.model.latents(x).float()[0], dim=-1)
        z = z.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.relax_lr)
        best_ids, (v, loss, d, b) = cur, start
        for _ in range(self.relax_steps):
            zn = F.normalize(z, dim=-1)
            idx = (zn.detach() @ self.codes.t()).argmax(-1)
            with torch.enable_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                err = error((zn + (self.codes[idx] - zn).detach())[None])
            if not torch.equal(idx, best_ids):
                vt, lt, bt = evaluate(idx)
                dt = float(lt.detach())
                if total(dt, bt) < total(d, b):
                    best_ids, v, loss, d, b = idx, vt, lt, dt, bt
            opt.zero_grad(set_to_none=True)
            err.backward()
            opt.step()
        return best_ids, v, loss, d, b

    def _render(self, vectors: torch.Tensor, grid) -> torch.Tensor:
        m = self.model
        return m.features.render(m.tokenizer.decoder(vectors.to(m.tokenizer.decoder.latent_proj.weight.dtype), grid))

    def refine(self, frames: torch.Tensor, ids: np.ndarray, scaled: tuple[int, int] | None = None,
               rate: GroupRate | None = None, shown: "ShownFrames | None" = None) -> tuple[np.ndarray, SearchStats]:
        """``frames``: the group, ``T x H x W x 3`` float in [-1, 1] at the model's padded size;
        ``ids``: the encoder's token ids for it; ``scaled``: the picture's part of the frame (the
        rest is padding, not scored); ``shown``: the source frames the decoded group becomes
        (default: ``frames`` themselves). Returns better ids (int64) and what the search did. Works
        under ``torch.inference_mode`` too (it leaves it for its own gradients)."""
        with torch.inference_mode(False):
            return self._refine(frames.clone(), ids, scaled, rate, shown)

    def _refine(self, frames, ids, scaled, rate, shown=None):
        dev = self.codes.device
        x = frames[None].to(dev).float()
        grid = self.model.grid_for(tuple(x.shape[2:4]))
        h, w = scaled or x.shape[2:4]
        if shown is None:
            target, mix, offset = x[:, :, :h, :w], None, None
        else:
            target = shown.target[None, :, :h, :w].to(dev).float()
            mix = shown.mix.to(dev).float()
            offset = None if shown.offset is None else shown.offset[None, :, :h, :w].to(dev).float()
        cur = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=dev)
        n = len(cur)
        slope = self.rate_slope if rate is not None else 0.0
        db = 10 / math.log(10)

        def error(v: torch.Tensor) -> torch.Tensor:
            out = self._render(v, grid)[:, :, :h, :w].float()
            if mix is not None:
                out = torch.einsum("st,bthwc->bshwc", mix, out)
                if offset is not None:
                    out = out + offset
            return F.mse_loss(out, target)

        def evaluate(idx: torch.Tensor):
            """``(code vectors, their error with its graph, bits)``: the graph is kept so that the
            ids kept next get their gradient without decoding again."""
            v = self.codes[idx][None].clone().requires_grad_(True)
            with torch.enable_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = error(v)
            return v, loss, (rate.bits(idx.cpu().numpy()) if rate is not None else None)

        def total(d: float, b: float | None) -> float:         # -PSNR (up to a constant) + rate
            return db * math.log(max(d, 1e-12)) + (slope * math.log2(max(b, 1.0)) if slope else 0.0)

        v, loss, b = evaluate(cur)
        d = d0 = float(loss.detach())
        b0 = b
        if self.relax_steps:
            cur, v, loss, d, b = self._relax(x, cur, error, evaluate, total, (v, loss, d, b))
        frac, rounds = self.start_fraction, 0
        for _ in range(self.steps):
            g, = torch.autograd.grad(loss, v)
            g = g[0].float()
            cand = self.neighbours[cur]                                   # N x k
            pred = torch.einsum("nd,nkd->nk", g, self.codes[cand]) - (g * self.codes[cur]).sum(-1, keepdim=True)
            pred = pred * (db / max(d, 1e-12))                            # -> dB
            if slope:
                tab = rate.table(cur.cpu().numpy()).to(dev)
                pred = pred + slope / (math.log(2) * b) * (tab.gather(1, cand) - tab.gather(1, cur[:, None]))
            gain, pick = pred.min(-1)
            new = cand.gather(1, pick[:, None])[:, 0]
            order = gain.argsort()
            moved = False
            while frac * n >= 1:
                sel = order[:int(frac * n)]
                sel = sel[gain[sel] < 0]
                if not len(sel):
                    break
                trial = cur.clone()
                trial[sel] = new[sel]
                vt, lt, bt = evaluate(trial)
                dt = float(lt.detach())
                if total(dt, bt) < total(d, b):
                    cur, v, loss, d, b, moved = trial, vt, lt, dt, bt, True
                    frac = min(frac * 1.5, 0.5)
                    break
                frac /= 2
            if not moved:
                break
            rounds += 1
        out = cur.cpu().numpy().astype(np.int64)
        changed = int((out != np.asarray(ids)).sum())
        return out, SearchStats(d0, d, b0, b, rounds, changed)
