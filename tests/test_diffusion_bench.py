"""bench/renderer.py: its sharpness measure, and a whole run on the tiny setup."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("diffusers")

from test_diffusion import one_torch_thread, tiny_setup  # noqa: E402,F401 (fixture)

from bench.renderer import gradient_magnitude, main, near_shapes, sharpness  # noqa: E402


def test_gradient_magnitude():
    f = np.zeros((2, 4, 5, 3), np.uint8)
    f[:, :, 2:] = 200                                   # one vertical edge of 200 levels
    # per row, of 4 forward differences in x one is 200; rows 0..2 are counted
    assert gradient_magnitude(f) == pytest.approx(200 / 4, rel=1e-6)
    blurred = f.astype(float)
    blurred[:, :, 2] = 100
    assert gradient_magnitude(blurred) == pytest.approx(200 / 4, rel=1e-6)      # two steps of 100: same mean
    assert gradient_magnitude(np.full((1, 3, 3, 3), 77)) == 0.0


def test_gradient_magnitude_in_a_region():
    f = np.zeros((1, 4, 6, 3), np.uint8)
    f[:, :, 2:] = 200                                   # the edge lies between columns 1 and 2
    left = np.zeros((1, 4, 6), bool)
    left[:, :, :2] = True
    # forward differences at rows 0..2, columns 0..1: one of the two columns holds the edge
    assert gradient_magnitude(f, left) == pytest.approx(100.0, rel=1e-6)
    assert gradient_magnitude(f, ~left) == 0.0
    assert np.isnan(gradient_magnitude(f, np.zeros((1, 4, 6), bool)))


def test_near_shapes_reaches_two_pixels():
    m = np.zeros((2, 9, 9), bool)
    m[0, 4, 4] = True
    m[1, 0, 8] = True                                   # a corner: clipped at the frame's edges
    near = near_shapes(m)
    assert near[0].sum() == 25 and near[0, 2:7, 2:7].all()
    assert near[1].sum() == 9 and near[1, 0:3, 6:9].all()


def test_sharpness_splits_shapes_from_background():
    """A decode that blurs the shape's edge and overshoots the background's by the same amount
    scores about 1 on the whole frame and apart: below 1 on the shapes, above on the background."""
    src = np.zeros((1, 8, 16, 3), np.uint8)
    src[:, 2:6, 2:6] = 200                              # a square (the shape)
    src[:, :, 12:] = 100                                # a background edge
    shape = np.zeros((1, 8, 16), bool)
    shape[:, 2:6, 2:6] = True
    dec = src.copy()
    dec[:, 2:6, 2:6] = 100                              # the shape at half contrast
    dec[:, :, 12:] = 150                                # the background edge at 1.5 x
    whole, parts = sharpness({"d": [dec]}, [src], [near_shapes(shape)])
    assert parts["shapes"]["d"] == pytest.approx(0.5, rel=1e-6)
    assert parts["background"]["d"] == pytest.approx(1.5, rel=1e-6)
    assert 0.5 < whole["d"] < 1.5
    plain = np.zeros_like(src)                          # a plain clip: no background gradient at all
    plain[:, 2:6, 2:6] = 200
    _, parts = sharpness({"d": [dec, plain]}, [src, plain], [near_shapes(shape)] * 2)
    assert parts["background"]["d"] == pytest.approx(1.5, rel=1e-6)       # the pooled ratio: no 0 / 0
    assert parts["shapes"]["d"] == pytest.approx(0.75, rel=1e-6)     # (half + all of the same edge) / 2 edges


def test_bench_runs_on_the_tiny_setup(tmp_path_factory, tmp_path):
    s = tiny_setup(tmp_path_factory)
    out = tmp_path / "r.json"
    doc = main(["--model", str(s["codec"]), "--renderer", str(s["stage2"]), "--clips", "1", "--seconds", "1.5",
                "--size", "32x48", "--steps", "2", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc))
    assert doc["steps"] == 2 and doc["seconds_per_clip"]["renderer"] > 0
    assert set(doc["sharpness_vs_source"]) == {"direct", "renderer"} and doc["sharpness_vs_source"]["direct"] > 0
    assert set(doc["sharpness_by_region"]) == {"shapes", "background", "frame"}
    assert all(set(v) == {"direct", "renderer"} for v in doc["sharpness_by_region"].values())
    assert doc["dimensions"]["flicker"]["n"] == 1 and set(doc["continuity"]) == {"source", "direct", "renderer"}


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    from semcodec.codec import Codec
    s = tiny_setup(tmp_path_factory)
    out = s["root"] / "bench-tokens.bin"
    codec = Codec.load(str(s["codec"]), "cpu")
    if not out.exists():
        codec.encode_file(s["clips"] / "clip_000000.mp4", out, entropy="adaptive")
    return s, codec, out


def test_a_scaled_renderer_is_measured_whole(coded):
    """A renderer drawing 2 x the coded size is measured on its whole picture: here one drawing a
    left-to-right ramp, black to white, gives that ramp across the whole decoded frame. Taken at
    1 x (what this bench did before ``Recording.scale``), the codec kept its top-left quarter: the
    ramp's dark half, stretched."""
    import torch
    from bench.renderer import Recording
    _, codec, stream = coded

    def ramp(tokens, size):
        x = torch.linspace(-1, 1, 2 * size[1]).expand(codec.config.group, 2 * size[0], -1)
        return x[..., None].expand(-1, -1, -1, 3).contiguous()
    try:
        codec.renderer = Recording(ramp, scale=2)
        whole = codec.decode(str(stream)).astype(np.float64)
        codec.renderer = Recording(ramp)
        quarter = codec.decode(str(stream)).astype(np.float64)
    finally:
        codec.renderer = None
    assert whole[:, :, 0].mean() < 20 and whole[:, :, -1].mean() > 235
    assert quarter[:, :, -1].mean() < 140


