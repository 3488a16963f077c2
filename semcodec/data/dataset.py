"""Token datasets: many videos tokenized once (``semcodec dataset build``), read many times.

On disk (specified in ``docs/datasets.md``)::

    DS_DIR/dataset.json                 format, model identity and config, token layout
    DS_DIR/shards/r00000-000001.parquet one row per clip (written whole, atomically)
    DS_DIR/failures-r00000.jsonl        sources that could not be tokenized, with the reason

:class:`TokenDataset` is a map-style ``torch.utils.data.Dataset`` over the shards, by clip
(``unit="clip"``) or by group (``unit="group"``), in clip-id order whatever the build's schedule.
The language-model layout of these tokens (vocabulary, sequences, collator) lives in
``generation.lm.layout``: semcodec knows nothing of the language model.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..errors import SemcodecError

FORMAT = "semcodec-token-dataset"
VERSION = 1
META_FILE = "dataset.json"
SHARD_DIR = "shards"
SHARD_SUFFIX = ".parquet"
FAILURES_GLOB = "failures-r*.jsonl"
MOTION_FPS = 4.0          # motion score: frames sampled at this rate ...
MOTION_SIDE = 64          # ... greyscale, scaled so the short side is this many pixels
MOTION_DOC = (f"mean absolute grey-level change (0-255) between consecutive frames sampled at {MOTION_FPS:g} fps, "
              f"at {MOTION_SIDE} px short side; 0 for a single frame")

# per-clip columns other than the token payload (see docs/datasets.md)
META_COLUMNS = ("clip_id", "source", "caption", "meta", "fps", "frames", "width", "height", "duration", "motion",
                "semantic_fps", "semantic_frames", "model", "model_hash", "n_groups", "n_tokens",
                "group_start", "group_valid", "group_offsets")


class DatasetError(SemcodecError, ValueError):
    """A token dataset that cannot be built or read as asked (message is user-facing)."""


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
    for a group item. ``generation.lm.LMDataset`` reads the same items as language-model sequences.

    Tokens are read from Parquet one row group at a time and kept in a per-process LRU cache
    of ``cache_tokens`` tokens; safe with DataLoader workers (fork or spawn) and any sampler.
    """

    def __init__(self, ds_dir, unit: str = "clip", cache_tokens: int = 64 << 20):
        import pyarrow as pa
        import pyarrow.parquet as pq
        if unit not in ("clip", "group"):
            raise DatasetError(f"unit must be 'clip' or 'group', not {unit!r}")
        self.root, self.unit, self.cache_tokens = Path(ds_dir), unit, cache_tokens
        self.meta = read_meta(ds_dir)
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

    def locate(self, i: int) -> tuple[int, int | None]:
        """Item ``i`` -> ``(clip, group)``; ``group`` is None for ``unit="clip"``."""
        if self.unit == "clip":
            return int(i), None
        c = int(self._group_clip[i])
        return c, int(i) - int(self._group_first[c])

    def group_layout(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """``(group_valid, group_offsets)`` of clip ``c`` (int64 numpy, read-only views of the
        metadata): the frames coded in each group, and the ``n_groups + 1`` offsets of the groups
        in :meth:`clip_tokens`."""
        return (self._gvalid[self._gidx[c]:self._gidx[c + 1]], self._goffs[self._oidx[c]:self._oidx[c + 1]])

    def clip_meta(self, c: int) -> dict:
        """The per-clip fields of an item (no tokens): ``clip_id``, ``source``, ``caption``, ``meta``,
        ``fps``, ``duration``, ``motion``, ``model``, ``model_hash``, ``index``, ``frames``."""
        return {**self._common(c), "frames": int(self._sframes[c])}

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
        c, g = self.locate(i)
        return self.clip(c) if g is None else self.group(c, g)

    def __getitems__(self, indices) -> list[dict]:
        return [self[i] for i in indices]

    def __repr__(self) -> str:
        return (f"TokenDataset({str(self.root)!r}, unit={self.unit!r}: {self.n_clips} clips, {self.n_groups} groups, "
                f"model {self.model['name']} {self.model['hash'][:12]})")
