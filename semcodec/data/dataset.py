"""Token datasets: many videos tokenized once (``semcodec dataset build``), read many times.

On disk (specified in ``docs/datasets.md``)::

    DS_DIR/dataset.json                 format, model identity and config, token layout
    DS_DIR/shards/r00000-000001.parquet one row per clip (written whole, atomically)
    DS_DIR/failures-r00000.jsonl        sources that could not be tokenized, with the reason

:class:`TokenDataset` is a map-style ``torch.utils.data.Dataset`` over the shards, by clip
(``unit="clip"``) or by group (``unit="group"``), in clip-id order whatever the build's schedule.
:func:`to_lm_sequence` lays an item out for the language model of DESIGN.md §5
(``BOS <SOI> I codes <EOI> (<SOP> P codes <EOP>)* ... EOS``), :func:`parse_lm_sequence` inverts
it, and :class:`LMCollator` pads a batch of sequences with ``PAD`` and gives the masks.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

FORMAT = "semcodec-token-dataset"
VERSION = 1
META_FILE = "dataset.json"
SHARD_DIR = "shards"
SHARD_SUFFIX = ".parquet"
FAILURES_GLOB = "failures-r*.jsonl"
SPECIALS = ("BOS", "EOS", "SOI", "EOI", "SOP", "EOP", "PAD")
MOTION_FPS = 4.0          # motion score: frames sampled at this rate ...
MOTION_SIDE = 64          # ... greyscale, scaled so the short side is this many pixels
MOTION_DOC = (f"mean absolute grey-level change (0-255) between consecutive frames sampled at {MOTION_FPS:g} fps, "
              f"at {MOTION_SIDE} px short side; 0 for a single frame")

# per-clip columns other than the token payload (see docs/datasets.md)
META_COLUMNS = ("clip_id", "source", "caption", "meta", "fps", "frames", "width", "height", "duration", "motion",
                "semantic_fps", "semantic_frames", "model", "model_hash", "n_groups", "n_tokens",
                "group_start", "group_valid", "group_offsets")


class DatasetError(ValueError):
    """A token dataset that cannot be built or read as asked (message is user-facing)."""


# ----------------------------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class LMVocab:
    """Language-model vocabulary: codes ``0..K-1`` then 7 specials ``K..K+6``
    (BOS, EOS, SOI, EOI, SOP, EOP, PAD), and the token layout of one group."""
    codebook_size: int
    iframe_tokens: int
    pframe_tokens: int
    group: int                       # frames per group: at most group - 1 P-frames

    @classmethod
    def from_config(cls, cfg: dict) -> "LMVocab":
        return cls(int(cfg["codebook_size"]), int(cfg["iframe_tokens"]), int(cfg["pframe_tokens"]), int(cfg["group"]))

    @property
    def size(self) -> int:
        return self.codebook_size + len(SPECIALS)

    def special(self, name: str) -> int:
        return self.codebook_size + SPECIALS.index(name)

    BOS = property(lambda self: self.codebook_size)
    EOS = property(lambda self: self.codebook_size + 1)
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
        return 2 + sum(self.group_length(int(v)) for v in valids)


# ----------------------------------------------------------------------------------- LM layout
def _np(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@lru_cache(maxsize=256)
def _template(vocab: LMVocab, valid: int, ends: bool) -> np.ndarray:
    """The ids of one group of ``valid`` frames with its specials in place (codes left 0),
    with ``BOS`` / ``EOS`` around it when ``ends``."""
    I, P = vocab.iframe_tokens, vocab.pframe_tokens
    seg = np.zeros(vocab.group_length(valid), np.int64)
    seg[0], seg[I + 1] = vocab.SOI, vocab.EOI
    q = seg[I + 2:].reshape(valid - 1, P + 2)
    q[:, 0], q[:, -1] = vocab.SOP, vocab.EOP
    seg = np.concatenate([[vocab.BOS], seg, [vocab.EOS]]) if ends else seg
    seg.setflags(write=False)
    return seg


def lm_ids(tokens: np.ndarray, group_valid, group_offsets, vocab: LMVocab) -> np.ndarray:
    """The id sequence (int64 numpy) of concatenated group ``tokens``."""
    valid, offs = _np(group_valid), _np(group_offsets)
    I, P, G = vocab.iframe_tokens, vocab.pframe_tokens, vocab.group
    single = len(valid) == 1
    out = None if single else np.empty(vocab.sequence_length(valid), np.int64)
    p = 1
    for g in range(len(valid)):
        v = int(valid[g])
        if not 1 <= v <= G:
            raise DatasetError(f"a group holds 1 to {G} frames, not {v}")
        codes = tokens[offs[g]:offs[g + 1]]
        if len(codes) != I + (v - 1) * P:
            raise DatasetError(f"group {g} holds {len(codes)} tokens, a {v}-frame group has {I + (v - 1) * P}")
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


def to_lm_sequence(item: dict, vocab: LMVocab) -> dict:
    """A dataset item -> ``{"ids": LongTensor, "caption", "frames", "motion", ...}``.

    ``ids`` is ``BOS`` then, per group, ``<SOI> I codes <EOI>`` and ``(valid - 1)`` times
    ``<SOP> P codes <EOP>``, then ``EOS`` (DESIGN.md §5; one group for ``unit="group"`` items).
    The text and micro-conditions travel beside it: ``caption`` (str), ``frames`` (semantic frames
    the sequence codes), ``motion`` (the clip's motion score); the language model embeds them and
    puts them right after ``BOS``.
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
    :class:`DatasetError` naming the position and what was expected there.
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
            raise DatasetError(f"malformed LM sequence at position {i}: expected {names[tok]}, found {what(i)}")

    def codes(i, k):
        seg = x[i:i + k]
        bad = np.flatnonzero((seg < 0) | (seg >= K))
        if len(seg) < k or len(bad):
            j = i + (int(bad[0]) if len(bad) else len(seg))
            raise DatasetError(f"malformed LM sequence at position {j}: expected one of {k} codes starting at "
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
                raise DatasetError(f"malformed LM sequence at position {i}: a group holds at most "
                                   f"{vocab.group - 1} P-frames")
            parts.append(codes(i + 1, P))
            i += 1 + P
            expect(i, vocab.EOP)
            i += 1
        groups.append(np.concatenate(parts))
    expect(i, vocab.EOS)
    if i + 1 != n:
        raise DatasetError(f"malformed LM sequence at position {i + 1}: expected the end after <EOS>, "
                           f"found {what(i + 1)}")
    return groups


class LMCollator:
    """Batch of :func:`to_lm_sequence` outputs -> padded tensors.

    ``ids`` B x L (padded with PAD), ``attention_mask`` (True on real positions), ``loss_mask``
    (True where a position is a training target: every real position but ``BOS``), ``lengths``,
    ``frames`` (long), ``motion`` (float), and the lists ``captions``, ``clip_ids``, ``index`` (clip
    indices) and ``groups`` (group indices, -1 for whole-clip items). ``L`` is the longest
    sequence rounded up to ``pad_to_multiple``.

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


# ----------------------------------------------------------------------------------- files
def read_meta(ds_dir) -> dict:
    p = Path(ds_dir) / META_FILE
    if not Path(ds_dir).is_dir():
        raise DatasetError(f"no such dataset folder: {ds_dir}")
    if not p.is_file():
        raise DatasetError(f"{ds_dir} is not a token dataset (no {META_FILE})")
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"unreadable {p}: {e}") from e
    if meta.get("format") != FORMAT:
        raise DatasetError(f"{p} is not a {FORMAT} description")
    if int(meta.get("version", 0)) > VERSION:
        raise DatasetError(f"{ds_dir} has format version {meta['version']}; this semcodec reads up to {VERSION}")
    return meta


def shard_paths(ds_dir) -> list[Path]:
    """Complete shards in name order (temporary files of a build in progress start with '.')."""
    d = Path(ds_dir) / SHARD_DIR
    return sorted(p for p in d.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith(".")) if d.is_dir() else []


def failure_records(ds_dir) -> dict[str, dict]:
    """The failures files of all ranks as clip id -> last record (shard membership not checked)."""
    out: dict[str, dict] = {}
    for p in sorted(Path(ds_dir).glob(FAILURES_GLOB)):
        for line in p.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
                out[rec["clip_id"]] = rec
            except (ValueError, KeyError, TypeError):
                continue          # a line cut by a kill
    return out


def read_failures(ds_dir) -> list[dict]:
    """Failure records of all ranks (last record per clip id), without clips that are in a shard."""
    out = failure_records(ds_dir)
    if out:
        import pyarrow.parquet as pq
        for s in shard_paths(ds_dir):
            for cid in pq.read_table(s, columns=["clip_id"]).column("clip_id").to_pylist():
                out.pop(cid, None)
    return list(out.values())


# ----------------------------------------------------------------------------------- reader
class TokenDataset(torch.utils.data.Dataset):
    """Map-style dataset over a token dataset folder.

    ``unit="clip"``: item i is clip i (clips in clip-id order); ``unit="group"``: item i is one
    group (clips in order, groups in order within a clip). An item is a dict: ``tokens``
    (LongTensor, the group tokens concatenated), ``group_offsets``, ``group_start``, ``group_valid``
    (LongTensors), ``clip_id``, ``source``, ``caption``, ``meta`` (JSON string of the captions
    file's other fields), ``fps``, ``duration``, ``frames`` (semantic frames coded), ``motion``,
    ``model``, ``model_hash``, ``index`` (the clip index), plus ``group`` and ``start`` (seconds)
    for a group item. With ``lm=True`` items are :func:`to_lm_sequence` outputs instead; batch
    them with :attr:`collate_fn`.

    Tokens are read from Parquet one row group at a time and kept in a per-process LRU cache
    of ``cache_tokens`` tokens; safe with DataLoader workers (fork or spawn) and any sampler.
    """

    def __init__(self, ds_dir, unit: str = "clip", lm: bool = False, cache_tokens: int = 64 << 20):
        import pyarrow as pa
        import pyarrow.parquet as pq
        if unit not in ("clip", "group"):
            raise DatasetError(f"unit must be 'clip' or 'group', not {unit!r}")
        self.root, self.unit, self.lm, self.cache_tokens = Path(ds_dir), unit, lm, cache_tokens
        self.meta = read_meta(ds_dir)
        self.vocab = LMVocab.from_config(self.meta["model"]["config"])
        self.shards = [str(p) for p in shard_paths(ds_dir)]
        tables, loc = [], []
        for s, path in enumerate(self.shards):
            pf = pq.ParquetFile(path)
            t = pf.read(columns=list(META_COLUMNS), use_threads=False)
            rows = [pf.metadata.row_group(r).num_rows for r in range(pf.metadata.num_row_groups)]
            rg = np.repeat(np.arange(len(rows)), rows)
            within = np.concatenate([np.arange(k) for k in rows]) if rows else np.zeros(0, np.int64)
            loc.append(np.stack([np.full(t.num_rows, s), rg, within], 1))
            tables.append(t)
        table = pa.concat_tables(tables) if tables else None
        loc = np.concatenate(loc) if loc else np.zeros((0, 3), np.int64)
        ids = table.column("clip_id").to_pylist() if table is not None else []
        order = sorted(range(len(ids)), key=ids.__getitem__)
        keep = [i for k, i in enumerate(order) if k == 0 or ids[i] != ids[order[k - 1]]]
        if len(keep) != len(order):
            warnings.warn(f"{ds_dir}: {len(order) - len(keep)} duplicate clip ids (kept the first of each)")
        take = np.array(keep, np.int64)
        self._loc = loc[take].astype(np.int64)
        n = len(take)
        if table is not None:
            table = table.take(pa.array(take))
        col = (lambda c: table.column(c).to_pylist()) if table is not None else (lambda c: [])
        num = (lambda c, dt: table.column(c).to_numpy().astype(dt)) if table is not None else \
            (lambda c, dt: np.zeros(0, dt))
        self.clip_ids: list[str] = col("clip_id")
        self._source, self._caption, self._meta = col("source"), col("caption"), col("meta")
        self._model, self._hash = col("model"), col("model_hash")
        self._fps, self._duration = num("fps", np.float64), num("duration", np.float64)
        self._motion, self._sfps = num("motion", np.float64), num("semantic_fps", np.float64)
        self._sframes, self._n_groups = num("semantic_frames", np.int64), num("n_groups", np.int64)

        def flat(c):     # list column -> (values, per-clip start into values)
            if table is None:
                return np.zeros(0, np.int64), np.zeros(1, np.int64)
            a = table.column(c).combine_chunks()
            return a.flatten().to_numpy().astype(np.int64), np.asarray(a.offsets).astype(np.int64) - a.offsets[0].as_py()
        self._gstart, self._gidx = flat("group_start")
        self._gvalid, _ = flat("group_valid")
        self._goffs, self._oidx = flat("group_offsets")
        # group unit: item -> (clip, group)
        self._group_clip = np.repeat(np.arange(n), self._n_groups)
        self._group_first = np.concatenate([[0], np.cumsum(self._n_groups)])[:-1].astype(np.int64)
        self._cache: OrderedDict = OrderedDict()
        self._cached = 0
        self._files: dict[int, object] = {}
        self._pid = os.getpid()

    # -- pickling for DataLoader workers: no open files, no cache
    def __getstate__(self):
        d = self.__dict__.copy()
        d["_cache"], d["_cached"], d["_files"], d["_pid"] = OrderedDict(), 0, {}, None
        return d

    @property
    def model(self) -> dict:
        """``{"name", "hash", "config"}`` of the model that made the tokens."""
        return self.meta["model"]

    @property
    def n_clips(self) -> int:
        return len(self.clip_ids)

    @property
    def n_groups(self) -> int:
        return len(self._group_clip)

    def __len__(self) -> int:
        return self.n_clips if self.unit == "clip" else self.n_groups

    def index_of(self, clip_id: str) -> int:
        import bisect
        i = bisect.bisect_left(self.clip_ids, clip_id)
        if i == len(self.clip_ids) or self.clip_ids[i] != clip_id:
            raise KeyError(clip_id)
        return i

    @property
    def collate_fn(self) -> LMCollator:
        return LMCollator(self.vocab)

    def sequence_length(self, i: int) -> int:
        """LM sequence length of item ``i`` (from the metadata alone, for length bucketing)."""
        if self.unit == "group":
            c = int(self._group_clip[i])
            return self.vocab.sequence_length([self._gvalid[self._gidx[c] + i - self._group_first[c]]])
        return self.vocab.sequence_length(self._gvalid[self._gidx[i]:self._gidx[i + 1]])

    # -- token payload
    def _row_group(self, s: int, rg: int) -> tuple[np.ndarray, np.ndarray]:
        if self._pid != os.getpid():       # a forked DataLoader worker: own files and cache
            self._cache, self._cached, self._files, self._pid = OrderedDict(), 0, {}, os.getpid()
        key = (s, rg)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        import pyarrow.parquet as pq
        pf = self._files.get(s)
        if pf is None:
            pf = self._files[s] = pq.ParquetFile(self.shards[s], memory_map=True)
        a = pf.read_row_group(rg, columns=["tokens"], use_threads=False).column("tokens").combine_chunks()
        hit = (a.values.to_numpy(zero_copy_only=False), np.asarray(a.offsets))
        self._cache[key] = hit
        self._cached += len(hit[0])
        while self._cached > self.cache_tokens and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= len(old[0])
        return hit

    def clip_tokens(self, c: int) -> np.ndarray:
        """All tokens of clip ``c`` (group tokens concatenated), int16/int32 as stored."""
        s, rg, k = self._loc[c]
        values, offs = self._row_group(int(s), int(rg))
        return values[offs[k]:offs[k + 1]]

    def _common(self, c: int) -> dict:
        return {"clip_id": self.clip_ids[c], "source": self._source[c], "caption": self._caption[c],
                "meta": self._meta[c], "fps": float(self._fps[c]), "duration": float(self._duration[c]),
                "motion": float(self._motion[c]), "model": self._model[c], "model_hash": self._hash[c], "index": c}

    def clip(self, c: int) -> dict:
        if not 0 <= c < self.n_clips:
            raise IndexError(f"clip {c} out of range ({self.n_clips} clips)")
        a, b = self._gidx[c], self._gidx[c + 1]
        o = self._goffs[self._oidx[c]:self._oidx[c + 1]]
        return {"tokens": torch.from_numpy(self.clip_tokens(c).astype(np.int64)),
                "group_offsets": torch.from_numpy(o.copy()), "group_start": torch.from_numpy(self._gstart[a:b].copy()),
                "group_valid": torch.from_numpy(self._gvalid[a:b].copy()), "frames": int(self._sframes[c]),
                **self._common(c)}

    def group(self, c: int, g: int) -> dict:
        """Group ``g`` of clip ``c``."""
        if not 0 <= c < self.n_clips:
            raise IndexError(f"clip {c} out of range ({self.n_clips} clips)")
        if not 0 <= g < self._n_groups[c]:
            raise IndexError(f"group {g} out of range (clip {c} has {self._n_groups[c]} groups)")
        o = self._goffs[self._oidx[c] + g:self._oidx[c] + g + 2]
        start, valid = int(self._gstart[self._gidx[c] + g]), int(self._gvalid[self._gidx[c] + g])
        toks = self.clip_tokens(c)[o[0]:o[1]]
        return {"tokens": torch.from_numpy(toks.astype(np.int64)), "group_offsets": torch.tensor([0, o[1] - o[0]]),
                "group_start": torch.tensor([start]), "group_valid": torch.tensor([valid]), "frames": valid,
                "group": g, "start": start / float(self._sfps[c]), **self._common(c)}

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range ({len(self)} items)")
        if self.unit == "clip":
            return self._lm_clip(i) if self.lm else self.clip(i)
        c = int(self._group_clip[i])
        return (self._lm_group if self.lm else self.group)(c, i - int(self._group_first[c]))

    # -- the LM layout straight from the stored tokens (what to_lm_sequence gives, without the detour)
    def _lm_common(self, c: int) -> dict:
        return {"caption": self._caption[c], "motion": float(self._motion[c]), "fps": float(self._fps[c]),
                "duration": float(self._duration[c]), "clip_id": self.clip_ids[c], "index": c}

    def _lm_clip(self, c: int) -> dict:
        a, b = self._gidx[c], self._gidx[c + 1]
        ids = lm_ids(self.clip_tokens(c), self._gvalid[a:b], self._goffs[self._oidx[c]:self._oidx[c + 1]], self.vocab)
        return {"ids": torch.from_numpy(ids), "frames": int(self._sframes[c]), **self._lm_common(c)}

    def _lm_group(self, c: int, g: int) -> dict:
        o0, o1 = self._goffs[self._oidx[c] + g], self._goffs[self._oidx[c] + g + 1]
        valid = int(self._gvalid[self._gidx[c] + g])
        ids = lm_ids(self.clip_tokens(c)[o0:o1], (valid,), (0, o1 - o0), self.vocab)
        return {"ids": torch.from_numpy(ids), "frames": valid, **self._lm_common(c), "group": g}

    def __getitems__(self, indices) -> list[dict]:
        return [self[i] for i in indices]

    def __repr__(self) -> str:
        return (f"TokenDataset({str(self.root)!r}, unit={self.unit!r}: {self.n_clips} clips, {self.n_groups} groups, "
                f"model {self.model['name']} {self.model['hash'][:12]})")