def test_detail_replay_is_the_renderer_at_that_detail(coded):
    """``--detail`` columns recombine the groups drawn once: equal to rendering at that detail (the
    sampling chain, prefixes included, does not depend on it)."""
    import torch
    from bench.renderer import Replay
    from generation.diffusion.checkpoint import load_renderer_checkpoint
    from generation.diffusion.control import RendererModel
    from generation.diffusion.render import DiffusionRenderer
    from semcodec.bitstream import StreamReader
    s, codec, stream = coded
    ck = load_renderer_checkpoint(s["stage2"])
    model = RendererModel(ck.config.replace(residual_scale=2.0), control=True)
    model.load_state_dict(ck.model.state_dict())
    with StreamReader(stream) as reader:
        h = reader.header
        groups = [reader.read_group(i).tokens for i in range(h.n_groups)]
    size = (h.padded_height, h.padded_width)
    full, parts = DiffusionRenderer(model, codec, steps=2, detail=1.0), []
    drawn = []
    for g in groups:
        drawn.append(full.decode_group(g, size))
        parts.append(full.parts)
    half = DiffusionRenderer(model, codec, steps=2, detail=0.5)
    replay = Replay(parts, 0.5)
    for g, f in zip(groups, drawn):
        want = half.decode_group(g, size)
        assert torch.allclose(replay.decode_group(g, size), want, atol=1e-5)
        base = half.parts[0][0]
        assert not torch.allclose(want, base, atol=1e-3)         # some detail is drawn ...
        assert not torch.allclose(want, f, atol=1e-3)            # ... and half of it is added


def test_several_details_need_a_residual_renderer(tmp_path_factory, capsys):
    s = tiny_setup(tmp_path_factory)
    with pytest.raises(SystemExit) as e:
        main(["--model", str(s["codec"]), "--renderer", str(s["stage2"]), "--detail", "1", "0.5"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == \
        "python -m bench.renderer: error: several --detail values need a residual renderer (residual_scale > 0)"
