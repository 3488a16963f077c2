"""Content-adaptive decoding (``semcodec.adaptation``): the head's biases fitted to a clip, sent in
its stream (format 2.1), drawn by the decoder; streams without one stay format 2.0."""
import dataclasses

import numpy as np
import pytest
import torch

from semcodec import adaptation
from semcodec.bitstream import BitstreamError, StreamReader, read_header, read_version
from semcodec.bitstream.entropy import decode_deltas, encode_deltas, unzigzag, zigzag
from semcodec.codec import CodecError
from semcodec.stream import TokenStream
from semcodec.video import Geometry, iter_frames, to_model

from test_bitstream import _rewrite_body, ref_header_v2


@pytest.fixture(scope="module")
def coded(s128, short_sample, tmp_path_factory):
    """A short clip coded without and with an adaptation (no token search: the same ids)."""
    d = tmp_path_factory.mktemp("adapted")
    plain, adapted = d / "plain.bin", d / "adapted.bin"
    s128.encode_file(short_sample, plain, search=0, adapt=0)
    header = read_header(plain)
    with StreamReader(plain, context=s128.context_model) as r:
        records = list(r)
    geo = Geometry((header.src_height, header.src_width), (header.scaled_height, header.scaled_width),
                   (header.padded_height, header.padded_width))
    picks = set(adaptation.pick_frames(header.src_frames))
    keep = {i: to_model(f[None], geo)[0] for i, f in enumerate(iter_frames(short_sample)) if i in picks}
    ad, info = adaptation.fit(s128.model, header, records, keep, steps=12)
    assert ad is not None and info["mse_after"] < info["mse_before"]
    TokenStream(dataclasses.replace(header, adaptation=tuple(int(x) for x in ad.ints), adaptation_step=ad.step),
                records, context=s128.context_model).save(adapted)
    return plain, adapted, ad


