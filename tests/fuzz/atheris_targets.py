"""Coverage-guided fuzzing (atheris, libFuzzer) of the two parsers that take files from anywhere:
the token stream reader and the model loader's metadata parsing.

    pip install -e ".[fuzz]"
    python tests/fuzz/atheris_targets.py reader -atheris_runs=100000 -rss_limit_mb=1024 -timeout=10
    python tests/fuzz/atheris_targets.py model  -atheris_runs=100000 -rss_limit_mb=1024 -timeout=10

``reader``: the input is a token stream (seeds: formats 2 and 1, every entropy mode, the context
mode with a random context model); when its first byte is even the harness recomputes every CRC
the input's own lengths and index point to (format 2: header and index; a group's CRC covers its
decoded tokens, checked after decoding), so mutations reach the checks behind them.
Any exception other than ``BitstreamError`` (and ``IndexError`` for a group out of range, which
the harness never asks for) is a crash. ``model``: the input is a safetensors JSON header; only
``ValueError`` may come out of ``parse_header`` and ``checked_config``. libFuzzer stops on the
first crash, on a case over ``-timeout`` seconds and on RSS over ``-rss_limit_mb``; a run that
ends with ``Done N runs`` found nothing. The seeds are written by the harness itself.
"""
import os
import struct
import sys
import tempfile
import zlib

import atheris

import numpy as np
import torch  # noqa: F401  (imported first: only semcodec's own code is instrumented)

with atheris.instrument_imports(include=["semcodec"]):
    from semcodec.bitstream import BitstreamError, StreamReader
    from semcodec.bitstream.context_train import random_model
    from semcodec.checkpoint import checked_config, parse_header

PRIOR = np.arange(64, 0, -1)          # the tiny preset's codebook: streams coded with a prior read too
CONTEXT = random_model(64, 4, "0" * 64, log_prior=np.log(PRIOR / PRIOR.sum()))   # ... and by context
_PATH = os.path.join(tempfile.mkdtemp(prefix="atheris-"), "case.bin")


def _set_crc(b: bytearray, start: int, end: int) -> None:
    if 0 <= start <= end and end + 4 <= len(b):
        struct.pack_into("<I", b, end, zlib.crc32(bytes(b[start:end])))


def fix_crcs(data: bytes) -> bytes:
    """The CRCs of header, chunks, index and footer made right, wherever the input's lengths
    and offsets point (out-of-range ones are left as they are). Format 2: the header's and the
    index's (a group's CRC covers its decoded tokens: the reader decodes before it checks it)."""
    b = bytearray(data)
    if len(b) < 16:
        return data
    (major, length) = struct.unpack_from("<H", b, 8)[0], struct.unpack_from("<I", b, 12)[0]
    _set_crc(b, 0, 16 + length)
    if major == 2:
        if len(b) >= 16 + length + 4 + 8:
            (isize,) = struct.unpack_from("<I", b, len(b) - 8)
            start = len(b) - 8 - isize
            if start >= 0:
                struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[len(b) - 8:len(b) - 4]),
                                                                 zlib.crc32(bytes(b[start:len(b) - 8]))))
        return bytes(b)
    if len(b) >= 16 + length + 4 + 16:
        (index,) = struct.unpack_from("<Q", b, len(b) - 16)
        _set_crc(b, len(b) - 16, len(b) - 8)
        if index + 8 <= len(b):
            (n,) = struct.unpack_from("<I", b, index + 4)
            end = index + 8 + 12 * n
            if end + 4 <= len(b):
                for j in range(n):
                    off, plen = struct.unpack_from("<QI", b, index + 8 + 12 * j)
                    if off + 20 + plen <= len(b):
                        struct.pack_into("<I", b, off + 16, zlib.crc32(bytes(b[off + 20:off + 20 + plen]),
                                                                       zlib.crc32(bytes(b[off:off + 16]))))
                _set_crc(b, index, end)
    return bytes(b)


def reader(data: bytes) -> None:
    if data[:1] and data[0] % 2 == 0:
        data = fix_crcs(data[1:])
    with open(_PATH, "wb") as f:
        f.write(data)
    try:
        with StreamReader(_PATH, prior_counts=PRIOR, context=CONTEXT) as r:
            r.group_sizes()
            for _ in r:
                pass
    except BitstreamError as e:
        assert "\n" not in str(e), repr(str(e))


def model(data: bytes) -> None:
    try:
        checked_config(*parse_header(data)[:2])
    except ValueError as e:
        assert "\n" not in str(e).strip(), repr(str(e))


def _seeds(target: str) -> str:
    """A folder with one real input of ``target``."""
    folder = tempfile.mkdtemp(prefix=f"atheris-{target}-seeds-")
    here = os.path.dirname(os.path.abspath(__file__))
    if target == "reader":
        from semcodec.bitstream import GroupRecord, StreamHeader, StreamWriter
        rng = np.random.default_rng(0)
        for mode, version in [(m, 2) for m in ("adaptive", "prior", "fixed", "context")] + \
                [(m, 1) for m in ("adaptive", "prior", "fixed")]:
            h = StreamHeader(model_name="tiny", model_hash="0" * 64, src_fps=25.0, src_width=96, src_height=64,
                             src_frames=20, semantic_fps=6.0, semantic_frames=5, scaled_height=32, scaled_width=48,
                             padded_height=32, padded_width=48, group=4, overlap=1, iframe_tokens=8,
                             pframe_tokens=4, codebook_size=64, n_groups=2, entropy_mode=mode,
                             entropy_params={"link": 2} if mode == "context" else {})
            p = os.path.join(folder, f"{mode}{version}.bin")
            with StreamWriter(p, h, prior_counts=PRIOR, context=CONTEXT, version=version) as w:
                w.write_group(GroupRecord(0, 0, 4, rng.integers(0, 64, 20)))
                w.write_group(GroupRecord(1, 3, 2, rng.integers(0, 64, 12)))
            with open(p, "rb") as f:
                raw = f.read()
            with open(p, "wb") as f:
                f.write(b"\0" + raw)             # an even first byte: the harness fixes the CRCs
    else:                                        # the shipped model's header
        w = os.path.join(os.path.dirname(here), "..", "semcodec", "weights", "s128.safetensors")
        with open(w, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            raw = f.read(n)
        with open(os.path.join(folder, "s128.json"), "wb") as f:
            f.write(raw)
    return folder


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("reader", "model"):
        sys.exit("usage: atheris_targets.py reader|model [libFuzzer options]")
    target = sys.argv.pop(1)
    args = sys.argv + ([] if any(not a.startswith("-") for a in sys.argv[1:]) else [_seeds(target)])
    atheris.Setup(args, reader if target == "reader" else model)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
