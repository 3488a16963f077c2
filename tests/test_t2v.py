"""generation.t2v: text -> LM tokens -> tokenizer decoder -> video, on the tiny codec and lm-tiny."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lm_data import one_torch_thread  # noqa: F401  (fixture)

pytest.importorskip("av")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(codec path, LM path): the jittered tiny codec, and lm-tiny with large random weights that
    names it as its codec."""
    from generation.lm import build_model, save_lm
    from semcodec.codec import Codec
    from test_dataset import tiny_checkpoint
    root = tmp_path_factory.mktemp("t2v")
    codec_path = tiny_checkpoint(root / "tiny.safetensors")
    codec = Codec.load(codec_path, "cpu")
    torch.manual_seed(0)
    lm = build_model("lm-tiny").eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.normal_(0, 0.4)
    cfg = lm.config.replace(codec=codec_path, codec_hash=codec.content_hash)
    lm_path = root / "lm.safetensors"
    save_lm(lm, lm_path, config=cfg)
    return codec_path, str(lm_path)


@pytest.fixture(scope="module")
def t2v(models):
    from generation.t2v import TextToVideo
    return TextToVideo.load(models[1])


def test_length_layout_and_seeds(t2v):
    c = t2v.codec.config                              # tiny: 6 fps, groups of 4 overlapping by 1
    clips = t2v.generate_many(["a small red circle moves left", "a blue star spins"], seconds=2.0, seed=3)
    plan = t2v.plan(2.0)
    assert len(plan) == 4 and plan[-1].stop == 12
    for clip in clips:
        assert clip.frames.shape == (12, *c.frame_size, 3) and clip.frames.dtype == np.uint8
        assert [len(g) for g in clip.groups] == [c.iframe_tokens + (g.valid - 1) * c.pframe_tokens for g in plan]
        assert all(((0 <= g) & (g < c.codebook_size)).all() for g in clip.groups)
    again = t2v.generate("a small red circle moves left", seconds=2.0, seed=3)
    assert np.array_equal(again, clips[0].frames)                    # same seed, same video
    other = t2v.generate("a small red circle moves left", seconds=2.0, seed=4)
    assert not np.array_equal(other, clips[0].frames)


def test_one_group_is_the_codec_decode_of_its_tokens(t2v):
    clip = t2v.generate_many(["a green heart"], seconds=4 / 6, seed=1)[0]   # 4 frames: one group
    assert len(clip.groups) == 1
    ref = t2v.codec.decode_group(clip.groups[0], t2v.codec.config.frame_size)
    ref = np.clip(np.rint((ref.clamp(-1, 1) + 1).numpy() * 127.5), 0, 255).astype(np.uint8)
    assert np.array_equal(clip.frames, ref)


def test_later_groups_continue_their_predecessor(t2v):
    """Group g > 0 is drawn with group g - 1 teacher-forced: sampling it again from that prefix
    with the same seed gives the same codes."""
    from generation.lm import sample
    rows = t2v.tokens(["a yellow square bounces"], seconds=2.0, seed=7)
    plan = t2v.plan(2.0)
    g = plan[2]
    again = sample(t2v.lm, ["a yellow square bounces"], valids=[g.valid], prefix_groups=[[rows[0][1]]],
                   frames=plan[1].valid + g.valid - t2v.codec.config.overlap, seed=[7 + 1009 * 2],
                   cfg_scale=t2v.guidance, cfg_plausibility=t2v.plausibility)
    assert np.array_equal(again.groups[0][-1], rows[0][2])


