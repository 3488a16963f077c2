"""Lossless coding of one group's token ids (the payload of a group chunk).

Four modes (``ENTROPY_MODES``), specified byte for byte in ``docs/bitstream.md``:

* ``fixed``    -- every token in ``ceil(log2 K)`` bits, packed LSB first (the baseline).
* ``prior``    -- rANS under one static model: the model's token prior (token frequencies
  measured on its training data), quantized to integers by ``quantize_counts``.
* ``adaptive`` -- rANS under a model that starts from the prior (or uniform) at the start of
  every group and learns the group's own statistics: after every ``block`` tokens the coded
  tokens' counts are added (``increment`` each) and the model is rebuilt.
* ``context``  -- rANS under a learned model of each token given what is already decoded
  (``context.py``; its coder is ``context.ContextCoder``).

All probabilities are integers (``PRECISION`` = 24 bits, summing to 2**24, each >= 1) derived
from integer counts by one exactly specified rule, so encoder and decoder -- this one or an
independent one -- always agree. The rANS coder is constriction's ``stack.AnsCoder`` (32-bit
words, 64-bit state, 24-bit probabilities). constriction receives each model as the float64
array ``q - 1``: its "fast" quantizer then reproduces ``q`` exactly (the sum is
``2**24 - K``, so its scale factor is exactly 1.0 and every partial sum is an exact integer);
``tests/test_bitstream.py`` checks this against a pure-Python coder written from the spec.
"""
from __future__ import annotations

import hashlib
from typing import Any

import constriction
import numpy as np

from ..errors import SemcodecError

ENTROPY_MODES = ("fixed", "prior", "adaptive", "context")

PRECISION = 24                      # bits of every probability: they sum to 2**PRECISION
TOTAL = 1 << PRECISION
CODER = "rans32"                    # rANS, 32-bit words, 64-bit state (constriction DefaultAnsCoder)
MAX_CODEBOOK = 1 << 16              # largest codebook a stream may declare
MAX_GROUP_TOKENS = 1 << 22          # most tokens one group may declare (bounds decoder memory)
MAX_BLOCK = 1 << 16
MAX_INCREMENT = 1 << 16
_COUNT_LIMIT = 1 << 39              # adaptive totals stay below this: c * (2**24) fits in int64
# Decoding work a stream may declare per byte of file, in units of one token or one symbol of a
# model rebuild (``decode_work``). semcodec's own streams need under 3000 even when every payload
# is empty; 16384 bounds a forged stream to well under a millisecond of decoding per byte.
MAX_WORK_PER_BYTE = 1 << 14

# Adaptive-mode defaults (tuned on synthetic Zipf-like streams with repetition across frames).
DEFAULT_BLOCK = 32
DEFAULT_INCREMENT = {"prior": 1 << 15, "uniform": 16}
# Context mode: a group is coded with the previous group's tokens unless its index is a multiple
# of ``link`` (0: never), so a random access decodes at most ``link - 1`` groups it does not need.
DEFAULT_LINK = 8
MAX_LINK = (1 << 32) - 1
# Decoding work of one context-mode token, in units of ``MAX_WORK_PER_BYTE``: its network pass
# and probability row cost about as much as K / 8 adaptive-mode units.
CONTEXT_WORK_DIVISOR = 8

_SHA_CHARS = frozenset("0123456789abcdef")


class PayloadError(SemcodecError, ValueError):
    """A payload or entropy parameter is wrong; the message is a fragment that the container
    completes with the file name and group number."""


def ans_decode(payload: bytes, draw):
    """``draw(coder)`` on an ANS decoder over ``payload`` (little-endian 32-bit words, as the
    encoders write them); its result. PayloadError for a malformed payload, any decoder fault
    (never leaked as constriction's) or data left over after the last token."""
    if len(payload) % 4:
        raise PayloadError(f"payload has {len(payload)} bytes, not a whole number of 32-bit words")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    if len(words) and words[-1] == 0:
        raise PayloadError("payload ends in a zero word")
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        out = draw(coder)
        empty = coder.is_empty() and coder.num_words() == 0
    except (ValueError, RuntimeError, OverflowError) as e:
        raise PayloadError(f"payload does not decode ({e})") from None
    if not empty:
        raise PayloadError("payload does not decode to exactly the expected tokens "
                           "(data left over after the last token)")
    return out


