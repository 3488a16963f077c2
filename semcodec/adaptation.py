"""Content-adaptive decoding: the render head's biases fitted to one clip and sent in its stream.

The decoder is fixed once trained, but a clip is not its training set's average. The encoder,
which holds the source, can fit a few of the decoder's parameters to the clip and send them:
instance-adaptive coding (van Rozendaal et al., "Overfitting for fun and profit", ICLR 2021).
Here the parameters are the biases of the conv head that draws pixels from the decoded features
(``features.head`` and ``features.refine``: 2,451 numbers for ``s128``). The tokens do not
change: a stream with an adaptation decodes to the same token ids, and a reader that skips the
field (format 2.0) draws the unadapted picture.

The encoder fits them after the token search, by Adam on the pixel error of the frames a viewer
sees (the decoder's in-betweens and cross-fades, as :class:`~semcodec.token_search.ShownFrames`
scores them), on at most ``MAX_TARGETS`` source frames spread over the clip. The deltas are
rounded to multiples of ``2**-step`` and coded with the ``adaptive`` rANS mode of the token
stream (``docs/bitstream.md`` section 3.3). The encoder picks the rounding (``STEPS``) and keeps
the deltas at all only where they pay for their bits at the search's price (``-PSNR + rate_slope x
log2(bits)`` over the whole stream).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .bitstream.entropy import encode_deltas

DEFAULT_STEPS = 24               # Adam steps of the fit (0: no adaptation)
DEFAULT_LR = 2e-3
ROWS_PER_STEP = 8                # source frames scored per step
MAX_TARGETS = 96                 # source frames kept for the fit, spread over the clip
STEP_EXPONENT = 5                # deltas rounded to multiples of 2**-5 where no price is given
STEPS = (4, 5, 6)                # the roundings the encoder prices
MAX_PARAMS = 1 << 16


def parameters(features) -> list[torch.nn.Parameter]:
    """The adapted parameters of a conv feature space, in the stream's order: every bias of its
    head then of its refine stage, in ``named_parameters`` order. Empty for other feature spaces."""
    out = []
    for name, p in features.named_parameters():
        if name.startswith(("head.", "refine.")) and name.endswith(".bias"):
            out.append(p)
    return out


def count(model) -> int:
    """How many parameters a stream adapts for ``model`` (0: it cannot adapt; a head that warps
    each frame from the one before draws no frame alone, so it is not fitted frame by frame)."""
    features = getattr(model, "features", None)
    if features is None or getattr(getattr(model, "config", None), "pframe_warp", False):
        return 0
    return sum(p.numel() for p in parameters(features))


@dataclass(frozen=True)
class Adaptation:
    """What a stream sends: ``ints`` (one per adapted parameter) times ``2**-step``."""
    ints: np.ndarray
    step: int = STEP_EXPONENT

    @property
    def deltas(self) -> np.ndarray:
        return self.ints.astype(np.float64) * 2.0 ** -self.step

    def payload(self) -> bytes:
        return encode_deltas(self.ints)


def adapted_features(model, ints: np.ndarray, step: int):
    """A copy of ``model.features`` with the deltas added to its adapted parameters (the shared
    model is left as it is)."""
    import copy
    feats = copy.deepcopy(model.features)
    params = parameters(feats)
    n = sum(p.numel() for p in params)
    if len(ints) != n:
        raise ValueError(f"the stream adapts {len(ints)} parameters, the model has {n}")
    d = torch.as_tensor(np.asarray(ints, dtype=np.float64) * 2.0 ** -step)
    at = 0
    with torch.no_grad():
        for p in params:
            p += d[at:at + p.numel()].view_as(p).to(p.dtype)
            at += p.numel()
    return feats


def shown_weights(header, plan, picks: list[int]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """For source frames ``picks``: ``W`` (``len(picks) x M``) and the ``M`` (group, frame) pairs
    it mixes, such that frame ``picks[r]`` as decoded is ``sum_m W[r, m] x`` group frame ``m``
    (the decoder's cross-fade of overlaps and linear in-betweens)."""
    from .gop import fade_weights
    from .video import blend_at
    k = header.semantic_fps / header.src_fps
    owners: dict[int, list[tuple[tuple[int, int], float]]] = {}
    for g in plan:
        fw = fade_weights(g, len(plan), header.overlap)
        for j in range(g.valid):
            owners.setdefault(g.start + j, []).append(((g.index, j), float(fw[j])))
    cols: dict[tuple[int, int], int] = {}
    rows = []
    for i in picks:
        a, b, w = blend_at(i * k, header.semantic_frames)
        r: dict[int, float] = {}
        for s, ws in ((a, 1.0 - w), (b, w)):
            if ws <= 0:
                continue
            tot = sum(f for _, f in owners[s])
            for key, f in owners[s]:
                c = cols.setdefault(key, len(cols))
                r[c] = r.get(c, 0.0) + ws * f / tot
        rows.append(r)
    W = np.zeros((len(picks), len(cols)))
    for n, r in enumerate(rows):
        for c, v in r.items():
            W[n, c] = v
    return W, sorted(cols, key=cols.get)


def pick_frames(src_frames: int, limit: int = MAX_TARGETS) -> list[int]:
    """At most ``limit`` source frame numbers spread evenly over ``src_frames``."""
    if src_frames <= limit:
        return list(range(src_frames))
    return sorted({int(round(x)) for x in np.linspace(0, src_frames - 1, limit)})


def fit(model, header, records, targets: dict[int, torch.Tensor], steps: int = DEFAULT_STEPS,
        lr: float = DEFAULT_LR, rate_slope: float = 0.5, stream_bits: float | None = None,
        seed: int = 0) -> tuple[Adaptation | None, dict]:
    """The adaptation of a coded clip: ``records`` its groups (token ids), ``targets`` source
    frames by number (``H x W x 3`` float in [-1, 1], the model's padded size). Returns the
    adaptation, or None where it does not pay for its bits at ``rate_slope`` dB per doubling of
    ``stream_bits`` (the rounding chosen among ``STEPS`` at that price; None: rounded to
    ``2**-STEP_EXPONENT``, kept whenever it lowers the error), and what the fit measured."""
    from .gop import GopPlan
    params = parameters(model.features)
    if not params or not targets or steps <= 0:
        return None, {}
    h = header
    plan = list(GopPlan(h.semantic_frames, h.group, h.overlap))
    picks = sorted(targets)
    W, cols = shown_weights(h, plan, picks)
    grid = model.grid_for((h.padded_height, h.padded_width))
    sh, sw = h.scaled_height, h.scaled_width
    by_group: dict[int, list[int]] = {}
    for key in cols:
        by_group.setdefault(key[0], []).append(key[1])
    feats = {}
    with torch.no_grad():
        for gi, js in by_group.items():
            rec = records[gi]
            idx = torch.as_tensor(np.asarray(rec.tokens, dtype=np.int64))[None]
            f = model.tokenizer.decode(idx, grid)[0].float()
            for j in js:
                feats[(gi, j)] = f[j]
    F_ = torch.stack([feats[key] for key in cols])                   # M x h x w x C
    Wt = torch.tensor(W, dtype=torch.float32)
    tgt = torch.stack([targets[i][:sh, :sw].float() for i in picks])  # R x sh x sw x 3
    fs = model.features
    saved = [p.detach().clone() for p in params]
    flags = [p.requires_grad for p in fs.parameters()]

    def error(rows: torch.Tensor) -> torch.Tensor:
        used = torch.nonzero(Wt[rows].sum(0) > 0)[:, 0]
        out = fs.render(F_[used][None])[0].clamp(-1, 1)[:, :sh, :sw]
        return F.mse_loss(torch.einsum("rm,mhwc->rhwc", Wt[rows][:, used], out), tgt[rows])

    def full() -> float:
        with torch.no_grad():
            return float(sum(error(torch.arange(i, min(i + ROWS_PER_STEP, len(picks)))) * min(ROWS_PER_STEP, len(picks) - i)
                             for i in range(0, len(picks), ROWS_PER_STEP))) / len(picks)

    try:
        for p in fs.parameters():
            p.requires_grad_(False)
        before = full()
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            rows = torch.randperm(len(picks), generator=gen)[:ROWS_PER_STEP]
            with torch.enable_grad():
                loss = error(rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        fitted = [p.detach().clone() for p in params]

        def rounded(step: int) -> tuple[np.ndarray, float]:
            """The deltas rounded to multiples of 2**-step, and the error with them."""
            ints = np.concatenate([torch.round((f - s) * 2 ** step).clamp(-128, 127).flatten().to(torch.int64).numpy()
                                   for f, s in zip(fitted, saved)])
            with torch.no_grad():
                at = 0
                for p, s in zip(params, saved):
                    p.copy_(s + torch.as_tensor(ints[at:at + p.numel()] * 2.0 ** -step).view_as(p).to(p.dtype))
                    at += p.numel()
            return ints, full()

        def cost(mse: float, bits: int) -> float:          # -PSNR + the search's price of the bits
            extra = rate_slope * math.log2((stream_bits + bits) / stream_bits) if stream_bits and rate_slope > 0 else 0.0
            return 10 * math.log10(max(mse, 1e-12)) + extra

        best = None
        for step in STEPS if stream_bits else (STEP_EXPONENT,):
            ints, mse = rounded(step)
            bits = 8 * (len(encode_deltas(ints)) + 8) if ints.any() else 0
            if best is None or cost(mse, bits) < cost(best[2], best[3]):
                best = (step, ints, mse, bits)
        step, ints, after, bits = best
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
        for p, f in zip(fs.parameters(), flags):
            p.requires_grad_(f)
    gain = 10 * math.log10(before / max(after, 1e-12))
    info = {"mse_before": before, "mse_after": after, "gain_db": gain, "bits": bits, "step": step,
            "targets": len(picks)}
    if not ints.any() or gain <= 0 or cost(after, bits) >= cost(before, 0):
        return None, info
    return Adaptation(ints, step), info
