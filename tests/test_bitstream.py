"""tokens.bin: container (format 2, and format 1 as still read), entropy coding, error messages,
fuzzing, golden streams, and an independent pure-Python decoder written from docs/bitstream.md
(checks the spec matches the implementation byte for byte). The context mode's model is tested
in test_context.py."""
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

import semcodec
from semcodec.bitstream import (ENTROPY_MODES, BitstreamError, GroupRecord, StreamHeader, StreamReader,
                                StreamWriter, count_groups, prior_digest, quantize_counts, quantize_prior,
                                read_header, read_version)
from semcodec.bitstream.context_train import random_model
from semcodec.gop import plan_groups

MODEL_HASH = "0123456789abcdef" * 4
MODES = ("fixed", "prior", "adaptive")        # the modes format 1 has
STREAMS = os.path.join(os.path.dirname(__file__), "data", "streams")


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


_CONTEXTS: dict = {}


def context_for(k: int, seed: int = 7):
    """A random context model for codebook ``k`` whose logits are about the Zipf prior of
    ``zipf_probs(k, seed)``: it codes skewed tokens in fewer bits than fixed-width."""
    if (k, seed) not in _CONTEXTS:
        _CONTEXTS[k, seed] = random_model(k, 4, MODEL_HASH, log_prior=np.log(zipf_probs(k, seed)), seed=seed)
    return _CONTEXTS[k, seed]


def models_for(mode: str, k: int) -> dict:
    """The entropy models a writer / reader of ``mode`` needs (as keyword arguments)."""
    return {"context": context_for(k) if mode == "context" else None}


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


def write(path, h, groups, prior=None, version=2, context=None) -> StreamWriter:
    with StreamWriter(path, h, prior, context=context, version=version) as w:
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


def ref_read_v1(path, prior_counts=None):
    """Decode a whole format-1 file following the spec; returns (header dict, [(index, start,
    valid, tokens, payload)])."""
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


