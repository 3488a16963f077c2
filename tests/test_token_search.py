"""Encoder-side token search (``semcodec.token_search``): ids the decoder draws better from, at a
cost in bits counted as the context coder counts them; streams it writes are ordinary streams."""
import subprocess
import sys

import numpy as np
import pytest

from semcodec.codec import Codec, CodecError
from semcodec.token_search import GroupRate, TokenSearch
from semcodec.video import iter_frames, probe, semantic_source_index, to_model


def first_group(codec, path):
    """The first group of ``path`` as the encoder sees it: ``T x H x W x 3`` in [-1, 1], its
    geometry, the header and the encoder's ids (computed once per module)."""
    key = (id(codec), str(path))
    if key not in _GROUPS:
        _GROUPS[key] = _first_group(codec, path)
    frames, geo, h, ids = _GROUPS[key]
    return frames.clone(), geo, h, ids.copy()


_GROUPS: dict = {}


def _first_group(codec, path):
    info = probe(path)
    src = np.stack(list(iter_frames(path)))
    h = codec._header(info, codec.semantic_fps(None), "context")
    geo = codec.geometry(info.height, info.width)
    T = min(h.group, h.semantic_frames)
    frames = to_model(np.stack([src[semantic_source_index(j, info.fps, h.semantic_fps, len(src))] for j in range(T)]), geo)
    return frames, geo, h, codec.encode_group(frames)


def group_error(codec, frames, ids, geo):
    dec = codec.decode_group(ids, geo.padded)
    h, w = geo.scaled
    return float(((dec[:, :h, :w] - frames[:, :h, :w]) ** 2).mean())


def test_search_lowers_the_decoded_error_and_keeps_valid_ids(s128, sample):
    frames, geo, h, ids = first_group(s128, sample)
    found, stats = TokenSearch(s128.model, steps=4).refine(frames, ids, geo.scaled)
    assert found.shape == ids.shape and found.dtype == np.int64
    assert 0 <= found.min() and found.max() < s128.config.codebook_size
    assert stats.rounds >= 1 and stats.changed == int((found != ids).sum()) > 0
    before, after = group_error(s128, frames, ids, geo), group_error(s128, frames, found, geo)
    assert after < before, (before, after)
    assert stats.mse_after < stats.mse_before
    # each swap is to one of the code's nearest neighbours
    search = TokenSearch(s128.model, steps=1)
    one, _ = search.refine(frames, ids, geo.scaled)
    moved = one != ids
    assert moved.any()
    assert all(b in search.neighbours[a].tolist() for a, b in zip(ids[moved], one[moved]))


def test_no_rounds_is_the_encoder(s128, sample):
    frames, geo, h, ids = first_group(s128, sample)
    found, stats = TokenSearch(s128.model, steps=0).refine(frames, ids, geo.scaled)
    assert np.array_equal(found, ids) and stats.rounds == 0 and stats.changed == 0


def test_group_rate_counts_the_bits_the_context_coder_spends(s128, sample):
    """GroupRate.bits against the real payload of the group (rANS: within a few bytes), and its
    table against bits of single tokens."""
    from semcodec.bitstream.context import ContextCoder
    frames, geo, h, ids = first_group(s128, sample)
    ctx = s128.context_model
    layout = ctx.layout_for(h)
    rate = GroupRate(ctx, layout, len(frames), None)
    payload = ContextCoder(ctx, layout).encode(ids, len(frames), None)
    bits = rate.bits(ids)
    assert abs(8 * len(payload) - bits) < 64, (8 * len(payload), bits)
    table = rate.table(ids)
    assert table.shape == (len(ids), s128.config.codebook_size)
    assert float(table[np.arange(len(ids)), ids].sum()) == pytest.approx(bits, rel=1e-5)


