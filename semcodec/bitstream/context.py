"""The ``context`` entropy model: a small integer network that predicts each token from what the
decoder already has (``docs/bitstream.md`` section 5 specifies it bit for bit).

Tokens of a frame sit on a lattice (rows x cols = the frame's token count, shaped like the
feature grid: the stream records the rows). Frames are coded one after the other, each in a few passes over
an interleaved pattern of its slots (``pass_map``: the I-frame in 4 passes, P-frames in a
checkerboard of 2), so a whole pass is predicted at once. A slot's context is 28 **taps**, each
a token id or "none" (-1):

* ``PREV``  (9): the previous frame's 3 x 3 tokens around the slot's place;
* ``PREV2`` (1): the token two frames back at the slot's place (P-frames from frame 2 on);
* ``IFRAME``(1): the group's I-frame token at the slot's place (P-frames from frame 2 on);
* ``SAME``  (8): the 3 x 3 neighbours in this frame that earlier passes have coded;
* ``LINK``  (9): in a linked group, the previous group's 3 x 3 tokens around the slot's place
  in the same picture (the frames two consecutive groups share: their overlap).

and 17 features in [0, 127]: frame kind (I, first P, later P), pass (4), lattice border (top,
bottom, left, right), each 0 or 127; whether the previous frame's centre token equals the one
two frames back, the I-frame's, the linked group's (0 / 127); how many of the previous frame's
3 x 3 tokens equal its centre (``127 * count // 9``); and the clip's motion so far: whether it is
known (frames from 2 on) and how many of the previous frame's tokens repeat the frame before it
at their place (``127 * equal // slots``). The network: each tap's codebook vector (int8, 16 values) or zeros, the taps'
availability and the flags -> two ReLU layers (uint8 activations) -> a query (int8) whose dot
products with learned code embeddings, plus a per-code bias and a learned bonus for each tap's
own token id ("copy"), are the logits. Integer logits -> an exp lookup table -> integer counts
-> the probability rule of ``entropy.quantize_counts`` (24 bits), row by row.

Every step is integer arithmetic. The matrix products run as float64 products (torch, CPU) on
integer values whose every partial sum stays below 2**53 (checked on load: at most 1024 inputs of |x| <= 255
times int8 weights: below 2**25), so their results are exact whatever the summation order, FMA,
blocking or thread count; the bounds on biases and multipliers keep every later product and sum
below 2**62 in int64. The same counts on any machine.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "semcodec-context-1"
N_PREV, N_PREV2, N_IFRAME, N_SAME, N_LINK = 9, 1, 1, 8, 9
N_TAPS = N_PREV + N_PREV2 + N_IFRAME + N_SAME + N_LINK          # 28
N_FLAGS = 3 + 4 + 4 + 4 + 2                                    # kind, pass, border, equalities, motion
REQUANT_SHIFT = 24             # hidden / query activations: (acc * mult + 2**23) >> 24
LOGIT_FRAC = 32                # logits are integers in units of 2**-32 nat
LUT_SHIFT = 27                 # lookup index = (max - logit) >> 27: steps of 1/32 nat
MAX_WIDTH = 1024               # inputs / hidden units per layer (keeps float64 sums exact)
_3X3 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
_NEIGHBOURS = [d for d in _3X3 if d != (0, 0)]


# --------------------------------------------------------------------------------------------
# geometry: lattices, passes, places
# --------------------------------------------------------------------------------------------

def lattice_shape(n: int, grid: tuple[int, int]) -> tuple[int, int]:
    """``(rows, cols)``, ``rows * cols == n``: the factor pair whose aspect is closest to the
    grid's (``gh / gw``), i.e. the divisor ``r`` of ``n`` that minimises ``|log(r^2 gw / (n gh))|``,
    the smallest on ties; integer comparisons only. The rows a writer gives when it does not
    know its model's lattice (streams record them: ``semcodec.model.masks.lattice_shape`` is the
    model's rule, in floats, and picks either one on exact ties such as a square grid)."""
    gh, gw = grid
    best, best_num, best_den = 1, None, None
    for r in range(1, n + 1):
        if n % r:
            continue
        a, b = r * r * gw, n * gh                   # the ratio a / b; distance = max(a,b)/min(a,b)
        num, den = max(a, b), min(a, b)
        if best_num is None or num * best_den < best_num * den:
            best, best_num, best_den = r, num, den
    return best, n // best


