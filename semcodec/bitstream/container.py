"""The ``tokens.bin`` container: file header, one payload per group, index, footer.

Format 2 (written; little-endian, ``docs/bitstream.md`` has the byte tables)::

    "SEMCTOKS" | u16 major | u16 minor | u32 L | header body (L bytes, binary) | u32 CRC32
    payloads:   group 0's | group 1's | ... (back to back)
    index:      per group: varint(2 P + escape) | u32 CRC32 (of that varint, the payload, the tokens)
    footer:     u32 index size | u32 CRC32 of the index and that size

Format 1 (still read; written only on request, for tests)::

    "SEMCTOKS" | u16 major | u16 minor | u32 L | header JSON (L bytes) | u32 CRC32
    per group:  u32 index | u32 start | u32 valid | u32 P | u32 CRC32 | payload (P bytes)
    index:      "SIDX" | u32 n | n x (u64 chunk offset, u32 P) | u32 CRC32
    footer:     u64 index offset | u32 CRC32 of those 8 bytes | "SEOF"

Writing streams (memory: a few bytes per group for the index); the output appears atomically
on ``close()``. Reading checks every length against the file size before reading or allocating,
and every failure is a ``BitstreamError`` with a one-line message.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from ..atomic import commit, temp_beside
from .binary import Cursor, decode_header, encode_header, index_entry
from .entropy import (MAX_WORK_PER_BYTE, PayloadError, TokenCoder, complete_params, decode_work,
                      digest_matches, fixed_bits, fixed_payload_size, needs_prior, pack_fixed,
                      prior_digest, quantize_prior, unpack_fixed)
from .errors import BitstreamError
from .header import HeaderError, StreamHeader, check_format1, normalized

MAGIC = b"SEMCTOKS"
FORMAT_VERSION = (2, 1)                  # (major, minor) this code knows; 2.0 is written where
                                         # there is no 2.1 addition (a decoder adaptation)
READ_MAJORS = (1, 2)                     # majors this code reads
PREFIX = struct.Struct("<8sHHI")         # magic, major, minor, header length
MAX_HEADER_JSON = 1 << 20                # header JSON (format 1) or body (format 2), bytes
FOOTER2 = struct.Struct("<II")           # index size, CRC32 of index + size
MIN_ENTRY = 5                            # an index entry: a varint of at least 1 byte + CRC32
CHUNK = struct.Struct("<IIIII")          # index, start, valid, payload length, CRC32
INDEX_TAG = b"SIDX"
INDEX_HEAD = struct.Struct("<4sI")       # tag, group count
INDEX_ENTRY = np.dtype([("offset", "<u8"), ("length", "<u4")])   # 12 bytes, packed
FOOTER = struct.Struct("<QI4s")          # index offset, CRC32 of the offset, end tag
END_TAG = b"SEOF"


def _crc(*parts: bytes) -> int:
    c = 0
    for p in parts:
        c = zlib.crc32(p, c)
    return c


def index_size(n_groups: int) -> int:
    return INDEX_HEAD.size + INDEX_ENTRY.itemsize * n_groups + 4


@dataclass(frozen=True, eq=False)
class GroupRecord:
    index: int
    start: int          # first semantic frame of the group
    valid: int          # frames coded in the group
    tokens: np.ndarray  # int64, iframe_tokens + (valid - 1) * pframe_tokens ids in [0, codebook_size)

    def __eq__(self, other) -> bool:
        if not isinstance(other, GroupRecord):
            return NotImplemented
        return (self.index, self.start, self.valid) == (other.index, other.start, other.valid) \
            and np.array_equal(self.tokens, other.tokens)

    __hash__ = None  # type: ignore[assignment]


def _token_bytes(tokens: np.ndarray) -> bytes:
    """Token ids as little-endian u16 (codebooks hold at most 65536 ids): what a format-2 group's
    CRC covers after its payload, so a decoder that computes other probabilities than the
    encoder did (another entropy model, other arithmetic) is caught, not only a damaged file."""
    return np.asarray(tokens, dtype="<u2").tobytes()


def _linked(h: StreamHeader, i: int) -> bool:
    """Whether group ``i`` is coded with the previous group's tokens (context mode, ``link``)."""
    return links_to_previous(h.entropy_params.get("link", 0) if h.entropy_mode == "context" else 0, i)


