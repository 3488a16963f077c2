"""`semcodec decode --renderer diffusion`: the plugin found through its entry point, the long-video
sampler with a clean prefix, one progress tick per step, same seed same video, and every mistake a
one-line error with no output file."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from test_diffusion import one_torch_thread, tiny_setup  # noqa: E402,F401 (fixture)

from semcodec.cli import main  # noqa: E402
from semcodec.codec import Codec  # noqa: E402
from semcodec.renderers import RendererError, load_renderer  # noqa: E402
from semcodec.video import probe  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup(tmp_path_factory)


def _plugins(folder, lines: str):
    """A distribution declaring ``semcodec.renderers`` entry points, as ``pip install`` of this
    project does (pyproject.toml), without installing anything."""
    d = folder / "semcodec_test_renderers-0.dist-info"
    d.mkdir(parents=True, exist_ok=True)
    (d / "METADATA").write_text("Metadata-Version: 2.1\nName: semcodec-test-renderers\nVersion: 0\n")
    (d / "entry_points.txt").write_text("[semcodec.renderers]\n" + lines)
    return folder


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_plugins(tmp_path / "ep", "diffusion = generation.diffusion.render:load_renderer\n"
                                             "broken = generation.no_such_module:load\n")))


@pytest.fixture(scope="module")
def stream(setup):
    out = setup["root"] / "tokens.bin"
    if not out.exists():
        assert main(["encode", str(setup["clips"] / "clip_000000.mp4"), "-o", str(out), "--model", str(setup["codec"])]) == 0
    return out


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_decode_with_the_renderer(setup, stream, plugins, tmp_path, capsys):
    out = tmp_path / "a.mp4"
    code, _, err = run(capsys, "decode", stream, "-o", out, "--model", setup["codec"], "--renderer",
                       f"diffusion:{setup['stage2']}", "--steps", "2", "--seed", "5")
    assert (code, err) == (0, "")
    src, info = probe(setup["clips"] / "clip_000000.mp4"), probe(out)
    assert (info.frames, info.width, info.height, info.fps) == (src.frames, src.width, src.height, src.fps)


def test_same_seed_same_video(setup, stream, plugins):
    """Frame for frame as the writer gets them (H.264 itself is not bit-reproducible here: x264's
    threads on a loaded machine can code the same frames into different files)."""

    def frames(seed):
        codec = Codec.load(str(setup["codec"]), "cpu")
        codec.renderer = load_renderer(f"diffusion:{setup['stage2']}", codec, steps=2, seed=seed)
        return codec.decode(str(stream))
    a, b, c = frames(5), frames(5), frames(6)
    assert a.shape == (12, 32, 48, 3) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_long_video_keeps_the_clean_prefix_and_ticks_per_step(setup, stream):
    from semcodec.bitstream import StreamReader
    from generation.diffusion.render import load_renderer as factory      # the entry point's object
    codec = Codec.load(str(setup["codec"]), "cpu")
    r = factory(codec, weights=str(setup["stage2"]), steps=3)
    ticks = []
    r.on_step = lambda: ticks.append(1)
    with StreamReader(stream) as reader:
        h = reader.header
        groups = [reader.read_group(i) for i in range(h.n_groups)]
    size = (h.padded_height, h.padded_width)
    out = [r.decode_group(g.tokens, size) for g in groups]
    assert len(ticks) == 3 * len(groups) == 9
    ov = codec.config.overlap
    for prev, cur in zip(out, out[1:]):                   # the shared frames are the previous group's, exactly
        assert torch.equal(cur[:ov], prev[-ov:])
    assert [len(o) for o in out] == [g.valid for g in groups]
    r.reset()
    again = r.decode_group(groups[0].tokens, size)
    assert torch.equal(again, out[0])                       # reset: the stream's first group, same seed


def test_progress_bar_counts_steps(setup, stream, plugins, tmp_path):
    codec = Codec.load(str(setup["codec"]), "cpu")
    codec.renderer = load_renderer(f"diffusion:{setup['stage2']}", codec, steps=2)
    ticks = []
    codec.renderer.on_step = lambda: ticks.append(1)
    n = codec.decode_file(str(stream), str(tmp_path / "o.mp4"))
    assert n == probe(setup["clips"] / "clip_000000.mp4").frames and len(ticks) == 2 * 3


@pytest.mark.parametrize("spec,message", [
    ("foo", "error: unknown renderer 'foo' (installed: broken, diffusion)"),
    ("broken", "error: renderer 'broken' cannot be loaded: ModuleNotFoundError: No module named 'generation.no_such_module'"),
    ("diffusion:{root}/none.safetensors", "error: no such renderer weights file: {root}/none.safetensors"),
    ("diffusion:{stage1}", "error: {stage1} is a stage-1 backbone (text to video): the renderer needs the stage-2 "
                           "checkpoint with its control branch"),
    ("diffusion:{codec}", "error: cannot load renderer weights: {codec}: not a renderer checkpoint (format "
                          "'semcodec-checkpoint-2')"),
])
def test_renderer_errors(setup, stream, plugins, tmp_path, capsys, spec, message):
    fill = {k: str(v) for k, v in setup.items()}
    out = tmp_path / "out.mp4"
    code, _, err = run(capsys, "decode", stream, "-o", out, "--model", setup["codec"], "--renderer", spec.format(**fill))
    assert (code, err) == (1, message.format(**fill) + "\n") and not out.exists()


def test_missing_default_weights_and_bad_steps(setup, stream, plugins, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    code, _, err = run(capsys, "decode", stream, "-o", out, "--model", setup["codec"], "--renderer", "diffusion")
    assert code == 1 and err.startswith("error: renderer 'diffusion' has no weights for model 'tiny' (looked for ")
    assert err.count("\n") == 1 and "--renderer diffusion:PATH" in err
    code, _, err = run(capsys, "decode", stream, "-o", out, "--model", setup["codec"], "--renderer",
                       f"diffusion:{setup['stage2']}", "--steps", "0")
    assert (code, err) == (1, "error: --steps must be at least 1, got 0\n")
    code, _, err = run(capsys, "decode", stream, "-o", out, "--model", setup["codec"], "--seed", "3")
    assert (code, err) == (2, "error: --steps and --seed go with --renderer\n")
    assert not out.exists()


def test_weights_of_another_codec_are_refused(setup, plugins, tmp_path, capsys):
    from test_dataset import tiny_checkpoint
    other = tiny_checkpoint(tmp_path / "other.safetensors", 1)
    s = tmp_path / "t.bin"
    assert main(["encode", str(setup["clips"] / "clip_000001.mp4"), "-o", str(s), "--model", other]) == 0
    capsys.readouterr()
    h = Codec.load(other, "cpu").content_hash
    code, _, err = run(capsys, "decode", s, "-o", tmp_path / "o.mp4", "--model", other, "--renderer",
                       f"diffusion:{setup['stage2']}")
    trained = Codec.load(str(setup["codec"]), "cpu").content_hash
    assert (code, err) == (1, f"error: the renderer {setup['stage2']} was trained on the tokens of model 'tiny' "
                              f"({trained[:12]}), not of 'tiny' ({h[:12]})\n")
    assert not (tmp_path / "o.mp4").exists()


def test_no_renderer_installed_message(monkeypatch):
    monkeypatch.setattr("semcodec.renderers.installed", lambda: {})
    with pytest.raises(RendererError, match=r"^unknown renderer 'diffusion' \(installed: none\)$"):
        load_renderer("diffusion", None)


def test_semcodec_never_imports_generation():
    code = ("import sys, semcodec, semcodec.cli, semcodec.codec, semcodec.renderers; "
            "semcodec.renderers.installed(); "
            "bad = [m for m in sys.modules if m == 'generation' or m.startswith('generation.')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_renderer_draws_at_twice_the_coded_size(setup, stream, tmp_path):
    """scale 2 (the world renderer: 64 x 96 coded, 128 x 192 drawn): pairs hold the larger frames,
    the renderer returns them, and the codec still writes the source's size."""
    from generation.diffusion.checkpoint import load_renderer_checkpoint
    from generation.diffusion.data import PairDataset, build_pairs
    from generation.diffusion.render import load_renderer as factory
    from generation.diffusion.train import main as train_main
    build_pairs([setup["clips"]], tmp_path / "pairs", str(setup["codec"]), max_clips=2, scale=2)
    ds = PairDataset(tmp_path / "pairs")
    assert ds.meta["scale"] == 2 and tuple(ds[0]["frames"].shape) == (4, 64, 96, 3)
    common = ["--data", str(tmp_path / "pairs"), "--preset", "tiny", "--batch", "1", "--steps", "1",
              "--config", '{"up_mult": [0.25, 0.5, 1.0], "scale": 2}']
    train_main(common + ["--out", str(tmp_path / "s1")])
    train_main(common + ["--out", str(tmp_path / "s2"), "--stage", "2", "--backbone", str(tmp_path / "s1" / "final.safetensors")])
    ck = load_renderer_checkpoint(tmp_path / "s2" / "final.safetensors")
    assert (ck.config.scale, ck.config.frame_size, ck.config.feature_grid) == (2, (64, 96), (2, 3))
    codec = Codec.load(str(setup["codec"]), "cpu")
    codec.renderer = factory(codec, weights=str(tmp_path / "s2" / "final.safetensors"), steps=1)
    from semcodec.bitstream import StreamReader
    with StreamReader(stream) as r:
        h = r.header
        g = r.read_group(0)
    assert tuple(codec.decode_group(g.tokens, (h.padded_height, h.padded_width)).shape) == (4, 64, 96, 3)
    codec.renderer.reset()
    frames = codec.decode(str(stream))
    assert frames.shape == (probe(setup["clips"] / "clip_000000.mp4").frames, 32, 48, 3)