# --------------------------------------------------------------------------------------------
# integer probability rule
# --------------------------------------------------------------------------------------------

def fixed_bits(codebook_size: int) -> int:
    """Bits per token of the ``fixed`` mode: ``ceil(log2 K)`` (at least 1)."""
    return max(1, (int(codebook_size) - 1).bit_length())


def quantize_counts(counts: np.ndarray) -> np.ndarray:
    """The probability rule: integer counts ``c`` (``c >= 0``, ``T = sum(c) > 0``) -> integer
    probabilities ``q`` (int64) with ``q >= 1`` and ``sum(q) == 2**24``::

        F   = 2**24 - K                   # weight left after giving every symbol 1
        q_k = 1 + floor(c_k * F / T)
        q[argmax(c)] += F - sum_k floor(c_k * F / T)      # the rounding remainder (< K)

    ``argmax`` picks the lowest index among equal counts. ``counts`` is an int64 array with
    ``T < 2**39`` (so that ``c_k * F`` fits in int64), or an object array of Python ints of
    any size.
    """
    c = np.asarray(counts)
    free = TOTAL - c.shape[0]
    if c.dtype == object:
        vals = [int(v) for v in c.tolist()]
        total = sum(vals)
        scaled = np.array([(v * free) // total for v in vals], dtype=np.int64)
        top = vals.index(max(vals))
    else:
        c = c.astype(np.int64, copy=False)
        scaled = (c * free) // int(c.sum())
        top = int(np.argmax(c))
    q = scaled + 1
    q[top] += free - int(scaled.sum())
    return q


def quantize_prior(counts) -> np.ndarray:
    """Integer-exact probabilities (int64, ``>= 1``, summing to 2**24) used by the ``prior`` mode
    and as the start of the ``adaptive`` mode, from the token counts measured on the model's
    training data (any non-negative whole numbers, not all zero; any magnitude); the rule is
    ``quantize_counts``'s."""
    c = np.asarray(counts)
    if c.ndim != 1 or not 2 <= c.shape[0] <= MAX_CODEBOOK:
        raise ValueError(f"prior counts must be a 1-D array of 2..{MAX_CODEBOOK} counts, "
                         f"got shape {c.shape}")
    if c.dtype.kind == "f":
        if not np.all(np.isfinite(c)) or np.any(c != np.floor(c)):
            raise ValueError("prior counts must be whole numbers")
    elif c.dtype.kind not in "iuO":
        raise ValueError(f"prior counts must be integers, got dtype {c.dtype}")
    try:
        vals = [int(v) for v in c.tolist()]
    except (TypeError, ValueError, OverflowError):
        raise ValueError("prior counts must be whole numbers") from None
    if vals != c.tolist():
        raise ValueError("prior counts must be whole numbers")
    if min(vals) < 0:
        raise ValueError("prior counts must be >= 0")
    total = sum(vals)
    if total <= 0:
        raise ValueError("prior counts are all zero")
    return quantize_counts(np.array(vals, dtype=np.int64 if total < _COUNT_LIMIT else object))


def prior_digest(q: np.ndarray) -> str:
    """Hex SHA-256 of quantized probabilities, as K little-endian uint32 values."""
    return hashlib.sha256(np.asarray(q, dtype="<u4").tobytes()).hexdigest()


def _model(q: np.ndarray):
    # constriction's fast quantizer maps the float64 array q - 1 (sum 2**24 - K) back to q exactly.
    return constriction.stream.model.Categorical((q - 1).astype(np.float64), perfect=False)


# --------------------------------------------------------------------------------------------
# fixed-width packing
# --------------------------------------------------------------------------------------------

def pack_fixed(tokens: np.ndarray, bits: int) -> bytes:
    """Token ``j`` occupies payload bits ``j*bits .. j*bits+bits-1``, least significant first;
    payload bit ``i`` is bit ``i % 8`` of byte ``i // 8``; padding bits are 0."""
    t = np.asarray(tokens, dtype=np.uint32)
    bitmat = ((t[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(bitmat.ravel(), bitorder="little").tobytes()


def fixed_payload_size(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


def unpack_fixed(payload: bytes, n: int, bits: int, codebook_size: int) -> np.ndarray:
    if len(payload) != fixed_payload_size(n, bits):
        raise PayloadError(f"payload has {len(payload)} bytes, expected "
                           f"{fixed_payload_size(n, bits)} for {n} tokens of {bits} bits")
    b = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), bitorder="little")
    if b[n * bits:].any():
        raise PayloadError("payload padding bits are not zero")
    vals = b[: n * bits].reshape(n, bits).astype(np.int64) @ (np.int64(1) << np.arange(bits, dtype=np.int64))
    if n and int(vals.max()) >= codebook_size:
        raise PayloadError(f"payload holds token id {int(vals.max())}, outside the codebook "
                           f"of {codebook_size}")
    return vals


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------

def _int_param(params: dict, key: str, lo: int, hi: int) -> int:
    v = params.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise PayloadError(f"entropy parameter '{key}' must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _sha_param(params: dict, key: str = "prior_sha256") -> str:
    """A hash: 64 lowercase hex digits (format 1), or its first 32 (format 2 stores 16 bytes)."""
    v = params.get(key)
    if not isinstance(v, str) or len(v) not in (32, 64) or not set(v) <= _SHA_CHARS:
        raise PayloadError(f"entropy parameter '{key}' must be 32 or 64 lowercase hex digits, got {v!r}")
    return v


def _check_keys(params: dict, allowed: set[str]) -> None:
    extra = sorted(set(params) - allowed)
    if extra:
        raise PayloadError(f"unsupported entropy parameter '{extra[0]}'")


def complete_params(mode: str, codebook_size: int, params: dict | None,
                    prior_q: np.ndarray | None, context=None, rows: tuple[int, int] | None = None) -> dict:
    """The writer's side: fill in defaults (and the prior's or the context model's hash) for
    ``mode``. ``params`` may override ``block``, ``increment`` and ``init`` (adaptive), ``link``,
    ``iframe_rows`` and ``pframe_rows`` (context; ``rows`` gives their defaults). Raises
    ``ValueError``."""
    if mode not in ENTROPY_MODES:
        raise ValueError(f"entropy mode must be one of {ENTROPY_MODES}, got {mode!r}")
    p = dict(params or {})
    if mode == "fixed":
        p.setdefault("bits", fixed_bits(codebook_size))
    elif mode == "context":
        if context is None:
            raise ValueError("entropy mode 'context' needs a context model")
        p.setdefault("coder", CODER)
        p.setdefault("precision", PRECISION)
        if not digest_matches(context.hash, p.setdefault("context_sha256", context.hash)):
            raise ValueError("entropy_params['context_sha256'] does not match the context model")
        p.setdefault("link", DEFAULT_LINK)
        if rows is not None:
            p.setdefault("iframe_rows", rows[0])
            p.setdefault("pframe_rows", rows[1])
    else:
        p.setdefault("coder", CODER)
        p.setdefault("precision", PRECISION)
        init = "prior" if mode == "prior" else p.setdefault(
            "init", "prior" if prior_q is not None else "uniform")
        if init == "prior":
            if prior_q is None:
                raise ValueError(f"entropy mode {mode!r} with the prior needs prior_counts")
            digest = prior_digest(prior_q)
            if not digest_matches(digest, p.setdefault("prior_sha256", digest)):
                raise ValueError("entropy_params['prior_sha256'] does not match prior_counts")
        if mode == "adaptive":
            p.setdefault("block", DEFAULT_BLOCK)
            if init in DEFAULT_INCREMENT:
                p.setdefault("increment", DEFAULT_INCREMENT[init])
    validate_params(mode, codebook_size, p)
    return p


def validate_params(mode: str, codebook_size: int, params: Any) -> None:
    """The reader's side: ``params`` must be exactly what ``mode`` needs. Raises PayloadError."""
    if mode not in ENTROPY_MODES:
        raise PayloadError(f"entropy mode {mode!r} is not supported by this semcodec "
                           f"(it knows {', '.join(ENTROPY_MODES)})")
    if not isinstance(params, dict):
        raise PayloadError("entropy_params must be a JSON object")
    if mode == "fixed":
        _check_keys(params, {"bits"})
        bits = fixed_bits(codebook_size)
        if params.get("bits") != bits or type(params.get("bits")) is not int:
            raise PayloadError(f"entropy parameter 'bits' must be {bits} for a codebook of "
                               f"{codebook_size}, got {params.get('bits')!r}")
        return
    if params.get("coder") != CODER:
        raise PayloadError(f"entropy coder {params.get('coder')!r} is not supported (expected {CODER!r})")
    if params.get("precision") != PRECISION or type(params.get("precision")) is not int:
        raise PayloadError(f"entropy parameter 'precision' must be {PRECISION}, got {params.get('precision')!r}")
    if mode == "prior":
        _check_keys(params, {"coder", "precision", "prior_sha256"})
        _sha_param(params)
        return
    if mode == "context":
        _check_keys(params, {"coder", "precision", "context_sha256", "link", "iframe_rows", "pframe_rows"})
        _sha_param(params, "context_sha256")
        _int_param(params, "link", 0, MAX_LINK)
        _int_param(params, "iframe_rows", 1, MAX_GROUP_TOKENS)
        _int_param(params, "pframe_rows", 0, MAX_GROUP_TOKENS)
        return
    init = params.get("init")
    if init not in ("prior", "uniform"):
        raise PayloadError(f"entropy parameter 'init' must be 'prior' or 'uniform', got {init!r}")
    _check_keys(params, {"coder", "precision", "init", "block", "increment"}
                | ({"prior_sha256"} if init == "prior" else set()))
    if init == "prior":
        _sha_param(params)
    _int_param(params, "block", 1, MAX_BLOCK)
    _int_param(params, "increment", 1, MAX_INCREMENT)


def decode_work(mode: str, params: dict, codebook_size: int, n_tokens: int) -> int:
    """The cost of decoding ``n_tokens`` tokens of one group: a unit per token, in the adaptive
    mode ``codebook_size`` units per model rebuild (one per block after the first), in the
    context mode ``codebook_size / 8`` units per token (its network pass and probability row)."""
    if mode == "context":
        return n_tokens * max(1, codebook_size // CONTEXT_WORK_DIVISOR)
    if mode != "adaptive":
        return n_tokens
    return n_tokens + (-(-n_tokens // params["block"]) - 1) * codebook_size


def needs_prior(mode: str, params: dict) -> bool:
    return mode == "prior" or (mode == "adaptive" and params.get("init") == "prior")


def digest_matches(digest: str, stored: str) -> bool:
    """A full hex digest against a stored one (whole, or its first 32 digits in format 2)."""
    return digest[:len(stored)] == stored


# --------------------------------------------------------------------------------------------
# coders
# --------------------------------------------------------------------------------------------

class TokenCoder:
    """Encodes / decodes the token ids of one group under validated parameters (modes fixed,
    prior, adaptive). Groups are independent: the adaptive state restarts at every group."""

    def __init__(self, mode: str, codebook_size: int, params: dict, prior_q: np.ndarray | None = None):
        validate_params(mode, codebook_size, params)
        if mode == "context":
            raise PayloadError("entropy mode 'context' is coded by context.ContextCoder")
        self.mode, self.k, self.params = mode, int(codebook_size), params
        if needs_prior(mode, params):
            if prior_q is None:
                raise PayloadError(f"entropy mode {mode!r} needs the model's token prior")
            if len(prior_q) != self.k:
                raise PayloadError(f"the token prior has {len(prior_q)} entries, the codebook {self.k}")
        if mode == "fixed":
            self.bits = int(params["bits"])
            return
        if mode == "prior":
            self._static = _model(prior_q)
            return
        self.block = int(params["block"])
        self.increment = int(params["increment"])
        self._c0 = (prior_q.astype(np.int64).copy() if params["init"] == "prior"
                    else np.ones(self.k, dtype=np.int64))
        self._first = _model(quantize_counts(self._c0))

    # -- adaptive model sequence --
    def _update(self, c: np.ndarray, block: np.ndarray) -> None:
        c += self.increment * np.bincount(block, minlength=self.k)

    def encode(self, tokens: np.ndarray) -> bytes:
        """``tokens``: 1-D integer array with values in ``[0, K)`` (checked by the caller)."""
        tok = np.ascontiguousarray(tokens, dtype=np.int32)
        if self.mode == "fixed":
            return pack_fixed(tok, self.bits)
        coder = constriction.stream.stack.AnsCoder()
        if self.mode == "prior":
            coder.encode_reverse(tok, self._static)
        else:
            # A stack: blocks are pushed last to first. The counts before block j are those after
            # all blocks minus blocks j, j+1, ...; so memory stays O(K) however long the group.
            b, c = self.block, self._c0.copy()
            self._update(c, tok)
            for j in range((len(tok) + b - 1) // b - 1, -1, -1):
                block = tok[j * b:(j + 1) * b]
                c -= self.increment * np.bincount(block, minlength=self.k)
                coder.encode_reverse(block, self._first if j == 0 else _model(quantize_counts(c)))
        return np.asarray(coder.get_compressed(), dtype="<u4").tobytes()

    def decode(self, payload: bytes, n: int) -> np.ndarray:
        """Token ids (int64, length ``n``) from a payload; PayloadError if it does not decode
        to exactly ``n`` tokens with no data left over."""
        if self.mode == "fixed":
            return unpack_fixed(payload, n, self.bits, self.k)
        def draw(coder):
            if self.mode == "prior":
                return np.asarray(coder.decode(self._static, n), dtype=np.int64)
            out = np.empty(n, dtype=np.int64)
            b, c = self.block, self._c0.copy()
            for s in range(0, n, b):
                model = self._first if s == 0 else _model(quantize_counts(c))
                m = min(b, n - s)
                out[s:s + m] = coder.decode(model, m)
                self._update(c, out[s:s + m])
            return out
        return ans_decode(payload, draw)


# the decoder adaptation's field (docs/bitstream.md 3.3): signed deltas as adaptive-coded zigzags
DELTA_ALPHABET = 256             # zigzag(delta) in [0, 256): deltas in [-128, 127]
DELTA_CODER = {"coder": "rans32", "precision": 24, "init": "uniform", "block": 16, "increment": 16}


def zigzag(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.int64)
    return np.where(v >= 0, 2 * v, -2 * v - 1)


def unzigzag(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=np.int64)
    return np.where(s % 2 == 0, s // 2, -(s + 1) // 2)


def encode_deltas(ints: np.ndarray) -> bytes:
    """Integer deltas in [-128, 127] -> the field's payload (adaptive rANS over their zigzag)."""
    return TokenCoder("adaptive", DELTA_ALPHABET, DELTA_CODER).encode(zigzag(ints))


def decode_deltas(payload: bytes, n: int) -> np.ndarray:
    return unzigzag(TokenCoder("adaptive", DELTA_ALPHABET, DELTA_CODER).decode(payload, n))
