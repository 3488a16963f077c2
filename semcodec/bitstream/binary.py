"""Format 2's binary pieces: LEB128 varints, frame rates, the header body, index entries.

Specified byte for byte in ``docs/bitstream.md`` section 3. Every reader function takes a
``Cursor`` over bytes that were already read into memory (the header body, the index), checks
each value against its bounds as it goes and raises ``HeaderError`` with a fragment naming the
field (``field 'group' must be an integer in [1, 65536], got 0``).
"""
from __future__ import annotations

import math
import struct
from fractions import Fraction

import numpy as np

from .entropy import CODER, PRECISION, PayloadError, decode_deltas, encode_deltas, fixed_bits
from .header import MAX_ADAPTED, HeaderError, StreamHeader, count_groups

HASH_BYTES = 16                 # hashes are stored as the first 16 bytes of their SHA-256
MODE_CODES = {"fixed": 0, "prior": 1, "adaptive": 2, "context": 3}
MODE_NAMES = {v: k for k, v in MODE_CODES.items()}
MAX_FPS_DEN = 1 << 16
MAX_VARINT_BYTES = 10           # 64-bit values


class Cursor:
    """Reads from ``data`` at ``pos``; every read is bounds-checked."""

    def __init__(self, data: bytes, what: str = "the file header"):
        self.data, self.pos, self.what = data, 0, what

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, name: str) -> bytes:
        if n > self.left():
            raise HeaderError(f"{self.what} ends inside field '{name}'")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def varint(self, name: str, lo: int = 0, hi: int = (1 << 64) - 1) -> int:
        """An unsigned LEB128 value in ``[lo, hi]``, minimally encoded."""
        v, shift = 0, 0
        for i in range(MAX_VARINT_BYTES):
            if self.pos >= len(self.data):
                raise HeaderError(f"{self.what} ends inside field '{name}'")
            b = self.data[self.pos]
            self.pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if b == 0 and i > 0:
                    raise HeaderError(f"field '{name}' is not minimally encoded")
                break
        else:
            raise HeaderError(f"field '{name}' is longer than {MAX_VARINT_BYTES} bytes")
        if not lo <= v <= hi:
            raise HeaderError(f"field '{name}' must be an integer in [{lo}, {hi}], got {v}")
        return v

    def number(self, name: str) -> float:
        """A positive rate (``put_number``): ``varint v``; even ``v``: the whole number ``v / 2``;
        odd ``v``, ``den = v >> 1``: ``den = 0`` then a little-endian float64, else ``varint num``
        and the value ``num / den``."""
        v = self.varint(name, 0, 2 * MAX_FPS_DEN + 1)
        if not v & 1:
            x = float(v >> 1)
        elif v == 1:
            (x,) = struct.unpack("<d", self.take(8, name))
        else:
            x = self.varint(name, 1, 1 << 40) / (v >> 1)
        if not (math.isfinite(x) and x > 0):
            raise HeaderError(f"field '{name}' must be a positive finite number, got {x!r}")
        return x


def put_varint(out: bytearray, v: int) -> None:
    if v < 0:
        raise ValueError(f"a varint cannot hold {v}")
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def varint_bytes(v: int) -> bytes:
    out = bytearray()
    put_varint(out, v)
    return bytes(out)


def put_number(out: bytearray, x: float) -> None:
    """A rate in as few bytes as give it back exactly: a whole number up to 65536 as ``2 x``
    (25 fps: one byte), a fraction with ``den <= 65536`` as ``2 den + 1, num`` (30000/1001), any
    other float as ``1`` and its float64."""
    f = Fraction(x).limit_denominator(MAX_FPS_DEN)
    if f.denominator == 1 and 1 <= f.numerator <= MAX_FPS_DEN and f.numerator == x:
        put_varint(out, 2 * f.numerator)
    elif 1 <= f.numerator <= 1 << 40 and f.denominator > 1 and f.numerator / f.denominator == x:
        put_varint(out, 2 * f.denominator + 1)
        put_varint(out, f.numerator)
    else:
        put_varint(out, 1)
        out += struct.pack("<d", x)


def _hash_bytes(hexdigest: str) -> bytes:
    return bytes.fromhex(hexdigest[:2 * HASH_BYTES])


def entropy_hash(h: StreamHeader) -> str | None:
    """The hex hash of the entropy model the header's mode uses (prior or context), or None."""
    p = h.entropy_params
    return p.get("context_sha256") or p.get("prior_sha256")


def encode_header(h: StreamHeader) -> bytes:
    """The header body of a validated header (section 3 of the spec)."""
    out = bytearray(_hash_bytes(h.model_hash))
    out.append(MODE_CODES[h.entropy_mode])
    eh = entropy_hash(h)
    out += _hash_bytes(eh) if eh else bytes(HASH_BYTES)
    name = h.model_name.encode("utf-8")
    put_varint(out, len(name))
    out += name
    put_number(out, h.src_fps)
    for v in (h.src_width, h.src_height, h.src_frames):
        put_varint(out, v)
    put_number(out, h.semantic_fps)
    for v in (h.semantic_frames, h.scaled_height, h.scaled_width, h.padded_height - h.scaled_height,
              h.padded_width - h.scaled_width, h.group, h.overlap, h.iframe_tokens, h.pframe_tokens,
              h.codebook_size):
        put_varint(out, v)
    p = h.entropy_params
    if h.entropy_mode == "adaptive":
        out.append(1 if p["init"] == "prior" else 0)
        put_varint(out, p["block"])
        put_varint(out, p["increment"])
    elif h.entropy_mode == "context":
        for key in ("link", "iframe_rows", "pframe_rows"):
            put_varint(out, p[key])
    if h.adaptation:                           # format 2.1: the stream's minor says it is there
        payload = encode_deltas(np.asarray(h.adaptation, dtype=np.int64))
        put_varint(out, len(h.adaptation))
        out.append(h.adaptation_step)
        put_varint(out, len(payload))
        out += payload
    return bytes(out)


