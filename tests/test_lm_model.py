"""The LM (generation.lm.model): presets, the release-layout converter, packing, conditions, checkpoints."""
import math

import pytest
import torch
import torch.nn.functional as F

from generation.lm import LMConfig, TokenLM, build_model, load_lm, save_lm
from generation.lm.convert import config_from_release, from_release, load_release, to_release
from generation.lm.model import attention_mask, pack, packed_inputs, sinusoidal
from lm_data import one_torch_thread  # noqa: F401 (fixture)

TINY_RELEASE = dict(K=61, d=32, heads=2, mlp=48, layers=2, text=12, freq=16, hidden=24)


def release_state(K, d, heads, mlp, layers, text, freq, hidden, device="cpu", nulls=False, frozen=True):
    """A state dict named and shaped as the release's Semantic1DLM holds it (random values)."""
    V = K + 7
    shapes = {"visual_embedding_model.tok_emb_code.weight": (V, d), "transformer.layer_norm.weight": (d,),
              "transformer.layer_norm.bias": (d,), "transformer.head.weight": (V, d),
              "cond_model.embeddings.fc0.weight": (d, text), "cond_model.embeddings.fc0.bias": (d,),
              "cond_model.embeddings.fc1.weight": (d, d), "cond_model.embeddings.fc1.bias": (d,),
              "cond_model.null_text_embedding": (d,)}
    for i in range(layers):
        p = f"transformer.blocks.{i}."
        shapes.update({p + "norm0.weight": (d,), p + "norm1.weight": (d,), p + "wqkv.weight": (3 * d, d),
                       p + "wo.weight": (d, d), p + "mlp.w1.weight": (mlp, d), p + "mlp.w3.weight": (mlp, d),
                       p + "mlp.w2.weight": (d, mlp)})
    for k in ("frames", "motion_score"):
        p = f"micro_condition.mlps.{k}."
        shapes.update({p + "0.weight": (hidden, freq), p + "0.bias": (hidden,), p + "2.weight": (d, hidden),
                       p + "2.bias": (d,)})
        if nulls:
            shapes[f"micro_condition.null_cond_embeddings.{k}"] = (freq,)
    if frozen:       # the frozen tokenizer and text encoder ride along in the release's file
        shapes.update({"tokenizer.tokenizer.quantizer.codebook": (K, 16),
                       "cond_model.text_encoder.t5.shared.weight": (9, text)})
    g = torch.Generator().manual_seed(0)
    if device == "meta":
        return {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    return {k: torch.randn(s, generator=g) * (0.3 if len(s) > 1 else 1) + (1 if "norm" in k and len(s) == 1 else 0)
            for k, s in shapes.items()}


def test_landiff_is_2b_on_the_meta_device():
    m = build_model("landiff", "meta")
    n = m.n_params()
    assert abs(n - 2e9) <= 0.05 * 2e9, n
    assert m.tok_emb.weight.is_meta and m.config.vocab_size == 2055
    # every tensor the release holds for the LM has a place in ours, shape for shape
    rel = release_state(2048, 2048, 16, 11008, 24, 4096, 256, 512, device="meta")
    ours, ignored = from_release(rel)
    own = m.state_dict()
    assert ignored == ["cond_model.text_encoder.t5.shared.weight", "tokenizer.tokenizer.quantizer.codebook"]
    assert {k: tuple(v.shape) for k, v in ours.items()} == \
        {k: tuple(own[k].shape) for k in ours}
    assert sorted(set(own) - set(ours)) == ["micro.frames.null", "micro.motion.null"]     # trained without them
    assert config_from_release(rel) == LMConfig(name="landiff-release")


def test_release_state_dict_round_trips():
    rel = release_state(**TINY_RELEASE, nulls=True)
    ours, ignored = from_release(rel)
    assert len(ignored) == 2
    back = to_release(ours)
    assert sorted(back) == sorted(k for k in rel if k not in ignored)
    assert all(torch.equal(back[k], rel[k]) for k in back)
    wrapped = {f"module.{k}": v for k, v in rel.items()}        # a DDP-saved file
    assert sorted(from_release(wrapped)[0]) == sorted(ours)
    with pytest.raises(KeyError, match="unknown tensor"):
        from_release({**rel, "transformer.blocks.0.q_norm.weight": torch.ones(3)})


def _rms(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def release_logits(sd, x, heads, theta=1e4):
    """The release's transformer on one sequence of input vectors x (T x d), written from its
    description: RMSNorm blocks, complex RoPE over head-dim pairs, GELU-tanh gated MLP w2(a(w1 x) * w3 x),
    final LayerNorm, head."""
    T, d = x.shape
    hd = d // heads
    freqs = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
    cis = torch.polar(torch.ones(T, hd // 2), torch.outer(torch.arange(T).float(), freqs))[:, None]   # T x 1 x hd/2
    n = len({k.split(".")[2] for k in sd if k.startswith("transformer.blocks.")})
    h = x
    for i in range(n):
        p = f"transformer.blocks.{i}."
        q, k, v = (_rms(h, sd[p + "norm0.weight"]) @ sd[p + "wqkv.weight"].T).view(T, 3, heads, hd).unbind(1)
        q = torch.view_as_real(torch.view_as_complex(q.reshape(T, heads, hd // 2, 2)) * cis).flatten(-2)
        k = torch.view_as_real(torch.view_as_complex(k.reshape(T, heads, hd // 2, 2)) * cis).flatten(-2)
        s = torch.einsum("qhd,khd->hqk", q, k) / hd ** 0.5
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        a = torch.einsum("hqk,khd->qhd", s.softmax(-1), v).reshape(T, d)
        h = h + a @ sd[p + "wo.weight"].T
        y = _rms(h, sd[p + "norm1.weight"])
        gate, up = F.gelu(y @ sd[p + "mlp.w1.weight"].T, approximate="tanh"), y @ sd[p + "mlp.w3.weight"].T
        h = h + (gate * up) @ sd[p + "mlp.w2.weight"].T
    h = F.layer_norm(h, (d,), sd["transformer.layer_norm.weight"], sd["transformer.layer_norm.bias"])
    return h @ sd["transformer.head.weight"].T


def test_converted_release_weights_compute_what_the_release_computes(tmp_path):
    from safetensors.torch import save_file
    c = TINY_RELEASE
    rel = release_state(**c)
    path = tmp_path / "release.safetensors"
    save_file(rel, str(path))
    model, report = load_release(path, n_heads=c["heads"], iframe_tokens=5, pframe_tokens=3, group=3,
                                 text_encoder=f"hash:{c['text']}")
    assert report["kept_init"] == ["micro.frames.null", "micro.motion.null"] and len(report["ignored"]) == 2
    assert model.config.codebook_size == c["K"] and model.config.mlp_dim == c["mlp"]
    model.eval()
    text = torch.randn(4, c["text"])
    with torch.no_grad():
        pre = model.prefix([text], torch.tensor([13.0]), torch.tensor([2.5]))[0]
        ids = torch.tensor([c["K"] + 2, 3, 1, 4, 1, 5])
        x = torch.cat([pre, model.embed(ids)])
        ours = model(x[None], torch.arange(len(x))[None])[0]
    # the release's conditioning: BOS embedding, micro MLPs on timestep embeddings, text MLP
    emb = rel["visual_embedding_model.tok_emb_code.weight"]

    def micro(key, v):
        p = f"micro_condition.mlps.{key}."
        half = c["freq"] // 2
        f = torch.exp(-math.log(10000) * torch.arange(half).float() / half)
        e = torch.cat([torch.cos(v * f), torch.sin(v * f)])
        return F.silu(e @ rel[p + "0.weight"].T + rel[p + "0.bias"]) @ rel[p + "2.weight"].T + rel[p + "2.bias"]
    t = F.gelu(text @ rel["cond_model.embeddings.fc0.weight"].T + rel["cond_model.embeddings.fc0.bias"],
               approximate="tanh") @ rel["cond_model.embeddings.fc1.weight"].T + rel["cond_model.embeddings.fc1.bias"]
    ref_x = torch.cat([emb[c["K"] + 1][None], micro("frames", 13.0)[None], micro("motion_score", 2.5)[None], t,
                       emb[ids]])
    assert torch.allclose(x, ref_x, atol=1e-5)
    assert torch.allclose(ours, release_logits(rel, ref_x, c["heads"]), atol=1e-4)


def test_packed_rows_equal_separate_sequences():
    torch.manual_seed(0)
    m = build_model("lm-tiny").eval()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    v = m.vocab
    seqs = [torch.tensor([v.BOS, v.SOI, *range(8), v.EOI, v.EOS]),
            torch.tensor([v.BOS, v.SOI, *range(8, 16), v.EOI, v.SOP, 1, 2, 3, 4, v.EOP, v.EOS]),
            torch.tensor([v.BOS, v.SOI, *range(3, 11), v.EOI, v.EOS])]
    text = [torch.randn(n, 16) for n in (3, 5, 2)]
    with torch.no_grad():
        pre = m.prefix(text, torch.tensor([1.0, 2.0, 1.0]), None)
        x, pos, mask, targets, owner = packed_inputs(m, seqs, pre, capacity=40)
        assert len(x) == 2 and mask is not None and (targets >= 0).sum() == sum(len(s) - 1 for s in seqs)
        packed = m(x, pos, mask)
        for i in range(3):
            xi, pi, mi, ti, _ = packed_inputs(m, [seqs[i]], [pre[i]])
            assert mi is None
            alone = m(xi, pi)[0]
            assert torch.allclose(packed[owner == i], alone, atol=1e-5)
            assert torch.equal(targets[owner == i], ti[0])
    assert pack([5, 3, 9, 2], 10) == [[2], [0, 1, 3]]
    am = attention_mask(torch.tensor([[0, 0, 1, -1]]))[0, 0]
    assert am.tolist() == [[True, False, False, False], [True, True, False, False], [False, False, True, False],
                           [False, False, False, True]]


def test_conditions_start_silent_and_drop_to_nulls():
    torch.manual_seed(0)
    m = build_model("lm-tiny")
    B = 4
    text = [torch.randn(3, 16) for _ in range(B)]
    a = m.prefix(text, torch.arange(B).float(), torch.ones(B))
    assert all(torch.equal(p[1:3], m.micro["frames"].fc2.bias.expand(2, -1)) for p in a)   # zero-initialised
    keep = {"text": torch.tensor([True, False, True, False]), "frames": torch.tensor([True] * B),
            "motion": torch.tensor([False] * B)}
    b = m.prefix(text, torch.arange(B).float(), torch.ones(B), keep)
    assert torch.equal(b[1][3:], m.text.null.expand(3, -1)) and not torch.equal(b[0][3:], b[1][3:])
    u = m.unconditional_prefix([3, 5], torch.ones(2), None)
    assert [len(p) for p in u] == [6, 8] and torch.equal(u[1][3:], m.text.null.expand(5, -1))
    e = sinusoidal(torch.tensor([0.0, 13.0]), 8)
    assert e.shape == (2, 8) and torch.equal(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    # dropped conditions still take part in the graph (DDP needs a gradient for every parameter)
    loss = sum(p.sum() for p in b)
    loss.backward()
    assert m.text.null.grad is not None and m.micro["motion"].null.grad is not None


def test_checkpoint_round_trip_and_corruption(tmp_path):
    m = build_model("lm-tiny")
    p = tmp_path / "lm.safetensors"
    digest = save_lm(m, p, extra={"step": 3})
    ck = load_lm(p)
    assert ck.content_hash == digest and ck.config == m.config and ck.extra == {"step": 3}
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ck.model.state_dict().values()))
    data = bytearray(p.read_bytes())
    data[-10] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="content hash"):
        load_lm(p)
    with pytest.raises(ValueError, match="^no such LM file: .*missing.safetensors$"):
        load_lm(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not an LM checkpoint"):
        load_lm(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="^unknown LM 'lm-nope' \\(shipped: "):
        load_lm("lm-nope")


def test_config_checks():
    with pytest.raises(ValueError, match="heads"):
        LMConfig(dim=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown LM config fields"):
        LMConfig.from_dict({"dim": 64, "colour": 1})
    with pytest.raises(ValueError, match="unknown LM preset"):
        build_model("nope")
    assert isinstance(build_model("lm-world", "meta"), TokenLM)
    assert 3e6 < build_model("lm-world", "meta").n_params() < 8e6