@pytest.mark.parametrize("sampler", ["dpm", "ddim"])
def test_residual_renderer_starts_as_the_direct_decode(setup, stream, sampler):
    """``residual_scale`` > 0: the model draws what the tokenizer's own decode lacks, on top of it; a
    model that predicts zero (the start of its training) renders that decode exactly, and the kept
    prefix of the next group is the previous group's frames."""
    from semcodec.bitstream import StreamReader
    from generation.diffusion.checkpoint import load_renderer_checkpoint
    from generation.diffusion.control import RendererModel
    from generation.diffusion.render import DiffusionRenderer, direct_frames
    codec = Codec.load(str(setup["codec"]), "cpu")
    ck = load_renderer_checkpoint(setup["stage2"])
    model = RendererModel(ck.config.replace(residual_scale=2.0), control=True)
    model.load_state_dict(ck.model.state_dict())
    model.backbone.zero_output()
    r = DiffusionRenderer(model, codec, steps=3, sampler=sampler)
    with StreamReader(stream) as reader:
        h = reader.header
        groups = [reader.read_group(i) for i in range(h.n_groups)]
    size = (h.padded_height, h.padded_width)
    first = r.decode_group(groups[0].tokens, size)
    feats = r.features(torch.as_tensor(groups[0].tokens), size)
    assert torch.allclose(first, direct_frames(codec, feats, size)[0, :len(first)], atol=1e-5)
    second = r.decode_group(groups[1].tokens, size)
    ov = codec.config.overlap
    assert torch.allclose(second[:ov], first[-ov:], atol=1e-5)