def decode_header(body: bytes, minor: int, known_minor: int) -> StreamHeader:
    """The header from a body; bytes after the known fields are allowed only from a newer minor
    version (its additions). Values are range-checked here; ``header.normalized`` then checks
    how they fit together. Raises HeaderError."""
    from .header import normalized
    c = Cursor(body)
    model_hash = c.take(HASH_BYTES, "model_hash").hex()
    code = c.take(1, "entropy_mode")[0]
    if code not in MODE_NAMES:
        raise HeaderError(f"entropy mode {code} is not supported by this semcodec "
                          f"(it knows {', '.join(f'{v} {k}' for k, v in MODE_CODES.items())})")
    mode = MODE_NAMES[code]
    ehash = c.take(HASH_BYTES, "entropy_hash").hex()
    n = c.varint("model_name")
    if not 1 <= n <= 255:
        raise HeaderError(f"field 'model_name' must be 1 to 255 bytes long, got {n}")
    try:
        name = c.take(n, "model_name").decode("utf-8")
    except UnicodeDecodeError:
        raise HeaderError("field 'model_name' is not UTF-8") from None
    f: dict = {"model_name": name, "model_hash": model_hash, "entropy_mode": mode}
    f["src_fps"] = c.number("src_fps")
    f["src_width"] = c.varint("src_width", 1, 1 << 20)
    f["src_height"] = c.varint("src_height", 1, 1 << 20)
    f["src_frames"] = c.varint("src_frames", 1, 1 << 40)
    f["semantic_fps"] = c.number("semantic_fps")
    f["semantic_frames"] = c.varint("semantic_frames", 1, (1 << 32) - 1)
    f["scaled_height"] = c.varint("scaled_height", 1, 1 << 20)
    f["scaled_width"] = c.varint("scaled_width", 1, 1 << 20)
    f["padded_height"] = f["scaled_height"] + c.varint("padded_height - scaled_height", 0, 1 << 20)
    f["padded_width"] = f["scaled_width"] + c.varint("padded_width - scaled_width", 0, 1 << 20)
    f["group"] = c.varint("group", 1, 1 << 16)
    f["overlap"] = c.varint("overlap", 0, f["group"] - 1)
    f["iframe_tokens"] = c.varint("iframe_tokens", 1, 1 << 22)
    f["pframe_tokens"] = c.varint("pframe_tokens", 0, 1 << 22)
    f["codebook_size"] = k = c.varint("codebook_size", 2, 1 << 16)
    f["n_groups"] = count_groups(f["semantic_frames"], f["group"], f["overlap"])
    p: dict = {"bits": fixed_bits(k)} if mode == "fixed" else {"coder": CODER, "precision": PRECISION}
    uses_hash = mode in ("prior", "context")
    if mode == "adaptive":
        init = c.take(1, "init")[0]
        if init > 1:
            raise HeaderError(f"field 'init' must be 0 (uniform) or 1 (prior), got {init}")
        p["init"] = ("uniform", "prior")[init]
        uses_hash = init == 1
        p["block"] = c.varint("block", 1, 1 << 16)
        p["increment"] = c.varint("increment", 1, 1 << 16)
    elif mode == "context":
        p["link"] = c.varint("link", 0, (1 << 32) - 1)
        p["iframe_rows"] = c.varint("iframe_rows", 1, f["iframe_tokens"])
        p["pframe_rows"] = c.varint("pframe_rows", 0, f["pframe_tokens"])
    if uses_hash:
        p["context_sha256" if mode == "context" else "prior_sha256"] = ehash
    elif ehash != "00" * HASH_BYTES:
        raise HeaderError(f"field 'entropy_hash' must be zero for entropy mode '{mode}'")
    f["entropy_params"] = p
    n = c.varint("adaptation", 0, MAX_ADAPTED) if minor >= 1 and known_minor >= 1 else 0
    if n:
        step = c.take(1, "adaptation_step")[0]
        if not 1 <= step <= 24:
            raise HeaderError(f"field 'adaptation_step' must be 1..24, got {step}")
        size = c.varint("adaptation payload", 1, c.left())
        try:
            f["adaptation"] = tuple(int(x) for x in decode_deltas(c.take(size, "adaptation payload"), n))
        except (PayloadError, ValueError) as e:
            raise HeaderError(f"field 'adaptation' is corrupt: {e}") from None
        f["adaptation_step"] = step
    if c.left() and minor <= known_minor:
        raise HeaderError(f"{c.left()} unexpected bytes after the last field")
    return normalized(StreamHeader(**f))


def index_entry(length: int, escaped: bool) -> bytes:
    """A group's index entry before its CRC: ``varint(2 * payload length + escape flag)``."""
    return varint_bytes(2 * length + int(escaped))
