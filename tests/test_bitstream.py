"""tokens.bin: container, entropy coding, error messages, fuzzing, and an independent
pure-Python decoder written from docs/bitstream.md (checks the spec matches the implementation
byte for byte)."""
from __future__ import annotations

import bisect
import dataclasses
import json
import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from semcodec.bitstream import (ENTROPY_MODES, BitstreamError, GroupRecord, StreamHeader, StreamReader,
                                StreamWriter, count_groups, prior_digest, quantize_counts, quantize_prior,
                                read_header)
from semcodec.gop import plan_groups

MODEL_HASH = "0123456789abcdef" * 4


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def make_header(mode="adaptive", *, frames=30, group=8, overlap=2, iframe=224, pframe=128, k=2048,
                params=None) -> StreamHeader:
    return StreamHeader(
        model_name="s128", model_hash=MODEL_HASH, src_fps=25.0, src_width=640, src_height=360,
        src_frames=int(frames * 12.5), semantic_fps=2.0, semantic_frames=frames, scaled_height=224,
        scaled_width=384, padded_height=224, padded_width=384, group=group, overlap=overlap,
        iframe_tokens=iframe, pframe_tokens=pframe, codebook_size=k,
        n_groups=count_groups(frames, group, overlap), entropy_mode=mode, entropy_params=params or {})


def zipf_probs(k: int, seed: int = 7, s: float = 1.1) -> np.ndarray:
    p = 1.0 / np.arange(1, k + 1) ** s
    return (p / p.sum())[np.random.default_rng(seed).permutation(k)]


def prior_for(k: int, seed: int = 7) -> np.ndarray:
    """Token counts 'measured on training data': a large Zipf sample."""
    return np.bincount(np.random.default_rng(seed + 1).choice(k, 200_000, p=zipf_probs(k, seed)), minlength=k)