def test_cli_writes_the_requested_length(models, tmp_path, capsys):
    import av
    from generation.t2v import main
    out = tmp_path / "dog.mp4"
    assert main(["--prompt", "a dog on a beach", "-o", str(out), "--seconds", "1.5", "--lm", models[1]]) == 0
    err = capsys.readouterr().err
    assert "notice: the shipped models know the procedural world only" in err
    with av.open(str(out)) as f:
        assert sum(1 for _ in f.decode(video=0)) == 9                 # 1.5 s at the tiny codec's 6 fps
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle moves left\n\na blue square on a dots background\n")
    assert main(["--prompts", str(prompts), "-o", str(tmp_path / "many"), "--seconds", "1", "--lm", models[1], "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["0000.mp4", "0001.mp4"]


@pytest.mark.parametrize("args, message", [
    (["--prompt", "  "], "error: empty prompt"),
    (["--prompt", "a red star", "--seconds", "0"], "error: --seconds must be in (0, 600], got 0.0"),
    (["--prompt", "a red star", "--seconds", "nan"], "error: --seconds must be in (0, 600], got nan"),
    (["--prompt", "a red star", "--cfg", "-1"], "error: --cfg must be a positive number, got -1.0"),
    (["--prompt", "a red star", "--lm", "lm-nope"], "error: unknown LM 'lm-nope' (shipped: "),
    (["--prompt", "a red star", "--renderer", "nope"], "error: "),
])
def test_cli_errors_are_one_line_and_write_nothing(models, tmp_path, capsys, args, message):
    from generation.t2v import main
    out = tmp_path / "x.mp4"
    full = args + ["-o", str(out)] + ([] if "--lm" in args else ["--lm", models[1]])
    assert main(full) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_cli_bad_output(models, tmp_path, capsys):
    from generation.t2v import main
    assert main(["--prompt", "a red star", "-o", str(tmp_path / "x.gif"), "--lm", models[1]]) == 1
    assert capsys.readouterr().err.strip() == "error: unsupported output extension '.gif' (use .avi, .mkv, .mov, .mp4, .webm)"
    assert main(["--prompt", "a red star", "-o", str(tmp_path / "no" / "x.mp4"), "--lm", models[1]]) == 1
    assert capsys.readouterr().err.strip() == f"error: output folder does not exist: {tmp_path / 'no'}"
    assert not any(tmp_path.iterdir())


def test_seam_continuity_sees_a_jump_at_a_seam():
    from generation.t2v import seam_continuity
    from semcodec.gop import plan_groups
    plan = plan_groups(20, 8, 2)                       # groups start at 0, 6, 12
    smooth = np.repeat(np.arange(20, dtype=np.uint8)[:, None, None, None], 4, 1).repeat(4, 2).repeat(3, 3)
    r = seam_continuity(smooth, plan, 2)
    assert r["seam"] == r["within"] == 1.0 and r["ratio"] == 1.0
    jump = smooth.astype(np.int32)
    jump[6:] += 50                                     # a cut where group 1 takes over
    r = seam_continuity(np.clip(jump, 0, 255).astype(np.uint8), plan, 2)
    assert r["within"] == 1.0 and r["seam"] == pytest.approx((51 + 5 * 1) / 6) and r["ratio"] > 9


def test_diffusion_renderer_draws_the_groups_conditioned_on_the_prompt(models, tmp_path):
    """--renderer diffusion: each group drawn by the renderer (the prompt as its text), the video of
    the requested length, the same seed the same video, another prompt another video."""
    pytest.importorskip("diffusers")
    from generation.diffusion import RendererModel
    from generation.diffusion.checkpoint import save_renderer
    from generation.diffusion.config import get_preset
    from generation.diffusion.render import load_renderer
    from generation.t2v import TextToVideo
    from test_diffusion import randomised
    base = TextToVideo.load(models[1])
    c = base.codec.config
    H, W = c.frame_size
    cfg = get_preset("tiny").replace(frame_size=(H, W), group=c.group, overlap=c.overlap, feature_dim=c.feature_dim,
                                     feature_grid=(H // c.patch, W // c.patch), codec=c.name,
                                     codec_hash=base.codec.content_hash)
    torch.manual_seed(0)
    save_renderer(randomised(RendererModel(cfg, control=True), std=0.2), tmp_path / "r.safetensors")
    t2v = TextToVideo(base.lm, base.codec, load_renderer(base.codec, str(tmp_path / "r.safetensors"), steps=2),
                      base.guidance)
    a = t2v.generate_many(["a small red circle moves left"], seconds=2.0, seed=3)[0]
    assert a.frames.shape == (12, H, W, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(t2v.generate("a small red circle moves left", seconds=2.0, seed=3), a.frames)
    other = t2v.render(a.groups, 2.0, prompt="a large blue star on a stripes background", seed=3)
    assert not np.array_equal(other, a.frames)                       # the renderer reads the prompt
    assert np.array_equal(t2v.render(a.groups, 2.0, prompt="a small red circle moves left", seed=3), a.frames)
    assert not np.array_equal(t2v.render(a.groups, 2.0, prompt="a small red circle moves left", seed=4), a.frames)
    direct = base.render(a.groups, 2.0)
    assert not np.array_equal(direct, a.frames)