def ref_varint(data: bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = data[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, pos


def ref_number(data: bytes, pos: int) -> tuple[float, int]:
    v, pos = ref_varint(data, pos)
    if v % 2 == 0:
        return float(v // 2), pos
    if v == 1:
        return struct.unpack_from("<d", data, pos)[0], pos + 8
    num, pos = ref_varint(data, pos)
    return num / (v // 2), pos


def ref_header_v2(body: bytes, minor: int = 0) -> dict:
    """The header body, field by field, as docs/bitstream.md section 3 lists it."""
    h = {"model_hash": body[:16].hex(), "entropy_mode": ["fixed", "prior", "adaptive", "context"][body[16]]}
    ehash, pos = body[17:33].hex(), 33
    n, pos = ref_varint(body, pos)
    h["model_name"], pos = body[pos:pos + n].decode(), pos + n
    h["src_fps"], pos = ref_number(body, pos)
    for k in ("src_width", "src_height", "src_frames"):
        h[k], pos = ref_varint(body, pos)
    h["semantic_fps"], pos = ref_number(body, pos)
    for k in ("semantic_frames", "scaled_height", "scaled_width", "pad_h", "pad_w", "group", "overlap",
              "iframe_tokens", "pframe_tokens", "codebook_size"):
        h[k], pos = ref_varint(body, pos)
    h["padded_height"] = h["scaled_height"] + h.pop("pad_h")
    h["padded_width"] = h["scaled_width"] + h.pop("pad_w")
    f, g, o = h["semantic_frames"], h["group"], h["overlap"]
    h["n_groups"] = 1 if f <= g else 1 + -(-(f - g) // (g - o))
    p = {"bits": (h["codebook_size"] - 1).bit_length()} if h["entropy_mode"] == "fixed" else \
        {"coder": "rans32", "precision": 24}
    if h["entropy_mode"] == "prior":
        p["prior_sha256"] = ehash
    elif h["entropy_mode"] == "adaptive":
        p["init"], pos = ["uniform", "prior"][body[pos]], pos + 1
        p["block"], pos = ref_varint(body, pos)
        p["increment"], pos = ref_varint(body, pos)
        if p["init"] == "prior":
            p["prior_sha256"] = ehash
    elif h["entropy_mode"] == "context":
        for k in ("link", "iframe_rows", "pframe_rows"):
            p[k], pos = ref_varint(body, pos)
        p["context_sha256"] = ehash
    h["entropy_params"] = p
    if minor >= 1:                              # 3.3: the decoder adaptation
        n, pos = ref_varint(body, pos)
        if n:
            h["adaptation_step"] = body[pos]
            size, pos = ref_varint(body, pos + 1)
            sym = ref_ans_decode(body[pos:pos + size], n, RefModels(
                {"entropy_mode": "adaptive", "codebook_size": 256,
                 "entropy_params": {"init": "uniform", "block": 16, "increment": 16}}, None))
            h["adaptation"] = [z // 2 if z % 2 == 0 else -(z + 1) // 2 for z in sym]
            pos += size
    assert pos == len(body)
    return h


def ref_read_v2(path, prior_counts=None, models_for_group=None):
    """Decode a whole format-2 file following the spec; returns (header dict, [(index, start,
    valid, tokens, payload, escaped)]). ``models_for_group(h, i, valid, previous tokens)`` gives
    the context mode's ``RefModels``-like sequence of a group."""
    data = open(path, "rb").read()
    assert data[:8] == b"SEMCTOKS"
    major, minor, length = struct.unpack_from("<HHI", data, 8)
    assert major == 2
    assert zlib.crc32(data[:16 + length]) == struct.unpack_from("<I", data, 16 + length)[0]
    h = ref_header_v2(data[16:16 + length], minor)
    isize, icrc = struct.unpack_from("<II", data, len(data) - 8)
    index = data[len(data) - 8 - isize:len(data) - 8]
    assert zlib.crc32(index + data[-8:-4]) == icrc
    pos, ipos, groups, prev = 16 + length + 4, 0, [], None
    stride = h["group"] - h["overlap"]
    for i in range(h["n_groups"]):
        e0 = ipos
        v, ipos = ref_varint(index, ipos)
        entry, (crc,) = index[e0:ipos], struct.unpack_from("<I", index, ipos)
        ipos += 4
        plen, escaped = v // 2, v % 2
        payload = data[pos:pos + plen]
        pos += plen
        start = i * stride
        valid = min(h["group"], h["semantic_frames"] - start)
        ntok = h["iframe_tokens"] + (valid - 1) * h["pframe_tokens"]
        if h["entropy_mode"] == "fixed" or escaped:
            bits = (h["codebook_size"] - 1).bit_length()
            val = int.from_bytes(payload, "little")
            tokens = [(val >> (j * bits)) & ((1 << bits) - 1) for j in range(ntok)]
        elif h["entropy_mode"] == "context":
            tokens = ref_ans_decode(payload, ntok, models_for_group(h, i, valid, prev))
        else:
            tokens = ref_ans_decode(payload, ntok, RefModels(h, prior_counts))
        assert zlib.crc32(entry + payload + b"".join(t.to_bytes(2, "little") for t in tokens)) == crc
        groups.append((i, start, valid, tokens, payload, bool(escaped)))
        prev = tokens
    assert pos == len(data) - 8 - isize and ipos == isize
    return h, groups


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [2, 1])
@pytest.mark.parametrize("mode", ENTROPY_MODES)
@pytest.mark.parametrize("kind", ["random", "skewed"])
def test_round_trip_short_last_group(tmp_path, mode, kind, version):
    if version == 1 and mode == "context":
        pytest.skip("format 1 has no context mode")
    h = make_header(mode, frames=30)            # groups start 0, 6, 12, 18, 24: last has 6 frames
    groups = make_groups(h, kind)
    assert groups[-1].valid < h.group
    prior = prior_for(h.codebook_size)
    w = write(tmp_path / "t.bin", h, groups, prior, version, **models_for(mode, 2048))
    with StreamReader(tmp_path / "t.bin", prior, **models_for(mode, 2048)) as r:
        assert r.header == w.header and len(r) == h.n_groups == 5 and r.version == version
        got = list(r)
    assert got == groups
    assert all(g.tokens.dtype == np.int64 for g in got)
    assert sum(r.group_sizes()) == w.payload_bytes
    assert read_header(tmp_path / "t.bin") == w.header
    assert read_version(tmp_path / "t.bin") == (version, 0)
    # format 2 packs a group fixed-width where the mode would not be smaller (random tokens)
    if version == 2 and mode != "fixed":
        assert w.escaped == (5 if kind == "random" else 0) == sum(r.group_escapes())
        assert 8 * w.payload_bytes <= 11 * h.total_tokens + 5 * 8


@pytest.mark.parametrize("mode", ENTROPY_MODES)
def test_single_group_stream(tmp_path, mode):
    h = make_header(mode, frames=5, group=8, overlap=2, iframe=30, pframe=10, k=256)
    assert h.n_groups == 1
    groups = make_groups(h, "skewed")
    prior = prior_for(256)
    write(tmp_path / "one.bin", h, groups, prior, **models_for(mode, 256))
    with StreamReader(tmp_path / "one.bin", prior, **models_for(mode, 256)) as r:
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
        ctx = {"context": random_model(k, 2, MODEL_HASH)} if mode == "context" else {}
        write(tmp_path / f"{mode}.bin", hm, groups, prior, **ctx)
        with StreamReader(tmp_path / f"{mode}.bin", prior, **ctx) as r:
            assert list(r) == groups, mode


def test_determinism_identical_bytes(tmp_path):
    prior = prior_for(2048)
    for mode in ENTROPY_MODES:
        h = make_header(mode)
        groups = make_groups(h, "skewed", seed=3)
        write(tmp_path / "a.bin", h, groups, prior, **models_for(mode, 2048))
        write(tmp_path / "b.bin", h, groups, prior.copy(), **models_for(mode, 2048))
        assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes(), mode


@pytest.mark.parametrize("mode", ["adaptive", "context"])
def test_random_access_matches_iteration(tmp_path, mode):
    """Any group in any order; in the context mode also the groups linked to the one before
    (``link`` 3: groups 0, 3, 6, ... start a chain)."""
    h = make_header(mode, frames=60, params={"link": 3} if mode == "context" else None)
    groups = make_groups(h, "skewed", seed=5)
    prior = prior_for(2048)
    write(tmp_path / "t.bin", h, groups, prior, **models_for(mode, 2048))
    with StreamReader(tmp_path / "t.bin", prior, **models_for(mode, 2048)) as r:
        full = list(r)
        assert full == groups
        order = np.random.default_rng(0).permutation(len(r))
        for i in order:
            assert r.read_group(int(i)) == full[i]
        with pytest.raises(IndexError):
            r.read_group(len(r))


def test_context_links_change_the_payload_and_never_cross_a_chain_start(tmp_path):
    """A linked group's payload depends on the group before it, a chain start's does not."""
    ctx = models_for("context", 2048)
    groups = {}
    for link in (0, 2):
        h = make_header("context", frames=30, params={"link": link})
        recs = make_groups(h, "skewed", seed=6)
        recs[1] = GroupRecord(1, recs[1].start, recs[1].valid, recs[0].tokens.copy())   # group 1 repeats 0
        write(tmp_path / f"l{link}.bin", h, recs, **ctx)
        with StreamReader(tmp_path / f"l{link}.bin", **ctx) as r:
            assert list(r) == recs and r.header.entropy_params["link"] == link
            data = (tmp_path / f"l{link}.bin").read_bytes()
            groups[link] = [data[o:o + n] for o, n in zip(r._offsets, r.group_sizes())]
    assert groups[0][0] == groups[2][0] and groups[0][2] == groups[2][2]    # chain starts: alike
    assert groups[0][1] != groups[2][1]                                      # linked: other payload


def test_bits_per_token_skewed(tmp_path):
    """On Zipf-like tokens the entropy-coded modes beat 11-bit packing clearly."""
    prior = prior_for(2048)
    bpt = {}
    for mode in ENTROPY_MODES:
        h = make_header(mode, frames=60)
        write(tmp_path / f"{mode}.bin", h, make_groups(h, "skewed", seed=9), prior, **models_for(mode, 2048))
        with StreamReader(tmp_path / f"{mode}.bin", prior, **models_for(mode, 2048)) as r:
            bpt[mode] = 8 * sum(r.group_sizes()) / r.header.total_tokens
    assert bpt["fixed"] == pytest.approx(11.0, abs=0.01)
    for mode in ("prior", "adaptive", "context"):
        assert bpt[mode] < 0.8 * bpt["fixed"], bpt


# --------------------------------------------------------------------------------------------
# the spec: an independent decoder reproduces everything
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [2, 1])
@pytest.mark.parametrize("mode,prior", [("fixed", False), ("prior", True), ("adaptive", True),
                                        ("adaptive", False)])
def test_independent_decoder_from_spec(tmp_path, mode, prior, version):
    h = make_header(mode, frames=11, group=4, overlap=1, iframe=40, pframe=20, k=300,
                    params=None if prior or mode != "adaptive" else {"block": 7})
    counts = prior_for(300) if prior else None
    groups = make_groups(h, "skewed", seed=11)
    write(tmp_path / "t.bin", h, groups, counts, version)
    if version == 1:
        hd, ref = ref_read_v1(tmp_path / "t.bin", counts)
    else:
        hd, ref = ref_read_v2(tmp_path / "t.bin", counts)
        assert not any(e for *_, e in ref)
    assert hd == read_header(tmp_path / "t.bin").to_dict()
    for g, (gi, start, valid, tokens, payload, *_) in zip(groups, ref):
        assert (g.index, g.start, g.valid) == (gi, start, valid)
        assert tokens == g.tokens.tolist()
        if mode != "fixed":     # the spec's encoder gives the same bytes
            assert ref_ans_encode(g.tokens.tolist(), RefModels(hd, counts)) == payload


def test_spec_escape_and_rates(tmp_path):
    """An escaped group (random tokens under the prior) and the rate encodings of the spec: a
    whole number, a fraction, a float64."""
    for fps in (25.0, 30000 / 1001, 0.1 + 0.2):
        h = dataclasses.replace(make_header("prior", frames=11, group=4, overlap=1, iframe=40, pframe=20, k=300),
                                src_fps=fps, src_frames=round(11 * fps / 2.0) + 1)
        h = dataclasses.replace(h, semantic_frames=11)
        groups = make_groups(h, "random", seed=12)
        counts = prior_for(300)
        w = write(tmp_path / "t.bin", h, groups, counts)
        hd, ref = ref_read_v2(tmp_path / "t.bin", counts)
        assert hd["src_fps"] == fps == w.header.src_fps
        assert all(e for *_, e in ref) and [t for _, _, _, t, _, _ in ref] == [g.tokens.tolist() for g in groups]


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
    """A 7-group adaptive stream in format 1, its groups and prior."""
    d = tmp_path_factory.mktemp("seven")
    h = make_header("adaptive", frames=44)
    assert h.n_groups == 7
    groups = make_groups(h, "skewed", seed=2)
    prior = prior_for(2048)
    write(d / "tokens.bin", h, groups, prior, version=1)
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
    p = _put(tmp_path, _rewrite_header(data, _major=3))
    assert _error(p, prior) == (f"{p} uses token stream format version 3.0, but this semcodec "
                                f"reads versions 1.x, 2.x")
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
                                f"supported by this semcodec (it knows fixed, prior, adaptive, context)")
    p = _put(tmp_path, _rewrite_header(data, entropy_mode="context", entropy_params={
        "coder": "rans32", "precision": 24, "context_sha256": "0" * 64, "link": 0, "iframe_rows": 14,
        "pframe_rows": 8}))
    assert _error(p, prior) == (f"{p} has an invalid file header: entropy mode 'context' is not supported "
                                f"by this semcodec in format 1 (it knows fixed, prior, adaptive)")
    p = _put(tmp_path, _rewrite_header(data, model_hash="0" * 32))
    assert _error(p, prior) == (f"{p} has an invalid file header: field 'model_hash' must be 64 lowercase "
                                f"hex digits, got '{'0' * 32}'")
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


@pytest.fixture(scope="module")
def seven2(tmp_path_factory):
    """A 7-group context stream in format 2 (linked every 3 groups), its groups and context model."""
    d = tmp_path_factory.mktemp("seven2")
    h = make_header("context", frames=44, params={"link": 3})
    groups = make_groups(h, "skewed", seed=2)
    ctx = context_for(2048)
    write(d / "tokens.bin", h, groups, context=ctx)
    with StreamReader(d / "tokens.bin", context=ctx) as r:
        offsets, sizes = r._offsets, r.group_sizes()
        assert not any(r.group_escapes())
    return (d / "tokens.bin").read_bytes(), offsets, sizes, groups, ctx


def _rewrite_body(data: bytes, body: bytes, minor: int = 0) -> bytes:
    """A format-2 stream with another header body, its CRC recomputed (a 'crafted' file)."""
    length = struct.unpack_from("<I", data, 12)[0]
    head = b"SEMCTOKS" + struct.pack("<HHI", 2, minor, len(body)) + body
    return head + struct.pack("<I", zlib.crc32(head)) + data[16 + length + 4:]


def test_format2_damage_messages(tmp_path, seven2):
    data, offsets, sizes, groups, ctx = seven2
    err = lambda p: _ctx_error(p, ctx)                                          # noqa: E731
    for cut in (3, 12, 40, offsets[0] - 1):
        p = _put(tmp_path, data[:cut])
        assert err(p) == f"{p} is truncated: the file header is incomplete"
    p = _put(tmp_path, data[:offsets[0] + 3])
    assert err(p) == f"{p} is truncated: the group index and footer are missing"
    for cut in (offsets[3] + 10, len(data) - 1, len(data) - 9):
        p = _put(tmp_path, data[:cut])
        assert err(p) == (f"{p} is truncated: the footer at its end is missing or damaged (it declares a group "
                          f"index that does not fit the file)")
    p = _put(tmp_path, data + b"\x00" * 5)
    assert err(p).startswith(f"{p} is truncated: the footer at its end is missing or damaged")
    bad = bytearray(data)
    bad[30] ^= 4                                    # inside the header body
    p = _put(tmp_path, bytes(bad))
    assert err(p) == f"{p} is corrupt: the file header fails its CRC32 check"
    bad = bytearray(data)
    bad[-20] ^= 4                                   # the index
    p = _put(tmp_path, bytes(bad))
    assert err(p) == f"{p} is corrupt: the group index fails its CRC32 check"
    bad = bytearray(data)
    bad[offsets[4] + 17] ^= 0x10                    # a payload: group 4 and the groups linked to it
    p = _put(tmp_path, bytes(bad))
    with StreamReader(p, context=ctx) as r:
        assert [r.read_group(i) for i in (0, 1, 2, 3)] == groups[:4]     # group 3 starts a chain
        for i in (4, 5):
            with pytest.raises(BitstreamError) as e:
                r.read_group(i)
            assert str(e.value) in (f"{p} is corrupt: group 4 of 7 fails its CRC32 check",
                                    f"{p} is corrupt: group 4 of 7 does not decode: payload does not decode to "
                                    f"exactly the expected tokens (data left over after the last token)")
        assert r.read_group(6) == groups[6]


def _ctx_error(path, ctx, read=True) -> str:
    with pytest.raises(BitstreamError) as e:
        with StreamReader(path, context=ctx) as r:
            if read:
                list(r)
    return str(e.value)


def test_format2_crafted_headers(tmp_path, seven2):
    data, _, _, groups, ctx = seven2
    length = struct.unpack_from("<I", data, 12)[0]
    body = data[16:16 + length]
    err = lambda p: _ctx_error(p, ctx)                                          # noqa: E731
    p = _put(tmp_path, _rewrite_body(data, body + b"\x00"))
    assert err(p) == f"{p} has an invalid file header: 1 unexpected bytes after the last field"
    with StreamReader(_put(tmp_path, _rewrite_body(data, body + b"\x00", minor=1), "minor1.bin"), context=ctx) as r:
        assert list(r) == groups and r.header.adaptation == ()      # 2.1: no adaptation
    with StreamReader(_put(tmp_path, _rewrite_body(data, body + b"\x00\x07", minor=2), "minor.bin"), context=ctx) as r:
        assert list(r) == groups                        # a newer minor's additions are skipped
    p = _put(tmp_path, _rewrite_body(data, body[:16] + b"\x07" + body[17:]))
    assert err(p) == (f"{p} has an invalid file header: entropy mode 7 is not supported by this semcodec "
                      f"(it knows 0 fixed, 1 prior, 2 adaptive, 3 context)")
    p = _put(tmp_path, _rewrite_body(data, body[:16] + b"\x00" + body[17:-3]))     # fixed, with a hash
    assert err(p) == f"{p} has an invalid file header: field 'entropy_hash' must be zero for entropy mode 'fixed'"
    p = _put(tmp_path, _rewrite_body(data, body[:33] + b"\x84\x00" + body[34:]))   # name length, not minimal
    assert err(p) == f"{p} has an invalid file header: field 'model_name' is not minimally encoded"
    p = _put(tmp_path, _rewrite_body(data, body[:33] + b"\x00" + body[34:]))
    assert err(p) == f"{p} has an invalid file header: field 'model_name' must be 1 to 255 bytes long, got 0"
    p = _put(tmp_path, _rewrite_body(data, body[:35] + b"\n" + body[36:]))                # s\n28
    assert err(p) == f"{p} has an invalid file header: field 'model_name' must be printable, got 's\\n28'"
    p = _put(tmp_path, _rewrite_body(data, body[:-12]))
    assert err(p).startswith(f"{p} has an invalid file header: the file header ends inside field ")
    p = _put(tmp_path, _rewrite_body(data, body[:-2] + bytes([5, 8])))              # 5 rows: 224 / 5
    assert err(p) == (f"{p} has an invalid file header: field 'iframe_rows' is 5, which does not divide "
                      f"the 224 I-frame tokens")
    # the context model: missing, another one
    with StreamReader(_put(tmp_path, data), context=None) as r:
        with pytest.raises(BitstreamError) as e:
            r.read_group(0)
    assert str(e.value) == (f"{tmp_path / 'tokens.bin'} is entropy-coded with a context model (mode 'context'); "
                            f"it cannot be decoded without it")
    other = random_model(2048, 4, MODEL_HASH, seed=99)
    p = _put(tmp_path, data)
    assert _ctx_error(p, other, read=False) == (
        f"{p} was coded with a different context model than the one given (context {ctx.hash[:16]} in the "
        f"file, {other.hash[:16]} given); decode it with the model it was made with: s128 {MODEL_HASH[:16]}")


def test_format2_prior_mismatch(tmp_path):
    h = make_header("prior", frames=20)
    prior = prior_for(2048)
    write(tmp_path / "p.bin", h, make_groups(h, "skewed"), prior)
    other = prior.copy()
    other[0] += 1000
    want, got = prior_digest(quantize_prior(prior)), prior_digest(quantize_prior(other))
    p = str(tmp_path / "p.bin")
    assert read_header(p).entropy_params["prior_sha256"] == want[:32]
    assert _error(p, other, read=False) == (
        f"{p} was coded with a different token prior than the one given (prior {want[:16]} in "
        f"the file, {got[:16]} given); decode it with the model it was made with: s128 {MODEL_HASH[:16]}")


# --------------------------------------------------------------------------------------------
# golden streams: the sample clip coded by s128 in format 1 (before format 2 existed) and 2
# --------------------------------------------------------------------------------------------

def _golden_tokens():
    return np.load(os.path.join(STREAMS, "v1-sample-tokens.npy")).astype(np.int64)


@pytest.fixture(scope="module")
def s128():
    from semcodec.codec import Codec
    return Codec.load("s128", "cpu")


@pytest.mark.parametrize("mode", MODES)
def test_format1_golden_streams_decode_as_before(s128, mode):
    path = os.path.join(STREAMS, f"v1-sample-{mode}.bin")
    with StreamReader(path, prior_counts=s128.prior) as r:
        assert r.version == 1 and r.header.entropy_mode == mode and r.header.n_groups == 3
        tokens = np.concatenate([g.tokens for g in r])
    assert np.array_equal(tokens, _golden_tokens())


@pytest.mark.parametrize("mode", ENTROPY_MODES)
def test_format2_golden_streams(tmp_path, s128, mode):
    """They decode to the same tokens as the format-1 ones, the writer still gives their bytes,
    and the container takes at most 120 bytes of the 4 s clip."""
    path = os.path.join(STREAMS, f"v2-sample-{mode}.bin")
    with StreamReader(path, prior_counts=s128.prior, context=s128.context_model) as r:
        assert r.version == 2 and r.header.entropy_mode == mode
        recs = list(r)
        payload = sum(r.group_sizes())
    assert np.array_equal(np.concatenate([g.tokens for g in recs]), _golden_tokens())
    assert os.path.getsize(path) - payload <= 120
    with StreamWriter(tmp_path / "again.bin", r.header, prior_counts=s128.prior, context=s128.context_model) as w:
        for g in recs:
            w.write_group(g)
    assert (tmp_path / "again.bin").read_bytes() == open(path, "rb").read()


def test_a_stream_of_the_previous_s128_decodes_with_the_shipped_one(s128, tmp_path):
    """The shipped s128's decoder alone was retrained: a stream the s128 before it wrote (its model
    hash, its context model's hash) still decodes, to the same tokens and the same video as the
    stream the shipped s128 writes; a model that does not make those tokens still refuses it."""
    from semcodec.codec import Codec, CodecError
    from semcodec.zoo import SAME_TOKENS
    old = os.path.join(STREAMS, "v2-sample-context-s128-2026-11-27.bin")
    with StreamReader(old) as r:
        h = r.header
    assert h.model_hash not in s128.content_hash and h.model_hash in SAME_TOKENS[s128.content_hash[:32]][0]
    assert not s128.context_model.hash.startswith(h.entropy_params["context_sha256"])
    assert s128.context_model.config["rebound_from"][0].startswith(h.entropy_params["context_sha256"])
    stream = s128.read_stream(old)
    assert np.array_equal(np.concatenate(stream.tokens), _golden_tokens())
    new = s128.read_stream(os.path.join(STREAMS, "v2-sample-context.bin"))
    assert np.array_equal(s128.decode(stream), s128.decode(new))
    tiny = semcodec.VideoTokenizer(semcodec.get_preset("tiny"))
    semcodec.save_checkpoint(tiny, tiny.config, tmp_path / "t.safetensors")
    with pytest.raises(CodecError, match="^the stream was made by model 's128' .*, not by the loaded model"):
        Codec.load(str(tmp_path / "t.safetensors"), "cpu").check_stream(h)


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
    """(mode, format) -> (file bytes, offset of the first group's data); the prior; the folder."""
    d = tmp_path_factory.mktemp("fuzz")
    prior = prior_for(256)
    files = {}
    for version in (2, 1):
        for mode in ENTROPY_MODES if version == 2 else MODES:
            h = make_header(mode, frames=10, group=4, overlap=1, iframe=24, pframe=12, k=256,
                            params={"link": 2} if mode == "context" else None)
            path = d / f"{mode}{version}.bin"
            write(path, h, make_groups(h, "skewed", seed=4), prior, version, **models_for(mode, 256))
            with StreamReader(path, prior, **models_for(mode, 256)) as r:
                files[mode, version] = (path.read_bytes(), r._offsets[0])
    return files, prior, d


def _read_all(path, prior, mode):
    with StreamReader(path, prior, **models_for(mode, 256)) as r:
        for _ in r:
            pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_truncation_and_flips(fuzz_files, data):
    files, prior, d = fuzz_files
    mode, version = data.draw(st.sampled_from(sorted(files)))
    original, data_start = files[mode, version]
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
            _read_all(path, prior, mode)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # format 2's context mode holds a pass's probability rows (K x slots x 8 bytes, a few of them)
    assert peak < (1 << 20) + 16 * len(raw) + (4 << 20 if mode == "context" else 0), peak
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(path + " ")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_crafted_header_values(fuzz_files, data):
    """Format-1 headers with a valid CRC but arbitrary field values are refused cleanly."""
    files, prior, d = fuzz_files
    original = files[data.draw(st.sampled_from(MODES)), 1][0]
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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_crafted_header_bodies(fuzz_files, data):
    """Format-2 header bodies with bytes flipped, inserted or deleted and the CRC recomputed
    are refused cleanly, or decode (to the tokens the CRCs were made for, or a CRC error)."""
    files, prior, d = fuzz_files
    mode = data.draw(st.sampled_from(ENTROPY_MODES))
    original = files[mode, 2][0]
    length = struct.unpack_from("<I", original, 12)[0]
    body = bytearray(original[16:16 + length])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(body)))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip" and pos < len(body):
            body[pos] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            body[pos:pos] = bytes([data.draw(st.integers(0, 255))])
        elif pos < len(body):
            del body[pos]
    path = str(d / "crafted2.bin")
    with open(path, "wb") as f:
        f.write(_rewrite_body(original, bytes(body), minor=data.draw(st.sampled_from([0, 0, 1]))))
    try:
        _read_all(path, prior, mode)
    except BitstreamError as e:
        assert "\n" not in str(e) and str(e).startswith(path + " ")


# --------------------------------------------------------------------------------------------
# semcodec info --verify
# --------------------------------------------------------------------------------------------

def _cli(capsys, *args) -> tuple[int, str, str]:
    from semcodec.cli import main
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_verify_golden_streams(capsys):
    """Every golden stream verifies: format 1 with the prior read from s128's file, format 2
    in every mode (the context mode with s128's context model)."""
    for name in [f"v1-sample-{m}.bin" for m in MODES] + [f"v2-sample-{m}.bin" for m in ENTROPY_MODES]:
        code, out, err = _cli(capsys, "info", os.path.join(STREAMS, name), "--verify")
        assert code == 0 and err == "", (name, err)
        line = out.splitlines()[-1]
        assert line.startswith("  verified  3 groups entropy-decoded (2848 tokens), every CRC and the layout check; "
                               "entropy model: "), line
        assert line.endswith("none") == ("fixed" in name), line
    code, out, _ = _cli(capsys, "info", os.path.join(STREAMS, "v2-sample-context.bin"), "--verify", "--json")
    info = json.loads(out)
    assert info["verified"] and info["tokens_decoded"] == 2848 and info["format"] == "2.0"
    assert info["entropy_model"].startswith("context model s128.context.safetensors (")
    assert info["overhead_bytes"] <= 120 and info["bytes"] == info["payload_bytes"] + info["overhead_bytes"]


def test_info_verify_finds_damage_and_needs_the_model(tmp_path, capsys):
    data = bytearray(open(os.path.join(STREAMS, "v2-sample-adaptive.bin"), "rb").read())
    with StreamReader(os.path.join(STREAMS, "v2-sample-adaptive.bin")) as r:
        off = r._offsets[1]
    data[off + 9] ^= 0x20
    p = tmp_path / "bad.bin"
    p.write_bytes(bytes(data))
    code, out, err = _cli(capsys, "info", str(p))            # without --verify: the index is fine
    assert code == 0
    code, out, err = _cli(capsys, "info", str(p), "--verify")
    assert code == 1 and out == ""
    assert err.splitlines() in ([f"error: {p} is corrupt: group 1 of 3 fails its CRC32 check"],
                                [f"error: {p} is corrupt: group 1 of 3 does not decode: payload does not decode to "
                                 f"exactly the expected tokens (data left over after the last token)"])
    h = make_header("prior", frames=20)
    h = dataclasses.replace(h, model_name="mine")
    write(tmp_path / "mine.bin", h, make_groups(h, "skewed"), prior_for(2048))
    code, _, err = _cli(capsys, "info", str(tmp_path / "mine.bin"), "--verify")
    assert (code, err) == (1, "error: the stream is entropy-coded with the token prior of model 'mine', which "
                              "semcodec does not ship: give the model with --model\n")
    h = make_header("adaptive", frames=20)
    write(tmp_path / "uni.bin", h, make_groups(h, "skewed"))            # uniform start: needs nothing
    code, out, err = _cli(capsys, "info", str(tmp_path / "uni.bin"), "--verify")
    assert code == 0 and out.splitlines()[-1].endswith("entropy model: none")