def make_groups(h: StreamHeader, kind: str = "random", seed: int = 0) -> list[GroupRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for g in plan_groups(h.semantic_frames, h.group, h.overlap):
        n = h.tokens_for_frames(g.valid)
        if kind == "random":
            tok = rng.integers(0, h.codebook_size, n)
        else:   # skewed: Zipf-like, like real token statistics
            tok = rng.choice(h.codebook_size, n, p=zipf_probs(h.codebook_size))
        out.append(GroupRecord(g.index, g.start, g.valid, tok.astype(np.int64)))
    return out


def write(path, h, groups, prior=None) -> StreamWriter:
    with StreamWriter(path, h, prior) as w:
        for rec in groups:
            w.write_group(rec)
    return w


# --------------------------------------------------------------------------------------------
# an independent decoder (and encoder) written from docs/bitstream.md only
# --------------------------------------------------------------------------------------------

def ref_quantize(counts: list[int]) -> list[int]:
    k = len(counts)
    free = (1 << 24) - k
    total = sum(counts)
    scaled = [c * free // total for c in counts]
    q = [s + 1 for s in scaled]
    top = max(range(k), key=lambda i: (counts[i], -i))
    q[top] += free - sum(scaled)
    return q


def ref_cdf(q: list[int]) -> list[int]:
    cdf, acc = [], 0
    for v in q:
        cdf.append(acc)
        acc += v
    return cdf


class RefModels:
    """The sequence of (cdf, q) models of one group, per docs §6.4/6.5."""

    def __init__(self, h: dict, prior_counts):
        self.mode, self.params, self.k = h["entropy_mode"], h["entropy_params"], h["codebook_size"]
        if self.mode == "prior" or self.params.get("init") == "prior":
            self.prior_q = ref_quantize([int(c) for c in prior_counts])
        if self.mode == "adaptive":
            self.counts = list(self.prior_q) if self.params["init"] == "prior" else [1] * self.k

    def model(self, j: int, history: list[int]):
        if self.mode == "prior":
            return ref_cdf(self.prior_q), self.prior_q
        b, inc = self.params["block"], self.params["increment"]
        if j % b == 0:
            if j:
                for s in history[j - b:j]:
                    self.counts[s] += inc
            self._cur = ref_quantize(self.counts)
            self._cdf = ref_cdf(self._cur)
        return self._cdf, self._cur


def ref_ans_decode(payload: bytes, n: int, models: RefModels) -> list[int]:
    words = [int.from_bytes(payload[i:i + 4], "little") for i in range(0, len(payload), 4)]
    pos, state = len(words), 0
    if pos:
        pos -= 1
        state = words[pos]
        assert state != 0
        if pos:
            pos -= 1
            state = (state << 32) | words[pos]
    out: list[int] = []
    for j in range(n):
        cdf, q = models.model(j, out)
        x = state & 0xFFFFFF
        s = bisect.bisect_right(cdf, x) - 1
        state = (state >> 24) * q[s] + x - cdf[s]
        if state < (1 << 32) and pos:
            pos -= 1
            state = (state << 32) | words[pos]
        out.append(s)
    assert state == 0 and pos == 0
    return out


def ref_ans_encode(tokens: list[int], models: RefModels) -> bytes:
    seq = [models.model(j, tokens) for j in range(len(tokens))]
    state, words = 0, []
    for j in range(len(tokens) - 1, -1, -1):
        cdf, q = seq[j]
        s = tokens[j]
        if (state >> 40) >= q[s]:
            words.append(state & 0xFFFFFFFF)
            state >>= 32
        state = ((state // q[s]) << 24) | (cdf[s] + state % q[s])
    while state:
        words.append(state & 0xFFFFFFFF)
        state >>= 32
    return b"".join(w.to_bytes(4, "little") for w in words)


def ref_read(path, prior_counts=None):
    """Decode a whole file following the spec; returns (header dict, [(index, start, valid, tokens, payload)])."""
    data = open(path, "rb").read()
    assert data[:8] == b"SEMCTOKS"
    major, minor, length = struct.unpack_from("<HHI", data, 8)
    assert major == 1
    assert zlib.crc32(data[:16 + length]) == struct.unpack_from("<I", data, 16 + length)[0]
    h = json.loads(data[16:16 + length])
    index_offset, crc, tag = struct.unpack_from("<QI4s", data, len(data) - 16)
    assert tag == b"SEOF" and crc == zlib.crc32(data[-16:-8])
    n = h["n_groups"]
    itag, count = struct.unpack_from("<4sI", data, index_offset)
    assert itag == b"SIDX" and count == n
    isize = 8 + 12 * n
    assert zlib.crc32(data[index_offset:index_offset + isize]) == \
        struct.unpack_from("<I", data, index_offset + isize)[0]
    groups = []
    for i in range(n):
        off, plen = struct.unpack_from("<QI", data, index_offset + 8 + 12 * i)
        gi, start, valid, plen2, ccrc = struct.unpack_from("<5I", data, off)
        payload = data[off + 20:off + 20 + plen]
        assert (gi, plen2) == (i, plen) and zlib.crc32(data[off:off + 16] + payload) == ccrc
        ntok = h["iframe_tokens"] + (valid - 1) * h["pframe_tokens"]
        if h["entropy_mode"] == "fixed":
            bits = h["entropy_params"]["bits"]
            v = int.from_bytes(payload, "little")
            tokens = [(v >> (j * bits)) & ((1 << bits) - 1) for j in range(ntok)]
        else:
            tokens = ref_ans_decode(payload, ntok, RefModels(h, prior_counts))
        groups.append((gi, start, valid, tokens, payload))
    return h, groups


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ENTROPY_MODES)
@pytest.mark.parametrize("kind", ["random", "skewed"])
def test_round_trip_short_last_group(tmp_path, mode, kind):
    h = make_header(mode, frames=30)            # groups start 0, 6, 12, 18, 24: last has 6 frames
    groups = make_groups(h, kind)
    assert groups[-1].valid < h.group
    prior = prior_for(h.codebook_size)
    w = write(tmp_path / "t.bin", h, groups, prior)
    with StreamReader(tmp_path / "t.bin", prior) as r:
        assert r.header == w.header and len(r) == h.n_groups == 5
        got = list(r)
    assert got == groups
    assert all(g.tokens.dtype == np.int64 for g in got)
    assert sum(r.group_sizes()) == w.payload_bytes
    assert read_header(tmp_path / "t.bin") == w.header


@pytest.mark.parametrize("mode", ENTROPY_MODES)
def test_single_group_stream(tmp_path, mode):
    h = make_header(mode, frames=5, group=8, overlap=2, iframe=30, pframe=10, k=256)
    assert h.n_groups == 1
    groups = make_groups(h, "skewed")
    prior = prior_for(256)
    write(tmp_path / "one.bin", h, groups, prior)
    with StreamReader(tmp_path / "one.bin", prior) as r:
        assert list(r) == groups and r.read_group(0).valid == 5


def test_adaptive_without_prior_is_uniform_start(tmp_path):
    h = make_header("adaptive", frames=14)
    groups = make_groups(h, "skewed")
    w = write(tmp_path / "u.bin", h, groups)                  # no prior: starts uniform
    assert w.header.entropy_params["init"] == "uniform" and "prior_sha256" not in w.header.entropy_params
    with StreamReader(tmp_path / "u.bin") as r:
        assert list(r) == groups


@pytest.mark.parametrize("k", [2, 3, 64, 2048, 65536])
def test_codebook_sizes(tmp_path, k):
    h = make_header("fixed", frames=9, group=4, overlap=1, iframe=17, pframe=5, k=k)
    groups = make_groups(h, "random", seed=k)
    for mode in ENTROPY_MODES:
        hm = make_header(mode, frames=9, group=4, overlap=1, iframe=17, pframe=5, k=k)
        prior = prior_for(k) if k <= 2048 else np.arange(k) % 7
        write(tmp_path / f"{mode}.bin", hm, groups, prior)
        with StreamReader(tmp_path / f"{mode}.bin", prior) as r:
            assert list(r) == groups, mode


def test_determinism_identical_bytes(tmp_path):
    prior = prior_for(2048)
    for mode in ENTROPY_MODES:
        h = make_header(mode)
        groups = make_groups(h, "skewed", seed=3)
        write(tmp_path / "a.bin", h, groups, prior)
        write(tmp_path / "b.bin", h, groups, prior.copy())
        assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes(), mode


def test_random_access_matches_iteration(tmp_path):
    h = make_header("adaptive", frames=60)
    groups = make_groups(h, "skewed", seed=5)
    prior = prior_for(2048)
    write(tmp_path / "t.bin", h, groups, prior)
    with StreamReader(tmp_path / "t.bin", prior) as r:
        full = list(r)
        order = np.random.default_rng(0).permutation(len(r))
        for i in order:
            assert r.read_group(int(i)) == full[i]
        with pytest.raises(IndexError):
            r.read_group(len(r))


def test_bits_per_token_skewed(tmp_path):
    """On Zipf-like tokens both entropy-coded modes beat 11-bit packing clearly."""
    prior = prior_for(2048)
    bpt = {}
    for mode in ENTROPY_MODES:
        h = make_header(mode, frames=60)
        write(tmp_path / f"{mode}.bin", h, make_groups(h, "skewed", seed=9), prior)
        with StreamReader(tmp_path / f"{mode}.bin", prior) as r:
            bpt[mode] = 8 * sum(r.group_sizes()) / r.header.total_tokens
    assert bpt["fixed"] == pytest.approx(11.0, abs=0.01)
    assert bpt["prior"] < 0.8 * bpt["fixed"], bpt
    assert bpt["adaptive"] < 0.8 * bpt["fixed"], bpt


# --------------------------------------------------------------------------------------------
# the spec: an independent decoder reproduces everything
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,prior", [("fixed", False), ("prior", True), ("adaptive", True),
                                        ("adaptive", False)])
def test_independent_decoder_from_spec(tmp_path, mode, prior):
    h = make_header(mode, frames=11, group=4, overlap=1, iframe=40, pframe=20, k=300,
                    params=None if prior or mode != "adaptive" else {"block": 7})
    counts = prior_for(300) if prior else None
    groups = make_groups(h, "skewed", seed=11)
    write(tmp_path / "t.bin", h, groups, counts)
    hd, ref = ref_read(tmp_path / "t.bin", counts)
    assert hd == read_header(tmp_path / "t.bin").to_dict()
    for g, (gi, start, valid, tokens, payload) in zip(groups, ref):
        assert (g.index, g.start, g.valid) == (gi, start, valid)
        assert tokens == g.tokens.tolist()
        if mode != "fixed":     # the spec's encoder gives the same bytes
            assert ref_ans_encode(g.tokens.tolist(), RefModels(hd, counts)) == payload


def test_quantize_rule():
    # F = 2**24 - 3 = 16777213; floor(c * F / 10) = [1677721, 5033163, 10066327] (sum 16777211)
    q = quantize_counts(np.array([1, 3, 6]))
    assert q.tolist() == [1677722, 5033164, 10066327 + 1 + 2]
    assert q.sum() == 1 << 24
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 5000))
        c = rng.integers(0, 10 ** int(rng.integers(1, 8)), k)
        c[0] += 1
        q = quantize_prior(c)
        assert q.sum() == 1 << 24 and q.min() >= 1 and q.dtype == np.int64
        assert q.tolist() == ref_quantize(c.tolist())
    huge = np.array([10 ** 30, 1, 0, 5 * 10 ** 29], dtype=object)     # any magnitude, exact
    assert quantize_prior(huge).tolist() == ref_quantize(huge.tolist())
    assert quantize_prior(np.array([2.0, 6.0])).tolist() == ref_quantize([2, 6])
    for bad in ([5], [[1, 2]], [1, -1], [0, 0], [0.5, 1.0]):
        with pytest.raises(ValueError):
            quantize_prior(np.array(bad))
    assert len(prior_digest(quantize_prior([1, 2, 3]))) == 64