@pytest.mark.parametrize("option, message", [({"strength": 0.0}, "strength must be in (0, 1], got 0.0"),
                                             ({"spacing": "x"}, "unknown timestep spacing 'x' (trailing, linspace)"),
                                             ({"detail": 1.5}, "detail must be in [0, 1], got 1.5")])
def test_bad_sampling_options_are_refused(setup, option, message):
    from generation.diffusion.render import load_renderer as factory
    codec = Codec.load(str(setup["codec"]), "cpu")
    with pytest.raises(RendererError) as e:
        factory(codec, weights=str(setup["stage2"]), **option)
    assert str(e.value) == message


def test_export_ships_sampling_defaults(setup, tmp_path, capsys):
    """``generation.diffusion.export``: the same weights, with the sampling defaults a renderer was
    measured best at; a renderer loaded from it uses them without options."""
    from generation.diffusion.checkpoint import load_renderer_checkpoint
    from generation.diffusion.export import main as export_main
    from generation.diffusion.render import load_renderer as factory
    out = tmp_path / "shipped.safetensors"
    assert export_main([str(setup["stage2"]), "-o", str(out), "--detail", "0.5", "--steps", "3", "--dtype", "float32"]) == 0
    a, b = load_renderer_checkpoint(setup["stage2"]), load_renderer_checkpoint(out)
    assert (b.config.detail, b.config.steps) == (0.5, 3) and b.content_hash != a.content_hash
    assert b.config.replace(detail=a.config.detail, steps=a.config.steps) == a.config
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k
    r = factory(Codec.load(str(setup["codec"]), "cpu"), weights=str(out))
    assert (r.detail, r.steps) == (0.5, 3)
    capsys.readouterr()
    assert export_main([str(setup["stage2"]), "-o", str(tmp_path / "bad.safetensors"), "--detail", "2"]) == 1
    assert capsys.readouterr().err == "error: detail must be in [0, 1], got 2.0\n"
    assert export_main([str(setup["stage1"]), "-o", str(tmp_path / "s1.safetensors")]) == 1
    assert capsys.readouterr().err == f"error: {setup['stage1']} is a stage-1 backbone: a renderer ships its stage-2 checkpoint\n"
    assert not (tmp_path / "bad.safetensors").exists() and not (tmp_path / "s1.safetensors").exists()


def test_the_shipped_world_renderer_belongs_to_the_shipped_world_tokenizer():
    """``--renderer diffusion`` with no path on a ``world`` stream: the shipped weights load (the
    tokenizer's content hash matches, so retraining ``world`` without the renderer fails here), draw
    the whole 128 x 192 picture near the direct decode (a quarter of the drawn detail by default),
    and add something to it."""
    from generation.diffusion.render import default_weights, load_renderer as factory
    from semcodec.data import synth, world
    codec = Codec.load("world", "cpu")
    assert default_weights(codec).exists()
    r = factory(codec, steps=1)
    assert r.cfg.codec_hash == codec.content_hash and r.scale == 2 and r.detail == 0.25
    video = synth.render(world.world_scene(world.split_seeds("test", 1)[0]), 16, (128, 192), 8.0)
    s = codec.encode(video, 8.0, entropy="adaptive")
    direct = codec.decode(s).astype(np.float64)
    codec.renderer = r
    try:
        drawn = codec.decode(s).astype(np.float64)
    finally:
        codec.renderer = None
    assert drawn.shape == direct.shape == video.shape
    diff = np.abs(drawn - direct).mean()
    assert 0.05 < diff < 4                                   # detail added (0.5 levels), the picture kept
