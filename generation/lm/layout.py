"""The language model's token layout (DESIGN.md §5, ids as in the authors' release).

Vocabulary: the codec's codes ``0 .. K-1``, then 7 specials ``K .. K+6`` in the release's order:
``EOS, BOS, SOI, EOI, SOP, EOP, PAD`` (``K = 2048``: EOS 2048, BOS 2049, ..., PAD 2054), so that the
release's weights load. One sequence::

    BOS  [ SOI  I codes  EOI  (SOP  P codes  EOP) x (valid - 1) ] per group  EOS

The conditions (micro-conditions, text) are not ids: the model embeds them and places them right
after ``BOS`` (:mod:`generation.lm.model`).

- :class:`LMVocab`: the ids and the group layout (``nI``, ``nP``, frames per group);
- :func:`lm_ids` / :func:`to_lm_sequence`: codec tokens -> ids; :func:`parse_lm_sequence` inverts;
- :class:`LMCollator`: pads a batch with ``PAD`` and gives the masks;
- :class:`LMDataset`: a :class:`semcodec.data.TokenDataset` whose items are LM sequences.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from semcodec.data import DatasetError, TokenDataset

SPECIALS = ("EOS", "BOS", "SOI", "EOI", "SOP", "EOP", "PAD")


class LayoutError(DatasetError):
    """A sequence that does not follow the LM layout (message names the position)."""


# ----------------------------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class LMVocab:
    """Codes ``0..K-1`` then the specials ``K..K+6`` (EOS, BOS, SOI, EOI, SOP, EOP, PAD), and the
    token layout of one group: ``iframe_tokens`` (nI) codes for the I-frame, ``pframe_tokens`` (nP)
    per P-frame, at most ``group`` frames."""
    codebook_size: int
    iframe_tokens: int
    pframe_tokens: int
    group: int                       # frames per group: at most group - 1 P-frames

    @classmethod
    def from_config(cls, cfg: dict) -> "LMVocab":
        """From a codec config dict, a dataset's ``meta["tokens"]`` or an LM config dict."""
        return cls(int(cfg["codebook_size"]), int(cfg["iframe_tokens"]), int(cfg["pframe_tokens"]), int(cfg["group"]))

    @property
    def size(self) -> int:
        return self.codebook_size + len(SPECIALS)

    def special(self, name: str) -> int:
        return self.codebook_size + SPECIALS.index(name)

    EOS = property(lambda self: self.codebook_size)
    BOS = property(lambda self: self.codebook_size + 1)
    SOI = property(lambda self: self.codebook_size + 2)
    EOI = property(lambda self: self.codebook_size + 3)
    SOP = property(lambda self: self.codebook_size + 4)
    EOP = property(lambda self: self.codebook_size + 5)
    PAD = property(lambda self: self.codebook_size + 6)

    def group_tokens(self, valid: int) -> int:
        """Codes of a group holding ``valid`` frames."""
        return self.iframe_tokens + (valid - 1) * self.pframe_tokens

    def group_length(self, valid: int) -> int:
        """Sequence positions of a group holding ``valid`` frames, specials included."""
        return self.iframe_tokens + 2 + (valid - 1) * (self.pframe_tokens + 2)

    def sequence_length(self, valids) -> int:
        """Ids of a sequence whose groups hold ``valids`` frames (BOS and EOS included)."""
        return 2 + sum(self.group_length(int(v)) for v in valids)

    def template(self, valids) -> np.ndarray:
        """The ids of a sequence of groups of ``valids`` frames with every special in place and
        ``-1`` where a code goes (int64)."""
        out = np.concatenate([[self.BOS], *(_template(self, int(v), False) for v in valids), [self.EOS]])
        return out

    def frame_slots(self, valid: int) -> list[tuple[int, int]]:
        """``(start, stop)`` of each frame's codes inside a group of ``valid`` frames (positions
        relative to the group's SOI)."""
        I, P = self.iframe_tokens, self.pframe_tokens
        return [(1, 1 + I)] + [(I + 2 + k * (P + 2) + 1, I + 2 + k * (P + 2) + 1 + P) for k in range(valid - 1)]