def test_count_groups_matches_plan():
    for frames in range(1, 60):
        for group in range(1, 10):
            for overlap in range(group):
                assert count_groups(frames, group, overlap) == len(plan_groups(frames, group, overlap))


def test_header_fields_and_json():
    h = make_header("fixed", params={"bits": 11})
    assert h.duration == pytest.approx(375 / 25.0)
    h2 = StreamHeader.from_json(h.to_json())
    assert h2 == h
    # numpy scalars are accepted by the writer and stored as plain numbers
    hn = make_header("fixed", frames=np.int64(30), group=np.int32(8), params={"bits": 11})
    from semcodec.bitstream.header import normalized
    assert normalized(hn).to_json() == h.to_json()


# --------------------------------------------------------------------------------------------
# errors, word for word
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seven(tmp_path_factory):
    """A 7-group adaptive stream, its groups and prior."""
    d = tmp_path_factory.mktemp("seven")
    h = make_header("adaptive", frames=44)
    assert h.n_groups == 7
    groups = make_groups(h, "skewed", seed=2)
    prior = prior_for(2048)
    write(d / "tokens.bin", h, groups, prior)
    with StreamReader(d / "tokens.bin", prior) as r:
        offsets = r._offsets
    return (d / "tokens.bin").read_bytes(), offsets, groups, prior


