"""The context entropy model: an independent pure-Python implementation of its features, integer
network and coding written from docs/bitstream.md section 5 (checks the spec and the exactness
of the float64 BLAS products), identical results with 1 and 2 BLAS threads, model files, the
training path, and the shipped model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from semcodec.bitstream import GroupRecord, StreamReader, StreamWriter
from semcodec.bitstream.context import (ContextCoder, ContextModel, GroupLayout, context_path, context_paths,
                                        lattice_shape, pass_map)
from semcodec.bitstream.context_train import random_model
from test_bitstream import MODEL_HASH, make_header, ref_ans_decode, ref_ans_encode, ref_cdf

STREAMS = os.path.join(os.path.dirname(__file__), "data", "streams")


# --------------------------------------------------------------------------------------------
# the spec, in plain Python
# --------------------------------------------------------------------------------------------

def ref_place(i, n_from, n_to):
    return ((2 * i + 1) * n_to) // (2 * n_from)


def ref_pass(r, c, passes):
    return 0 if passes == 1 else (r + c) % 2 if passes == 2 else [[0, 2], [3, 1]][r % 2][c % 2]


def ref_features(frames, f, r, c, link, lat, passes, group, overlap):
    """Section 5.2: the 28 taps and 17 features of slot (r, c) of frame f. ``frames``: lists of
    rows (-1 where not decoded yet); ``lat(f)`` the lattice; ``passes(f)`` its pass count."""
    R, C = lat(f)

    def at(fr, y, x):
        return fr[y][x] if 0 <= y < len(fr) and 0 <= x < len(fr[0]) else -1

    def around(fr, y, x):
        return [at(fr, y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    taps = [-1] * 28
    if f >= 1:
        P = frames[f - 1]
        taps[0:9] = around(P, ref_place(r, R, len(P)), ref_place(c, C, len(P[0])))
    if f >= 2:
        Q, I = frames[f - 2], frames[0]
        taps[9] = Q[ref_place(r, R, len(Q))][ref_place(c, C, len(Q[0]))]
        taps[10] = I[ref_place(r, R, len(I))][ref_place(c, C, len(I[0]))]
    mine = ref_pass(r, c, passes(f))
    k = 11
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if (dy, dx) == (0, 0):
                continue
            y, x = r + dy, c + dx
            ok = 0 <= y < R and 0 <= x < C and ref_pass(y, x, passes(f)) < mine
            taps[k] = frames[f][y][x] if ok else -1
            k += 1
    stride = group - overlap
    if link is not None and f < overlap and stride + f < len(link):
        L = link[stride + f]
        taps[19:28] = around(L, ref_place(r, R, len(L)), ref_place(c, C, len(L[0])))
    feat = [0] * 17
    feat[min(f, 2)] = 127
    feat[3 + mine] = 127
    feat[7], feat[8], feat[9], feat[10] = (127 * (r == 0), 127 * (r == R - 1), 127 * (c == 0), 127 * (c == C - 1))
    cen = taps[4]
    if cen >= 0:
        feat[11] = 127 * (cen == taps[9])
        feat[12] = 127 * (cen == taps[10])
        feat[13] = 127 * (cen == taps[23])
        feat[14] = 127 * sum(t == cen for t in taps[:9]) // 9
    if f >= 2:
        A, B = frames[f - 1], frames[f - 2]
        eq = sum(A[y][x] == B[ref_place(y, len(A), len(B))][ref_place(x, len(A[0]), len(B[0]))]
                 for y in range(len(A)) for x in range(len(A[0])))
        feat[15], feat[16] = 127, 127 * eq // (len(A) * len(A[0]))
    return taps, feat


def ref_counts(t: dict, taps, feat):
    """Section 5.3: the integer network of one slot, Python ints only (no floats anywhere)."""
    D = t["codebook"].shape[1]
    x = []
    for tok in taps:
        x += [int(v) for v in t["codebook"][tok]] if tok >= 0 else [0] * D
    x += [127 if tok >= 0 else 0 for tok in taps] + list(feat)

    def dense(name, a):
        W, b = t[f"{name}.weight"].tolist(), t[f"{name}.bias"].tolist()
        return [sum(w * v for w, v in zip(row, a)) + bb for row, bb in zip(W, b)]

    def requant(acc, mult, lo, hi):
        return [min(hi, max(lo, (a * m + (1 << 23)) >> 24)) for a, m in zip(acc, mult.tolist())]
    h = requant(dense("l1", x), t["l1.mult"], 0, 255)
    h = requant(dense("l2", h), t["l2.mult"], 0, 255)
    q = requant(dense("query", h), t["query.mult"], -127, 127)
    z = [sum(u * v for u, v in zip(row, q)) * m + b
         for row, m, b in zip(t["out.weight"].tolist(), t["out.mult"].tolist(), t["out.bias"].tolist())]
    g = dense("gate", h)
    for j, tok in enumerate(taps):
        if tok >= 0:
            z[tok] += g[j] * int(t["gate.mult"][j])
    top = max(z)
    lut = t["lut"].tolist()
    return [lut[min((top - v) >> 27, len(lut) - 1)] for v in z]


def ref_rule(counts):
    """entropy's rule (docs 4.2) on one row."""
    k, free, total = len(counts), (1 << 24) - len(counts), sum(counts)
    s = [c * free // total for c in counts]
    q = [v + 1 for v in s]
    q[max(range(k), key=lambda i: (counts[i], -i))] += free - sum(s)
    return q


class RefContextModels:
    """``model(j, history)`` of test_bitstream's reference rANS coder for one context-coded group:
    token j's slot in the coding order (section 5.1) and its row from the reference network."""

    def __init__(self, t, ilat, plat, ip, pp, group, overlap, valid, link):
        self.t, self.group, self.overlap, self.link = t, group, overlap, link
        self.lat = lambda f: ilat if f == 0 else plat
        self.passes = lambda f: ip if f == 0 else pp
        self.order = [(f, r, c) for f in range(valid) for p in range(self.passes(f))
                      for r in range(self.lat(f)[0]) for c in range(self.lat(f)[1])
                      if ref_pass(r, c, self.passes(f)) == p]
        self.valid = valid

    def frames_from(self, history):
        frames = [[[-1] * self.lat(f)[1] for _ in range(self.lat(f)[0])] for f in range(self.valid)]
        for (f, r, c), tok in zip(self.order, history):
            frames[f][r][c] = tok
        return frames

    def model(self, j, history):
        f, r, c = self.order[j]
        taps, feat = ref_features(self.frames_from(history[:j]), f, r, c, self.link, self.lat, self.passes,
                                  self.group, self.overlap)
        q = ref_rule(ref_counts(self.t, taps, feat))
        return ref_cdf(q), q


def _to_lists(frames):
    return [fr.tolist() for fr in frames]


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------

def test_features_and_network_match_the_spec():
    m = random_model(64, 4, MODEL_HASH, hidden=(12, 10), query=6, seed=3)
    lay = m.layout(2, 2, 8, 6, 4, 1)            # I: 2 x 4, P: 2 x 3
    rng = np.random.default_rng(0)
    link = lay.split(rng.integers(0, 64, 8 + 3 * 6), 4)
    tokens = rng.integers(0, 64, 8 + 3 * 6)
    tokens[8:14] = tokens[14:20]                 # some repeats
    frames = lay.split(tokens, 4)
    for f, rr, cc in lay.order(4):
        ids, feats = lay.taps(frames, f, rr, cc, link)
        probs = m.probabilities(ids, feats)
        for j, (r, c) in enumerate(zip(rr, cc)):
            taps, feat = ref_features(_to_lists(frames), f, int(r), int(c), _to_lists(link), lay.lattice,
                                      lay.passes, 4, 1)
            assert ids[j].tolist() == taps and feats[j].tolist() == feat, (f, r, c)
            assert probs[j].tolist() == ref_rule(ref_counts(m.tensors, taps, feat))


def test_independent_decoder_of_a_context_group():
    """The reference coder (test_bitstream) with the reference network: same bytes, same tokens."""
    m = random_model(64, 4, MODEL_HASH, seed=4, log_prior=np.log(np.arange(64, 0, -1) / 2080))
    lay = m.layout(2, 2, 8, 4, 4, 1)
    rng = np.random.default_rng(1)
    prev = None
    for _ in range(3):
        tokens = rng.choice(64, 20, p=np.arange(64, 0, -1) / 2080)
        payload = ContextCoder(m, lay).encode(tokens, 4, prev)
        ref = RefContextModels(m.tensors, (2, 4), (2, 2), 4, 2, 4, 1, 4, None if prev is None else _to_lists(prev))
        frames = _to_lists(lay.split(tokens, 4))
        coded = [frames[f][r][c] for f, r, c in ref.order]          # the coding order (section 5.1)
        assert sorted(coded) == sorted(tokens.tolist())
        assert ref_ans_decode(payload, 20, ref) == coded
        assert ref_ans_encode(coded, ref) == payload
        prev = lay.split(tokens, 4)


def test_float64_products_are_exact_integers():
    """The network's float64 products (torch and numpy's BLAS alike) equal the same products in
    int64 on a large batch at the widest inputs a model may have (1024 inputs of |x| <= 255 into
    int8 weights)."""
    from semcodec.bitstream.context import _Product
    rng = np.random.default_rng(0)
    W = rng.integers(-127, 128, (300, 1024)).astype(np.int8)
    exact = W.astype(np.int64).T
    for X in (rng.integers(-127, 128, (512, 1024)), rng.integers(0, 256, (512, 1024)),
              np.full((64, 1024), 255), np.full((64, 1024), -127)):
        want = X @ exact                                       # int64, no BLAS
        assert np.array_equal(_Product(W)(X.astype(np.float64)), want)
        assert np.array_equal((X.astype(np.float64) @ exact.astype(np.float64)).astype(np.int64), want)


THREADS = r"""
import hashlib, json, sys
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[2]))
from semcodec.bitstream import StreamReader
from semcodec.codec import Codec
c = Codec.load("s128", "cpu")
cm = c.context_model
rng = np.random.default_rng(0)
ids = rng.integers(-1, 2048, (4096, 28))
feats = rng.integers(0, 128, (4096, 17))
z = cm.logits(ids, feats)
with StreamReader(sys.argv[1], context=cm) as r:
    tokens = np.concatenate([g.tokens for g in r])
print(json.dumps({"logits": hashlib.sha256(z.tobytes()).hexdigest(), "tokens": tokens.tolist()}))
"""


def test_one_and_two_threads_decode_the_same():
    """Decoding runs BLAS products: with 1 and with 2 threads the logits of a large batch and
    the tokens of the context-coded golden stream are the same (and the tokens are the clip's)."""
    out = {}
    for n in (1, 2):
        env = {**os.environ, "OMP_NUM_THREADS": str(n), "OPENBLAS_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
        r = subprocess.run([sys.executable, "-c", THREADS, os.path.join(STREAMS, "v2-sample-context.bin"), str(n)],
                           capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        out[n] = json.loads(r.stdout)
    assert out[1] == out[2]
    assert out[1]["tokens"] == np.load(os.path.join(STREAMS, "v1-sample-tokens.npy")).tolist()


def test_lattice_rule_agrees_with_the_model_off_ties():
    from semcodec.model.masks import lattice_shape as model_rule
    for n in (224, 128, 330, 74, 80, 20, 97):
        for gh in range(1, 33):
            for gw in range(1, 33):
                ours = lattice_shape(n, (gh, gw))
                r = ours[0]
                # an exact tie: another divisor at the same distance from the grid's aspect
                tie = any(n % s == 0 and s != r and (s * s * gw) * (r * r * gw) == (n * gh) ** 2 for s in range(1, n + 1))
                assert ours == model_rule(n, (gh, gw)) or tie, (n, gh, gw)
    assert pass_map(2, 4, 4).tolist() == [[0, 2, 0, 2], [3, 1, 3, 1]]
    assert pass_map(2, 3, 2).tolist() == [[0, 1, 0], [1, 0, 1]]


def test_model_files(tmp_path):
    m = random_model(64, 4, MODEL_HASH, seed=5)
    path = tmp_path / "x.context.safetensors"
    digest = m.save(path)
    again = ContextModel.load(path)
    assert again.hash == digest == m.hash and again.config == m.config
    assert context_path(tmp_path / "x.safetensors") == path
    # a tensor changed behind the hash's back
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(path), "numpy") as f:
        meta = f.metadata()
    t = load_file(str(path))
    t["lut"] = t["lut"].copy()
    t["lut"][5] -= 1
    save_file(t, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=r"bad.safetensors: tensors do not match their content hash \(corrupt file\)$"):
        ContextModel.load(tmp_path / "bad.safetensors")
    t = load_file(str(path))
    t["out.mult"] = t["out.mult"] * (1 << 30)
    with pytest.raises(ValueError, match=r"tensor 'out.mult' must hold values in \[0, 2\^36\]$"):
        ContextModel(t, m.config)
    t = load_file(str(path))
    del t["gate.bias"]
    with pytest.raises(ValueError, match=r"context model lacks tensor 'gate.bias'$"):
        ContextModel(t, m.config)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="is not a readable context model"):
        ContextModel.load(tmp_path / "junk.safetensors")


def test_training_path_rounds_to_integers_faithfully(tmp_path):
    """The float net of a few steps and its integer rounding code the same tokens in about the
    same number of bits (the rounding costs under 0.05 bits/token)."""
    import torch
    from semcodec.bitstream import context_train as ct
    from semcodec.presets import get_preset
    torch.manual_seed(0)
    cfg = get_preset("s128")
    rng = np.random.default_rng(0)
    n = 12
    toks, prev = [], []
    for i in range(n):                            # clips of 2 groups whose P-frames repeat a lot
        base = rng.integers(0, 64, cfg.iframe_tokens + 7 * cfg.pframe_tokens)
        base[cfg.iframe_tokens + cfg.pframe_tokens:] = np.tile(base[cfg.iframe_tokens:cfg.iframe_tokens + cfg.pframe_tokens], 6)
        toks.append(base)
        prev.append(i - 1 if i % 2 else -1)
    data = {"tokens": np.concatenate(toks), "offsets": np.cumsum([0] + [len(t) for t in toks]),
            "grid": np.array([[8, 12]] * n), "valid": np.array([8] * n), "prev": np.array(prev)}
    ids, feats, y = ct.features(data, range(n), cfg)
    assert len(y) == n * (cfg.iframe_tokens + 7 * cfg.pframe_tokens)
    codebook = np.round(127 * rng.normal(size=(64, 16)) / 4).clip(-127, 127).astype(np.int8)     # ids are < 64
    net = ct.float_net(codebook, hidden=(32, 32), query=8)
    params = list(net.parameters())
    m1, m2 = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    I, F, Y = (torch.from_numpy(a) for a in (ids, feats, y))
    for step in range(1, 151):                  # Adam by hand: torch.optim imports torch._dynamo (+140 MB)
        idx = torch.randint(0, len(Y), (512,))
        loss = ct.nll(net(I[idx].long(), F[idx]), Y[idx])
        net.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p, a, b in zip(params, m1, m2):
                a.mul_(0.9).add_(p.grad, alpha=0.1)
                b.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                p.sub_(3e-3 * (a / (1 - 0.9 ** step)) / ((b / (1 - 0.999 ** step)).sqrt() + 1e-8))
    with torch.no_grad():                        # in chunks: a 2048-way softmax per token
        float_bits = sum(float(ct.nll(net(I[j:j + 2048].long(), F[j:j + 2048]), Y[j:j + 2048])) * len(Y[j:j + 2048])
                         for j in range(0, len(Y), 2048)) / len(Y) / np.log(2)
    cm = ct.to_integer(net, ids[::4].astype(np.int64), feats[::4],
                       {"model_hash": MODEL_HASH, "patch": 16, "iframe_passes": 4, "pframe_passes": 2})
    int_bits = ct.integer_bits(cm, ids, feats, y)
    assert float_bits < 8.0                      # it learned the repeats (uniform: 11 bits)
    assert abs(int_bits - float_bits) < 0.05, (float_bits, int_bits)


def test_shipped_context_model():
    """s128 ships a context model beside it, trained for its weights, under 1 MB; the codec
    picks it up and makes it the default entropy mode."""
    from semcodec.codec import Codec
    from semcodec.zoo import WEIGHTS_DIR, shipped_models
    path = WEIGHTS_DIR / "s128.context.safetensors"
    assert path.is_file() and path.stat().st_size < 1 << 20
    assert shipped_models() == sorted(set(shipped_models())) and "s128.context" not in shipped_models()
    codec = Codec.load("s128", "cpu")
    cm = codec.context_model
    assert cm is not None and cm.model_hash == codec.content_hash and cm.codebook_size == 2048
    assert codec.default_entropy == "context"


def test_writer_refuses_a_context_model_of_another_codebook(tmp_path):
    h = make_header("context", frames=10, k=256)
    with pytest.raises(ValueError, match="the context model codes 64 token ids, but the codebook has 256"):
        StreamWriter(tmp_path / "x.bin", h, context=random_model(64, 4, MODEL_HASH))
    with pytest.raises(ValueError, match="entropy mode 'context' needs a context model"):
        StreamWriter(tmp_path / "x.bin", h)
    with pytest.raises(ValueError, match="format 1 has no context mode"):
        StreamWriter(tmp_path / "x.bin", h, context=random_model(256, 4, MODEL_HASH), version=1)
    assert os.listdir(tmp_path) == []


def test_streams_of_a_retired_context_model_still_decode(tmp_path):
    """A model's context model retrained: the new one codes new streams, the old one kept beside it
    as ``NAME.context.HASH.safetensors`` decodes the streams coded with it (codec, reader and
    ``semcodec info --verify`` alike); a stream naming neither fails with the hashes it was given."""
    from bench.fuzz_streams import base_stream, tiny_model
    from semcodec.bitstream import BitstreamError
    from semcodec.codec import Codec
    from semcodec.stream import verify_stream
    model = tiny_model(str(tmp_path))
    old_codec = Codec.load(model, "cpu")
    old = old_codec.context_model
    data = base_stream(old_codec, str(tmp_path))
    want = [g.tokens for g in old_codec.read_stream(data).groups]
    video = old_codec.decode(old_codec.read_stream(data))
    # retire it: the old file renamed by its hash, a retrained one in its place
    cur = tmp_path / "tiny.context.safetensors"
    cur.rename(tmp_path / f"tiny.context.{old.hash[:16]}.safetensors")
    new = random_model(old.codebook_size, old.tensors["codebook"].shape[1], old.model_hash, seed=9,
                       patch=old.config["patch"])
    new.save(cur)
    codec = Codec.load(model, "cpu")
    assert codec.context_model.hash == new.hash != old.hash
    assert [m.hash for m in codec.context_models] == [new.hash, old.hash]
    ts = codec.read_stream(data)
    assert [g.tokens.tolist() for g in ts.groups] == [t.tolist() for t in want]
    assert np.array_equal(codec.decode(ts), video)
    (tmp_path / "old.bin").write_bytes(data)
    with StreamReader(tmp_path / "old.bin", context=codec.context_models) as r:
        assert r.context.hash == old.hash and [g.tokens.tolist() for g in r] == [t.tolist() for t in want]
    info = verify_stream(tmp_path / "old.bin", model)
    assert info["entropy_model"] == f"context model tiny.context.{old.hash[:16]}.safetensors ({old.hash[:12]})"
    # new streams are coded with the new model, which the old one cannot read
    fresh = tmp_path / "fresh.bin"
    codec.encode_file(tmp_path / "clip.mp4", fresh, adapt=0)
    with StreamReader(fresh, context=codec.context_models) as r:
        assert r.context.hash == new.hash
    with pytest.raises(BitstreamError, match=rf"coded with a different context model than the one given \(context "
                                             rf"{new.hash[:16]} in the file, {old.hash[:16]} given\)"):
        StreamReader(fresh, context=old)
    assert [p.name for p in context_paths(model)] == ["tiny.context.safetensors", f"tiny.context.{old.hash[:16]}.safetensors"]
    from semcodec.zoo import checkpoint_in
    assert checkpoint_in(tmp_path).name == "tiny.safetensors"
