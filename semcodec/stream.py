"""A token stream in memory (:class:`TokenStream`) and what ``semcodec info`` reports about one.

A token stream is the codec's product: a :class:`~semcodec.bitstream.StreamHeader` (model
identity, source video, GOP layout, entropy coding) and, per group of pictures, the token ids
(``int64``: the IFrame's ``iframe_tokens`` ids, then ``pframe_tokens`` ids per P-frame). Its bytes
are exactly a ``tokens.bin`` file (``docs/bitstream.md``): ``to_bytes`` / ``from_bytes`` and
``save`` / ``load`` (paths or binary file objects) go through the same writer and reader as
``semcodec encode`` / ``decode``, so an in-memory stream and a file are interchangeable.

Streams entropy-coded with the model's token prior (modes ``prior`` and ``adaptive`` when the
model ships one) or its context model (mode ``context``) need it to turn bytes back into tokens:
``from_bytes(data, prior=..., context=...)``, or let the codec supply them (``codec.decode(stream)``,
``codec.read_stream(data)``).

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
    ``iframe_tokens + (valid - 1) * pframe_tokens``. ``prior`` is the model's token frequencies and
    ``context`` its context model (``bitstream.context.ContextModel``), needed to write or read
    streams coded with them (kept from the codec that made the stream).
    """

    def __init__(self, header: StreamHeader, groups: list[GroupRecord] | None, prior: np.ndarray | None = None,
                 data: bytes | None = None, context=None):
        self._header, self._groups, self._prior, self._data = header, groups, prior, data
        self._context = context
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
            what, kw = (("context model", "context=codec.context_model") if self._header.entropy_mode == "context"
                        else ("token prior", "prior=codec.prior"))
            raise BitstreamError(
                f"the token stream is entropy-coded with the {what} of model '{self._header.model_name}' "
                f"({self._header.model_hash[:12]}): read it with that codec (codec.read_stream, codec.decode) "
                f"or give {kw}")
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
                with StreamWriter(path, self._header, prior_counts=self._prior, context=self._context) as w:
                    for rec in self.groups:
                        w.write_group(rec)
                self._data = path.read_bytes()
            self._header = w.header
        return self._data

    @classmethod
    def from_bytes(cls, data: bytes, prior: np.ndarray | None = None, name: str = "the token stream",
                   context=None) -> "TokenStream":
        """A stream from ``tokens.bin`` bytes, checked whole (``BitstreamError`` naming ``name``
        and what is wrong). Without ``prior`` (``context``), a stream coded with a model's prior
        (context model) keeps its groups coded until a codec decodes it."""
        data = bytes(data)
        with tempfile.TemporaryDirectory(prefix="semcodec-") as d:
            path = Path(d) / "tokens.bin"
            path.write_bytes(data)
            try:
                return cls._read(path, prior, data, context)
            except BitstreamError as e:
                raise BitstreamError(str(e).replace(str(path), name)) from None

    @classmethod
    def load(cls, src, prior: np.ndarray | None = None, context=None) -> "TokenStream":
        """A stream from a path or a binary file object (read whole: streams are small, ~1 KB/s)."""
        if _is_file(src):
            return cls.from_bytes(src.read(), prior, name=str(getattr(src, "name", "the token stream")),
                                  context=context)
        return cls._read(src, prior, None, context)

    @classmethod
    def _read(cls, path, prior, data: bytes | None, context=None) -> "TokenStream":
        with StreamReader(path, prior_counts=prior, context=context) as r:
            h = r.header
            # a stream coded with a model's prior or context model names its hash (docs/bitstream.md)
            missing = (prior is None and "prior_sha256" in h.entropy_params) or \
                (context is None and h.entropy_mode == "context")
            groups = None if missing else list(r)
            if data is None:
                data = Path(path).read_bytes()
        return cls(h, groups, prior, data, r.context or context)

    def save(self, dst) -> None:
        """Write the stream to a path (atomically) or to a binary file object."""
        data = self.to_bytes()
        if _is_file(dst):
            dst.write(data)
            return
        from .atomic import atomic_write
        with atomic_write(dst) as f:
            f.write(data)

    def with_prior(self, prior: np.ndarray | None, context=None) -> "TokenStream":
        """The same stream with its groups decoded using the model's token ``prior`` (and its
        ``context`` model)."""
        if self._groups is not None:
            return self
        return TokenStream.from_bytes(self.to_bytes(), prior, context=context)