def _put(tmp_path, data: bytes, name="tokens.bin") -> str:
    p = str(tmp_path / name)
    with open(p, "wb") as f:
        f.write(data)
    return p


def _error(path, prior=None, read=True) -> str:
    with pytest.raises(BitstreamError) as e:
        with StreamReader(path, prior) as r:
            if read:
                list(r)
    return str(e.value)


def test_truncated_inside_a_group(tmp_path, seven):
    data, offsets, _, prior = seven
    p = _put(tmp_path, data[:offsets[3] + 100])
    assert _error(p, prior) == f"{p} is truncated: group 3 of 7 is incomplete"
    p = _put(tmp_path, data[:offsets[3] + 10])                  # inside the chunk header
    assert _error(p, prior) == f"{p} is truncated: group 3 of 7 is incomplete"
    p = _put(tmp_path, data[:offsets[3]])                       # groups 0-2 complete
    assert _error(p, prior) == f"{p} is truncated: group 3 of 7 is incomplete"


def test_truncated_header_and_index(tmp_path, seven):
    data, offsets, _, prior = seven
    for cut in (3, 12, 100, offsets[0] - 1):
        p = _put(tmp_path, data[:cut])
        assert _error(p, prior) == f"{p} is truncated: the file header is incomplete"
    for cut in (len(data) - 1, len(data) - 10, len(data) - 16):
        p = _put(tmp_path, data[:cut])
        assert _error(p, prior) == f"{p} is truncated: the footer is incomplete"
    for cut in (len(data) - 17, len(data) - 40, len(data) - 16 - 96 + 1):    # the index is 96 bytes
        p = _put(tmp_path, data[:cut])
        assert _error(p, prior) == f"{p} is truncated: the group index is incomplete"
    p = _put(tmp_path, data[:len(data) - 16 - 96])
    assert _error(p, prior) == f"{p} is truncated: the group index is incomplete"
    p = _put(tmp_path, data[:len(data) - 16 - 96 - 1])
    assert _error(p, prior) == f"{p} is truncated: group 6 of 7 is incomplete"
    p = _put(tmp_path, b"")
    assert _error(p) == f"{p} is empty, not a semcodec token stream"


