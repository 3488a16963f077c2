"""Forged-header fuzz campaign: token streams whose header fields (or, in format 2, the raw bytes
of the header body) are changed at random and whose CRCs, index and footer are recomputed, so
that every forgery reaches the checks behind the CRCs. The streams forged: format 2 in every
entropy mode the model has (the context mode with the tiny model's random context model) and
format 1; a format-2 group's CRC covers its tokens, so the forger decodes them with our own
decoder under the forged header, as an attacker would.

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
import os
import random
import struct
import sys
import time
import zlib

MAGIC = b"SEMCTOKS"


def _crc(b: bytes) -> int:
    return zlib.crc32(b)


def split(data: bytes) -> tuple[dict, list]:
    """A well-formed stream -> (header dict, its groups). Format 1: the header JSON and the
    chunks as raw bytes, CRCs included. Format 2: ``StreamHeader.to_dict()`` of the header and
    ``(payload, escaped)`` per group."""
    major, minor, length = struct.unpack_from("<HHI", data, 8)
    if major == 1:
        header = json.loads(data[16:16 + length])
        (index_offset,) = struct.unpack_from("<Q", data, len(data) - 16)
        (n,) = struct.unpack_from("<I", data, index_offset + 4)
        chunks = []
        for j in range(n):
            off, plen = struct.unpack_from("<QI", data, index_offset + 8 + 12 * j)
            chunks.append(data[off:off + 20 + plen])
        return header, chunks
    from semcodec.bitstream.binary import Cursor, decode_header
    from semcodec.bitstream.container import FORMAT_VERSION
    h = decode_header(data[16:16 + length], minor, FORMAT_VERSION[1])
    (isize,) = struct.unpack_from("<I", data, len(data) - 8)
    cur = Cursor(data[len(data) - 8 - isize:len(data) - 8])
    pos, groups = 16 + length + 4, []
    for i in range(h.n_groups):
        v = cur.varint("length")
        cur.take(4, "crc")
        groups.append((data[pos:pos + (v >> 1)], bool(v & 1)))
        pos += v >> 1
    return h.to_dict(), groups


def chunk(index: int, start: int, valid: int, payload: bytes) -> bytes:
    """A format-1 group chunk."""
    fields = struct.pack("<IIII", index, start, valid, len(payload))
    return fields + struct.pack("<I", zlib.crc32(payload, zlib.crc32(fields))) + payload


def _varint(v) -> bytes:
    """Any integer as a varint: negative ones as their 64-bit two's complement, huge ones with
    all their bytes (the reader refuses both); anything else as 0."""
    from semcodec.bitstream.binary import varint_bytes
    if isinstance(v, bool) or not isinstance(v, int):
        v = 0
    return varint_bytes(v % (1 << 64) if v < 0 else v)


def _number(x) -> bytes:
    from semcodec.bitstream.binary import put_number
    out = bytearray()
    try:
        x = float(x)
    except (TypeError, ValueError, OverflowError):
        x = math.nan
    if math.isfinite(x) and x > 0:
        put_number(out, x)
    else:
        out += _varint(1) + struct.pack("<d", x)
    return bytes(out)


def _hash(hexstr) -> bytes:
    try:
        b = bytes.fromhex(str(hexstr))
    except ValueError:
        b = b""
    return (b + bytes(16))[:16]


def header_body(h: dict) -> bytes:
    """A format-2 header body from a header dict, whatever its values (no validation: what a
    forger writes). Unknown modes get code 9; values a field cannot hold are written as the
    nearest thing it can (see ``_varint``)."""
    from semcodec.bitstream.binary import MODE_CODES
    p = h.get("entropy_params") if isinstance(h.get("entropy_params"), dict) else {}
    mode = h.get("entropy_mode")
    code = MODE_CODES.get(mode, 9) if isinstance(mode, str) else 9
    ehash = p.get("context_sha256") or p.get("prior_sha256") or ""
    name = str(h.get("model_name", "")).encode("utf-8", "replace")
    out = bytearray(_hash(h.get("model_hash", "")) + bytes([code]) + _hash(ehash))
    out += _varint(len(name)) + name
    out += _number(h.get("src_fps"))
    for k in ("src_width", "src_height", "src_frames"):
        out += _varint(h.get(k))
    out += _number(h.get("semantic_fps"))
    g = lambda k: h.get(k) if isinstance(h.get(k), int) else 0      # noqa: E731
    for v in (g("semantic_frames"), g("scaled_height"), g("scaled_width"), g("padded_height") - g("scaled_height"),
              g("padded_width") - g("scaled_width"), g("group"), g("overlap"), g("iframe_tokens"),
              g("pframe_tokens"), g("codebook_size")):
        out += _varint(v)
    if code == MODE_CODES["adaptive"]:
        init = p.get("init")
        out += bytes([1 if init == "prior" else 0 if init == "uniform" else 7])
        out += _varint(p.get("block")) + _varint(p.get("increment"))
    elif code == MODE_CODES["context"]:
        out += _varint(p.get("link")) + _varint(p.get("iframe_rows")) + _varint(p.get("pframe_rows"))
    return bytes(out)


def _group_tokens(body: bytes, groups: list, prior=None, context=None) -> list[bytes]:
    """The token bytes each group's CRC covers, as our own decoder reads them under this header
    (a forger recomputes CRCs the same way); b"" where the header or a payload does not decode."""
    from semcodec.bitstream.binary import decode_header
    from semcodec.bitstream.container import StreamReader
    import os
    import tempfile
    try:
        h = decode_header(body, 0, 0)
    except Exception:       # noqa: BLE001  (any refusal: the reader stops at the header)
        return [b""] * len(groups)
    # decode each group with a stream whose CRCs are not checked: build it with placeholder
    # CRCs, then read the payloads through the reader's decoder
    out, prev = [], None
    fd, path = tempfile.mkstemp(suffix=".bin")
    os.close(fd)
    try:
        with open(path, "wb") as f:
            f.write(_assemble(body, groups, [0] * len(groups)))
        r = StreamReader(path, prior_counts=prior, context=context)
    except Exception:       # noqa: BLE001
        os.unlink(path)
        return [b""] * len(groups)
    try:
        from semcodec.bitstream.container import _linked, _token_bytes
        for i in range(min(len(groups), h.n_groups)):
            try:
                link = prev if _linked(h, i) else None
                tokens = r._decode_payload(i, link)[1]
                prev = r._context.layout.split(tokens, h.group_span(i)[1]) if r._context else None
                out.append(_token_bytes(tokens))
            except Exception:   # noqa: BLE001
                out.append(b"")
                prev = None
    finally:
        r.close()
        os.unlink(path)
    return out + [b""] * (len(groups) - len(out))


def _assemble(body: bytes, groups: list, crcs: list[int], major: int = 2, minor: int = 0) -> bytes:
    from semcodec.bitstream.binary import index_entry
    head = MAGIC + struct.pack("<HHI", major, minor, len(body)) + body
    out = bytearray(head + struct.pack("<I", _crc(head)))
    index = bytearray()
    for (payload, escaped), crc in zip(groups, crcs):
        out += payload
        index += index_entry(len(payload), escaped) + struct.pack("<I", crc)
    size = struct.pack("<I", len(index))
    out += index + size + struct.pack("<I", zlib.crc32(size, zlib.crc32(bytes(index))))
    return bytes(out)


def build_stream(header: dict, chunks: list, major: int | None = None, prior=None, context=None,
                 body: bytes | None = None) -> bytes:
    """The bytes of a stream with this header and these groups: every CRC, the index and the
    footer computed, whatever the header says. Format 1 (``chunks`` of ``chunk``; non-canonical
    JSON values are written as given) or format 2 (``(payload, escaped)`` groups; ``body``
    replaces the header body ``header_body(header)``; each group's CRC covers the tokens our
    decoder reads from it under this header, with ``prior`` / ``context`` where it needs them)."""
    if major is None:
        major = 1 if chunks and isinstance(chunks[0], (bytes, bytearray)) else 2
    if major != 2:
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
    from semcodec.bitstream.binary import index_entry
    body = header_body(header) if body is None else body
    tokens = _group_tokens(body, chunks, prior, context)
    crcs = [zlib.crc32(t, zlib.crc32(p, zlib.crc32(index_entry(len(p), e)))) for (p, e), t in zip(chunks, tokens)]
    return _assemble(body, chunks, crcs)


def forge(data: bytes, prior=None, context=None, **changes) -> bytes:
    """``data`` with header fields replaced (``entropy_params`` merged) and CRCs recomputed
    (format 2: ``prior`` / ``context``, the entropy model the stream needs, to read its tokens)."""
    header, chunks = split(data)
    params = changes.pop("entropy_params", None)
    header.update(changes)
    if params is not None:
        header["entropy_params"] = {**header["entropy_params"], **params}
    return build_stream(header, chunks, prior=prior, context=context)


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


def mutate(rng: random.Random, header: dict, chunks: list, fit=None) -> tuple[dict, list]:
    """One to three random field changes, sometimes consistent groups of them (so that checks
    behind the first one are reached), sometimes new groups with empty payloads or flipped
    escape flags (format 2). ``fit(h, w)`` gives the model geometry ``(scaled, padded)`` of a
    source size."""
    h = json.loads(json.dumps(header))
    v2 = not (chunks and isinstance(chunks[0], (bytes, bytearray)))
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
            k = rng.choice(["block", "increment", "init", "coder", "precision", "bits", "link", "iframe_rows",
                            "pframe_rows"])
            p[k] = rng.choice([0, 1, 2, 3, 7, 32, 65536, 65537, "prior", "uniform", None, 24, 1 << 40])
        elif r < 0.85:                  # a consistent longer video: more groups, empty payloads
            try:
                chunks = _longer(rng, h, v2)
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
        elif r < 0.97 and v2 and chunks:    # a group said to be packed fixed-width, or no longer
            j = rng.randrange(len(chunks))
            chunks = chunks[:j] + [(chunks[j][0], not chunks[j][1])] + chunks[j + 1:]
        else:
            h["entropy_mode"] = rng.choice(["fixed", "prior", "adaptive", "context", "x"])
    return h, chunks


def mutate_body(rng: random.Random, body: bytes) -> bytes:
    """Format 2's header body with one to four bytes flipped, inserted or deleted (the header CRC
    is then recomputed by ``build_stream``)."""
    b = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(b) + 1)
        op = rng.random()
        if op < 0.6 and pos < len(b):
            b[pos] ^= 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(1, 256)
        elif op < 0.8:
            b[pos:pos] = bytes([rng.randrange(256)])
        elif pos < len(b):
            del b[pos]
    return bytes(b)


def _longer(rng: random.Random, h: dict, v2: bool) -> list:
    from semcodec.bitstream.header import count_groups
    sem = rng.choice([h["semantic_frames"] * 2, h["semantic_frames"] + 1, 40, 1000, 10 ** 6])
    src_frames = max(1, round(sem * h["src_fps"] / h["semantic_fps"]))
    n = count_groups(sem, h["group"], h["overlap"])
    stride = h["group"] - h["overlap"]
    h.update(semantic_frames=sem, src_frames=src_frames, n_groups=n)
    if v2:
        return [(b"", False)] * min(n, MAX_GROUPS)
    return [chunk(i, i * stride, min(h["group"], sem - i * stride), b"") for i in range(min(n, MAX_GROUPS))]


def run_case(codec, path) -> str:
    """Decode like ``semcodec decode`` without writing video; 'ok' or the user error."""
    from semcodec import SemcodecError
    from semcodec.bitstream import StreamReader
    try:
        with StreamReader(path, prior_counts=codec.prior, context=codec.context_model) as r:
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
    p.add_argument("--model", default=None, help="model file [default: a tiny random model with a random "
                   "context model beside it]")
    p.add_argument("--max-seconds", type=float, default=10.0)
    p.add_argument("--out", default=None, help="write the summary JSON here")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from semcodec.codec import Codec
    tmp = tempfile.mkdtemp(prefix="fuzz-streams-")
    model = a.model or tiny_model(tmp)
    codec = Codec.load(model, "cpu")
    # the streams forged: format 1 (adaptive), format 2 in every entropy mode the model has
    modes = ["fixed", "adaptive"] + (["prior"] if codec.prior is not None else []) + \
        (["context"] if codec.context_model is not None else [])
    bases = [split(base_stream(codec, tmp, m)) + (m, 2) for m in modes]
    bases.append(split(to_format1(base_stream(codec, tmp, "adaptive"), codec)) + ("adaptive", 1))

    def fit(height, width):
        g = codec.geometry(height, width)
        return g.scaled, g.padded
    rng = random.Random(a.seed)
    outcomes: dict[str, int] = {}
    findings, slowest, slowest_wall = [], (0.0, None), 0.0
    path = os.path.join(tmp, "case.bin")
    t_all = time.time()
    for i in range(a.cases):
        header, chunks, mode, major = bases[i % len(bases)]
        body = None
        if major == 2 and rng.random() < 0.2:        # raw bytes of the header body
            h, c = header, chunks
            body = mutate_body(rng, header_body(header))
        else:
            h, c = mutate(rng, header, chunks, fit)
        with open(path, "wb") as f:
            f.write(build_stream(h, c, major, prior=codec.prior, context=codec.context_model, body=body))
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
            print(json.dumps(findings[-1], default=str)[:3000], file=sys.stderr)
        outcomes[out] = outcomes.get(out, 0) + 1
        if (i + 1) % 10000 == 0:
            print(f"{i + 1} cases, {time.time() - t_all:.0f} s, {len(findings)} findings", file=sys.stderr)
    summary = {"cases": a.cases, "seed": a.seed, "seconds": round(time.time() - t_all, 1),
               "bases": [f"format {major} {mode}" for _, _, mode, major in bases],
               "slowest_case_cpu_s": round(slowest[0], 3), "slowest_case": slowest[1],
               "slowest_case_wall_s": round(slowest_wall, 3),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "findings": findings[:20], "n_findings": len(findings),
               "outcomes": dict(sorted(outcomes.items(), key=lambda kv: -kv[1]))}
    text = json.dumps(summary, indent=1, default=str)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 1 if findings else 0


def tiny_model(folder: str, context: bool = True) -> str:
    """The tiny preset with random weights and a prior (``tiny.safetensors``) and, with
    ``context``, a random context model for it beside it (``tiny.context.safetensors``)."""
    import numpy as np
    import torch
    from semcodec import VideoTokenizer, get_preset, save_checkpoint
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    path = f"{folder}/tiny.safetensors"
    digest = save_checkpoint(VideoTokenizer(cfg), cfg, path, token_counts=np.arange(cfg.codebook_size, 0, -1))
    if context:
        from semcodec.bitstream.context_train import random_model
        random_model(cfg.codebook_size, cfg.codebook_dim, digest, patch=cfg.patch).save(f"{folder}/tiny.context.safetensors")
    return path


def base_stream(codec, folder: str, entropy: str | None = None) -> bytes:
    """A real 2-group stream (``base.bin``) of a synthetic 0.8 s clip (``clip.mp4``, 96x64), format
    2.0 (no decoder adaptation: its header is forged into format 1 too)."""
    from semcodec.data import synth
    from semcodec.video import VideoWriter
    clip, tok = f"{folder}/clip.mp4", f"{folder}/base.bin"
    if not os.path.exists(clip):
        with VideoWriter(clip, 25, (64, 96)) as w:
            for f in synth.render(synth.random_scene(3), 20, (64, 96), 25):
                w.write(f)
    codec.encode_file(clip, tok, entropy=entropy, adapt=0)
    with open(tok, "rb") as f:
        return f.read()


def to_format1(data: bytes, codec) -> bytes:
    """A format-2 stream (not context-coded) rewritten in format 1."""
    import tempfile
    from semcodec.bitstream import StreamReader, StreamWriter
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "a.bin"), os.path.join(d, "b.bin")
        with open(src, "wb") as f:
            f.write(data)
        with StreamReader(src, prior_counts=codec.prior) as r:
            h = r.header.to_dict()
            h["model_hash"] = codec.content_hash
            h["entropy_params"] = {}
            from semcodec.bitstream import StreamHeader
            with StreamWriter(dst, StreamHeader(**h), prior_counts=codec.prior, version=1) as w:
                for g in r:
                    w.write_group(g)
        with open(dst, "rb") as f:
            return f.read()


if __name__ == "__main__":
    sys.exit(main())