def pass_map(rows: int, cols: int, passes: int) -> np.ndarray:
    """``rows x cols`` int: the pass that codes each slot. 1: all in one; 2: a checkerboard
    (``(r + c) % 2``); 4: the 2 x 2 pattern ``[[0, 2], [3, 1]]`` (every other slot of every other
    row first, then the diagonal ones, then the rest)."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    if passes == 1:
        return np.zeros((rows, cols), dtype=np.int64)
    if passes == 2:
        return (r + c) % 2
    if passes == 4:
        return np.array([[0, 2], [3, 1]])[r % 2, c % 2]
    raise ValueError(f"passes must be 1, 2 or 4, got {passes}")


def place(i: np.ndarray, n_from: int, n_to: int) -> np.ndarray:
    """Row (or column) of an ``n_to`` lattice whose cell holds the centre of cell ``i`` of an
    ``n_from`` lattice stretched over the same grid: ``((2 i + 1) n_to) // (2 n_from)``."""
    return ((2 * i + 1) * n_to) // (2 * n_from)


def _gather3x3(arr: np.ndarray, rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
    """Tokens of ``arr`` (R x C, -1 = none) at the 3 x 3 places around (rr, cc): n x 9."""
    R, C = arr.shape
    out = np.empty((len(rr), 9), dtype=np.int64)
    for j, (dy, dx) in enumerate(_3X3):
        y, x = rr + dy, cc + dx
        ok = (y >= 0) & (y < R) & (x >= 0) & (x < C)
        out[:, j] = np.where(ok, arr[np.clip(y, 0, R - 1), np.clip(x, 0, C - 1)], -1)
    return out


@dataclass(frozen=True)
class GroupLayout:
    """Where a stream's tokens sit: lattices of I- and P-frames, passes, GOP overlap."""
    ilat: tuple[int, int]
    plat: tuple[int, int]
    iframe_passes: int
    pframe_passes: int
    group: int
    overlap: int

    @classmethod
    def for_stream(cls, iframe_rows: int, pframe_rows: int, iframe_tokens: int, pframe_tokens: int,
                   group: int, overlap: int, iframe_passes: int = 4, pframe_passes: int = 2) -> "GroupLayout":
        """``*_rows``: rows of the lattices (dividing the token counts; 0 rows for 0 tokens)."""
        plat = (pframe_rows, pframe_tokens // pframe_rows) if pframe_tokens else (0, 0)
        return cls((iframe_rows, iframe_tokens // iframe_rows), plat, iframe_passes, pframe_passes,
                   group, overlap)

    def lattice(self, f: int) -> tuple[int, int]:
        return self.ilat if f == 0 else self.plat

    def passes(self, f: int) -> int:
        return self.iframe_passes if f == 0 else self.pframe_passes

    def split(self, tokens: np.ndarray, valid: int) -> list[np.ndarray]:
        """A group's token ids -> one ``rows x cols`` array per frame."""
        (ri, ci), (rp, cp) = self.ilat, self.plat
        n_i, n_p = ri * ci, rp * cp
        out = [tokens[:n_i].reshape(ri, ci)]
        out += [tokens[n_i + k * n_p:n_i + (k + 1) * n_p].reshape(rp, cp) for k in range(valid - 1)]
        return out

    def order(self, valid: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Coding order of a group of ``valid`` frames: ``(frame, rows, cols)`` per pass, frames
        in order, passes in order, slots of a pass row by row."""
        out = []
        for f in range(valid):
            pm = pass_map(*self.lattice(f), self.passes(f))
            for p in range(self.passes(f)):
                rr, cc = np.nonzero(pm == p)
                if len(rr):
                    out.append((f, rr, cc))
        return out

    def taps(self, frames: list[np.ndarray], f: int, rr: np.ndarray, cc: np.ndarray,
             link: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """Context of the slots ``(rr, cc)`` of frame ``f`` (all of one pass): ``(ids n x 28,
        features n x 17 in [0, 127])``. ``frames``: this group's frames (only what the decoder
        already has is read); ``link``: the previous group's frames when this group is linked."""
        R, C = self.lattice(f)
        n = len(rr)
        ids = np.full((n, N_TAPS), -1, dtype=np.int64)
        flags = np.zeros((n, N_FLAGS), dtype=np.int64)
        k = 0
        if f >= 1:                                          # PREV
            Rp, Cp = self.lattice(f - 1)
            ids[:, k:k + 9] = _gather3x3(frames[f - 1], place(rr, R, Rp), place(cc, C, Cp))
        k += N_PREV
        if f >= 2:                                          # PREV2, IFRAME
            Rq, Cq = self.lattice(f - 2)
            ids[:, k] = frames[f - 2][place(rr, R, Rq), place(cc, C, Cq)]
            Ri, Ci = self.ilat
            ids[:, k + 1] = frames[0][place(rr, R, Ri), place(cc, C, Ci)]
        k += N_PREV2 + N_IFRAME
        pm = pass_map(R, C, self.passes(f))
        mine = pm[rr, cc]
        for j, (dy, dx) in enumerate(_NEIGHBOURS):          # SAME: neighbours of earlier passes
            y, x = rr + dy, cc + dx
            ok = (y >= 0) & (y < R) & (x >= 0) & (x < C)
            y, x = np.clip(y, 0, R - 1), np.clip(x, 0, C - 1)
            ok &= pm[y, x] < mine
            ids[:, k + j] = np.where(ok, frames[f][y, x], -1)
        k += N_SAME
        stride = self.group - self.overlap
        if link is not None and f < self.overlap and stride + f < len(link):    # LINK
            src = link[stride + f]
            Rl, Cl = src.shape
            ids[:, k:k + 9] = _gather3x3(src, place(rr, R, Rl), place(cc, C, Cl))
        flags[:, min(f, 2)] = 1
        flags[np.arange(n), 3 + mine] = 1
        flags[:, 7] = rr == 0
        flags[:, 8] = rr == R - 1
        flags[:, 9] = cc == 0
        flags[:, 10] = cc == C - 1
        centre = ids[:, 4]                                  # PREV's centre
        has = centre >= 0
        flags[:, 11] = has & (centre == ids[:, N_PREV])                           # == PREV2
        flags[:, 12] = has & (centre == ids[:, N_PREV + 1])                       # == IFRAME
        flags[:, 13] = has & (centre == ids[:, N_PREV + N_PREV2 + N_IFRAME + N_SAME + 4])   # == LINK's centre
        flags *= 127
        flags[:, 14] = np.where(has, 127 * (ids[:, :N_PREV] == centre[:, None]).sum(axis=1) // 9, 0)
        if f >= 2:                                          # motion: frame f-1 against f-2 at its places
            a = frames[f - 1]
            Ra, Ca = a.shape
            Rb, Cb = frames[f - 2].shape
            ya, xa = np.meshgrid(place(np.arange(Ra), Ra, Rb), place(np.arange(Ca), Ca, Cb), indexing="ij")
            equal = int((a == frames[f - 2][ya, xa]).sum())
            flags[:, 15] = 127
            flags[:, 16] = 127 * equal // (Ra * Ca)
        return ids, flags


# --------------------------------------------------------------------------------------------
# the integer network
# --------------------------------------------------------------------------------------------

_TENSORS = {   # name: (dtype, shape with symbolic sizes)
    "codebook": (np.int8, ("K", "D")),
    "l1.weight": (np.int8, ("H1", "IN")), "l1.bias": (np.int32, ("H1",)), "l1.mult": (np.int32, ("H1",)),
    "l2.weight": (np.int8, ("H2", "H1")), "l2.bias": (np.int32, ("H2",)), "l2.mult": (np.int32, ("H2",)),
    "query.weight": (np.int8, ("Q", "H2")), "query.bias": (np.int32, ("Q",)), "query.mult": (np.int32, ("Q",)),
    "gate.weight": (np.int8, ("T", "H2")), "gate.bias": (np.int32, ("T",)), "gate.mult": (np.int32, ("T",)),
    "out.weight": (np.int8, ("K", "Q")), "out.mult": (np.int64, ("K",)), "out.bias": (np.int64, ("K",)),
    "lut": (np.int32, ("L",)),
}
MAX_MULT = 1 << 30             # requantisation and gate multipliers
MAX_OUT_MULT = 1 << 36         # |query . embedding| < 2**19, so every logit term stays below 2**55
MAX_BIAS = 1 << 24             # layer biases: |acc| < 2**26 before requantisation
MAX_OUT_BIAS = 1 << 48
MAX_LUT = 1 << 18


def context_hash(tensors: dict[str, np.ndarray], config_json: str) -> str:
    """SHA-256 over the config JSON and the tensors (name, dtype, shape, bytes, in name order):
    the identity a stream records."""
    h = hashlib.sha256()
    h.update(f"config|{len(config_json)}|".encode() + config_json.encode())
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{t.dtype.str}|{tuple(t.shape)}|".encode())
        h.update(t.tobytes())
    return h.hexdigest()


class ContextModel:
    """A loaded context model. ``probabilities(ids, flags)`` -> 24-bit integer probabilities,
    one row per slot. Built from integer tensors (``from_tensors``) or a file (``load``);
    ``ValueError`` with a one-line message for anything wrong."""

    def __init__(self, tensors: dict[str, np.ndarray], config: dict):
        self.config = dict(config)
        self.tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        self._check()
        self.config_json = json.dumps(self.config, sort_keys=True, separators=(",", ":"))
        self.hash = context_hash(self.tensors, self.config_json)
        t = self.tensors
        f64 = lambda name: _Product(t[name])                    # noqa: E731  (int8 -> exact float64)
        self._code = t["codebook"].astype(np.float64)
        self._layers = [(f64(f"{n}.weight"), t[f"{n}.bias"].astype(np.int64),
                         t[f"{n}.mult"].astype(np.int64)) for n in ("l1", "l2")]
        self._query = (f64("query.weight"), t["query.bias"].astype(np.int64), t["query.mult"].astype(np.int64))
        self._gate = (f64("gate.weight"), t["gate.bias"].astype(np.int64), t["gate.mult"].astype(np.int64))
        self._out = f64("out.weight")
        self._out_mult = t["out.mult"].astype(np.int64)
        self._out_bias = t["out.bias"].astype(np.int64)
        self._lut = t["lut"].astype(np.int64)

    # -- properties from the config --
    @property
    def codebook_size(self) -> int:
        return int(self.tensors["codebook"].shape[0])

    @property
    def model_hash(self) -> str:
        """Content hash of the codec model whose tokens this model was trained on."""
        return self.config["model_hash"]

    @property
    def hashes(self) -> tuple[str, ...]:
        """The hashes of the streams this network decodes: its own, then those it had before
        ``context_train rebind`` handed it on (the same tensors, bound to an older model)."""
        return (self.hash, *self.config.get("rebound_from", ()))

    def layout(self, iframe_rows, pframe_rows, iframe_tokens, pframe_tokens, group, overlap) -> GroupLayout:
        return GroupLayout.for_stream(iframe_rows, pframe_rows, iframe_tokens, pframe_tokens, group, overlap,
                                      self.config["iframe_passes"], self.config["pframe_passes"])

    def layout_for(self, header, params: dict | None = None) -> GroupLayout:
        """The layout of a stream's groups: its header's GOP and token counts, the lattice rows of
        ``params`` (default: the header's entropy parameters)."""
        p = header.entropy_params if params is None else params
        return self.layout(p["iframe_rows"], p["pframe_rows"], header.iframe_tokens, header.pframe_tokens,
                           header.group, header.overlap)

    def _check(self) -> None:
        t, c = self.tensors, self.config
        for key in ("model_hash", "patch", "iframe_passes", "pframe_passes"):
            if key not in c:
                raise ValueError(f"context model config lacks '{key}'")
        if not isinstance(c["model_hash"], str) or len(c["model_hash"]) != 64:
            raise ValueError("context model config: 'model_hash' must be 64 hex digits")
        old = c.get("rebound_from", [])
        if not (isinstance(old, list) and len(old) <= 16 and all(
                isinstance(x, str) and len(x) == 64 and all(ch in "0123456789abcdef" for ch in x) for x in old)):
            raise ValueError("context model config: 'rebound_from' must be a list of at most 16 hashes (64 hex digits)")
        if c["iframe_passes"] not in (1, 2, 4) or c["pframe_passes"] not in (1, 2, 4):
            raise ValueError("context model config: passes must be 1, 2 or 4")
        if type(c["patch"]) is not int or not 1 <= c["patch"] <= 1024:
            raise ValueError("context model config: 'patch' must be an integer in [1, 1024]")
        missing = sorted(set(_TENSORS) - set(t))
        if missing:
            raise ValueError(f"context model lacks tensor '{missing[0]}'")
        extra = sorted(set(t) - set(_TENSORS))
        if extra:
            raise ValueError(f"context model has an unknown tensor '{extra[0]}'")
        sizes = {"T": N_TAPS}
        for name, (dtype, shape) in _TENSORS.items():
            a = t[name]
            if a.dtype != dtype or a.ndim != len(shape):
                raise ValueError(f"context model tensor '{name}' must be {np.dtype(dtype).name} of rank {len(shape)}")
            for s, v in zip(shape, a.shape):
                if sizes.setdefault(s, v) != v:
                    raise ValueError(f"context model tensor '{name}' has shape {a.shape}, inconsistent with the others")
        if sizes["IN"] != N_TAPS * sizes["D"] + N_TAPS + N_FLAGS:
            raise ValueError(f"context model input width {sizes['IN']} does not match codebook dim {sizes['D']}")
        if not 2 <= sizes["K"] <= 1 << 16 or not 1 <= sizes["L"] <= 1 << 16:
            raise ValueError("context model codebook or lookup table size out of range")
        if max(sizes["IN"], sizes["H1"], sizes["H2"], sizes["Q"]) > MAX_WIDTH:
            raise ValueError(f"context model layers must be at most {MAX_WIDTH} wide")
        for name in ("l1.mult", "l2.mult", "query.mult", "gate.mult", "out.mult"):
            hi = MAX_OUT_MULT if name == "out.mult" else MAX_MULT
            if t[name].min() < 0 or t[name].max() > hi:
                raise ValueError(f"context model tensor '{name}' must hold values in [0, 2^{hi.bit_length() - 1}]")
        for name in ("l1.bias", "l2.bias", "query.bias", "gate.bias"):
            if np.abs(t[name].astype(np.int64)).max() > MAX_BIAS:
                raise ValueError(f"context model tensor '{name}' must hold values in [-2^24, 2^24]")
        if np.abs(t["out.bias"]).max() > MAX_OUT_BIAS:
            raise ValueError("context model tensor 'out.bias' must hold values in [-2^48, 2^48]")
        lut = t["lut"]
        if lut.min() < 1 or lut.max() > MAX_LUT or np.any(np.diff(lut) > 0):
            raise ValueError("context model lookup table must be non-increasing values in [1, 2^18]")
        if t["codebook"].min() < -127:
            raise ValueError("context model codebook values must be in [-127, 127]")

    # -- files --
    def save(self, path) -> str:
        from safetensors.numpy import save_file
        from ..atomic import atomic_path
        meta = {"format": FORMAT, "config": self.config_json, "content_hash": self.hash}
        with atomic_path(path) as tmp:
            save_file(self.tensors, str(tmp), metadata=meta)
        return self.hash

    @classmethod
    def load(cls, path) -> "ContextModel":
        """Reads and checks a context model file (its content hash included)."""
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ValueError(f"{path} is not a semcodec context model")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            config = json.loads(meta["config"])
        except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as e:
            raise ValueError(f"{path} is not a readable context model ({type(e).__name__})") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path} is not a readable context model (config)")
        try:
            model = cls(tensors, config)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        if model.hash != meta.get("content_hash"):
            raise ValueError(f"{path}: tensors do not match their content hash (corrupt file)")
        return model

    # -- the network --
    def logits(self, ids: np.ndarray, flags: np.ndarray) -> np.ndarray:
        """Integer logits ``n x K`` (int64, units of 2**-32 nat) for ``n`` slots (``ids``,
        ``flags``: ``GroupLayout.taps``)."""
        n, K, D = len(ids), self.codebook_size, self._code.shape[1]
        avail = ids >= 0
        tok = np.where(avail, ids, 0)
        x = np.empty((n, N_TAPS * D + N_TAPS + N_FLAGS), dtype=np.float64)
        x[:, :N_TAPS * D] = (self._code[tok] * avail[..., None]).reshape(n, -1)
        x[:, N_TAPS * D:N_TAPS * (D + 1)] = 127 * avail
        x[:, N_TAPS * (D + 1):] = flags
        a = x
        for w, b, m in self._layers:
            a = _requant(w(a) + b, m, 0, 255).astype(np.float64)
        wq, bq, mq = self._query
        q = _requant(wq(a) + bq, mq, -127, 127).astype(np.float64)
        z = self._out(q) * self._out_mult + self._out_bias
        wg, bg, mg = self._gate
        g = (wg(a) + bg) * mg * avail
        rows = np.repeat(np.arange(n), N_TAPS)
        np.add.at(z, (rows, tok.ravel()), g.ravel())       # each tap's bonus on its own token
        return z

    def probabilities(self, ids: np.ndarray, flags: np.ndarray) -> np.ndarray:
        """``n x K`` int64 probabilities, each row ``>= 1`` and summing to 2**24."""
        z = self.logits(ids, flags)
        d = (z.max(axis=1, keepdims=True) - z) >> LUT_SHIFT
        counts = self._lut[np.minimum(d, len(self._lut) - 1)]
        return quantize_rows(counts)


class _Product:
    """``x -> x @ W.T`` for integer-valued float64 ``x`` and an int8 weight ``W``, as int64: a
    float64 matrix product, exact because every partial sum is an integer below 2**53. Run by
    torch on the CPU (its thread pool is the one the codec's network uses, so the two never
    oversubscribe the cores; numpy's BLAS would start threads of its own)."""

    def __init__(self, weight: np.ndarray):
        import torch
        self._w = torch.from_numpy(weight.astype(np.float64).T.copy())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch
        return (torch.from_numpy(np.ascontiguousarray(x)) @ self._w).numpy().astype(np.int64)


def _requant(acc: np.ndarray, mult: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``clip(floor((acc * mult + 2**23) / 2**24), lo, hi)``, per output column."""
    return np.clip((acc * mult + (1 << (REQUANT_SHIFT - 1))) >> REQUANT_SHIFT, lo, hi)


def quantize_rows(counts: np.ndarray) -> np.ndarray:
    """``entropy.quantize_counts`` on every row of ``counts`` (n x K int64, positive totals
    below 2**39)."""
    from .entropy import TOTAL
    n, k = counts.shape
    free = TOTAL - k
    scaled = (counts * free) // counts.sum(axis=1, keepdims=True)
    q = scaled + 1
    q[np.arange(n), np.argmax(counts, axis=1)] += free - scaled.sum(axis=1)
    return q


def context_path(weights_path) -> Path:
    """Where a model's context model lives: ``NAME.context.safetensors`` beside ``NAME.safetensors``."""
    p = Path(weights_path)
    return p.with_name(_stem(p) + ".context.safetensors")


def _stem(p: Path) -> str:
    return p.name[:-len(".safetensors")] if p.name.endswith(".safetensors") else p.name


def context_paths(weights_path) -> list[Path]:
    """Every context model file beside a model file: ``NAME.context.safetensors`` (the one new
    streams are coded with) first, then the earlier ones kept so that the streams coded with them
    still decode, ``NAME.context.HASH.safetensors`` (``HASH``: the first 16 hex digits of theirs),
    in name order. Only the files that exist."""
    p = Path(weights_path)
    first = context_path(p)
    older = sorted(q for q in p.parent.glob(_stem(p) + ".context.*.safetensors") if q != first)
    return ([first] if first.is_file() else []) + older


def is_context_file(path) -> bool:
    """Whether a ``.safetensors`` file name is a context model's (``NAME.context[.HASH].safetensors``)."""
    return ".context." in Path(path).name


def find_context_model(weights_path, content_hash: str) -> ContextModel | None:
    """The context model beside a model file when it exists and was trained for that model
    (``content_hash``); else None. A damaged one raises ValueError."""
    cand = context_path(weights_path)
    if not cand.is_file():
        return None
    model = ContextModel.load(cand)
    return model if model.model_hash == content_hash else None


def older_context_models(weights_path, content_hash: str) -> tuple[ContextModel, ...]:
    """The retired context models beside a model file that were trained for it
    (``NAME.context.HASH.safetensors``, ``context_paths`` order); a damaged one raises ValueError."""
    current = context_path(weights_path)
    models = (ContextModel.load(p) for p in context_paths(weights_path) if p != current)
    return tuple(m for m in models if m.model_hash == content_hash)


def as_models(context) -> tuple:
    """``context`` (a ContextModel or a sequence of them) as a tuple."""
    return tuple(context) if isinstance(context, (list, tuple)) else (context,)


def pick_context(context, digest: str):
    """Of ``context`` (a ContextModel or a sequence of them), the one that decodes streams whose
    header names ``digest`` (its own hash or one it was rebound from); None when none does."""
    from .entropy import digest_matches
    return next((m for m in as_models(context) if any(digest_matches(d, digest) for d in m.hashes)), None)


# --------------------------------------------------------------------------------------------
# coding one group
# --------------------------------------------------------------------------------------------

class ContextCoder:
    """Codes the tokens of one group with a context model: pass after pass (``GroupLayout.order``),
    each pass's probability rows computed at once, the tokens rANS-coded with them (the coder of
    ``entropy``: constriction's ``AnsCoder`` with each row given as ``q - 1`` in float64, which
    its quantizer maps back to ``q`` exactly)."""

    def __init__(self, model: ContextModel, layout: GroupLayout):
        self.model, self.layout = model, layout

    def _rows(self, frames, f, rr, cc, link) -> np.ndarray:
        ids, flags = self.layout.taps(frames, f, rr, cc, link)
        return (self.model.probabilities(ids, flags) - 1).astype(np.float64)

    def encode(self, tokens: np.ndarray, valid: int, link: list[np.ndarray] | None) -> bytes:
        """``tokens``: the group's ids (checked by the caller); ``link``: the previous group's
        frames (``GroupLayout.split``) when this group is linked to it."""
        import constriction
        frames = self.layout.split(np.asarray(tokens, dtype=np.int64), valid)
        syms, rows = [], []
        for f, rr, cc in self.layout.order(valid):
            rows.append(self._rows(frames, f, rr, cc, link))
            syms.append(frames[f][rr, cc])
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(np.concatenate(syms).astype(np.int32), _FAMILY(), np.concatenate(rows))
        return np.asarray(coder.get_compressed(), dtype="<u4").tobytes()

    def decode(self, payload: bytes, valid: int, link: list[np.ndarray] | None) -> np.ndarray:
        """The group's token ids (int64); ``PayloadError`` if the payload does not decode to
        exactly them with nothing left over."""
        from .entropy import ans_decode
        lay = self.layout
        frames = [np.full(lay.lattice(f), -1, dtype=np.int64) for f in range(valid)]

        def draw(coder):
            for f, rr, cc in lay.order(valid):
                frames[f][rr, cc] = np.asarray(coder.decode(_FAMILY(), self._rows(frames, f, rr, cc, link)),
                                               dtype=np.int64)
        ans_decode(payload, draw)
        return np.concatenate([fr.ravel() for fr in frames])


def _FAMILY():
    import constriction
    return constriction.stream.model.Categorical(perfect=False)
