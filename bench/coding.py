"""Entropy coding: bits per token of real clips in every mode, and speed.

    python -m bench.coding --clips CLIP... [--model s128] [--modes ...] [--link N] [--out coding.json]
    python -m bench.coding [--repeat 5] [--damaged 200] [--max-ms 50] [--max-damaged-s 5]

With ``--clips``: each clip is tokenized once by the model (``Codec.iter_encode``), then written
as a token stream in each entropy mode and read back (the same ids, checked); prints a table of
bits per token (payload bits / tokens) per clip and mode with the container overhead, the
context mode's saving against adaptive (mean of the per-clip savings, and of the bits), and
writes one JSON entry per clip x mode (``--out``): tokens, payload and file bytes, escaped
groups, encode and decode seconds (entropy coding only, this process's threads).

Without: one s128-sized group (224 + 7 x 128 = 1120 tokens, K = 2048, Zipf-like ids), encoded and
decoded in each mode (the context mode with the shipped context model, on an 8 x 15 grid), best
of ``--repeat`` runs, and the slowest rejection of damaged streams; exits 1 when a figure is
above its target (the wall-clock checks the test suite does not make: on a shared machine they
measure the neighbours too).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from semcodec.bitstream import (ENTROPY_MODES, BitstreamError, GroupRecord, StreamHeader, StreamReader,
                                StreamWriter, quantize_prior)
from semcodec.bitstream.entropy import TokenCoder, complete_params

K, N = 2048, 1120


def zipf_tokens(n: int, k: int = K, seed: int = 7) -> np.ndarray:
    p = 1.0 / np.arange(1, k + 1) ** 1.1
    p = (p / p.sum())[np.random.default_rng(seed).permutation(k)]
    return np.random.default_rng(seed + 1).choice(k, n, p=p)


def group_ms(mode: str, repeat: int) -> float | None:
    """Best encode + decode time of one group, ms (None: the context mode without a shipped
    context model)."""
    tok = zipf_tokens(N, seed=0)
    if mode == "context":
        from semcodec.bitstream.context import ContextCoder, find_context_model
        from semcodec.zoo import model_file
        from semcodec.checkpoint import read_metadata
        weights = model_file(None)
        cm = find_context_model(weights, read_metadata(weights)["content_hash"])
        if cm is None:
            return None
        coder = ContextCoder(cm, cm.layout(14, 8, 224, 128, 8, 2))
        enc, dec = (lambda: coder.encode(tok, 8, None)), (lambda p: coder.decode(p, 8, None))
    else:
        prior = quantize_prior(np.bincount(zipf_tokens(200_000), minlength=K))
        coder = TokenCoder(mode, K, complete_params(mode, K, {}, prior), prior)
        enc, dec = (lambda: coder.encode(tok)), (lambda p: coder.decode(p, N))
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = dec(enc())
        best = min(best, time.perf_counter() - t0)
    assert np.array_equal(out, tok)
    return 1e3 * best


def clip_table(clips: list[str], model: str | None, modes, folder: Path, log=print,
               link: int | None = None) -> list[dict]:
    """One entry per clip x mode: bits per token and sizes of real token streams (``link``: the
    context mode's, default the writer's)."""
    import dataclasses
    from semcodec.codec import Codec
    codec = Codec.load(model, "cpu")
    rows = []
    for clip in clips:
        header, groups = codec.iter_encode(clip, search=0)      # the encoder's ids: fast, coder-neutral
        records = list(groups)
        for mode in modes:
            path = folder / f"{Path(clip).stem}-{mode}.bin"
            params = codec.entropy_params(header, mode)
            if mode == "context" and link is not None:
                params["link"] = link
            h = dataclasses.replace(header, entropy_mode=mode, entropy_params=params)
            t0 = time.process_time()
            with StreamWriter(path, h, prior_counts=codec.prior, context=codec.context_model) as w:
                for r in records:
                    w.write_group(r)
            t1 = time.process_time()
            with StreamReader(path, prior_counts=codec.prior, context=codec.context_model) as r:
                back = list(r)
            t2 = time.process_time()
            if back != records:
                raise AssertionError(f"{path.name}: entropy coding did not give back the same token ids")
            size = path.stat().st_size
            rows.append({"clip": Path(clip).name, "mode": mode, "model": codec.name,
                         "tokens": w.header.total_tokens, "groups": w.header.n_groups,
                         "payload_bytes": w.payload_bytes, "bytes": size, "overhead_bytes": size - w.payload_bytes,
                         "escaped_groups": w.escaped, "bits_per_token": 8 * w.payload_bytes / w.header.total_tokens,
                         "encode_cpu_s": t1 - t0, "decode_cpu_s": t2 - t1,
                         "entropy_params": {k: v for k, v in w.header.entropy_params.items() if not k.endswith("sha256")},
                         "duration_s": header.duration})
            log(f"  {rows[-1]['clip']} {mode}: {rows[-1]['bits_per_token']:.3f} bits/token", file=sys.stderr)
    return rows


def print_table(rows: list[dict], modes) -> None:
    clips = list(dict.fromkeys(r["clip"] for r in rows))
    by = {(r["clip"], r["mode"]): r for r in rows}
    print("| clip | " + " | ".join(modes) + " | overhead (B) |")
    print("|---" * (len(modes) + 2) + "|")
    for c in clips:
        cells = [f"{by[c, m]['bits_per_token']:.3f}" if (c, m) in by else "-" for m in modes]
        over = "/".join(str(by[c, m]["overhead_bytes"]) for m in modes if (c, m) in by)
        print(f"| {c} | " + " | ".join(cells) + f" | {over} |")
    means = [np.mean([by[c, m]["bits_per_token"] for c in clips]) if all((c, m) in by for c in clips) else None
             for m in modes]
    print("| mean | " + " | ".join("-" if v is None else f"{v:.3f}" for v in means) + " | |")
    if "context" in modes and "adaptive" in modes and all((c, m) in by for c in clips for m in ("context", "adaptive")):
        per = [1 - by[c, "context"]["bits_per_token"] / by[c, "adaptive"]["bits_per_token"] for c in clips]
        ctx, ada = means[modes.index("context")], means[modes.index("adaptive")]
        print(f"context vs adaptive: {100 * np.mean(per):.1f}% fewer bits per token (mean of the per-clip "
              f"savings {', '.join(f'{100 * v:.1f}%' for v in per)}); {100 * (1 - ctx / ada):.1f}% of the mean bits")


def damaged_worst_s(cases: int, folder: Path) -> float:
    """The slowest rejection of ``cases`` cut or bit-flipped 5-group streams."""
    prior = np.bincount(zipf_tokens(200_000), minlength=K)
    h = StreamHeader(model_name="s128", model_hash="0" * 64, src_fps=25.0, src_width=640, src_height=360,
                     src_frames=250, semantic_fps=4.0, semantic_frames=40, scaled_height=128, scaled_width=224,
                     padded_height=128, padded_width=224, group=8, overlap=2, iframe_tokens=224,
                     pframe_tokens=128, codebook_size=K, n_groups=7, entropy_mode="adaptive")
    with StreamWriter(folder / "s.bin", h, prior_counts=prior) as w:
        for i in range(h.n_groups):
            start, valid = h.group_span(i)
            w.write_group(GroupRecord(i, start, valid, zipf_tokens(h.tokens_for_frames(valid), seed=i)))
    data = (folder / "s.bin").read_bytes()
    rng, worst = np.random.default_rng(0), 0.0
    for _ in range(cases):
        raw = bytearray(data[:int(rng.integers(1, len(data)))] if rng.random() < 0.5 else data)
        pos = int(rng.integers(len(raw)))
        raw[pos] ^= int(rng.integers(1, 256))
        (folder / "d.bin").write_bytes(bytes(raw))
        t0 = time.perf_counter()
        try:
            with StreamReader(folder / "d.bin", prior) as r:
                for _ in r:
                    pass
        except BitstreamError:
            pass
        worst = max(worst, time.perf_counter() - t0)
    return worst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.coding", description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", nargs="+", default=None, help="video files: the bits-per-token table")
    p.add_argument("--model", default=None, help="with --clips [default: s128]")
    p.add_argument("--modes", nargs="+", default=list(ENTROPY_MODES), choices=ENTROPY_MODES)
    p.add_argument("--out", default=None, help="with --clips: write the entries as JSON here")
    p.add_argument("--link", type=int, default=None, help="with --clips: the context mode's link period "
                   "(0: every group on its own) [default: the writer's, 8]")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--damaged", type=int, default=200)
    p.add_argument("--max-ms", type=float, default=50.0, help="target per group, encode + decode")
    p.add_argument("--max-context-ms", type=float, default=300.0,
                   help="target per group in the context mode (a network pass per pass of the group)")
    p.add_argument("--max-damaged-s", type=float, default=5.0, help="target per damaged stream")
    a = p.parse_args(argv)
    if a.clips:
        with tempfile.TemporaryDirectory() as d:
            rows = clip_table(a.clips, a.model, a.modes, Path(d), link=a.link)
        print_table(rows, a.modes)
        if a.out:
            Path(a.out).write_text(json.dumps({"name": "semcodec-coding", "entries": rows}, indent=1) + "\n")
        return 0
    ok = True
    for mode in ENTROPY_MODES:
        ms = group_ms(mode, a.repeat)
        if ms is None:
            print(f"{mode:9s}    -    (no shipped context model)")
            continue
        target = a.max_context_ms if mode == "context" else a.max_ms
        ok &= ms < target
        print(f"{mode:9s} {ms:7.2f} ms per {N}-token group (encode + decode), target < {target:g}")
    with tempfile.TemporaryDirectory() as d:
        worst = damaged_worst_s(a.damaged, Path(d))
    ok &= worst < a.max_damaged_s
    print(f"damaged  {worst:7.3f} s slowest rejection of {a.damaged} damaged streams, target < {a.max_damaged_s:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