def links_to_previous(link: int, i: int) -> bool:
    """The link rule: with ``link`` > 0, every group but each ``link``-th one is coded with the
    previous group's tokens (a chain restarts at groups 0, link, 2 link, ...)."""
    return link > 0 and i % link != 0


def _grid(h: StreamHeader, patch: int) -> tuple[int, int]:
    return h.padded_height // patch, h.padded_width // patch


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------

class StreamWriter:
    """Writes a token stream group by group (in index order) to a temporary file next to
    ``path``; ``close()`` renames it to ``path`` atomically; ``abort()`` (and leaving a ``with``
    block by an exception) deletes it, so ``path`` never holds a partial stream.

    ``header.entropy_params`` may be left empty: the writer completes it (defaults, the prior's
    or the context model's hash) and ``self.header`` is the header as a reader will see it
    (format 2 keeps the first 16 bytes of each hash). ``prior_counts`` (token frequencies on the
    model's training data, length ``codebook_size``) is required for ``entropy_mode="prior"`` and
    is the starting point of ``"adaptive"`` (uniform without it); ``context`` (a
    ``context.ContextModel``) is required for ``"context"``, whose ``iframe_rows`` /
    ``pframe_rows`` (the token lattices) default to ``context.lattice_shape`` of the padded grid.
    A group coded with the prior, adaptively or by context that would not be smaller than
    fixed-width packing is written packed instead (its index entry says so).
    ``version=1`` writes format 1 (no context mode, no escape), for tests of old readers.
    Misuse raises ``ValueError``.
    """

    def __init__(self, path, header: StreamHeader, prior_counts: np.ndarray | None = None,
                 context=None, version: int = FORMAT_VERSION[0]):
        self.path = Path(path)
        if version not in READ_MAJORS:
            raise ValueError(f"version must be one of {READ_MAJORS}, got {version!r}")
        self.version = version
        try:
            h = normalized(header, check_entropy=False)
        except HeaderError as e:
            raise ValueError(f"invalid stream header: {e}") from None
        if version == 1 and h.entropy_mode == "context":
            raise ValueError("format 1 has no context mode")
        if version == 2 and len(h.model_name.encode("utf-8")) > 255:
            raise ValueError("invalid stream header: field 'model_name' must be at most 255 bytes of UTF-8")
        prior_q = None if prior_counts is None else quantize_prior(prior_counts)
        if prior_q is not None and len(prior_q) != h.codebook_size:
            raise ValueError(f"prior_counts has {len(prior_q)} entries, but the codebook has "
                             f"{h.codebook_size}")
        rows = None
        if h.entropy_mode == "context" and context is not None:
            from .context import lattice_shape
            if context.codebook_size != h.codebook_size:
                raise ValueError(f"the context model codes {context.codebook_size} token ids, but the "
                                 f"codebook has {h.codebook_size}")
            grid = _grid(h, context.config["patch"])
            rows = (lattice_shape(h.iframe_tokens, grid)[0],
                    lattice_shape(h.pframe_tokens, grid)[0] if h.pframe_tokens else 0)
        params = complete_params(h.entropy_mode, h.codebook_size, h.entropy_params, prior_q, context, rows)
        try:
            full = normalized(replace(h, entropy_params=params))
            if version == 2:
                body = encode_header(full)
                self.header = decode_header(body, 1 if full.adaptation else 0, FORMAT_VERSION[1])
            else:
                check_format1(full)
                body = full.to_json()
                self.header = full
        except HeaderError as e:
            raise ValueError(f"invalid stream header: {e}") from None
        h = self.header
        self._context = None
        if h.entropy_mode == "context":
            from .context import ContextCoder
            self._layout = context.layout_for(h)
            self._context = ContextCoder(context, self._layout)
            self._coder = None
        else:
            self._coder = TokenCoder(h.entropy_mode, h.codebook_size, h.entropy_params, prior_q)
        self._bits = fixed_bits(h.codebook_size)
        self._prev = None                      # the previous group's frames (context links)
        self._index = bytearray()
        self._next = 0
        self.payload_bytes = 0
        self.escaped = 0                       # groups written fixed-width instead
        major = version
        minor = 1 if version == FORMAT_VERSION[0] and h.adaptation else 0
        head = PREFIX.pack(MAGIC, major, minor, len(body)) + body
        self._tmp = temp_beside(self.path)
        self._f = open(self._tmp, "wb")
        try:
            self._f.write(head + struct.pack("<I", _crc(head)))
            self._pos = len(head) + 4
        except BaseException:
            self.abort()
            raise

    def _payload(self, index: int, valid: int, tokens: np.ndarray) -> tuple[bytes, bool]:
        h = self.header
        if self._context is not None:
            link = self._prev if _linked(h, index) else None
            payload = self._context.encode(tokens, valid, link)
            self._prev = self._layout.split(tokens, valid)
        else:
            payload = self._coder.encode(tokens)
        if self.version == 2 and h.entropy_mode != "fixed" and \
                len(payload) >= fixed_payload_size(len(tokens), self._bits):
            return pack_fixed(tokens, self._bits), True
        return payload, False

    def write_group(self, rec: GroupRecord) -> int:
        """Appends group ``rec``; returns its payload size in bytes."""
        if self._f is None:
            raise ValueError("the stream writer is closed")
        h = self.header
        if self._next >= h.n_groups:
            raise ValueError(f"the stream has {h.n_groups} groups; group {rec.index} is one too many")
        if rec.index != self._next:
            raise ValueError(f"groups must be written in order: expected group {self._next}, got {rec.index}")
        start, valid = h.group_span(rec.index)
        if (rec.start, rec.valid) != (start, valid):
            raise ValueError(f"group {rec.index} must have start {start} and valid {valid} "
                             f"(got {rec.start}, {rec.valid})")
        tokens = np.asarray(rec.tokens)
        n = h.tokens_for_frames(valid)
        if tokens.ndim != 1 or tokens.dtype.kind not in "iu" or len(tokens) != n:
            raise ValueError(f"group {rec.index} needs a 1-D integer array of {n} tokens, "
                             f"got {tokens.dtype} of shape {tokens.shape}")
        if n and (int(tokens.min()) < 0 or int(tokens.max()) >= h.codebook_size):
            raise ValueError(f"group {rec.index} has token ids outside [0, {h.codebook_size})")
        tokens = tokens.astype(np.int64)
        payload, escaped = self._payload(rec.index, valid, tokens)
        if self.version == 2:
            entry = index_entry(len(payload), escaped)
            record, head = entry + struct.pack("<I", _crc(entry, payload, _token_bytes(tokens))), b""
        else:
            fields = struct.pack("<IIII", rec.index, start, valid, len(payload))
            head = fields + struct.pack("<I", _crc(fields, payload))
            record = struct.pack("<QI", self._pos, len(payload))
        try:
            self._f.write(head + payload)
        except BaseException:
            self.abort()
            raise
        self._index += record
        self._pos += len(head) + len(payload)
        self._next += 1
        self.payload_bytes += len(payload)
        self.escaped += escaped
        return len(payload)

    def close(self) -> None:
        """Writes the index and footer and moves the stream to ``path``. Raises ``ValueError``
        (and creates nothing) if not all ``n_groups`` groups were written."""
        if self._f is None:
            return
        if self._next != self.header.n_groups:
            self.abort()
            raise ValueError(f"only {self._next} of {self.header.n_groups} groups were written; "
                             f"{self.path} was not created")
        try:
            if self.version == 2:
                size = struct.pack("<I", len(self._index))
                self._f.write(bytes(self._index) + size + struct.pack("<I", _crc(self._index, size)))
            else:
                index = INDEX_HEAD.pack(INDEX_TAG, self._next) + bytes(self._index)
                offset = struct.pack("<Q", self._pos)
                self._f.write(index + struct.pack("<I", _crc(index)))
                self._f.write(offset + struct.pack("<I", _crc(offset)) + END_TAG)
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            commit(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discards everything written so far; ``path`` is left untouched."""
        f, self._f = getattr(self, "_f", None), None
        if f is not None:
            f.close()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            self._tmp = None

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def __del__(self):
        if getattr(self, "_f", None) is not None:
            self.abort()


# --------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------

def _read_file_header(f, size: int, name: str) -> tuple[StreamHeader, int, int]:
    """Header of an open stream, its format major and the offset where the group data start."""
    if size == 0:
        raise BitstreamError(f"{name} is empty, not a semcodec token stream")
    f.seek(0)
    prefix = f.read(PREFIX.size)
    if prefix[:len(MAGIC)] != MAGIC[:len(prefix)]:
        raise BitstreamError(f"{name} is not a semcodec token stream (wrong magic bytes)")
    if len(prefix) < PREFIX.size:
        raise BitstreamError(f"{name} is truncated: the file header is incomplete")
    _, major, minor, length = PREFIX.unpack(prefix)
    if length > MAX_HEADER_JSON:
        raise BitstreamError(f"{name} is corrupt: the file header length field is damaged")
    end = PREFIX.size + length + 4
    if end > size:
        raise BitstreamError(f"{name} is truncated: the file header is incomplete")
    rest = f.read(length + 4)
    if len(rest) != length + 4:
        raise BitstreamError(f"{name} is truncated: the file header is incomplete")
    body, (crc,) = rest[:length], struct.unpack("<I", rest[length:])
    if _crc(prefix, body) != crc:
        raise BitstreamError(f"{name} is corrupt: the file header fails its CRC32 check")
    if major not in READ_MAJORS:
        raise BitstreamError(f"{name} uses token stream format version {major}.{minor}, but this "
                             f"semcodec reads versions {', '.join(f'{m}.x' for m in READ_MAJORS)}")
    try:
        if major == 1:
            header = StreamHeader.from_json(body)
            check_format1(header)
        else:
            header = decode_header(body, minor, FORMAT_VERSION[1])
    except HeaderError as e:
        raise BitstreamError(f"{name} has an invalid file header: {e}") from None
    return header, major, end


def read_header(path) -> StreamHeader:
    """The validated header of a token stream, without the model, its prior or the index
    (for ``semcodec info``). Raises BitstreamError."""
    name = os.fspath(path)
    with open(path, "rb") as f:
        return _read_file_header(f, os.fstat(f.fileno()).st_size, str(name))[0]


def read_version(path) -> tuple[int, int]:
    """``(major, minor)`` of a token stream whose header reads (BitstreamError otherwise)."""
    with open(path, "rb") as f:
        _read_file_header(f, os.fstat(f.fileno()).st_size, str(os.fspath(path)))
        f.seek(0)
        return PREFIX.unpack(f.read(PREFIX.size))[1:3]


class StreamReader:
    """Random-access reader: validates magic, version, header checksum and the index on open;
    ``read_group(i)`` decodes group ``i`` and checks its CRC32. ``prior_counts`` (the model's
    token frequencies) is needed to decode streams coded with the prior, ``context`` (a
    ``context.ContextModel``, or a sequence of them: the one the stream names is used) streams
    coded by context; without them the header and ``group_sizes()`` still work and
    ``read_group`` raises a BitstreamError saying so. A group of a context stream linked to the
    one before it needs that one decoded first: ``read_group`` does so (the last decoded group is
    kept)."""

    def __init__(self, path, prior_counts: np.ndarray | None = None, context=None):
        self.path = Path(path)
        self._name = str(os.fspath(path))
        self._f = open(path, "rb")
        try:
            self._open(prior_counts, context)
        except BaseException:
            self._f.close()
            raise

    # -- opening ------------------------------------------------------------------------------
    def _open(self, prior_counts, context) -> None:
        f, name = self._f, self._name
        self.size = os.fstat(f.fileno()).st_size
        self.header, self.version, self._data_start = _read_file_header(f, self.size, name)
        if self.version == 1:
            self._open_index_v1()
            self._escaped = [False] * self.header.n_groups
            self._entries = None
        else:
            self._open_index_v2()
        self._check_payload_sizes()
        self._check_work()
        self._coder, self._context, self._missing, self._cache = None, None, None, None
        self.context = None             # the context model that decodes the groups (context mode)
        h, params = self.header, self.header.entropy_params
        if h.entropy_mode == "context":
            self._open_context(context)
            return
        prior_q = None
        if needs_prior(h.entropy_mode, params):
            if prior_counts is None:
                self._missing = (f"{name} is entropy-coded with the model's token prior (mode "
                                 f"'{h.entropy_mode}'); it cannot be decoded without the prior")
                return
            prior_q = quantize_prior(prior_counts)
            if len(prior_q) != h.codebook_size or not digest_matches(prior_digest(prior_q), params["prior_sha256"]):
                raise BitstreamError(
                    f"{name} was coded with a different token prior than the one given (prior "
                    f"{params['prior_sha256'][:16]} in the file, {prior_digest(prior_q)[:16]} given); "
                    f"decode it with the model it was made with: {h.model_name} {h.model_hash[:16]}")
        try:
            self._coder = TokenCoder(h.entropy_mode, h.codebook_size, params, prior_q)
        except PayloadError as e:      # unreachable after header validation; kept defensive
            raise BitstreamError(f"{name} has an invalid file header: {e}") from None

    def _open_context(self, context) -> None:
        from .context import ContextCoder, as_models, pick_context
        h, name, p = self.header, self._name, self.header.entropy_params
        if context is None:
            self._missing = (f"{name} is entropy-coded with a context model (mode 'context'); it "
                             f"cannot be decoded without it")
            return
        chosen = pick_context(context, p["context_sha256"])
        if chosen is None or chosen.codebook_size != h.codebook_size:
            given = ", ".join(m.hash[:16] for m in as_models(context))
            raise BitstreamError(
                f"{name} was coded with a different context model than the one given (context "
                f"{p['context_sha256'][:16]} in the file, {given} given); decode it with "
                f"the model it was made with: {h.model_name} {h.model_hash[:16]}")
        self.context = chosen
        self._context = ContextCoder(chosen, chosen.layout_for(h))

    def _open_index_v1(self) -> None:
        f, name, size = self._f, self._name, self.size
        h = self.header
        n = h.n_groups
        footer_ok = False
        if size >= self._data_start + FOOTER.size:
            f.seek(size - FOOTER.size)
            raw = f.read(FOOTER.size)
            index_offset, crc, tag = FOOTER.unpack(raw)
            footer_ok = tag == END_TAG and crc == _crc(raw[:8])
        if not footer_ok:
            self._diagnose()
        isize = index_size(n)
        if index_offset < self._data_start or index_offset + isize + FOOTER.size != size:
            raise BitstreamError(f"{name} is corrupt: the group index does not fit the file "
                                 f"({n} groups declared)")
        f.seek(index_offset)
        raw = f.read(isize)
        if len(raw) != isize or _crc(raw[:-4]) != struct.unpack("<I", raw[-4:])[0]:
            raise BitstreamError(f"{name} is corrupt: the group index fails its CRC32 check")
        tag, count = INDEX_HEAD.unpack(raw[:INDEX_HEAD.size])
        if tag != INDEX_TAG or count != n:
            raise BitstreamError(f"{name} is corrupt: the group index does not match the header")
        entries = np.frombuffer(raw, dtype=INDEX_ENTRY, count=n, offset=INDEX_HEAD.size)
        offsets = entries["offset"].astype(np.uint64)
        lengths = entries["length"].astype(np.uint64)
        ends = np.cumsum(lengths + np.uint64(CHUNK.size)) + np.uint64(self._data_start)
        expect = np.concatenate([[np.uint64(self._data_start)], ends[:-1]]).astype(np.uint64)
        if not np.array_equal(offsets, expect) or int(ends[-1]) != index_offset:
            raise BitstreamError(f"{name} is corrupt: the group index does not match the group chunks")
        self._offsets = [int(v) for v in offsets.tolist()]
        self._lengths = [int(v) for v in lengths.tolist()]

    def _open_index_v2(self) -> None:
        f, name, size, n = self._f, self._name, self.size, self.header.n_groups
        if size < self._data_start + FOOTER2.size:
            raise BitstreamError(f"{name} is truncated: the group index and footer are missing")
        f.seek(size - FOOTER2.size)
        raw = f.read(FOOTER2.size)
        isize, crc = FOOTER2.unpack(raw)
        start = size - FOOTER2.size - isize
        # a cut file ends in payload bytes: its "footer" declares an index that cannot fit (but
        # for a chance of about the file's size in 2**32)
        if start < self._data_start:
            raise BitstreamError(f"{name} is truncated: the footer at its end is missing or damaged "
                                 f"(it declares a group index that does not fit the file)")
        f.seek(start)
        index = f.read(isize)
        if len(index) != isize or _crc(index, raw[:4]) != crc:
            raise BitstreamError(f"{name} is corrupt: the group index fails its CRC32 check")
        if isize < MIN_ENTRY * n:
            raise BitstreamError(f"{name} is corrupt: the group index does not fit the file "
                                 f"({n} groups declared)")
        cur = Cursor(index, "the group index")
        lengths, escaped, entries = [], [], []
        try:
            for i in range(n):
                p0 = cur.pos
                v = cur.varint("payload length", 0, 2 * size + 1)
                entries.append((index[p0:cur.pos], struct.unpack("<I", cur.take(4, "CRC32"))[0]))
                lengths.append(v >> 1)
                escaped.append(bool(v & 1))
        except HeaderError:
            raise BitstreamError(f"{name} is corrupt: the group index does not match the header") from None
        if cur.left():
            raise BitstreamError(f"{name} is corrupt: the group index does not match the header")
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]) + self._data_start
        if int(offsets[-1]) != start:
            raise BitstreamError(f"{name} is corrupt: the group index does not match the group payloads")
        self._offsets = [int(v) for v in offsets[:-1].tolist()]
        self._lengths = lengths
        self._escaped = escaped
        self._entries = entries

    def _check_payload_sizes(self) -> None:
        """Fixed-width payloads (the fixed mode, escaped groups) have exactly the size of their
        tokens; rANS payloads are whole 32-bit words."""
        h, n = self.header, self.header.n_groups
        bits = fixed_bits(h.codebook_size)
        full = fixed_payload_size(h.tokens_for_frames(h.group), bits)
        last = fixed_payload_size(h.tokens_in_group(n - 1), bits)
        for i, (length, esc) in enumerate(zip(self._lengths, self._escaped)):
            if h.entropy_mode == "fixed" and esc:
                raise BitstreamError(f"{self._name} is corrupt: group {i} of {n} is marked as an "
                                     f"escape in a stream with fixed-width coding")
            if h.entropy_mode == "fixed" or esc:
                if length != (last if i == n - 1 else full):
                    raise BitstreamError(f"{self._name} is corrupt: group {i} of {n} has the "
                                         f"wrong payload size for its tokens")
            elif length % 4:
                raise BitstreamError(f"{self._name} is corrupt: group {i} of {n} has a payload "
                                     f"that is not a whole number of 32-bit words")

    def _check_work(self) -> None:
        """Decoding costs at most ``MAX_WORK_PER_BYTE`` per byte of the file: a header cannot
        declare hours of decoding for a few bytes (rANS decodes any number of tokens from an
        empty payload once its state is 0)."""
        h = self.header
        work = sum(decode_work(h.entropy_mode, h.entropy_params, h.codebook_size, h.tokens_in_group(i)) * m
                   for i, m in ((0, h.n_groups - 1), (h.n_groups - 1, 1)))
        if work > MAX_WORK_PER_BYTE * self.size:
            raise BitstreamError(f"{self._name} is corrupt: its header declares more decoding work "
                                 f"({h.total_tokens} tokens) than a stream of {self.size} bytes can hold")

    def _diagnose(self) -> None:
        """Format 1, the footer is missing or damaged: walk the chunks to say what is wrong."""
        f, name, size, n = self._f, self._name, self.size, self.header.n_groups
        pos = self._data_start
        for i in range(n):
            if pos + CHUNK.size > size:
                raise BitstreamError(f"{name} is truncated: group {i} of {n} is incomplete")
            f.seek(pos)
            index, _, _, length, _ = CHUNK.unpack(f.read(CHUNK.size))
            if index != i:
                raise BitstreamError(f"{name} is corrupt: the chunk of group {i} of {n} is damaged "
                                     f"and the footer is unreadable")
            if pos + CHUNK.size + length > size:
                raise BitstreamError(f"{name} is truncated: group {i} of {n} is incomplete")
            pos += CHUNK.size + length
        end = pos + index_size(n) + FOOTER.size
        if size < end - FOOTER.size:
            raise BitstreamError(f"{name} is truncated: the group index is incomplete")
        if size < end:
            raise BitstreamError(f"{name} is truncated: the footer is incomplete")
        if size > end:
            raise BitstreamError(f"{name} is corrupt: {size - end} unexpected bytes after the "
                                 f"end of the stream")
        raise BitstreamError(f"{name} is corrupt: the footer is damaged")

    # -- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.header.n_groups

    def group_sizes(self) -> list[int]:
        """Payload bytes of every group (for bits/token statistics)."""
        return list(self._lengths)

    def group_escapes(self) -> list[bool]:
        """Whether each group is packed fixed-width instead of its stream's mode (format 2)."""
        return list(self._escaped)

    def read_group(self, i: int) -> GroupRecord:
        """Group ``i`` (0-based), decoded; IndexError if out of range, BitstreamError if the
        group (or one it is linked to) is damaged or the entropy model is missing."""
        h, n, name = self.header, self.header.n_groups, self._name
        if self._f is None:
            raise ValueError("the stream reader is closed")
        if not 0 <= i < n:
            raise IndexError(f"group {i} out of range: {name} has {n} groups")
        if self._coder is None and self._context is None:
            raise BitstreamError(self._missing)
        start, valid = h.group_span(i)
        if self.version == 1:
            return GroupRecord(i, start, valid, self._read_v1(i))
        if self._cache and self._cache[0] == i:
            return GroupRecord(i, start, valid, self._cache[1].copy())
        first = i                                 # decode from the group the link chain starts at
        while _linked(h, first) and not (self._cache and self._cache[0] == first - 1):
            first -= 1
        for j in range(first, i + 1):
            prev = self._cache[2] if _linked(h, j) else None
            tokens = self._read_v2(j, prev)
            frames = self._context.layout.split(tokens, h.group_span(j)[1]) if self._context else None
            self._cache = (j, tokens, frames)
        return GroupRecord(i, start, valid, self._cache[1].copy())

    def _payload(self, i: int, head: int) -> bytes:
        length = self._lengths[i]
        self._f.seek(self._offsets[i])
        data = self._f.read(head + length)
        if len(data) != head + length:
            raise BitstreamError(f"{self._name} is truncated: group {i} of {self.header.n_groups} is incomplete")
        return data

    def _read_v1(self, i: int) -> np.ndarray:
        h, n, name = self.header, self.header.n_groups, self._name
        data = self._payload(i, CHUNK.size)
        index, start, valid, plen, crc = CHUNK.unpack_from(data)
        payload = data[CHUNK.size:]
        if _crc(data[:16], payload) != crc:
            raise BitstreamError(f"{name} is corrupt: group {i} of {n} fails its CRC32 check")
        exp_start, exp_valid = h.group_span(i)
        if (index, start, valid, plen) != (i, exp_start, exp_valid, self._lengths[i]):
            raise BitstreamError(
                f"{name} is corrupt: group {i} of {n} has an inconsistent chunk header (index "
                f"{index}, start {start}, valid {valid}, {plen} bytes; expected {i}, {exp_start}, "
                f"{exp_valid}, {self._lengths[i]})")
        try:
            return self._coder.decode(payload, h.tokens_for_frames(valid))
        except PayloadError as e:
            raise BitstreamError(f"{name} is corrupt: group {i} of {n} does not decode: {e}") from None

    def _decode_payload(self, i: int, prev) -> tuple[bytes, np.ndarray]:
        """Format 2: group ``i``'s payload and the tokens it decodes to (``prev``: the frames of
        the group it is linked to), its CRC not yet checked."""
        h, n, name = self.header, self.header.n_groups, self._name
        payload = self._payload(i, 0)
        valid = h.group_span(i)[1]
        ntok = h.tokens_for_frames(valid)
        try:
            if self._escaped[i] or h.entropy_mode == "fixed":
                tokens = unpack_fixed(payload, ntok, fixed_bits(h.codebook_size), h.codebook_size)
            elif self._context is not None:
                tokens = self._context.decode(payload, valid, prev)
            else:
                tokens = self._coder.decode(payload, ntok)
        except PayloadError as e:
            raise BitstreamError(f"{name} is corrupt: group {i} of {n} does not decode: {e}") from None
        return payload, tokens

    def _read_v2(self, i: int, prev) -> np.ndarray:
        payload, tokens = self._decode_payload(i, prev)
        entry, crc = self._entries[i]
        if _crc(entry, payload, _token_bytes(tokens)) != crc:
            raise BitstreamError(f"{self._name} is corrupt: group {i} of {self.header.n_groups} fails "
                                 f"its CRC32 check")
        return tokens

    def __iter__(self) -> Iterator[GroupRecord]:
        for i in range(self.header.n_groups):
            yield self.read_group(i)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "StreamReader":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False