def stream_stats(path) -> dict:
    """What ``semcodec info`` reports: model, duration, groups, tokens, rates (no model needed)."""
    from .bitstream import read_version
    h = read_header(path)
    with StreamReader(path) as r:
        payload = sum(r.group_sizes())
        escaped = sum(r.group_escapes())
    tokens = h.total_tokens
    size = Path(path).stat().st_size
    duration = h.src_frames / h.src_fps
    return {
        "file": str(path), "format": "{}.{}".format(*read_version(path)), "model": h.model_name,
        "model_hash": h.model_hash,
        "source": {"width": h.src_width, "height": h.src_height, "fps": h.src_fps, "frames": h.src_frames},
        "duration_s": duration, "semantic_fps": h.semantic_fps, "semantic_frames": h.semantic_frames,
        "groups": h.n_groups, "group": h.group, "overlap": h.overlap,
        "iframe_tokens": h.iframe_tokens, "pframe_tokens": h.pframe_tokens, "codebook_size": h.codebook_size,
        "tokens": tokens, "tokens_per_s": tokens / duration,
        "entropy": h.entropy_mode, "bytes": size, "payload_bytes": payload, "overhead_bytes": size - payload,
        "escaped_groups": escaped,
        "bits_per_token": 8 * payload / tokens, "kbit_per_s": 8 * size / duration / 1000,
        "adaptation": _adaptation_stats(h),
    }


def _adaptation_stats(h) -> dict | None:
    if not h.adaptation:
        return None
    from .bitstream.entropy import encode_deltas
    ints = np.asarray(h.adaptation, dtype=np.int64)
    return {"parameters": len(ints), "step": 2.0 ** -h.adaptation_step, "changed": int((ints != 0).sum()),
            "bytes": len(encode_deltas(ints))}


def verify_stream(path, model: str | None = None) -> dict:
    """``semcodec info --verify``: entropy-decode every group, checking its CRC and the layout,
    without the codec's network. The fixed and uniform adaptive modes need nothing; the prior
    modes read the token prior from the model's file, the context mode its context model
    (``model``: a shipped name or a weights path; default: the shipped model the stream names).
    Returns ``stream_stats`` plus what was checked; raises BitstreamError / ModelError."""
    from .bitstream.entropy import needs_prior
    from .errors import ModelError
    h = read_header(path)
    prior, context, using = None, None, "none"
    needs_context = h.entropy_mode == "context"
    if needs_prior(h.entropy_mode, h.entropy_params) or needs_context:
        from .zoo import model_file, shipped_models
        if model is None and h.model_name not in shipped_models():
            raise ModelError(f"the stream is entropy-coded with the {'context model' if needs_context else 'token prior'} "
                             f"of model '{h.model_name}', which semcodec does not ship: give the model with --model")
        weights = model_file(model or h.model_name)
        if weights is None or not weights.is_file():
            raise ModelError(f"no such model file: {model}")
        if needs_context:
            from .bitstream.context import ContextModel, context_path, context_paths, pick_context
            paths = context_paths(weights)
            if not paths:
                raise ModelError(f"model {weights.name} has no context model beside it ({context_path(weights).name})")
            loaded = {}
            for cpath in paths:
                try:
                    loaded[cpath] = ContextModel.load(cpath)
                except ValueError as e:
                    raise ModelError(f"cannot load context model {cpath}: {e}") from None
            # the one the stream names; else the current one, whose hash the reader's error gives
            cpath = next((p for p, m in loaded.items() if pick_context(m, h.entropy_params["context_sha256"])), paths[0])
            context = loaded[cpath]
            using = f"context model {cpath.name} ({context.hash[:12]})"
        else:
            from safetensors import SafetensorError, safe_open
            from .checkpoint import PRIOR_KEY
            try:
                with safe_open(str(weights), framework="numpy") as f:
                    prior = f.get_tensor(PRIOR_KEY) if PRIOR_KEY in f.keys() else None
            except (SafetensorError, OSError) as e:
                raise ModelError(f"cannot read the token prior of {weights}: {e}") from None
            if prior is None:
                raise ModelError(f"model file {weights} holds no token prior")
            using = f"token prior of {weights.name}"
    tokens = 0
    with StreamReader(path, prior_counts=prior, context=context) as r:
        for rec in r:
            tokens += len(rec.tokens)
    return {**stream_stats(path), "verified": True, "tokens_decoded": tokens, "entropy_model": using}