def psnr(a, b):
    return 10 * np.log10(255 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


def test_the_adapted_decode_is_closer_to_the_source(s128, short_sample, coded):
    plain, adapted, ad = coded
    src = np.stack(list(iter_frames(short_sample)))
    a, b = s128.decode(plain), s128.decode(adapted)
    assert psnr(src, b) > psnr(src, a) + 0.1
    with StreamReader(plain, context=s128.context_model) as r1, StreamReader(adapted, context=s128.context_model) as r2:
        assert list(r1) == list(r2)                       # the same tokens: only the drawing changes


def test_stream_format_2_1_holds_the_adaptation_as_specified(s128, coded):
    plain, adapted, ad = coded
    assert read_version(plain) == (2, 0) and read_version(adapted) == (2, 1)
    h = read_header(adapted)
    assert h.adaptation == tuple(int(x) for x in ad.ints) and h.adaptation_step == adaptation.STEP_EXPONENT
    assert len(h.adaptation) == adaptation.count(s128.model) == 2451
    data = adapted.read_bytes()
    length = int.from_bytes(data[12:16], "little")
    ref = ref_header_v2(data[16:16 + length], minor=1)            # the spec's reader, section 3.3
    assert ref["adaptation"] == list(h.adaptation) and ref["adaptation_step"] == h.adaptation_step


def test_the_adapted_drawing_is_the_head_with_the_deltas_added(s128, coded):
    plain, adapted, ad = coded
    h = read_header(adapted)
    with StreamReader(adapted, context=s128.context_model) as r:
        rec = next(iter(r))
    size = (h.padded_height, h.padded_width)
    feats = adaptation.adapted_features(s128.model, np.asarray(h.adaptation), h.adaptation_step)
    got = s128.decode_group(rec.tokens, size, feats)
    params = adaptation.parameters(s128.model.features)
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            at = 0
            for p in params:
                p += torch.as_tensor(ad.deltas[at:at + p.numel()], dtype=p.dtype).view_as(p)
                at += p.numel()
        want = s128.decode_group(rec.tokens, size)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert not torch.equal(got, s128.decode_group(rec.tokens, size))      # and the shared model is untouched


def test_deltas_code_and_decode_exactly():
    rng = np.random.default_rng(0)
    ints = np.clip(np.round(rng.laplace(0, 1, 3000)), -128, 127).astype(np.int64)
    payload = encode_deltas(ints)
    assert np.array_equal(decode_deltas(payload, len(ints)), ints)
    assert 8 * len(payload) < 3 * len(ints)                 # entropy-coded: about 2.5 bits each, not 8
    assert np.array_equal(unzigzag(zigzag(np.arange(-128, 128))), np.arange(-128, 128))


def test_a_forged_adaptation_is_refused(s128, coded, tmp_path):
    plain, adapted, ad = coded
    h = read_header(adapted)
    with StreamReader(adapted, context=s128.context_model) as r:
        records = list(r)
    short = tmp_path / "short.bin"
    TokenStream(dataclasses.replace(h, adaptation=h.adaptation[:10]), records, context=s128.context_model).save(short)
    with pytest.raises(CodecError) as e:
        s128.decode(short)
    assert str(e.value) == ("the stream's header does not fit model 's128': it adapts 10 decoder parameters, "
                            "the model has 2451 (a forged or damaged file)")
    data = bytearray(adapted.read_bytes())
    length = int.from_bytes(data[12:16], "little")
    body = bytes(data[16:16 + length])

    bad = tmp_path / "bad.bin"
    bad.write_bytes(_rewrite_body(bytes(data), body[:-3], minor=1))        # the payload cut short
    with pytest.raises(BitstreamError) as e:
        read_header(bad)
    assert str(e.value).startswith(f"{bad} has an invalid file header: ") and "\n" not in str(e.value)


def test_the_encoder_keeps_an_adaptation_only_where_it_pays(s128, coded):
    plain, adapted, ad = coded
    header = read_header(plain)
    with StreamReader(plain, context=s128.context_model) as r:
        records = list(r)
    keep = {0: torch.zeros(header.padded_height, header.padded_width, 3)}
    # black frames to fit: any step of Adam lowers the error; free bits keep it, dear ones do not
    free, info = adaptation.fit(s128.model, header, records, keep, steps=2, lr=0.05, rate_slope=0.0, stream_bits=8000)
    assert free is not None and info["gain_db"] > 0 and info["step"] in adaptation.STEPS
    dear, _ = adaptation.fit(s128.model, header, records, keep, steps=2, lr=0.05, rate_slope=1000.0, stream_bits=8000)
    assert dear is None


def test_adapt_option_is_checked(s128, sample, tmp_path):
    with pytest.raises(CodecError) as e:
        s128.encode_file(sample, tmp_path / "x.bin", adapt=-1)
    assert str(e.value) == "adaptation steps must be a whole number in 0..10000, got -1"
    assert not (tmp_path / "x.bin").exists()
    assert s128.adapt_steps(0) == 0 and s128.adapt_steps(None) == adaptation.DEFAULT_STEPS


def test_info_says_what_a_stream_adapts(coded):
    from click.testing import CliRunner

    from semcodec.cli import cli
    plain, adapted, ad = coded
    out = CliRunner().invoke(cli, ["info", str(adapted)]).output
    line = [ln for ln in out.splitlines() if ln.strip().startswith("adapted")]
    assert line == [f"  adapted   {int((ad.ints != 0).sum())} of 2451 decoder biases, steps of 0.03125, "
                    f"{len(ad.payload())} bytes (in the container's)"]
    assert "format 2.1" in out
    assert "  adapted   " not in CliRunner().invoke(cli, ["info", str(plain)]).output


def test_encode_file_fits_sends_and_decodes_an_adaptation(s128, short_sample, coded, tmp_path):
    """The user's path: ``encode_file`` keeps the frames it needs while it codes, fits, prices and
    writes; the stream decodes closer to the source than the same tokens drawn unadapted."""
    plain, _, _ = coded
    out = tmp_path / "enc.bin"
    s128.search_options = {"rate_slope": 0.1}      # 1.6 s of stream: at the default price the bits do not pay
    try:
        s128.encode_file(short_sample, out, search=0, adapt=12)
        mem = s128.encode(np.stack(list(iter_frames(short_sample))), 25.0, search=0, adapt=12)   # in memory: the same
    finally:
        s128.search_options = {}
    assert read_version(out) == (2, 1) and read_header(out).adaptation_step in adaptation.STEPS
    with StreamReader(out, context=s128.context_model) as r1, StreamReader(plain, context=s128.context_model) as r2:
        assert list(r1) == list(r2)
    src = np.stack(list(iter_frames(short_sample)))
    assert psnr(src, s128.decode(out)) > psnr(src, s128.decode(plain)) + 0.1
    assert mem.header == read_header(out)
