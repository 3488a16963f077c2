"""Build a token dataset: tokenize a video collection once into Parquet shards.

    python -m semcodec.data.build SRC... -o DS_DIR [--captions FILE.jsonl] [--workers N]
    torchrun --nproc-per-node 4 -m semcodec.data.build SRC... -o DS_DIR     # many processes / machines
    python -m semcodec.data.build SRC... -o DS_DIR --engine ray --workers 64  # a Ray cluster

Sources are listed deterministically (sorted by clip id); rank ``r`` of ``world`` (the ``RANK`` /
``WORLD_SIZE`` environment of torchrun, or ``--rank`` / ``--world-size``) takes the clips
``i % world == r``. Each rank tokenizes in ``--workers`` processes (``0``: in this process) and
writes whole shards atomically (temporary file, fsync, rename), so a killed build leaves only
complete shards. A re-run reads the clip ids already in the shards and the failures already
recorded and skips them: every clip ends up in the dataset exactly once. A source that cannot be
read is recorded in ``failures-rRRRRR.jsonl`` with the reason and never stops the build. The
format is specified in ``docs/datasets.md``.

Engines: ``local`` tokenizes in this machine's processes (``--workers``); ``ray`` hands the clips
to Ray Data actors (``semcodec.data.ray_engine``) and receives the rows back here. Either way
this process alone writes the shards and the failure records, through the same code, so the
shards and the exactly-once guarantee are the same.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dataset import (FORMAT, failure_records, META_FILE, MOTION_DOC, MOTION_FPS, MOTION_SIDE, SHARD_DIR,
                      SHARD_SUFFIX, VERSION, DatasetError, shard_paths)
from ..video import is_video_file

ROW_GROUP_TOKENS = 1 << 20       # tokens per Parquet row group (the unit of random reads)
FLUSH_TOKENS = 32 << 20          # a shard is written at the latest when this many tokens are buffered


@dataclass(frozen=True)
class Clip:
    clip_id: str
    path: str                    # absolute
    caption: str = ""
    meta: str = "{}"             # JSON: the captions line's other fields


@dataclass
class BuildReport:
    sources: int = 0             # clips listed (all ranks)
    assigned: int = 0            # clips of this rank
    present: int = 0             # already in the dataset before this run
    known_failed: int = 0        # skipped: recorded as failed by an earlier run
    built: int = 0
    failed: int = 0
    tokens: int = 0
    shards: int = 0
    seconds: float = 0.0
    uncaptioned: int = 0         # with --captions: clips that no line matched
    failures: list = field(default_factory=list)


# ----------------------------------------------------------------------------------- sources
def list_sources(srcs) -> list[tuple[str, str]]:
    """``(clip_id, absolute path)`` sorted by clip id. A folder contributes its video files
    (recursively, hidden entries skipped) with ids relative to it; a file its own name."""
    out: dict[str, str] = {}
    for s in srcs:
        p = Path(s)
        if p.is_dir():
            root = p.resolve()
            files = [(f.relative_to(root).as_posix(), f) for f in sorted(root.rglob("*"))
                     if f.is_file() and is_video_file(f)
                     and not any(part.startswith(".") for part in f.relative_to(root).parts)]
        elif p.exists():
            files = [(p.name, p.resolve())]
        else:
            raise DatasetError(f"no such source: {s}")
        for cid, f in files:
            if cid in out and out[cid] != str(f):
                raise DatasetError(f"two sources have the clip id '{cid}': {out[cid]} and {f} (clip ids are paths "
                                   f"relative to each SRC folder; pass their common parent folder instead)")
            out[cid] = str(f)
    return sorted(out.items())


def load_captions(path) -> tuple[dict[str, dict], dict[str, dict]]:
    """A captions JSONL -> (by resolved path, by clip id). Each line is an object with ``caption``
    and ``path`` (relative to the JSONL's folder, or absolute) and / or ``id`` (a clip id)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"no such captions file: {path}")
    by_path, by_id = {}, {}
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise DatasetError(f"{path}, line {n}: not JSON ({e})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("caption"), str):
                raise DatasetError(f"{path}, line {n}: expected an object with a string 'caption'")
            key = rec.get("path", rec.get("file"))
            if key is None and "id" not in rec:
                raise DatasetError(f"{path}, line {n}: needs a 'path' or an 'id'")
            if key is not None:
                by_path[str((p.parent / key).resolve())] = rec
            if "id" in rec:
                by_id[str(rec["id"])] = rec
    return by_path, by_id


def make_clips(srcs, captions=None) -> tuple[list[Clip], int]:
    """Clips with their captions; also the number of clips no caption line matched."""
    listed = list_sources(srcs)
    if captions is None:
        return [Clip(cid, path) for cid, path in listed], 0
    by_path, by_id = load_captions(captions)
    clips, missing = [], 0
    for cid, path in listed:
        rec = by_path.get(path) or by_id.get(cid)
        if rec is None:
            missing += 1
            clips.append(Clip(cid, path))
            continue
        extra = {k: v for k, v in rec.items() if k not in ("caption", "path", "file", "id")}
        clips.append(Clip(cid, path, rec["caption"], json.dumps(extra, sort_keys=True)))
    return clips, missing


# ----------------------------------------------------------------------------------- one clip
def motion_score(path, info) -> float:
    """Mean absolute grey-level change (0..255) between consecutive frames sampled at
    ``MOTION_FPS``, at ``MOTION_SIDE`` px short side (antialiased); 0 for a one-frame clip."""
    import torch
    import torch.nn.functional as F
    from ..video import iter_semantic_frames
    w = torch.tensor([0.299, 0.587, 0.114])
    prev, total, n = None, 0.0, 0
    for f in iter_semantic_frames(path, info, MOTION_FPS):
        g = torch.from_numpy(f).float() @ w
        k = MOTION_SIDE / min(g.shape)
        if k < 1:
            size = (max(1, round(g.shape[0] * k)), max(1, round(g.shape[1] * k)))
            g = F.interpolate(g[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
        if prev is not None:
            total += float((g - prev).abs().mean())
            n += 1
        prev = g
    return total / n if n else 0.0


def tokenize_clip(codec, clip: Clip, token_dtype) -> dict:
    """One row of a shard (raises VideoError and friends for an unusable source)."""
    from ..video import probe
    info = probe(clip.path)
    # the encoder's own ids (no token search): what a language model learns should be the regular
    # tokens every encode makes, not ones picked for one decoder's pictures
    header, groups = codec.iter_encode(clip.path, info, search=0)
    starts, valids, toks = [], [], []
    for rec in groups:
        starts.append(rec.start)
        valids.append(rec.valid)
        toks.append(rec.tokens)
    tokens = np.concatenate(toks) if toks else np.zeros(0, np.int64)
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= codec.config.codebook_size):
        raise DatasetError(f"token ids outside [0, {codec.config.codebook_size})")
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in toks])]).astype(np.int64)
    return {"clip_id": clip.clip_id, "source": clip.path, "caption": clip.caption, "meta": clip.meta,
            "fps": float(info.fps), "frames": int(info.frames), "width": int(info.width), "height": int(info.height),
            "duration": float(info.duration), "motion": motion_score(clip.path, info),
            "semantic_fps": float(header.semantic_fps), "semantic_frames": int(header.semantic_frames),
            "model": codec.name, "model_hash": codec.content_hash, "n_groups": len(toks), "n_tokens": len(tokens),
            "group_start": starts, "group_valid": valids, "group_offsets": offsets.tolist(),
            "tokens": tokens.astype(token_dtype)}


