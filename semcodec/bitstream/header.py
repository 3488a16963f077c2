"""The stream header: what a token stream needs to be decoded again (model identity, source
video, model geometry, GOP layout, entropy coding), its canonical JSON form and its validation.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from ..errors import SemcodecError
from ..gop import GopPlan

from .entropy import MAX_CODEBOOK, MAX_GROUP_TOKENS, PayloadError, validate_params

_HEX = frozenset("0123456789abcdef")
MAX_DIM = 1 << 20
MAX_SRC_FRAMES = 1 << 40
MAX_SEMANTIC_FRAMES = (1 << 32) - 1        # group starts are stored as uint32
MAX_GROUP = 1 << 16
MAX_ADAPTED = 1 << 16                     # adapted decoder parameters


class HeaderError(SemcodecError, ValueError):
    """A header field is wrong; the message is a fragment (``field 'group' must be ...``)."""


def count_groups(semantic_frames: int, group: int, overlap: int) -> int:
    """Number of groups of the GOP plan (``semcodec.gop.GopPlan``, the one home of that arithmetic)."""
    return len(GopPlan(semantic_frames, group, overlap))


@dataclass(frozen=True)
class StreamHeader:
    model_name: str              # e.g. "s128"
    model_hash: str              # hex SHA-256 content hash of the model weights: 64 lowercase hex
                                 # digits (format 1), or its first 32 (format 2 stores 16 bytes)
    src_fps: float
    src_width: int
    src_height: int
    src_frames: int
    semantic_fps: float
    semantic_frames: int
    scaled_height: int
    scaled_width: int
    padded_height: int
    padded_width: int
    group: int
    overlap: int
    iframe_tokens: int
    pframe_tokens: int
    codebook_size: int
    n_groups: int
    entropy_mode: str            # "fixed" | "prior" | "adaptive" | "context"
    entropy_params: dict = field(default_factory=dict)   # completed by StreamWriter
    # content-adaptive decoding (format 2.1, ``semcodec.adaptation``): one integer per adapted
    # decoder parameter, in units of 2**-adaptation_step; () for none
    adaptation: tuple = ()
    adaptation_step: int = 0

    # -- derived ---------------------------------------------------------------------------
    @property
    def duration(self) -> float:
        """Source duration in seconds (``src_frames / src_fps``)."""
        return self.src_frames / self.src_fps

    @property
    def stride(self) -> int:
        return self.group - self.overlap

    def group_span(self, i: int) -> tuple[int, int]:
        """``(start, valid)`` of group ``i``: its first semantic frame and its coded frames."""
        if not 0 <= i < self.n_groups:
            raise IndexError(f"group {i} out of range: the stream has {self.n_groups} groups")
        g = GopPlan(self.semantic_frames, self.group, self.overlap)[i]
        return g.start, g.valid

    def tokens_for_frames(self, valid: int) -> int:
        return self.iframe_tokens + (valid - 1) * self.pframe_tokens

    def tokens_in_group(self, i: int) -> int:
        return self.tokens_for_frames(self.group_span(i)[1])

    @property
    def total_tokens(self) -> int:
        full = self.tokens_for_frames(self.group)
        return full * (self.n_groups - 1) + self.tokens_in_group(self.n_groups - 1)

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in OPTIONAL_FIELDS or getattr(self, f.name)}

    def to_json(self) -> bytes:
        """Canonical UTF-8 JSON: sorted keys, no spaces, ASCII only, no NaN/Infinity."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True, allow_nan=False).encode("ascii")

    @classmethod
    def from_dict(cls, d: Any) -> "StreamHeader":
        """Validated header from a decoded JSON object (unknown keys are ignored);
        raises HeaderError."""
        if not isinstance(d, dict):
            raise HeaderError("it is not a JSON object")
        missing = [f.name for f in fields(cls) if f.name not in d and f.name not in OPTIONAL_FIELDS]
        if missing:
            raise HeaderError(f"field '{missing[0]}' is missing")
        return normalized(cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d}))

    @classmethod
    def from_json(cls, data: bytes) -> "StreamHeader":
        try:
            d = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:      # UnicodeDecodeError is a ValueError
            raise HeaderError(f"it is not valid JSON ({type(e).__name__})") from None
        return cls.from_dict(d)


OPTIONAL_FIELDS = ("adaptation", "adaptation_step")     # later additions: absent from older headers


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed")


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

