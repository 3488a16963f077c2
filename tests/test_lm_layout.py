"""The LM layout of token datasets (generation.lm.layout): ids in the release's order, sequences,
parsing, the collator, LMDataset with DataLoader workers and DistributedSampler."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.lm.layout import (LayoutError, LMCollator, LMDataset, LMVocab, group_ids, lm_ids, parse_lm_sequence,
                                  to_lm_sequence, valid_of)
from lm_data import one_torch_thread, tiny_dataset  # noqa: F401 (fixture)
from semcodec.data import DatasetError, TokenDataset


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny_dataset(tmp_path_factory)


def groups_of(item):
    o = item["group_offsets"].tolist()
    t = item["tokens"].numpy()
    return [t[a:b] for a, b in zip(o[:-1], o[1:])]


def test_release_ids():
    v = LMVocab(codebook_size=2048, iframe_tokens=330, pframe_tokens=74, group=13)
    assert (v.EOS, v.BOS, v.SOI, v.EOI, v.SOP, v.EOP, v.PAD, v.size) == (2048, 2049, 2050, 2051, 2052, 2053, 2054, 2055)


def test_lm_sequence_roundtrip(built):
    for unit in ("clip", "group"):
        ds, lm = TokenDataset(built, unit=unit), LMDataset(built, unit=unit)
        v = lm.vocab
        assert (v.EOS, v.BOS, v.SOI, v.EOI, v.SOP, v.EOP, v.PAD, v.size) == (64, 65, 66, 67, 68, 69, 70, 71)
        assert len(lm) == len(ds)
        for i in range(len(ds)):
            item = ds[i]
            seq = to_lm_sequence(item, v)
            assert len(seq["ids"]) == lm.sequence_length(i) == v.sequence_length(item["group_valid"])
            assert seq["caption"] == item["caption"] and seq["frames"] == item["frames"]
            fast = lm[i]
            assert torch.equal(fast["ids"], seq["ids"]) and {k: fast[k] for k in seq if k != "ids"} == \
                {k: seq[k] for k in seq if k != "ids"}
            parsed = parse_lm_sequence(seq["ids"], v)
            want = groups_of(item)
            assert len(parsed) == len(want) and all(np.array_equal(a, b) for a, b in zip(parsed, want))
            assert np.array_equal(group_ids(want, v), seq["ids"].numpy())


def test_lm_layout_of_the_paper():
    v = LMVocab(codebook_size=2048, iframe_tokens=330, pframe_tokens=74, group=13)
    toks = np.random.default_rng(0).integers(0, 2048, 330 + 12 * 74)
    item = {"tokens": toks, "group_valid": [13], "group_offsets": [0, len(toks)], "caption": "c", "frames": 13,
            "motion": 1.0, "fps": 8.0, "duration": 6.1, "clip_id": "x", "index": 0}
    ids = to_lm_sequence(item, v)["ids"].numpy()
    assert len(ids) == 1 + 332 + 12 * 76 + 1 == 1246
    assert (ids[0], ids[1], ids[332], ids[333], ids[408], ids[-1]) == (2049, 2050, 2051, 2052, 2053, 2048)
    assert np.array_equal(parse_lm_sequence(ids, v)[0], toks)
    tmpl = v.template([13])
    assert np.array_equal(tmpl[tmpl >= 0], ids[tmpl >= 0]) and (tmpl < 0).sum() == len(toks)
    assert valid_of(len(toks), v) == 13 and valid_of(330, v) == 1
    with pytest.raises(LayoutError):
        valid_of(331, v)
    bad = [ids[:-1], np.concatenate([ids[:5], ids[6:]]), np.where(np.arange(len(ids)) == 10, 2053, ids),
           np.where(np.arange(len(ids)) == 0, 5, ids), np.concatenate([ids, [7]]),
           np.where(np.arange(len(ids)) == 331, 9999, ids)]
    for b in bad:
        with pytest.raises(DatasetError, match="malformed LM sequence at position"):    # LayoutError is one
            parse_lm_sequence(b, v)
    # the collator pads with PAD and masks BOS and padding out of the loss
    short = dict(item, tokens=toks[:330 + 74], group_valid=[2], group_offsets=[0, 404])
    batch = LMCollator(v)([to_lm_sequence(item, v), to_lm_sequence(short, v)])
    assert batch["ids"].shape == (2, len(ids)) and batch["lengths"].tolist() == [len(ids), 1 + 332 + 76 + 1]
    assert (batch["ids"][1, 410:] == v.PAD).all() and batch["attention_mask"][1].sum() == 410
    assert not batch["loss_mask"][:, 0].any() and batch["loss_mask"][0, 1:].all()


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 4096), st.integers(1, 12), st.integers(1, 6), st.integers(1, 6),
       st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, 2 ** 32 - 1), st.data())
def test_lm_layout_roundtrip_property(K, I, P, G, valids, seed, data):
    v = LMVocab(K, I, P, G)
    valids = [min(x, G) for x in valids]
    rng = np.random.default_rng(seed)
    groups = [rng.integers(0, K, v.group_tokens(x)) for x in valids]
    toks = np.concatenate(groups)
    offs = np.concatenate([[0], np.cumsum([len(g) for g in groups])])
    ids = lm_ids(toks.astype(np.int16 if K <= 32768 else np.int64), valids, offs, v)
    assert len(ids) == v.sequence_length(valids)
    back = parse_lm_sequence(np.concatenate([ids, [v.PAD] * 3]), v)
    assert len(back) == len(groups) and all(np.array_equal(a, b) for a, b in zip(back, groups))
    pos = data.draw(st.integers(0, len(ids) - 1))
    new = data.draw(st.integers(0, v.size + 2).filter(lambda x: x != ids[pos]))
    bad = ids.copy()
    bad[pos] = new
    if ids[pos] < K and new < K:      # a code for a code: still well formed
        assert len(parse_lm_sequence(bad, v)) == len(groups)
    else:                             # a special moved, removed or added, or an id outside the vocabulary
        with pytest.raises(LayoutError, match="malformed LM sequence at position"):
            parse_lm_sequence(bad, v)


def test_dataloader_workers_and_distributed_sampler(built):
    from torch.utils.data import DataLoader, DistributedSampler
    ds = LMDataset(built, unit="group")
    plain = TokenDataset(built, unit="group")
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=1)
        dl = DataLoader(ds, batch_size=5, sampler=sampler, num_workers=2, collate_fn=ds.collate_fn)
        for batch in dl:
            for r in range(len(batch["ids"])):
                ids = batch["ids"][r][batch["attention_mask"][r]]
                (toks,) = parse_lm_sequence(ids, ds.vocab)
                ref = plain.group(batch["index"][r], batch["groups"][r])
                assert np.array_equal(toks, ref["tokens"].numpy()) and batch["captions"][r] == ref["caption"]
                seen.append((batch["index"][r], batch["groups"][r]))
    assert sorted(set(seen)) == sorted((c, g) for c in range(plain.n_clips) for g in range(3))
    assert len(seen) == len(ds)              # 24 groups split 12 + 12: no padding repeats