def _reason(e: BaseException) -> str:
    from ..video import VideoError
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return msg if isinstance(e, (VideoError, DatasetError)) else f"{type(e).__name__}: {msg}"


def _try_clip(codec, clip: Clip, token_dtype) -> tuple[str, Clip, object]:
    try:
        return "ok", clip, tokenize_clip(codec, clip, token_dtype)
    except Exception as e:          # noqa: BLE001 -- any failure of one source is recorded, never fatal
        return "fail", clip, _reason(e)


_WORKER: dict = {}


def _worker_init(model, device, threads, parent: int | None = None, backbone=None):
    _die_with_parent(parent)
    import torch
    torch.set_num_threads(threads)
    from ..codec import Codec
    _WORKER["codec"] = Codec.from_pretrained(model, device, backbone)
    _WORKER["dtype"] = token_dtype(_WORKER["codec"].config.codebook_size)


def _die_with_parent(parent: int | None) -> None:
    """A worker must not outlive a SIGKILLed build: the kernel kills it with its parent (Linux
    PR_SET_PDEATHSIG), and a parent already gone before that is seen through the pid."""
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)          # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _worker_run(clip: Clip):
    return _try_clip(_WORKER["codec"], clip, _WORKER["dtype"])


def token_dtype(codebook_size: int):
    return np.int16 if codebook_size <= 1 << 15 else np.int32