def test_rate_slope_trades_error_for_bits(s128, sample):
    """A steep slope (bits dear) keeps the group's bits at or below the encoder's; the cost the
    search minimises never rises."""
    frames, geo, h, ids = first_group(s128, sample)
    ctx = s128.context_model
    layout = ctx.layout_for(h)
    rate = GroupRate(ctx, layout, len(frames), None)
    for slope in (1.5, 50.0):
        found, st = TokenSearch(s128.model, steps=3, rate_slope=slope).refine(frames, ids, geo.scaled, rate)
        cost = lambda d, b: 10 * np.log10(d) + slope * np.log2(b)        # noqa: E731
        assert cost(st.mse_after, st.bits_after) <= cost(st.mse_before, st.bits_before)
        assert st.bits_after == pytest.approx(rate.bits(found))
        if slope == 50.0:
            assert st.bits_after <= st.bits_before


def test_searched_stream_is_an_ordinary_stream(s128, sample, tmp_path):
    """The stream decodes with the plain decoder, its ids are the same whatever the entropy mode
    (bits are counted by the context model in every mode), and `--search 0` writes what the
    encoder alone writes."""
    frames, fps = np.stack(list(iter_frames(sample))), probe(sample).fps
    part = frames[:40]                        # 1.6 s: two groups
    a = s128.encode(part, fps, search=2, entropy="context", adapt=0)
    b = s128.encode(part, fps, search=2, entropy="adaptive", adapt=0)
    plain = s128.encode(part, fps, search=0)
    assert len(a.tokens) == 2 and all(np.array_equal(x, y) for x, y in zip(a.tokens, b.tokens))
    assert not all(np.array_equal(x, y) for x, y in zip(a.tokens, plain.tokens))
    video = s128.decode(a.to_bytes())
    assert video.shape == part.shape
    z = tmp_path / "z.bin"
    r = subprocess.run([sys.executable, "-m", "semcodec", "encode", str(sample), "-o", str(z), "--search", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert s128.encode(frames, fps, search=0).to_bytes() == z.read_bytes()


@pytest.mark.parametrize("value", ["-1", "1001", "x"])
def test_bad_search_is_one_line(sample, tmp_path, value):
    out = tmp_path / "x.bin"
    r = subprocess.run([sys.executable, "-m", "semcodec", "encode", str(sample), "-o", str(out), "--search", value],
                       capture_output=True, text=True)
    assert r.returncode == 2 and not out.exists()
    want = (f"error: Invalid value for '--search': {value} is not in the range 0<=x<=1000.\n" if value != "x" else
            "error: Invalid value for '--search': 'x' is not a valid integer range.\n")
    assert r.stderr == want


def test_bad_search_in_the_api(s128, sample, tmp_path):
    with pytest.raises(CodecError, match=r"^search steps must be a whole number in 0\.\.1000, got 2\.5$"):
        s128.encode_file(sample, tmp_path / "x.bin", search=2.5)
    assert not (tmp_path / "x.bin").exists()


@pytest.mark.slow
def test_relaxation_jumps_further_than_neighbours(s128, sample):
    """relax_steps: the encoder's outputs moved by the decoder's gradient reach codes that are not
    neighbours of the encoder's, and a lower error; with bits priced, the cost never rises."""
    frames, geo, h, ids = first_group(s128, sample)
    search = TokenSearch(s128.model, steps=0, relax_steps=6)
    found, st = search.refine(frames, ids, geo.scaled)
    assert st.mse_after < st.mse_before
    assert group_error(s128, frames, found, geo) < group_error(s128, frames, ids, geo)
    assert any(b not in search.neighbours[a].tolist() for a, b in zip(ids, found) if a != b)
    ctx = s128.context_model
    layout = ctx.layout_for(h)
    rate = GroupRate(ctx, layout, len(frames), None)
    _, st = TokenSearch(s128.model, steps=0, relax_steps=6).refine(frames, ids, geo.scaled, rate)
    cost = lambda d, b: 10 * np.log10(d) + 0.5 * np.log2(b)        # noqa: E731
    assert cost(st.mse_after, st.bits_after) <= cost(st.mse_before, st.bits_before)


def test_the_search_is_on_where_bits_have_a_price(s128, tmp_path):
    """By default the search runs for models that ship a context model (s128: 12 rounds), not for
    others (a search on the error alone spends bits blindly); a set value wins."""
    import semcodec
    from semcodec.token_search import DEFAULT_STEPS
    assert s128.context_model is not None and s128.search_steps == DEFAULT_STEPS == 12
    tiny = semcodec.VideoTokenizer(semcodec.get_preset("tiny"))
    semcodec.save_checkpoint(tiny, tiny.config, tmp_path / "t.safetensors")
    other = Codec.load(str(tmp_path / "t.safetensors"), "cpu")
    assert other.context_model is None and other.search_steps == 0
    other.search_steps = 3
    assert other.search_steps == 3


def test_search_under_inference_mode(s128, sample):
    """A caller inside torch.inference_mode still gets searched ids (the search leaves it for its
    own gradients), the same as outside."""
    import torch
    frames, geo, h, ids = first_group(s128, sample)
    out, _ = TokenSearch(s128.model, steps=2).refine(frames, ids, geo.scaled)
    with torch.inference_mode():
        inside, st = TokenSearch(s128.model, steps=2).refine(frames.clone(), ids, geo.scaled)
    assert st.rounds >= 1 and np.array_equal(out, inside)


def test_shown_frames_are_what_the_decoder_shows(s128, sample):
    """ShownFrames.for_group blends a group's decoded frames (and the group before's, over the
    overlap) as the decoder does: checked against the decoded video of a two-group stream."""
    import torch
    from semcodec.gop import GopPlan
    from semcodec.token_search import ShownFrames
    from semcodec.video import from_model
    frames, fps = np.stack(list(iter_frames(sample))), probe(sample).fps
    part = frames[:40]
    stream = s128.encode(part, fps, search=0)
    video = s128.decode(stream.to_bytes()).astype(np.float64)
    h = stream.header
    geo = s128.geometry(h.src_height, h.src_width)
    g0, g1 = GopPlan(h.semantic_frames, h.group, h.overlap)
    dec = [s128.decode_group(t, geo.padded).float() for t in stream.tokens]
    k = h.semantic_fps / h.src_fps
    held = {i: torch.zeros(1) for i in range(len(part))}         # the targets play no part here
    before = {g0.start + j: dec[0][j] for j in range(g0.valid)}
    last = ShownFrames.for_group(g1, 2, h.overlap, h.semantic_frames, k, held, before)
    first = ShownFrames.for_group(g0, 2, h.overlap, h.semantic_frames, k, held, {})
    assert last.index == tuple(range(last.index[0], len(part))) and last.offset is not None
    assert first.index[0] == 0 and first.offset is None
    assert h.overlap and last.index[0] < first.index[-1]          # overlap frames are shown by both
    for sh, d in ((last, dec[1]), (first, dec[0])):
        pred = torch.einsum("st,thwc->shwc", sh.mix, d) + (0 if sh.offset is None else sh.offset)
        drawn = from_model(pred, geo).numpy()
        exact = [n for n, i in enumerate(sh.index) if sh is last or i * k <= g1.start - 1]   # no part for the next group
        err = np.abs(drawn[exact] - video[list(np.array(sh.index)[exact])])
        assert err.max() <= 1.0, err.max()                        # the decoder rounds to uint8


def test_search_scores_the_frames_shown(s128, short_sample):
    """Searched on the error alone, the whole decoded video (in-between frames included) is
    nearer the source than the encoder's own ids."""
    part, fps = np.stack(list(iter_frames(short_sample))), probe(short_sample).fps
    s128.search_options = {"rate_slope": 0.0}
    try:
        found = s128.encode(part, fps, search=2, adapt=0)    # the search alone (adaptation: test_adaptation)
    finally:
        s128.search_options = {}
    plain = s128.encode(part, fps, search=0)

    def mse(stream):
        return float(((s128.decode(stream.to_bytes()).astype(np.float64) - part) ** 2).mean())

    assert mse(found) < mse(plain), (mse(found), mse(plain))


def test_searched_file_and_memory_agree(s128, short_sample, tmp_path):
    """A file and its frames in memory search against the same shown frames: the same bytes."""
    short, fps = short_sample, probe(short_sample).fps
    frames = np.stack(list(iter_frames(short)))
    s128.encode_file(short, tmp_path / "a.bin", search=1, adapt=0)
    assert s128.encode(frames, fps, search=1, adapt=0).to_bytes() == (tmp_path / "a.bin").read_bytes()
