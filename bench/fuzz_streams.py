"""Forged-header fuzz campaign: token streams whose header fields are changed at random and whose
CRCs, index and footer are recomputed, so that every forgery reaches the checks behind the CRCs.

    python -m bench.fuzz_streams --cases 100000 [--seed 0] [--model PATH] [--out fuzz.json]

Each case is decoded the way ``semcodec decode`` does it (reader, model check, every group to
frames, no video file written) in this one process. It records per case the outcome (``ok``: it
decoded, or the one-line user error), its CPU and wall time, and the peak RSS of the run; any
exception that is not a user error is a finding (``traceback``), and so is a case over
``--max-seconds`` of CPU time (wall time is reported too: on a shared machine it also counts the
turns of other processes). The
summary: cases, outcomes, slowest case, peak RSS. ``forge`` and ``build_stream`` are also what
the tests use to make forged streams.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import struct
import sys
import time
import zlib

MAGIC = b"SEMCTOKS"


def _crc(b: bytes) -> int:
    return zlib.crc32(b)


def split(data: bytes) -> tuple[dict, list[bytes]]:
    """A well-formed stream -> (header dict, its chunks as raw bytes, CRCs included)."""
    (length,) = struct.unpack_from("<I", data, 12)
    header = json.loads(data[16:16 + length])
    (index_offset,) = struct.unpack_from("<Q", data, len(data) - 16)
    (n,) = struct.unpack_from("<I", data, index_offset + 4)
    chunks = []
    for j in range(n):
        off, plen = struct.unpack_from("<QI", data, index_offset + 8 + 12 * j)
        chunks.append(data[off:off + 20 + plen])
    return header, chunks


def chunk(index: int, start: int, valid: int, payload: bytes) -> bytes:
    fields = struct.pack("<IIII", index, start, valid, len(payload))
    return fields + struct.pack("<I", zlib.crc32(payload, zlib.crc32(fields))) + payload


def build_stream(header: dict, chunks: list[bytes], major: int = 1) -> bytes:
    """The bytes of a stream with this header and these chunks: every CRC, the index and the
    footer computed, whatever the header says (non-canonical JSON values are written as given)."""
    js = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head = MAGIC + struct.pack("<HHI", major, 0, len(js)) + js
    out = bytearray(head + struct.pack("<I", _crc(head)))
    entries = b""
    for c in chunks:
        entries += struct.pack("<QI", len(out), len(c) - 20)
        out += c
    index = b"SIDX" + struct.pack("<I", len(chunks)) + entries
    offset = struct.pack("<Q", len(out))
    out += index + struct.pack("<I", _crc(index))
    out += offset + struct.pack("<I", _crc(offset)) + b"SEOF"
    return bytes(out)


def forge(data: bytes, **changes) -> bytes:
    """``data`` with header fields replaced (``entropy_params`` merged) and CRCs recomputed."""
    header, chunks = split(data)
    params = changes.pop("entropy_params", None)
    header.update(changes)
    if params is not None:
        header["entropy_params"] = {**header["entropy_params"], **params}
    return build_stream(header, chunks)


# --------------------------------------------------------------------------------------------
# the campaign
# --------------------------------------------------------------------------------------------

_INTS = ["src_width", "src_height", "src_frames", "semantic_frames", "scaled_height", "scaled_width",
         "padded_height", "padded_width", "group", "overlap", "iframe_tokens", "pframe_tokens",
         "codebook_size", "n_groups"]
_FLOATS = ["src_fps", "semantic_fps"]
_EDGE_INTS = [0, 1, 2, 3, 7, 8, 9, 16, 255, 256, 1 << 16, (1 << 16) + 1, 1 << 20, (1 << 20) + 1,
              1 << 22, 1 << 31, 1 << 32, (1 << 32) - 1, 1 << 40, 10 ** 9, -1, 10 ** 30]
MAX_GROUPS = 16         # forged files stay near 1 KB, the size of the reproducers
_EDGE_FLOATS = [1e-300, 1e-9, 0.001, 0.1, 0.5, 1.0, 1000.0, 1e9, 1e308, -1.0, 0.0]


def mutate(rng: random.Random, header: dict, chunks: list[bytes], fit=None) -> tuple[dict, list[bytes]]:
    """One to three random field changes, sometimes consistent groups of them (so that checks
    behind the first one are reached), sometimes new chunks with empty payloads. ``fit(h, w)``
    gives the model geometry ``(scaled, padded)`` of a source size."""
    h = json.loads(json.dumps(header))
    for _ in range(rng.randint(1, 3)):
        r = rng.random()
        if r < 0.45:
            k, u = rng.choice(_INTS), rng.random()
            h[k] = (rng.choice(_EDGE_INTS) if u < 0.4 else h[k] + rng.randint(-3, 3) if u < 0.7
                    else rng.randint(0, 1 << rng.randint(1, 41)))
        elif r < 0.6:
            k = rng.choice(_FLOATS)
            h[k] = rng.choice(_EDGE_FLOATS) if rng.random() < 0.5 else h[k] * rng.choice([0.5, 2, 10, 1e-3, 1e3])
        elif r < 0.75:
            p = h["entropy_params"]
            k = rng.choice(["block", "increment", "init", "coder", "precision", "bits"])
            p[k] = rng.choice([0, 1, 2, 32, 65536, 65537, "prior", "uniform", None, 24, 1 << 40])
        elif r < 0.85:                  # a consistent longer video: more groups, empty payloads
            try:
                chunks = _longer(rng, h)
            except (ArithmeticError, TypeError, ValueError):
                pass                    # earlier changes made the header inconsistent anyway
        elif r < 0.9 and fit is not None:   # another source size, with its model geometry
            w, hh = rng.choice([(1, 1), (2, 1), (1, 4097), (17, 9), (4096, 2160), (4098, 2160), (8192, 8192),
                                (1 << 20, 1), (rng.randint(1, 9000), rng.randint(1, 9000))])
            (sh, sw), (ph, pw) = fit(hh, w)
            h.update(src_width=w, src_height=hh, scaled_height=sh, scaled_width=sw, padded_height=ph, padded_width=pw)
        elif r < 0.95:                  # another source rate, with frames that keep the semantic count
            fps = rng.choice([0.05, 0.1, 1.0, 24.0, 240.0, 241.0, 1e4, rng.uniform(0.1, 240)])
            h["src_fps"] = fps
            try:
                h["src_frames"] = max(1, math.floor(h["semantic_frames"] * fps / h["semantic_fps"]))
            except (ArithmeticError, TypeError):
                pass
        else:
            h["entropy_mode"] = rng.choice(["fixed", "prior", "adaptive", "x"])
    return h, chunks


def _longer(rng: random.Random, h: dict) -> list[bytes]:
    from semcodec.bitstream.header import count_groups
    sem = rng.choice([h["semantic_frames"] * 2, h["semantic_frames"] + 1, 40, 1000, 10 ** 6])
    src_frames = max(1, round(sem * h["src_fps"] / h["semantic_fps"]))
    n = count_groups(sem, h["group"], h["overlap"])
    stride = h["group"] - h["overlap"]
    h.update(semantic_frames=sem, src_frames=src_frames, n_groups=n)
    return [chunk(i, i * stride, min(h["group"], sem - i * stride), b"") for i in range(min(n, MAX_GROUPS))]


def run_case(codec, path) -> str:
    """Decode like ``semcodec decode`` without writing video; 'ok' or the user error."""
    from semcodec import SemcodecError
    from semcodec.bitstream import StreamReader
    try:
        with StreamReader(path, prior_counts=codec.prior) as r:
            for _ in codec.iter_decode(r):
                pass
    except SemcodecError as e:
        msg = str(e)
        if "\n" in msg or not msg:
            raise AssertionError(f"not a one-line message: {msg!r}") from e
        return "error: " + msg.replace(str(path), "X")[:70]
    return "ok"


def main(argv=None) -> int:
    import os
    import resource
    import tempfile
    import traceback
    p = argparse.ArgumentParser(prog="python -m bench.fuzz_streams", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="model file [default: a tiny random model]")
    p.add_argument("--max-seconds", type=float, default=10.0)
    p.add_argument("--out", default=None, help="write the summary JSON here")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from semcodec.codec import Codec
    tmp = tempfile.mkdtemp(prefix="fuzz-streams-")
    model = a.model or tiny_model(tmp)
    codec = Codec.load(model, "cpu")
    base = base_stream(codec, tmp)
    header, chunks = split(base)

    def fit(height, width):
        g = codec.geometry(height, width)
        return g.scaled, g.padded
    rng = random.Random(a.seed)
    outcomes: dict[str, int] = {}
    findings, slowest, slowest_wall = [], (0.0, None), 0.0
    path = os.path.join(tmp, "case.bin")
    t_all = time.time()
    for i in range(a.cases):
        h, c = mutate(rng, header, chunks, fit)
        with open(path, "wb") as f:
            f.write(build_stream(h, c))
        t, cpu = time.time(), time.process_time()
        try:
            out = run_case(codec, path)
        except Exception:
            out = "traceback"
            findings.append({"case": i, "header": h, "traceback": traceback.format_exc()[-2000:]})
        # CPU time is the measure: on a shared machine wall time also counts other processes' turns
        dt, wall = time.process_time() - cpu, time.time() - t
        if dt > slowest[0]:
            slowest = (dt, i)
        slowest_wall = max(slowest_wall, wall)
        if dt > a.max_seconds:
            findings.append({"case": i, "header": h, "cpu_seconds": dt})
        if findings and findings[-1]["case"] == i:
            print(json.dumps(findings[-1])[:3000], file=sys.stderr)
        outcomes[out] = outcomes.get(out, 0) + 1
        if (i + 1) % 10000 == 0:
            print(f"{i + 1} cases, {time.time() - t_all:.0f} s, {len(findings)} findings", file=sys.stderr)
    summary = {"cases": a.cases, "seed": a.seed, "seconds": round(time.time() - t_all, 1),
               "slowest_case_cpu_s": round(slowest[0], 3), "slowest_case": slowest[1],
               "slowest_case_wall_s": round(slowest_wall, 3),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "findings": findings[:20], "n_findings": len(findings),
               "outcomes": dict(sorted(outcomes.items(), key=lambda kv: -kv[1]))}
    text = json.dumps(summary, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 1 if findings else 0


def tiny_model(folder: str) -> str:
    import numpy as np
    import torch
    from semcodec import VideoTokenizer, get_preset, save_checkpoint
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    path = f"{folder}/tiny.safetensors"
    save_checkpoint(VideoTokenizer(cfg), cfg, path, token_counts=np.arange(cfg.codebook_size, 0, -1))
    return path


def base_stream(codec, folder: str) -> bytes:
    """A real 2-group stream (``base.bin``) of a synthetic 0.8 s clip (``clip.mp4``, 96x64)."""
    from semcodec.data import synth
    from semcodec.video import VideoWriter
    clip, tok = f"{folder}/clip.mp4", f"{folder}/base.bin"
    with VideoWriter(clip, 25, (64, 96)) as w:
        for f in synth.render(synth.random_scene(3), 20, (64, 96), 25):
            w.write(f)
    codec.encode_file(clip, tok)
    with open(tok, "rb") as f:
        return f.read()


if __name__ == "__main__":
    sys.exit(main())