def test_flipped_payload_byte_names_the_group(tmp_path, seven):
    data, offsets, groups, prior = seven
    bad = bytearray(data)
    bad[offsets[2] + 20 + 37] ^= 0x10
    p = _put(tmp_path, bytes(bad))
    with StreamReader(p, prior) as r:               # opening succeeds; other groups still read
        assert r.read_group(1) == groups[1] and r.read_group(3) == groups[3]
        with pytest.raises(BitstreamError) as e:
            r.read_group(2)
    assert str(e.value) == f"{p} is corrupt: group 2 of 7 fails its CRC32 check"
    bad = bytearray(data)
    bad[offsets[5] + 8] ^= 1                        # the chunk's 'valid' field
    p = _put(tmp_path, bytes(bad))
    assert _error(p, prior) == f"{p} is corrupt: group 5 of 7 fails its CRC32 check"


def test_other_corruption_messages(tmp_path, seven):
    data, offsets, _, prior = seven
    p = _put(tmp_path, b"RIFF" + data[4:])
    assert _error(p, prior) == f"{p} is not a semcodec token stream (wrong magic bytes)"
    p = _put(tmp_path, b"\x00\x01")
    assert _error(p, prior) == f"{p} is not a semcodec token stream (wrong magic bytes)"
    bad = bytearray(data)
    bad[40] ^= 4                                    # inside the header JSON
    p = _put(tmp_path, bytes(bad))
    assert _error(p, prior) == f"{p} is corrupt: the file header fails its CRC32 check"
    bad = bytearray(data)
    bad[-12] ^= 4                                   # the footer's CRC
    p = _put(tmp_path, bytes(bad))
    assert _error(p, prior) == f"{p} is corrupt: the footer is damaged"
    bad = bytearray(data)
    bad[-30] ^= 4                                   # an index entry
    p = _put(tmp_path, bytes(bad))
    assert _error(p, prior) == f"{p} is corrupt: the group index fails its CRC32 check"
    p = _put(tmp_path, data + b"\x00" * 5)
    assert _error(p, prior) == f"{p} is corrupt: 5 unexpected bytes after the end of the stream"
    bad = bytearray(data)
    bad[14:16] = b"\xff\xff"                        # header length field: 4 GB
    p = _put(tmp_path, bytes(bad))
    assert _error(p, prior) == f"{p} is corrupt: the file header length field is damaged"


def _rewrite_header(data: bytes, **changes) -> bytes:
    """A copy of ``data`` whose header JSON is changed and re-checksummed (a 'crafted' file)."""
    length = struct.unpack_from("<I", data, 12)[0]
    d = json.loads(data[16:16 + length])
    major = changes.pop("_major", 1)
    d.update(changes)
    js = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    head = b"SEMCTOKS" + struct.pack("<HHI", major, 0, len(js)) + js
    return head + struct.pack("<I", zlib.crc32(head)) + data[16 + length + 4:]