@lru_cache(maxsize=256)
def _template(vocab: LMVocab, valid: int, ends: bool) -> np.ndarray:
    """The ids of one group of ``valid`` frames with its specials in place (codes ``-1``), with
    ``BOS`` / ``EOS`` around it when ``ends``."""
    I, P = vocab.iframe_tokens, vocab.pframe_tokens
    seg = np.full(vocab.group_length(valid), -1, np.int64)
    seg[0], seg[I + 1] = vocab.SOI, vocab.EOI
    q = seg[I + 2:].reshape(valid - 1, P + 2)
    q[:, 0], q[:, -1] = vocab.SOP, vocab.EOP
    seg = np.concatenate([[vocab.BOS], seg, [vocab.EOS]]) if ends else seg
    seg.setflags(write=False)
    return seg


# ----------------------------------------------------------------------------------- ids
def _np(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def lm_ids(tokens: np.ndarray, group_valid, group_offsets, vocab: LMVocab) -> np.ndarray:
    """The id sequence (int64 numpy) of concatenated group ``tokens`` (``group_offsets``: the
    ``n + 1`` offsets of the groups in ``tokens``, ``group_valid``: their frame counts)."""
    valid, offs = _np(group_valid), _np(group_offsets)
    I, P, G = vocab.iframe_tokens, vocab.pframe_tokens, vocab.group
    single = len(valid) == 1
    out = None if single else np.empty(vocab.sequence_length(valid), np.int64)
    p = 1
    for g in range(len(valid)):
        v = int(valid[g])
        if not 1 <= v <= G:
            raise LayoutError(f"a group holds 1 to {G} frames, not {v}")
        codes = tokens[offs[g]:offs[g + 1]]
        if len(codes) != I + (v - 1) * P:
            raise LayoutError(f"group {g} holds {len(codes)} tokens, a {v}-frame group has {I + (v - 1) * P}")
        n = I + 2 + (v - 1) * (P + 2)
        if single:
            out = _template(vocab, v, True).copy()
        else:
            out[p:p + n] = _template(vocab, v, False)
        out[p + 1:p + 1 + I] = codes[:I]
        if v > 1:
            out[p + I + 2:p + n].reshape(v - 1, P + 2)[:, 1:-1] = codes[I:].reshape(v - 1, P)
        p += n
    if single:
        return out
    out[0], out[-1] = vocab.BOS, vocab.EOS
    return out


def group_ids(groups, vocab: LMVocab) -> np.ndarray:
    """The id sequence of a list of group token arrays (frame counts inferred from their lengths)."""
    valids = [valid_of(len(g), vocab) for g in groups]
    offs = np.concatenate([[0], np.cumsum([len(g) for g in groups])])
    toks = np.concatenate([np.asarray(g, np.int64) for g in groups]) if groups else np.zeros(0, np.int64)
    return lm_ids(toks, valids, offs, vocab) if groups else np.array([vocab.BOS, vocab.EOS], np.int64)


def valid_of(n_tokens: int, vocab: LMVocab) -> int:
    """Frames of a group of ``n_tokens`` codes (LayoutError when no frame count fits)."""
    v, r = divmod(n_tokens - vocab.iframe_tokens, vocab.pframe_tokens)
    if n_tokens < vocab.iframe_tokens or r or not 0 <= v < vocab.group:
        raise LayoutError(f"{n_tokens} codes are no group of {vocab.iframe_tokens} + k x {vocab.pframe_tokens} "
                          f"(k < {vocab.group})")
    return v + 1


def to_lm_sequence(item: dict, vocab: LMVocab) -> dict:
    """A :class:`~semcodec.data.TokenDataset` item -> ``{"ids": LongTensor (L,), "caption",
    "frames", "motion", "fps", "duration", "clip_id", "index", ["group"]}``.

    ``ids`` is ``BOS`` then, per group, ``<SOI> I codes <EOI>`` and ``(valid - 1)`` times
    ``<SOP> P codes <EOP>``, then ``EOS``. The text and micro-conditions travel beside it:
    ``caption`` (str), ``frames`` (semantic frames the sequence codes), ``motion`` (the clip's
    motion score).
    """
    ids = lm_ids(_np(item["tokens"]), item["group_valid"], item["group_offsets"], vocab)
    out = {"ids": torch.from_numpy(ids), "caption": item["caption"], "frames": int(item["frames"]),
           "motion": float(item["motion"]), "fps": float(item["fps"]), "duration": float(item["duration"]),
           "clip_id": item["clip_id"], "index": int(item["index"])}
    if "group" in item:
        out["group"] = int(item["group"])
    return out


def parse_lm_sequence(ids, vocab: LMVocab, strip_pad: bool = True) -> list[np.ndarray]:
    """Invert :func:`to_lm_sequence`: ids -> the token array (int64) of each group.

    Trailing ``PAD`` is dropped when ``strip_pad``. A malformed sequence raises
    :class:`LayoutError` naming the position and what was expected there.
    """
    x = _np(ids).astype(np.int64, copy=False).ravel()
    n = len(x)
    if strip_pad:
        while n and x[n - 1] == vocab.PAD:
            n -= 1
    K, I, P = vocab.codebook_size, vocab.iframe_tokens, vocab.pframe_tokens
    names = {vocab.special(s): f"<{s}>" for s in SPECIALS}

    def what(i):
        if i >= n:
            return "the end of the sequence"
        v = int(x[i])
        return names.get(v, f"code {v}" if 0 <= v < K else f"id {v} (outside the vocabulary of {vocab.size})")

    def expect(i, tok):
        if i >= n or x[i] != tok:
            raise LayoutError(f"malformed LM sequence at position {i}: expected {names[tok]}, found {what(i)}")

    def codes(i, k):
        seg = x[i:i + k]
        bad = np.flatnonzero((seg < 0) | (seg >= K))
        if len(seg) < k or len(bad):
            j = i + (int(bad[0]) if len(bad) else len(seg))
            raise LayoutError(f"malformed LM sequence at position {j}: expected one of {k} codes starting at "
                              f"position {i}, found {what(j)}")
        return seg.copy()

    expect(0, vocab.BOS)
    groups, i = [], 1
    while i < n and x[i] != vocab.EOS:
        expect(i, vocab.SOI)
        parts = [codes(i + 1, I)]
        i += 1 + I
        expect(i, vocab.EOI)
        i += 1
        while i < n and x[i] == vocab.SOP:
            if len(parts) == vocab.group:
                raise LayoutError(f"malformed LM sequence at position {i}: a group holds at most "
                                  f"{vocab.group - 1} P-frames")
            parts.append(codes(i + 1, P))
            i += 1 + P
            expect(i, vocab.EOP)
            i += 1
        groups.append(np.concatenate(parts))
    expect(i, vocab.EOS)
    if i + 1 != n:
        raise LayoutError(f"malformed LM sequence at position {i + 1}: expected the end after <EOS>, "
                          f"found {what(i + 1)}")
    return groups


# ----------------------------------------------------------------------------------- batches
class LMCollator:
    """Batch of :func:`to_lm_sequence` outputs -> padded tensors.

    ``ids`` B x L (padded with PAD), ``attention_mask`` B x L (True on real positions),
    ``loss_mask`` B x L (True where a position is a training target: every real position but
    ``BOS``, i.e. codes and specials), ``lengths`` (B,), ``frames`` (B,) long, ``motion`` (B,)
    float, and the lists ``captions``, ``clip_ids``, ``index`` (clip indices) and ``groups`` (group
    indices, -1 for whole-clip items). ``L`` is the longest sequence rounded up to
    ``pad_to_multiple``.

    The tensors are views of one buffer, so a batch crosses from a DataLoader worker in one
    shared-memory segment (one per tensor costs about twice the read time at batch 64).
    """

    def __init__(self, vocab: LMVocab, pad_to_multiple: int = 1):
        self.vocab, self.multiple = vocab, max(1, pad_to_multiple)

    def __call__(self, batch: list[dict]) -> dict:
        B = len(batch)
        lengths = np.array([len(b["ids"]) for b in batch], np.int64)
        L = int(-(-lengths.max() // self.multiple) * self.multiple)
        parts = [("ids", torch.int64, (B, L), 8), ("lengths", torch.int64, (B,), 8), ("frames", torch.int64, (B,), 8),
                 ("motion", torch.float32, (B,), 4), ("attention_mask", torch.bool, (B, L), 1),
                 ("loss_mask", torch.bool, (B, L), 1)]
        ends = np.cumsum([int(np.prod(shape)) * size for _, _, shape, size in parts])
        buf = torch.empty(int(ends[-1]), dtype=torch.uint8)
        if torch.utils.data.get_worker_info() is not None:    # as default_collate: born in shared memory
            buf.share_memory_()
        out = {name: buf[e - int(np.prod(shape)) * size:e].view(dt).view(shape)
               for (name, dt, shape, size), e in zip(parts, ends)}
        ids = out["ids"].numpy()
        ids.fill(self.vocab.PAD)
        for r, b in enumerate(batch):
            ids[r, :lengths[r]] = _np(b["ids"])
        out["lengths"].numpy()[:] = lengths
        out["frames"].numpy()[:] = [b["frames"] for b in batch]
        out["motion"].numpy()[:] = [b["motion"] for b in batch]
        attn = out["attention_mask"].numpy()
        attn[:] = np.arange(L)[None, :] < lengths[:, None]
        loss = out["loss_mask"].numpy()
        loss[:] = attn
        loss[:, 0] = False
        out.update(captions=[b["caption"] for b in batch], clip_ids=[b["clip_id"] for b in batch],
                   index=[b["index"] for b in batch], groups=[b.get("group", -1) for b in batch])
        return out


class LMDataset(torch.utils.data.Dataset):
    """A token dataset read as LM sequences: item ``i`` is :func:`to_lm_sequence` of item ``i`` of
    ``TokenDataset(ds, unit)`` (one group, or one whole clip), made straight from the stored
    tokens. ``ds`` is a dataset folder or an open :class:`~semcodec.data.TokenDataset`.

    ``vocab`` (from the dataset's token layout), ``collate_fn`` (an :class:`LMCollator`) and
    ``sequence_length(i)`` (from the metadata alone, for length bucketing and packing) come with
    it. Pickles like the TokenDataset (DataLoader workers, any sampler).
    """

    def __init__(self, ds, unit: str = "group", **kw):
        self.tokens = ds if isinstance(ds, TokenDataset) else TokenDataset(ds, unit=unit, **kw)
        self.vocab = LMVocab.from_config(self.tokens.meta["tokens"])

    @property
    def unit(self) -> str:
        return self.tokens.unit

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def collate_fn(self) -> LMCollator:
        return LMCollator(self.vocab)

    def sequence_length(self, i: int) -> int:
        """LM sequence length of item ``i``."""
        c, g = self.tokens.locate(i)
        valid, _ = self.tokens.group_layout(c)
        return self.vocab.sequence_length(valid if g is None else valid[g:g + 1])

    def __getitem__(self, i: int) -> dict:
        ds = self.tokens
        if not -len(ds) <= int(i) < len(ds):
            raise IndexError(f"item {i} out of range ({len(ds)} items)")
        c, g = ds.locate(int(i) % len(ds))
        valid, offs = ds.group_layout(c)
        toks, meta = ds.clip_tokens(c), ds.clip_meta(c)
        if g is None:
            ids, frames = lm_ids(toks, valid, offs, self.vocab), meta["frames"]
        else:
            ids = lm_ids(toks[offs[g]:offs[g + 1]], valid[g:g + 1], (0, offs[g + 1] - offs[g]), self.vocab)
            frames = int(valid[g])
        out = {"ids": torch.from_numpy(ids), "caption": meta["caption"], "frames": frames,
               "motion": meta["motion"], "fps": meta["fps"], "duration": meta["duration"],
               "clip_id": meta["clip_id"], "index": c}
        if g is not None:
            out["group"] = g
        return out

    def __getitems__(self, indices) -> list[dict]:
        return [self[i] for i in indices]

    def __repr__(self) -> str:
        return f"LMDataset({self.tokens!r})"