def _int(h: StreamHeader, name: str, lo: int, hi: int) -> int:
    v = getattr(h, name)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not lo <= int(v) <= hi:
        raise HeaderError(f"field '{name}' must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)


def _float(h: StreamHeader, name: str) -> float:
    v = getattr(h, name)
    try:
        f = float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else math.nan
    except OverflowError:
        f = math.inf
    if not (math.isfinite(f) and f > 0):
        raise HeaderError(f"field '{name}' must be a positive finite number, got {v!r}")
    return f


def normalized(h: StreamHeader, check_entropy: bool = True) -> StreamHeader:
    """``h`` with every field checked and converted to its plain Python type (numpy scalars
    become int/float); raises HeaderError naming the first bad field. ``check_entropy=False``
    skips ``entropy_params`` (the writer completes them afterwards)."""
    if not isinstance(h.model_name, str) or not 1 <= len(h.model_name) <= 256:
        raise HeaderError(f"field 'model_name' must be a string of 1..256 characters, got {h.model_name!r}")
    if not h.model_name.isprintable():          # it appears in messages, which are one line
        raise HeaderError(f"field 'model_name' must be printable, got {h.model_name!r}")
    if not isinstance(h.model_hash, str) or len(h.model_hash) not in (32, 64) or not set(h.model_hash) <= _HEX:
        raise HeaderError(f"field 'model_hash' must be 32 or 64 lowercase hex digits, got {h.model_hash!r}")
    v: dict[str, Any] = {"src_fps": _float(h, "src_fps"), "semantic_fps": _float(h, "semantic_fps")}
    for name in ("src_width", "src_height", "scaled_height", "scaled_width", "padded_height", "padded_width"):
        v[name] = _int(h, name, 1, MAX_DIM)
    v["src_frames"] = _int(h, "src_frames", 1, MAX_SRC_FRAMES)
    v["semantic_frames"] = _int(h, "semantic_frames", 1, MAX_SEMANTIC_FRAMES)
    v["group"] = g = _int(h, "group", 1, MAX_GROUP)
    v["overlap"] = _int(h, "overlap", 0, g - 1)
    v["iframe_tokens"] = it = _int(h, "iframe_tokens", 1, MAX_GROUP_TOKENS)
    v["pframe_tokens"] = pt = _int(h, "pframe_tokens", 0, MAX_GROUP_TOKENS)
    if it + (g - 1) * pt > MAX_GROUP_TOKENS:
        raise HeaderError(f"a group of {g} frames would hold {it + (g - 1) * pt} tokens, "
                          f"more than the limit of {MAX_GROUP_TOKENS}")
    v["codebook_size"] = k = _int(h, "codebook_size", 2, MAX_CODEBOOK)
    n = count_groups(v["semantic_frames"], g, v["overlap"])
    v["n_groups"] = _int(h, "n_groups", 1, MAX_SEMANTIC_FRAMES)
    if v["n_groups"] != n:
        raise HeaderError(f"field 'n_groups' is {v['n_groups']}, but {v['semantic_frames']} frames "
                          f"in groups of {g} overlapping by {v['overlap']} make {n} groups")
    if not isinstance(h.entropy_mode, str):
        raise HeaderError(f"field 'entropy_mode' must be a string, got {h.entropy_mode!r}")
    if check_entropy:
        try:
            validate_params(h.entropy_mode, k, h.entropy_params)
        except PayloadError as e:
            raise HeaderError(str(e)) from None
        if h.entropy_mode == "context":
            _check_rows(h.entropy_params, it, pt)
    v["adaptation"], v["adaptation_step"] = _adaptation(h)
    return replace(h, **v)


def _adaptation(h: StreamHeader) -> tuple[tuple, int]:
    a, step = h.adaptation, h.adaptation_step
    if not isinstance(a, (tuple, list)) or len(a) > MAX_ADAPTED:
        raise HeaderError(f"field 'adaptation' must be a list of at most {MAX_ADAPTED} integers")
    if any(not isinstance(x, (int, np.integer)) or isinstance(x, bool) or not -128 <= x <= 127 for x in a):
        raise HeaderError("field 'adaptation' must hold integers in -128..127")
    if a and not (isinstance(step, (int, np.integer)) and 1 <= step <= 24):
        raise HeaderError(f"field 'adaptation_step' must be 1..24, got {step!r}")
    return tuple(int(x) for x in a), int(step) if a else 0


def _check_rows(params: dict, iframe_tokens: int, pframe_tokens: int) -> None:
    """The context mode's lattices: rows that divide the token counts (0 rows for 0 tokens)."""
    ri, rp = params["iframe_rows"], params["pframe_rows"]
    if iframe_tokens % ri:
        raise HeaderError(f"field 'iframe_rows' is {ri}, which does not divide the {iframe_tokens} I-frame tokens")
    if (rp == 0) != (pframe_tokens == 0) or (rp and pframe_tokens % rp):
        raise HeaderError(f"field 'pframe_rows' is {rp}, which does not divide the {pframe_tokens} P-frame tokens")


def check_format1(h: StreamHeader) -> None:
    """What format 1 could not hold: short hashes, the context mode. Raises HeaderError."""
    if len(h.model_hash) != 64:
        raise HeaderError(f"field 'model_hash' must be 64 lowercase hex digits, got {h.model_hash!r}")
    if h.adaptation:
        raise HeaderError("format 1 cannot hold a decoder adaptation")
    if h.entropy_mode == "context":
        raise HeaderError("entropy mode 'context' is not supported by this semcodec in format 1 "
                          "(it knows fixed, prior, adaptive)")
    sha = h.entropy_params.get("prior_sha256")
    if sha is not None and len(sha) != 64:
        raise HeaderError(f"entropy parameter 'prior_sha256' must be 64 lowercase hex digits, got {sha!r}")