def test_version_and_crafted_headers(tmp_path, seven):
    data, _, _, prior = seven
    p = _put(tmp_path, _rewrite_header(data, _major=2))
    assert _error(p, prior) == (f"{p} uses token stream format version 2.0, but this semcodec "
                                f"reads version 1.x")
    # a crafted header declaring a billion groups: refused without allocating an index for them
    p = _put(tmp_path, _rewrite_header(data, semantic_frames=6 * 10 ** 9, n_groups=10 ** 9))
    assert _error(p, prior) == (f"{p} has an invalid file header: field 'semantic_frames' must be "
                                f"an integer in [1, 4294967295], got 6000000000")
    p = _put(tmp_path, _rewrite_header(data, semantic_frames=6 * 10 ** 8 + 2, n_groups=10 ** 8))
    tracemalloc.start()
    msg = _error(p, prior)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert msg == f"{p} is corrupt: the group index does not fit the file (100000000 groups declared)"
    assert peak < 1 << 20
    p = _put(tmp_path, _rewrite_header(data, n_groups=8))
    assert _error(p, prior) == (f"{p} has an invalid file header: field 'n_groups' is 8, but 44 "
                                f"frames in groups of 8 overlapping by 2 make 7 groups")
    p = _put(tmp_path, _rewrite_header(data, entropy_mode="cabac"))
    assert _error(p, prior) == (f"{p} has an invalid file header: entropy mode 'cabac' is not "
                                f"supported by this semcodec (it knows fixed, prior, adaptive)")
    p = _put(tmp_path, _rewrite_header(data, group="8"))
    assert _error(p, prior) == (f"{p} has an invalid file header: field 'group' must be an integer "
                                f"in [1, 65536], got '8'")


def test_prior_mismatch_and_missing(tmp_path, seven):
    data, _, groups, prior = seven
    p = _put(tmp_path, data)
    other = prior.copy()
    other[0] += 1000
    want, got = prior_digest(quantize_prior(prior)), prior_digest(quantize_prior(other))
    assert _error(p, other, read=False) == (
        f"{p} was coded with a different token prior than the one given (prior {want[:16]} in "
        f"the file, {got[:16]} given); decode it with the model it was made with: s128 "
        f"{MODEL_HASH[:16]}")
    with StreamReader(p) as r:                      # no prior: header and sizes still work
        assert r.header.n_groups == 7 and len(r.group_sizes()) == 7
        with pytest.raises(BitstreamError) as e:
            r.read_group(0)
    assert str(e.value) == (f"{p} is entropy-coded with the model's token prior (mode 'adaptive'); "
                            f"it cannot be decoded without the prior")
    assert read_header(p).entropy_params["prior_sha256"] == want


# --------------------------------------------------------------------------------------------
# the writer
# --------------------------------------------------------------------------------------------

