"""Sampling (generation.lm.sample): KV cache = full recompute, every sample parses, guidance, streaming."""
import numpy as np
import pytest
import torch

from generation.lm import build_model, generate, parse_lm_sequence, sample
from generation.lm.sample import _pick
from lm_data import one_torch_thread  # noqa: F401 (fixture)

PROMPTS = ["a small red circle moves left", "a large blue square spins clockwise on a dots background", "x"]


@pytest.fixture(scope="module")
def lm():
    """lm-tiny with large random weights, so that its distributions are far from uniform."""
    torch.manual_seed(0)
    m = build_model("lm-tiny").eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.4)
    return m


def test_kv_cache_equals_full_recompute(lm):
    kw = dict(valids=[4, 2], motion=3.0, seed=5)
    a = sample(lm, PROMPTS, **kw)
    b = sample(lm, PROMPTS, use_cache=False, **kw)
    assert torch.equal(a.ids, b.ids)
    assert len(np.unique(a.ids[a.ids < 64])) > 20                     # real draws, not one code
    for top in (dict(top_k=5), dict(top_p=0.5), dict(temperature=0.7, cfg_scale=1.0)):
        assert torch.equal(sample(lm, PROMPTS, **kw, **top).ids, sample(lm, PROMPTS, use_cache=False, **kw, **top).ids)


def test_every_sample_parses_into_groups(lm):
    v = lm.vocab
    for seed in range(6):
        valids = [[4], [1], [3, 4], [4, 4, 2]][seed % 4]
        out = sample(lm, PROMPTS, valids=valids, seed=seed, cfg_scale=[1.0, 6.5, 3.0][seed % 3])
        for r in range(len(PROMPTS)):
            groups = parse_lm_sequence(out.ids[r], v)
            assert [len(g) for g in groups] == [v.group_tokens(x) for x in valids]
            assert all(np.array_equal(a, b) for a, b in zip(groups, out.groups[r]))


def test_rows_depend_on_their_seed_alone(lm):
    both = sample(lm, PROMPTS[:2], seed=[11, 12])
    alone = sample(lm, PROMPTS[1:2], seed=[12])
    assert torch.equal(both.ids[1], alone.ids[0])
    assert not torch.equal(sample(lm, PROMPTS[:1], seed=1).ids, sample(lm, PROMPTS[:1], seed=2).ids)


def test_groups_stream_as_they_finish(lm):
    res = {}
    events = []
    for g in generate(lm, PROMPTS[:2], valids=[2, 3], seed=0, result=res):
        events.append((g.row, g.index, len(g.tokens)))
    assert events == [(0, 0, 12), (1, 0, 12), (0, 1, 16), (1, 1, 16)]
    assert res["ids"].shape == (2, lm.vocab.sequence_length([2, 3]))


def test_guidance_combines_cond_and_uncond_logits(lm, monkeypatch):
    """cfg_scale s: logits u + s (c - u), the cond and uncond rows of a prompt in one batch."""
    import importlib
    S = importlib.import_module("generation.lm.sample")           # (generation.lm.sample is also a function)
    seen = []
    real = S._pick
    monkeypatch.setattr(S, "_pick", lambda logits, *a: seen.append(logits) or real(logits, *a))
    calls = []
    real_fwd = type(lm).forward

    def spy(self, x, *a, **k):
        out = real_fwd(self, x, *a, **k)
        calls.append(out[:, -1, :64].float())
        return out
    monkeypatch.setattr(type(lm), "forward", spy)
    sample(lm, PROMPTS[:2], valids=[1], seed=0, cfg_scale=4.0)
    c, u = calls[0][:2], calls[0][2:]
    assert calls[0].shape[0] == 4 and torch.allclose(seen[0], u + 4.0 * (c - u), atol=1e-5)
    calls.clear()
    sample(lm, PROMPTS[:2], valids=[1], seed=0, cfg_scale=1.0)
    assert calls[0].shape[0] == 2                                       # no guidance: conditional rows only
    calls.clear()
    seen.clear()
    sample(lm, PROMPTS[:2], valids=[1], seed=0, cfg_scale=4.0, cfg_plausibility=0.1)
    c, u = calls[0][:2], calls[0][2:]
    p = torch.softmax(c, -1)
    keep = p >= 0.1 * p.max(-1, keepdim=True).values                   # the prompt's own candidates
    assert 0 < keep.sum() < keep.numel()
    assert torch.allclose(seen[0][keep], (u + 4.0 * (c - u))[keep], atol=1e-5)
    assert torch.isinf(seen[0][~keep]).all()


def test_prefix_groups_and_codes_are_kept(lm):
    first = sample(lm, PROMPTS[:2], valids=[4], seed=3)
    pre = [g[:1] for g in first.groups]
    codes = [np.arange(5), np.arange(5) + 10]
    out = sample(lm, PROMPTS[:2], valids=[3], seed=4, prefix_groups=pre, prefix_codes=codes)
    for r in range(2):
        groups = parse_lm_sequence(out.ids[r], lm.vocab)
        assert np.array_equal(groups[0], pre[r][0]) and np.array_equal(groups[1][:5], codes[r])
        assert len(out.groups[r]) == 1 and np.array_equal(out.groups[r][0], groups[1])
    with pytest.raises(ValueError, match="frames per group"):
        sample(lm, PROMPTS[:1], valids=[9])


def test_pick_top_k_top_p_and_greedy():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gens = lambda: [torch.Generator().manual_seed(s) for s in [0]]     # noqa: E731
    draws = lambda **k: {int(_pick(logits, [torch.Generator().manual_seed(s)], 1.0, k.get("top_k"),   # noqa: E731
                                   k.get("top_p"))) for s in range(200)}
    assert draws() == {0, 1, 2, 3}
    assert draws(top_k=2) == {0, 1}
    assert draws(top_p=0.7) == {0, 1} and draws(top_p=0.5) == {0}
    assert int(_pick(logits, gens(), 0.0, None, None)) == 0
