"""A token stream in memory (:class:`TokenStream`) and what ``semcodec info`` reports about one.

A token stream is the codec's product: a :class:`~semcodec.bitstream.StreamHeader` (model
identity, source video, GOP layout, entropy coding) and, per group of pictures, the token ids
(``int64``: the IFrame's ``iframe_tokens`` ids, then ``pframe_tokens`` ids per P-frame). Its bytes
are exactly a ``tokens.bin`` file (``docs/bitstream.md``): ``to_bytes`` / ``from_bytes`` and
``save`` / ``load`` (paths or binary file objects) go through the same writer and reader as
``semcodec encode`` / ``decode``, so an in-memory stream and a file are interchangeable.

Streams entropy-coded with the model's token prior (modes ``prior`` and ``adaptive`` when the
model ships one) need that prior to turn bytes back into tokens: ``from_bytes(data, prior=...)``,
or let the codec supply it (``codec.decode(stream)``, ``codec.read_stream(data)``).

This module does not import torch: ``semcodec info`` starts fast.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .bitstream import BitstreamError, GroupRecord, StreamHeader, StreamReader, StreamWriter, read_header


def _is_file(obj) -> bool:
    return hasattr(obj, "read") or hasattr(obj, "write")


class TokenStream:
    """A whole token stream in memory: ``header`` and ``groups`` (one
    :class:`~semcodec.bitstream.GroupRecord` per group: ``index``, ``start`` and ``valid``
    semantic frames, ``tokens``).

    ``tokens[g]`` is group g's ids, ``int64`` in ``[0, codebook_size)``, length
    ``iframe_tokens + (valid - 1) * pframe_tokens``. ``prior`` is the model's token frequencies,
    needed to write or read streams coded with it (kept from the codec that made the stream).
    """

    def __init__(self, header: StreamHeader, groups: list[GroupRecord] | None, prior: np.ndarray | None = None,
                 data: bytes | None = None):
        self._header, self._groups, self._prior, self._data = header, groups, prior, data
        if groups is not None and len(groups) != header.n_groups:
            raise ValueError(f"the header declares {header.n_groups} groups, {len(groups)} were given")

    # -- contents ---------------------------------------------------------------------------
    @property
    def header(self) -> StreamHeader:
        """The header as written: entropy parameters complete (the writer fills them in)."""
        if self._data is None:
            self.to_bytes()
        return self._header

    @property
    def groups(self) -> list[GroupRecord]:
        if self._groups is None:
            raise BitstreamError(
                f"the token stream is entropy-coded with the token prior of model '{self._header.model_name}' "
                f"({self._header.model_hash[:12]}): read it with that codec (codec.read_stream, codec.decode) "
                f"or give prior=codec.prior")
        return self._groups

    @property
    def tokens(self) -> list[np.ndarray]:
        """Token ids per group (``int64``)."""
        return [g.tokens for g in self.groups]

    @property
    def n_tokens(self) -> int:
        return self._header.total_tokens

    @property
    def size(self) -> int:
        """Bytes of the stream as written (``len(to_bytes())``)."""
        return len(self.to_bytes())

    def __len__(self) -> int:
        return self._header.n_groups

    def read_group(self, i: int) -> GroupRecord:
        """Group ``i`` (the reader interface the codec decodes from)."""
        if not 0 <= i < len(self):
            raise IndexError(f"group {i} out of range: the stream has {len(self)} groups")
        return self.groups[i]

    def __eq__(self, other) -> bool:
        if not isinstance(other, TokenStream):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        h = self._header
        return (f"TokenStream(model {h.model_name!r} {h.model_hash[:12]}, {h.n_groups} groups, "
                f"{h.total_tokens} tokens, {h.duration:.2f} s of {h.src_width}x{h.src_height} @ {h.src_fps:g} fps, "
                f"entropy {h.entropy_mode!r})")

    # -- bytes, files -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The stream as ``tokens.bin`` bytes (identical to what ``semcodec encode`` writes)."""
        if self._data is None:
            with tempfile.TemporaryDirectory(prefix="semcodec-") as d:
                path = Path(d) / "tokens.bin"
                with StreamWriter(path, self._header, prior_counts=self._prior) as w:
                    for rec in self.groups:
                        w.write_group(rec)
                self._data = path.read_bytes()
            self._header = w.header
        return self._data

    @classmethod
    def from_bytes(cls, data: bytes, prior: np.ndarray | None = None, name: str = "the token stream") -> "TokenStream":
        """A stream from ``tokens.bin`` bytes, checked whole (``BitstreamError`` naming ``name``
        and what is wrong). Without ``prior``, a stream coded with a model's prior keeps its
        groups coded until a codec decodes it."""
        data = bytes(data)
        with tempfile.TemporaryDirectory(prefix="semcodec-") as d:
            path = Path(d) / "tokens.bin"
            path.write_bytes(data)
            try:
                return cls._read(path, prior, data)
            except BitstreamError as e:
                raise BitstreamError(str(e).replace(str(path), name)) from None

    @classmethod
    def load(cls, src, prior: np.ndarray | None = None) -> "TokenStream":
        """A stream from a path or a binary file object (read whole: streams are small, ~1 KB/s)."""
        if _is_file(src):
            return cls.from_bytes(src.read(), prior, name=str(getattr(src, "name", "the token stream")))
        return cls._read(src, prior, None)

    @classmethod
    def _read(cls, path, prior, data: bytes | None) -> "TokenStream":
        with StreamReader(path, prior_counts=prior) as r:
            h = r.header
            # a stream coded with a model's prior names the prior's hash (docs/bitstream.md)
            groups = None if prior is None and "prior_sha256" in h.entropy_params else list(r)
            if data is None:
                data = Path(path).read_bytes()
        return cls(h, groups, prior, data)

    def save(self, dst) -> None:
        """Write the stream to a path (atomically) or to a binary file object."""
        data = self.to_bytes()
        if _is_file(dst):
            dst.write(data)
            return
        from .atomic import atomic_write
        with atomic_write(dst) as f:
            f.write(data)

    def with_prior(self, prior: np.ndarray | None) -> "TokenStream":
        """The same stream with its groups decoded using the model's token ``prior``."""
        if self._groups is not None:
            return self
        return TokenStream.from_bytes(self.to_bytes(), prior)


def stream_stats(path) -> dict:
    """What ``semcodec info`` reports: model, duration, groups, tokens, rates (no model needed)."""
    h = read_header(path)
    with StreamReader(path) as r:
        payload = sum(r.group_sizes())
    tokens = h.total_tokens
    size = Path(path).stat().st_size
    duration = h.src_frames / h.src_fps
    return {
        "file": str(path), "model": h.model_name, "model_hash": h.model_hash,
        "source": {"width": h.src_width, "height": h.src_height, "fps": h.src_fps, "frames": h.src_frames},
        "duration_s": duration, "semantic_fps": h.semantic_fps, "semantic_frames": h.semantic_frames,
        "groups": h.n_groups, "group": h.group, "overlap": h.overlap,
        "iframe_tokens": h.iframe_tokens, "pframe_tokens": h.pframe_tokens, "codebook_size": h.codebook_size,
        "tokens": tokens, "tokens_per_s": tokens / duration,
        "entropy": h.entropy_mode, "bytes": size, "payload_bytes": payload,
        "bits_per_token": 8 * payload / tokens, "kbit_per_s": 8 * size / duration / 1000,
    }