def test_writer_abort_leaves_no_file(tmp_path):
    h = make_header("prior", frames=30)
    groups = make_groups(h, "skewed")
    prior = prior_for(2048)
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with StreamWriter(target, h, prior) as w:
            w.write_group(groups[0])
            w.write_group(groups[1])
            raise RuntimeError("encoder crashed")
    assert os.listdir(tmp_path) == []
    w = StreamWriter(target, h, prior)
    w.write_group(groups[0])
    w.abort()
    assert os.listdir(tmp_path) == []
    w = StreamWriter(target, h, prior)
    w.write_group(groups[0])
    with pytest.raises(ValueError, match=r"^only 1 of 5 groups were written; .*out.bin was not created$"):
        w.close()
    assert os.listdir(tmp_path) == []
    # an existing file survives an aborted rewrite untouched
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with StreamWriter(target, h, prior) as w:
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_writer_rejects_misuse(tmp_path):
    h = make_header("fixed", frames=30)
    g = make_groups(h)
    with pytest.raises(ValueError, match="needs prior_counts"):
        StreamWriter(tmp_path / "x.bin", make_header("prior"))
    with pytest.raises(ValueError, match="field 'overlap'"):
        StreamWriter(tmp_path / "x.bin", dataclasses.replace(h, overlap=8))
    with pytest.raises(ValueError, match="entropy mode must be one of"):
        StreamWriter(tmp_path / "x.bin", make_header("huffman"))
    with StreamWriter(tmp_path / "x.bin", h) as w:
        with pytest.raises(ValueError, match="expected group 0, got 1"):
            w.write_group(g[1])
        with pytest.raises(ValueError, match="start 0 and valid 8"):
            w.write_group(GroupRecord(0, 0, 7, g[0].tokens))
        with pytest.raises(ValueError, match="1-D integer array of 1120 tokens"):
            w.write_group(GroupRecord(0, 0, 8, g[0].tokens[:-1]))
        with pytest.raises(ValueError, match="outside"):
            w.write_group(GroupRecord(0, 0, 8, g[0].tokens + 2048))
        for rec in g:
            w.write_group(rec)
        with pytest.raises(ValueError, match="one too many"):
            w.write_group(g[0])
    with StreamReader(tmp_path / "x.bin") as r:
        assert list(r) == g
    assert os.listdir(tmp_path) == ["x.bin"]


# --------------------------------------------------------------------------------------------
# fuzzing: truncations and byte flips only ever give a BitstreamError, quickly, in bounded memory
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    prior = prior_for(256)
    files = {}      # mode -> (file bytes, offset of the first group chunk)
    for mode in ENTROPY_MODES:
        h = make_header(mode, frames=10, group=4, overlap=1, iframe=24, pframe=12, k=256)
        write(d / f"{mode}.bin", h, make_groups(h, "skewed", seed=4), prior)
        with StreamReader(d / f"{mode}.bin", prior) as r:
            files[mode] = ((d / f"{mode}.bin").read_bytes(), r._offsets[0])
    return files, prior, d


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_truncation_and_flips(fuzz_files, data):
    files, prior, d = fuzz_files
    mode = data.draw(st.sampled_from(ENTROPY_MODES))
    original, data_start = files[mode]
    raw = bytearray(original)
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    if raw and data.draw(st.booleans()) or len(raw) == len(original):
        lo = min(len(raw) - 1, data.draw(st.sampled_from([0, data_start])))
        for _ in range(data.draw(st.integers(1, 4))):      # anywhere, or past the header
            pos = data.draw(st.integers(lo, len(raw) - 1))
            raw[pos] ^= data.draw(st.integers(1, 255))
    assume(bytes(raw) != original)      # two flips of one byte can cancel out
    path = str(d / "fuzzed.bin")
    with open(path, "wb") as f:
        f.write(raw)
    tracemalloc.start()            # (time per damaged stream: python -m bench.coding)
    try:
        with pytest.raises(BitstreamError) as e:
            with StreamReader(path, prior) as r:
                for _ in r:
                    pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < (1 << 20) + 16 * len(raw), peak
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(path + " ")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_crafted_header_values(fuzz_files, data):
    """Headers with a valid CRC but arbitrary field values are refused cleanly."""
    files, prior, d = fuzz_files
    original = files[data.draw(st.sampled_from(ENTROPY_MODES))][0]
    length = struct.unpack_from("<I", original, 12)[0]
    fields = json.loads(original[16:16 + length])
    key = data.draw(st.sampled_from(sorted(fields) + ["entropy_params.block", "entropy_params.init"]))
    value = data.draw(json_values)
    if key.startswith("entropy_params."):
        params = dict(fields["entropy_params"])
        params[key.split(".")[1]] = value
        key, value = "entropy_params", params
    path = str(d / "crafted.bin")
    with open(path, "wb") as f:
        f.write(_rewrite_header(original, **{key: value}))
    try:
        with StreamReader(path, prior) as r:
            for _ in r:
                pass
    except BitstreamError as e:
        assert "\n" not in str(e) and str(e).startswith(path + " ")
