"""The ``tokens.bin`` container: file header, one chunk per group, index, footer.

Layout (little-endian, fixed-width; ``docs/bitstream.md`` has the byte tables)::

    "SEMCTOKS" | u16 major | u16 minor | u32 L | header JSON (L bytes) | u32 CRC32
    per group:  u32 index | u32 start | u32 valid | u32 P | u32 CRC32 | payload (P bytes)
    index:      "SIDX" | u32 n | n x (u64 chunk offset, u32 P) | u32 CRC32
    footer:     u64 index offset | u32 CRC32 of those 8 bytes | "SEOF"

Writing streams (memory: 12 bytes per group for the index); the output appears atomically on
``close()``. Reading checks every length against the file size before reading or allocating,
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
from .entropy import (MAX_WORK_PER_BYTE, PayloadError, TokenCoder, complete_params, decode_work,
                      fixed_payload_size, needs_prior, prior_digest, quantize_prior)
from .errors import BitstreamError
from .header import HeaderError, StreamHeader, normalized

MAGIC = b"SEMCTOKS"
FORMAT_VERSION = (1, 0)                  # (major, minor) written by this code
PREFIX = struct.Struct("<8sHHI")         # magic, major, minor, header JSON length
MAX_HEADER_JSON = 1 << 20
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


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------

class StreamWriter:
    """Writes a token stream group by group (in index order) to a temporary file next to
    ``path``; ``close()`` renames it to ``path`` atomically; ``abort()`` (and leaving a ``with``
    block by an exception) deletes it, so ``path`` never holds a partial stream.

    ``header.entropy_params`` may be left empty: the writer completes it (defaults, the prior's
    hash) and ``self.header`` is the header actually written. ``prior_counts`` (token
    frequencies on the model's training data, length ``codebook_size``) is required for
    ``entropy_mode="prior"`` and is the starting point of ``"adaptive"`` (uniform without it).
    Misuse raises ``ValueError``.
    """

    def __init__(self, path, header: StreamHeader, prior_counts: np.ndarray | None = None):
        self.path = Path(path)
        try:
            h = normalized(header, check_entropy=False)
        except HeaderError as e:
            raise ValueError(f"invalid stream header: {e}") from None
        prior_q = None if prior_counts is None else quantize_prior(prior_counts)
        if prior_q is not None and len(prior_q) != h.codebook_size:
            raise ValueError(f"prior_counts has {len(prior_q)} entries, but the codebook has "
                             f"{h.codebook_size}")
        params = complete_params(h.entropy_mode, h.codebook_size, h.entropy_params, prior_q)
        try:
            self.header = normalized(replace(h, entropy_params=params))
        except HeaderError as e:
            raise ValueError(f"invalid stream header: {e}") from None
        self._coder = TokenCoder(self.header.entropy_mode, self.header.codebook_size, params, prior_q)
        self._index = bytearray()
        self._next = 0
        self.payload_bytes = 0
        js = self.header.to_json()
        head = PREFIX.pack(MAGIC, *FORMAT_VERSION, len(js)) + js
        self._tmp = temp_beside(self.path)
        self._f = open(self._tmp, "wb")
        try:
            self._f.write(head + struct.pack("<I", _crc(head)))
            self._pos = len(head) + 4
        except BaseException:
            self.abort()
            raise

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
        payload = self._coder.encode(tokens.astype(np.int64))
        fields = struct.pack("<IIII", rec.index, start, valid, len(payload))
        try:
            self._f.write(fields + struct.pack("<I", _crc(fields, payload)) + payload)
        except BaseException:
            self.abort()
            raise
        self._index += struct.pack("<QI", self._pos, len(payload))
        self._pos += CHUNK.size + len(payload)
        self._next += 1
        self.payload_bytes += len(payload)
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

def _read_file_header(f, size: int, name: str) -> tuple[StreamHeader, int]:
    """Header of an open stream and the offset where the first chunk starts."""
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
    if major != FORMAT_VERSION[0]:
        raise BitstreamError(f"{name} uses token stream format version {major}.{minor}, but this "
                             f"semcodec reads version {FORMAT_VERSION[0]}.x")
    try:
        header = StreamHeader.from_json(body)
    except HeaderError as e:
        raise BitstreamError(f"{name} has an invalid file header: {e}") from None
    return header, end


def read_header(path) -> StreamHeader:
    """The validated header of a token stream, without the model, its prior or the index
    (for ``semcodec info``). Raises BitstreamError."""
    name = os.fspath(path)
    with open(path, "rb") as f:
        return _read_file_header(f, os.fstat(f.fileno()).st_size, str(name))[0]


class StreamReader:
    """Random-access reader: validates magic, version, header checksum and the index on open;
    ``read_group(i)`` checks the chunk's CRC32 and decodes it. ``prior_counts`` (the model's
    token frequencies) is needed to decode streams coded with the prior; without it the header
    and ``group_sizes()`` still work and ``read_group`` raises a BitstreamError saying so."""

    def __init__(self, path, prior_counts: np.ndarray | None = None):
        self.path = Path(path)
        self._name = str(os.fspath(path))
        self._f = open(path, "rb")
        try:
            self._open(prior_counts)
        except BaseException:
            self._f.close()
            raise

    # -- opening ------------------------------------------------------------------------------
    def _open(self, prior_counts) -> None:
        f, name = self._f, self._name
        self.size = size = os.fstat(f.fileno()).st_size
        self.header, self._data_start = _read_file_header(f, size, name)
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
        self._check_payload_sizes()
        self._check_work()
        self._coder, self._missing = None, None
        params = h.entropy_params
        prior_q = None
        if needs_prior(h.entropy_mode, params):
            if prior_counts is None:
                self._missing = (f"{name} is entropy-coded with the model's token prior (mode "
                                 f"'{h.entropy_mode}'); it cannot be decoded without the prior")
                return
            prior_q = quantize_prior(prior_counts)
            if len(prior_q) != h.codebook_size or prior_digest(prior_q) != params["prior_sha256"]:
                raise BitstreamError(
                    f"{name} was coded with a different token prior than the one given (prior "
                    f"{params['prior_sha256'][:16]} in the file, {prior_digest(prior_q)[:16]} given); "
                    f"decode it with the model it was made with: {h.model_name} {h.model_hash[:16]}")
        try:
            self._coder = TokenCoder(h.entropy_mode, h.codebook_size, params, prior_q)
        except PayloadError as e:      # unreachable after header validation; kept defensive
            raise BitstreamError(f"{name} has an invalid file header: {e}") from None

    def _check_payload_sizes(self) -> None:
        h, n = self.header, self.header.n_groups
        if h.entropy_mode == "fixed":
            bits = h.entropy_params["bits"]
            for i in (0, n - 1):
                if self._lengths[i] != fixed_payload_size(h.tokens_in_group(i), bits):
                    raise BitstreamError(f"{self._name} is corrupt: group {i} of {n} has the "
                                         f"wrong payload size for its tokens")
            if n > 2 and len(set(self._lengths[:-1])) != 1:
                i = next(j for j, v in enumerate(self._lengths[:-1]) if v != self._lengths[0])
                raise BitstreamError(f"{self._name} is corrupt: group {i} of {n} has the "
                                     f"wrong payload size for its tokens")
        else:
            for i, v in enumerate(self._lengths):
                if v % 4:
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
        """The footer is missing or damaged: walk the chunks to say what is wrong. Raises."""
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

    def read_group(self, i: int) -> GroupRecord:
        """Group ``i`` (0-based), decoded; IndexError if out of range, BitstreamError if the
        chunk is damaged or the prior is missing."""
        h, n, name = self.header, self.header.n_groups, self._name
        if self._f is None:
            raise ValueError("the stream reader is closed")
        if not 0 <= i < n:
            raise IndexError(f"group {i} out of range: {name} has {n} groups")
        if self._coder is None:
            raise BitstreamError(self._missing)
        length = self._lengths[i]
        self._f.seek(self._offsets[i])
        data = self._f.read(CHUNK.size + length)
        if len(data) != CHUNK.size + length:
            raise BitstreamError(f"{name} is truncated: group {i} of {n} is incomplete")
        index, start, valid, plen, crc = CHUNK.unpack_from(data)
        payload = data[CHUNK.size:]
        if _crc(data[:16], payload) != crc:
            raise BitstreamError(f"{name} is corrupt: group {i} of {n} fails its CRC32 check")
        exp_start, exp_valid = h.group_span(i)
        if (index, start, valid, plen) != (i, exp_start, exp_valid, length):
            raise BitstreamError(
                f"{name} is corrupt: group {i} of {n} has an inconsistent chunk header (index "
                f"{index}, start {start}, valid {valid}, {plen} bytes; expected {i}, {exp_start}, "
                f"{exp_valid}, {length})")
        try:
            tokens = self._coder.decode(payload, h.tokens_for_frames(valid))
        except PayloadError as e:
            raise BitstreamError(f"{name} is corrupt: group {i} of {n} does not decode: {e}") from None
        return GroupRecord(i, start, valid, tokens)

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
