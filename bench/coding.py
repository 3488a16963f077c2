"""Entropy coding speed: one s128-sized group (224 + 7 x 128 = 1120 tokens, K = 2048, Zipf-like
ids), encoded and decoded in each mode; and the reader on damaged streams (truncations and flips).

    python -m bench.coding [--repeat 5] [--damaged 200] [--max-ms 50] [--max-damaged-s 5]

Prints the best of ``--repeat`` runs per mode (ms for an encode plus a decode) and the slowest
damaged-stream rejection; exits 1 when a figure is above its target (the wall-clock checks the
test suite does not make: on a shared machine they measure the neighbours too).
"""
from __future__ import annotations

import argparse
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


def group_ms(mode: str, repeat: int) -> float:
    prior = quantize_prior(np.bincount(zipf_tokens(200_000), minlength=K))
    coder = TokenCoder(mode, K, complete_params(mode, K, {}, prior), prior)
    tok = zipf_tokens(N, seed=0)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = coder.decode(coder.encode(tok), N)
        best = min(best, time.perf_counter() - t0)
    assert np.array_equal(out, tok)
    return 1e3 * best


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
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--damaged", type=int, default=200)
    p.add_argument("--max-ms", type=float, default=50.0, help="target per group, encode + decode")
    p.add_argument("--max-damaged-s", type=float, default=5.0, help="target per damaged stream")
    a = p.parse_args(argv)
    ok = True
    for mode in ENTROPY_MODES:
        ms = group_ms(mode, a.repeat)
        ok &= ms < a.max_ms
        print(f"{mode:9s} {ms:7.2f} ms per {N}-token group (encode + decode), target < {a.max_ms:g}")
    with tempfile.TemporaryDirectory() as d:
        worst = damaged_worst_s(a.damaged, Path(d))
    ok &= worst < a.max_damaged_s
    print(f"damaged  {worst:7.3f} s slowest rejection of {a.damaged} damaged streams, target < {a.max_damaged_s:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