# ----------------------------------------------------------------------------------- output
def dataset_meta(codec) -> dict:
    c = codec.config
    return {"format": FORMAT, "version": VERSION,        # the config holds no path: backbones are given at load
            "model": {"name": codec.name, "hash": codec.content_hash, "config": c.to_dict()},
            "tokens": {"dtype": np.dtype(token_dtype(c.codebook_size)).name, "codebook_size": c.codebook_size,
                       "iframe_tokens": c.iframe_tokens, "pframe_tokens": c.pframe_tokens, "group": c.group,
                       "overlap": c.overlap, "semantic_fps": c.fps},
            "motion": MOTION_DOC}


def prepare_dir(out, codec) -> dict:
    """Create ``out`` (or check it was built with the same model) and write ``dataset.json``."""
    from ..atomic import atomic_write
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"output is a file, not a folder: {out}")
    if not out.parent.resolve().is_dir():
        raise DatasetError(f"output folder's parent does not exist: {out.parent}")
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    meta = dataset_meta(codec)
    p = out / META_FILE
    if p.exists():
        from .dataset import read_meta
        old = read_meta(out)
        if old["model"]["hash"] != meta["model"]["hash"]:
            raise DatasetError(f"{out} holds tokens of model '{old['model']['name']}' ({old['model']['hash'][:12]}), "
                               f"not of '{meta['model']['name']}' ({meta['model']['hash'][:12]}): use another "
                               f"output folder")
        return old
    with atomic_write(p, "w") as f:
        f.write(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def shard_schema(meta: dict):
    import pyarrow as pa
    tok = pa.int16() if meta["tokens"]["dtype"] == "int16" else pa.int32()
    fields = [("clip_id", pa.string()), ("source", pa.string()), ("caption", pa.string()), ("meta", pa.string()),
              ("fps", pa.float64()), ("frames", pa.int32()), ("width", pa.int32()), ("height", pa.int32()),
              ("duration", pa.float64()), ("motion", pa.float32()), ("semantic_fps", pa.float32()),
              ("semantic_frames", pa.int32()), ("model", pa.string()), ("model_hash", pa.string()),
              ("n_groups", pa.int32()), ("n_tokens", pa.int32()), ("group_start", pa.list_(pa.int32())),
              ("group_valid", pa.list_(pa.int32())), ("group_offsets", pa.list_(pa.int32())),
              ("tokens", pa.list_(tok))]
    return pa.schema(fields, metadata={b"semcodec": json.dumps(meta, sort_keys=True).encode()})


class ShardWriter:
    """Buffers rows of one rank; ``flush()`` writes them as the next shard ``rRRRRR-SSSSSS.parquet``."""

    def __init__(self, out, rank: int, meta: dict):
        self.dir, self.rank, self.schema = Path(out) / SHARD_DIR, rank, shard_schema(meta)
        for stale in self.dir.glob(f".r{rank:05d}-*"):     # temporaries of a killed run of this rank
            stale.unlink(missing_ok=True)
        pat = re.compile(rf"r{rank:05d}-(\d+){re.escape(SHARD_SUFFIX)}$")
        seqs = [int(m.group(1)) for p in self.dir.iterdir() if (m := pat.match(p.name))]
        self.seq = max(seqs, default=0)
        self.rows: list[dict] = []
        self.tokens = 0
        self.written = 0

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.tokens += len(row["tokens"])

    def flush(self) -> Path | None:
        if not self.rows:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq
        from ..atomic import atomic_path
        rows, self.rows, self.tokens = self.rows, [], 0
        cols = {}
        for f in self.schema:
            if f.name == "tokens":
                offs = np.concatenate([[0], np.cumsum([len(r["tokens"]) for r in rows])]).astype(np.int32)
                vals = np.concatenate([r["tokens"] for r in rows]).astype(f.type.value_type.to_pandas_dtype())
                cols[f.name] = pa.ListArray.from_arrays(pa.array(offs), pa.array(vals))
            else:
                cols[f.name] = pa.array([r[f.name] for r in rows], type=f.type)
        table = pa.Table.from_arrays(list(cols.values()), schema=self.schema)
        mean = max(1.0, sum(len(r["tokens"]) for r in rows) / len(rows))
        self.seq += 1
        path = self.dir / f"r{self.rank:05d}-{self.seq:06d}{SHARD_SUFFIX}"
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, row_group_size=int(max(1, min(4096, ROW_GROUP_TOKENS // mean))),
                           compression="zstd", compression_level=3)
        self.written += 1
        return path


def _done_ids(out) -> set[str]:
    import pyarrow.parquet as pq
    done = set()
    for s in shard_paths(out):
        done.update(pq.read_table(s, columns=["clip_id"]).column("clip_id").to_pylist())
    return done


def _lock(out, rank: int):
    import fcntl
    fh = os.fdopen(_open_own(Path(out) / f".lock-r{rank:05d}", os.O_WRONLY | os.O_CREAT), "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise DatasetError(f"another build of rank {rank} is running on {out}") from None
    return fh


def dist_env(rank: int | None = None, world: int | None = None) -> tuple[int, int]:
    """(rank, world size): the arguments, else torchrun's ``RANK`` / ``WORLD_SIZE``, else (0, 1)."""
    try:
        rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
        world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else int(world)
    except ValueError:
        raise DatasetError("RANK and WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise DatasetError(f"rank {rank} is not in [0, world size {world})")
    return rank, world


# ----------------------------------------------------------------------------------- build
def build(sources, out, model=None, captions=None, workers: int = 1, rank: int | None = None,
          world: int | None = None, device: str | None = None, shard_size: int = 256, flush_seconds: float = 300,
          retry_failed: bool = False, log=None, progress: bool = False, engine: str = "local",
          backbone=None) -> BuildReport:
    """Tokenize ``sources`` (files / folders) into the dataset folder ``out``; see the module doc.

    ``workers``: tokenizing processes (spawned, one torch thread each); 0 tokenizes in this process;
    with ``engine="ray"``, Ray actors. ``shard_size``: clips per shard (also written every
    ``flush_seconds`` and at the end). ``retry_failed``: try again the sources an earlier run
    recorded as failed. ``backbone``: the local backbone of a model whose features come from one.
    """
    import torch
    from ..codec import Codec
    t0 = time.time()
    log = log or (lambda msg: None)
    rank, world = dist_env(rank, world)
    if shard_size < 1:
        raise DatasetError("--shard-size must be at least 1")
    if workers < 0:
        raise DatasetError("--workers must be 0 (this process) or more")
    if engine not in ("local", "ray"):
        raise DatasetError(f"--engine must be local or ray, not {engine!r}")
    if engine == "ray" and world > 1:
        raise DatasetError("--engine ray spreads the clips itself: run one build, not one per rank")
    if device is None:
        local = int(os.environ.get("LOCAL_RANK", 0))
        device = f"cuda:{local % max(1, torch.cuda.device_count())}" if torch.cuda.is_available() else "cpu"
    clips, uncaptioned = make_clips(sources, captions)
    if engine == "ray":
        from .ray_engine import ray_available
        ray_available()                  # before any work: a clear error without the extra
    codec = Codec.from_pretrained(model, device if workers == 0 and engine == "local" else "cpu", backbone)
    meta = prepare_dir(out, codec)
    lock = _lock(out, rank)
    rep = BuildReport(sources=len(clips), uncaptioned=uncaptioned)
    try:
        mine = [c for i, c in enumerate(clips) if i % world == rank]
        rep.assigned = len(mine)
        done, failed = _done_ids(out), failure_records(out)
        todo = [c for c in mine if c.clip_id not in done]
        rep.present = len(mine) - len(todo)
        fail_path = Path(out) / f"failures-r{rank:05d}.jsonl"
        if retry_failed:
            retry = {c.clip_id for c in todo}
            if fail_path.exists():
                from ..atomic import atomic_write
                keep = [ln for ln in fail_path.read_text(errors="replace").splitlines()
                        if _line_id(ln) not in retry and _line_id(ln) is not None]
                with atomic_write(fail_path, "w") as f:
                    f.write("".join(ln + "\n" for ln in keep))
        else:
            n = len(todo)
            todo = [c for c in todo if c.clip_id not in failed]
            rep.known_failed = n - len(todo)
        writer = ShardWriter(out, rank, meta)
        tag = f"[rank {rank}/{world}] " if world > 1 else ""
        how = (f"{max(1, workers)} Ray actor{'s' if workers > 1 else ''}" if engine == "ray" else
               f"{workers or 'no'} worker process{'es' if workers != 1 else ''}")
        log(f"{tag}{len(mine)} clips assigned: {rep.present} already present, {rep.known_failed} failed before, "
            f"{len(todo)} to tokenize with {how}")
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(todo), unit="clip", desc=f"{tag}build", disable=not sys.stderr.isatty(), leave=False)
        last_flush = time.time()

        def handle(status, clip, res):
            nonlocal last_flush
            if status == "ok":
                writer.add(res)
                rep.built += 1
                rep.tokens += len(res["tokens"])
            else:
                rec = {"clip_id": clip.clip_id, "source": clip.path, "reason": res, "rank": rank,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
                _append_line(fail_path, json.dumps(rec, sort_keys=True))
                rep.failed += 1
                rep.failures.append(rec)
                log(f"{tag}skipped {clip.clip_id}: {res}")
            if len(writer.rows) >= shard_size or writer.tokens >= FLUSH_TOKENS or \
                    (writer.rows and time.time() - last_flush >= flush_seconds):
                writer.flush()
                last_flush = time.time()
            if bar is not None:
                bar.update(1)

        try:
            if engine == "ray":
                from .ray_engine import run_ray
                del codec
                run_ray(todo, model, device, max(1, workers), handle, backbone)
            elif workers == 0:
                dtype = token_dtype(codec.config.codebook_size)
                for clip in todo:
                    handle(*_try_clip(codec, clip, dtype))
            else:
                del codec
                _run_pool(todo, model, device, workers, handle, log, tag, backbone)
            writer.flush()
        finally:
            if bar is not None:
                bar.close()
        rep.shards = writer.written
    finally:
        lock.close()
    rep.seconds = time.time() - t0
    log(f"{tag}built {rep.built} clips ({rep.tokens} tokens) into {rep.shards} shards in {rep.seconds:.1f} s; "
        f"{rep.failed} failed" + (f" (see {fail_path})" if rep.failed else "")
        + (f"; {rep.uncaptioned} clips had no caption line" if rep.uncaptioned else ""))
    return rep


def _line_id(line: str):
    try:
        return json.loads(line)["clip_id"]
    except (ValueError, KeyError, TypeError):
        return None


def _open_own(path: Path, flags: int) -> int:
    """Open a file of the dataset folder, never through a link planted in it."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o666)
    except OSError:
        if os.path.islink(path):
            raise DatasetError(f"{path} is a symbolic link: a dataset build writes no file through a link") from None
        raise


def _append_line(path: Path, line: str) -> None:
    fd = _open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _run_pool(todo: list[Clip], model, device, workers: int, handle, log, tag, backbone=None) -> None:
    """Tokenize ``todo`` in ``workers`` spawned processes. A worker that dies (crash, out of
    memory) breaks the pool: the clips in flight are retried one at a time in a new pool, and the
    one that breaks it alone is recorded as failed."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    queue, suspects = deque(todo), deque()
    ctx = mp.get_context("spawn")
    while queue or suspects:
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                   initargs=(model, device, 1, os.getpid(), backbone))
        inflight: dict = {}
        solo = False
        try:
            while queue or suspects or inflight:
                while not solo and (suspects or queue) and len(inflight) < 2 * workers:
                    if suspects:
                        if inflight:
                            break
                        clip, solo = suspects.popleft(), True
                    else:
                        clip = queue.popleft()
                    try:
                        inflight[pool.submit(_worker_run, clip)] = clip
                    except BrokenProcessPool:
                        (suspects if solo else queue).appendleft(clip)
                        solo = False
                        raise
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in done:
                    res = fut.result()          # BrokenProcessPool if a worker died
                    del inflight[fut]
                    handle(*res)
                    solo = False
        except BrokenProcessPool:
            if solo and len(inflight) == 1:
                (clip,) = inflight.values()
                handle("fail", clip, "the tokenizing process died on this source (crash or out of memory)")
            else:
                log(f"{tag}a worker process died; retrying its {len(inflight)} clips one at a time")
                suspects.extendleft(reversed(list(inflight.values())))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def main(argv=None) -> int:
    """``python -m semcodec.data.build``: the ``semcodec dataset build`` command on its own."""
    from ..cli import run_click
    from .cli import build_cmd
    return run_click(build_cmd, argv, "python -m semcodec.data.build")


if __name__ == "__main__":
    sys.exit(main())
