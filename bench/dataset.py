"""Token dataset benchmark: build throughput, and read throughput against a JSONL baseline.

    python -m bench.dataset                       # about 1 min on 2 busy cores
    python -m bench.dataset --model run/final.safetensors --clips 64 --json results/dataset.json

1. Build: ``--clips`` procedural clips (``semcodec dataset synth``: 4 s at 8 fps, 128x192) are
   tokenized by ``build(..., workers=2)``: clips/s and tokens/s over the whole call (worker start
   included). The model is ``--model``, or the ``tiny`` preset with random weights when none is
   given (so the figures are the pipeline's, not a trained model's).
2. Read: LM sequences per second through ``DataLoader(num_workers=2, batch_size=64,
   shuffle=True)`` with :class:`~generation.lm.LMCollator`, one epoch over every group, timed
   from the first batch (worker start excluded), median of ``--repeats`` interleaved runs:
   - ``parquet``: :class:`~generation.lm.LMDataset` ``(unit="group")`` over the TokenDataset;
   - ``jsonl`` (the baseline): one JSON line per clip holding the same metadata and its groups'
     token lists; the reader indexes line offsets once, then per item seeks, parses the clip's
     line and builds the same LM sequence with the same collator.
   Two datasets: the one built in step 1, and one of ``--s128-clips`` clips with the token layout
   of the shipped ``s128`` model (6 groups of 224 + 7 x 128 tokens: 7.5 s clips) filled with
   random codes, written by the same shard writer: that is the size LM training reads.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from generation.lm.layout import LMCollator, LMDataset, LMVocab, to_lm_sequence
from semcodec.data import TokenDataset
from semcodec.data.build import ShardWriter, build, prepare_dir
from semcodec.data.dataset import META_FILE


class JsonlGroups(torch.utils.data.Dataset):
    """The baseline: ``dataset.jsonl``, one line per clip; item = one group as an LM sequence."""

    def __init__(self, path, vocab: LMVocab):
        self.path, self.vocab = str(path), vocab
        self.offsets, self.items, pos = [], [], 0
        with open(self.path, "rb") as f:
            for line in f:                       # index once: line offsets and groups per clip
                self.offsets.append(pos)
                pos += len(line)
                self.items += [(len(self.offsets) - 1, g) for g in range(json.loads(line)["n_groups"])]
        self._f, self._pid = None, None

    def __getstate__(self):
        return {**self.__dict__, "_f": None}

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        if self._f is None or self._pid != os.getpid():      # a forked worker opens its own handle
            self._f, self._pid = open(self.path, "rb"), os.getpid()
        c, g = self.items[i]
        self._f.seek(self.offsets[c])
        rec = json.loads(self._f.readline())
        toks = np.asarray(rec["groups"][g], np.int64)
        item = {"tokens": toks, "group_valid": [rec["group_valid"][g]], "group_offsets": [0, len(toks)],
                "caption": rec["caption"], "frames": rec["group_valid"][g], "motion": rec["motion"],
                "fps": rec["fps"], "duration": rec["duration"], "clip_id": rec["clip_id"], "index": c, "group": g}
        return to_lm_sequence(item, self.vocab)


def write_jsonl(ds: TokenDataset, path) -> None:
    with open(path, "w") as f:
        for c in range(ds.n_clips):
            it = ds.clip(c)
            o = it["group_offsets"].tolist()
            t = it["tokens"].tolist()
            f.write(json.dumps({"clip_id": it["clip_id"], "caption": it["caption"], "fps": it["fps"],
                                "duration": it["duration"], "motion": it["motion"], "n_groups": len(o) - 1,
                                "group_valid": it["group_valid"].tolist(),
                                "groups": [t[a:b] for a, b in zip(o[:-1], o[1:])]}) + "\n")


def read_rate(dataset, collate, samples: int, workers: int = 2, batch: int = 64, seed: int = 0) -> tuple[float, int]:
    """Sequences/s over ``samples`` uniformly random items (an epoch when the dataset is that large),
    timed from the first batch."""
    g = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=len(dataset) < samples,
                                             num_samples=max(samples, batch * 4), generator=g)
    dl = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                     collate_fn=collate, prefetch_factor=4)
    it = iter(dl)
    first = next(it)
    t0, n = time.perf_counter(), 0
    for b in it:
        n += len(b["ids"])
    dt = time.perf_counter() - t0
    assert len(first["ids"]) == batch
    return n / dt, n


def s128_layout_dataset(out, clips: int, seed: int = 0) -> Path:
    """A dataset with the s128 token layout and random codes (the format under test, not a model)."""
    from semcodec.presets import get_preset

    class Fake:      # what dataset_meta needs of a codec
        config = get_preset("s128")
        name = "s128-layout"
        content_hash = "0" * 64
    meta = prepare_dir(out, Fake)
    w = ShardWriter(out, 0, meta)
    rng = np.random.default_rng(seed)
    c = Fake.config
    plan_valid = [8] * 6                  # 6 full groups: 8 + 5 * 6 = 38 semantic frames, 9.5 s at 4 fps
    n = sum(c.tokens_for_frames(v) for v in plan_valid)
    for i in range(clips):
        w.add({"clip_id": f"clip_{i:06d}", "source": f"/data/clip_{i:06d}.mp4", "caption": f"caption {i}",
               "meta": "{}", "fps": 25.0, "frames": 238, "width": 320, "height": 180, "duration": 9.52,
               "motion": float(rng.uniform(0, 20)), "semantic_fps": 4.0, "semantic_frames": 38, "model": Fake.name,
               "model_hash": Fake.content_hash, "n_groups": 6, "n_tokens": n,
               "group_start": [6 * g for g in range(6)], "group_valid": plan_valid,
               "group_offsets": np.concatenate([[0], np.cumsum([c.tokens_for_frames(v) for v in plan_valid])]).tolist(),
               "tokens": rng.integers(0, c.codebook_size, n).astype(np.int16)})
        if len(w.rows) == 512:
            w.flush()
    w.flush()
    return Path(out)


def tiny_model(path) -> str:
    import semcodec
    from semcodec.checkpoint import save_checkpoint
    cfg = semcodec.get_preset("tiny")
    torch.manual_seed(0)
    m = semcodec.VideoTokenizer(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    save_checkpoint(m, cfg, path)
    return str(path)


def bench_read(ds_dir, work, label, samples: int, repeats: int) -> dict:
    ds = LMDataset(ds_dir, unit="group")
    jl = Path(work) / f"{label}.jsonl"
    write_jsonl(TokenDataset(ds_dir), jl)
    base = JsonlGroups(jl, ds.vocab)
    assert len(base) == len(ds)
    a, b = base[len(base) // 2], ds[len(ds) // 2]          # same content, same sequence
    assert torch.equal(a["ids"], b["ids"])
    pq, js = [], []
    for r in range(repeats):        # interleaved, so both see the same background load; medians
        pq.append(read_rate(ds, ds.collate_fn, samples, seed=r)[0])
        js.append(read_rate(base, LMCollator(ds.vocab), max(1024, samples // 8), seed=r)[0])
    pq_rate, js_rate, n = statistics.median(pq), statistics.median(js), samples
    size_pq = sum(p.stat().st_size for p in Path(ds_dir, "shards").glob("*.parquet"))
    return {"dataset": label, "sequences": len(ds), "seq_len": int(ds.sequence_length(0)),
            "parquet_seq_s": pq_rate, "jsonl_seq_s": js_rate, "speedup": pq_rate / js_rate,
            "parquet_bytes": size_pq, "jsonl_bytes": jl.stat().st_size, "timed": n,
            "parquet_runs": pq, "jsonl_runs": js}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint or shipped name [default: tiny preset, random weights]")
    ap.add_argument("--clips", type=int, default=48, help="procedural clips to build")
    ap.add_argument("--s128-clips", type=int, default=2000, help="clips of the s128-layout read dataset")
    ap.add_argument("--samples", type=int, default=30000, help="sequences timed per Parquet read run "
                    "(the JSONL baseline reads 1/8 as many, at least 1024)")
    ap.add_argument("--repeats", type=int, default=3, help="read runs of each reader (median reported)")
    ap.add_argument("--workdir", default=None, help="keep the files here [default: a temp folder]")
    ap.add_argument("--json", default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from semcodec.data.synth import write_clips
    tmp = tempfile.TemporaryDirectory(prefix="bench-dataset-")
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or tiny_model(work / "tiny.safetensors")
    t = time.perf_counter()
    caps = write_clips(args.clips, work / "clips", frames=32, size=(128, 192), fps=8.0, workers=2)
    synth_s = time.perf_counter() - t
    ds_dir = work / "ds"
    for d in (ds_dir, work / "s128"):
        if (d / META_FILE).exists():
            shutil.rmtree(d)
    rep = build([str(work / "clips")], ds_dir, model=model, captions=caps, workers=2)
    assert rep.built == args.clips and rep.failed == 0
    model_name = json.loads((ds_dir / META_FILE).read_text())["model"]["name"]
    res = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "torch": torch.__version__, "model": model_name if args.model else "tiny (random weights)",
           "build": {"clips": rep.built, "seconds": rep.seconds, "clips_s": rep.built / rep.seconds,
                     "tokens": rep.tokens, "tokens_s": rep.tokens / rep.seconds, "workers": 2,
                     "synth_s": synth_s}}
    print(f"build ({res['model']}, 2 workers): {rep.built} clips of 4 s in {rep.seconds:.1f} s = "
          f"{res['build']['clips_s']:.2f} clips/s, {res['build']['tokens_s']:.0f} tokens/s")
    res["read"] = [bench_read(ds_dir, work, "built", args.samples, args.repeats)]
    s128 = s128_layout_dataset(work / "s128", args.s128_clips)
    res["read"].append(bench_read(s128, work, "s128-layout", args.samples, args.repeats))
    for r in res["read"]:
        print(f"read {r['dataset']:>11} ({r['sequences']} sequences of {r['seq_len']} ids): parquet "
              f"{r['parquet_seq_s']:.0f} seq/s, jsonl {r['jsonl_seq_s']:.0f} seq/s, x{r['speedup']:.1f}; "
              f"{r['parquet_bytes'] / 1e6:.2f} MB vs {r['jsonl_bytes'] / 1e6:.2f} MB")
    b, (r1, r2) = res["build"], res["read"]
    print("\n| date | machine | model | build clips/s | build tokens/s | read seq/s parquet / jsonl (built) "
          "| read seq/s parquet / jsonl (s128 layout) |")
    print(f"| {res['date']} | {res['machine']} | {res['model']} | {b['clips_s']:.2f} | {b['tokens_s']:.0f} | "
          f"{r1['parquet_seq_s']:.0f} / {r1['jsonl_seq_s']:.0f} (x{r1['speedup']:.1f}) | "
          f"{r2['parquet_seq_s']:.0f} / {r2['jsonl_seq_s']:.0f} (x{r2['speedup']:.1f}) |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
