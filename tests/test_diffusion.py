"""The renderer's model (generation.diffusion): pixel latent, backbone, control branch, semantic
upsampler, schedulers and sampling. Also the shared tiny setup of the other test_diffusion files."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from generation.diffusion.config import RendererConfig, get_preset  # noqa: E402
from generation.diffusion.control import RendererModel  # noqa: E402
from generation.diffusion.latent import from_latent, to_latent  # noqa: E402
from generation.diffusion.sample import continuity, null_text, pad_text, prefix_keep, sample_latent  # noqa: E402
from generation.diffusion.schedule import from_x0, guidance_scale, make_scheduler, to_x0  # noqa: E402

_BUILT: dict[str, Path] = {}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_setup(tmp_path_factory) -> dict[str, Path]:
    """Once per session: a jittered tiny codec, 4 captioned clips (12 frames at 8 fps, 32 x 48: three
    groups each), their pairs, a stage-1 backbone (6 steps) and a stage-2 renderer (4 steps)."""
    if not _BUILT:
        from semcodec.data import synth
        from test_dataset import tiny_checkpoint
        from generation.diffusion.data import build_pairs
        from generation.diffusion.train import main as train_main
        root = tmp_path_factory.mktemp("diffusion")
        codec = tiny_checkpoint(root / "tiny.safetensors", 0)
        synth.write_clips(4, root / "clips", frames=12, size=(32, 48), fps=8, seed=0)
        build_pairs([root / "clips"], root / "pairs", codec)
        common = ["--data", str(root / "pairs"), "--preset", "tiny", "--batch", "2", "--log-every", "1", "--lr", "3e-3",
                  "--warmup", "0"]
        train_main(common + ["--out", str(root / "s1"), "--steps", "6"])
        train_main(common + ["--out", str(root / "s2"), "--steps", "4", "--stage", "2",
                             "--backbone", str(root / "s1" / "final.safetensors")])
        _BUILT.update(root=root, codec=Path(codec), clips=root / "clips", pairs=root / "pairs",
                      stage1=root / "s1" / "final.safetensors", stage2=root / "s2" / "final.safetensors")
    return _BUILT


def randomised(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Every parameter redrawn (a fresh DiT has zero gates and computes nothing worth comparing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def inputs(cfg: RendererConfig, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(batch, cfg.latent_frames(cfg.group), cfg.latent_channels, *cfg.latent_grid, generator=g)
    text, mask = pad_text([torch.randn(5, cfg.text_dim, generator=g), torch.randn(3, cfg.text_dim, generator=g)][:batch],
                          cfg.text_dim)
    feats = torch.randn(batch, cfg.group, *cfg.feature_grid, cfg.feature_dim, generator=g)
    return lat, torch.tensor([10, 900][:batch]), text, mask, feats


# ------------------------------------------------------------------------------------ latent
@pytest.mark.parametrize("s,st,T", [(8, 2, 8), (8, 2, 7), (4, 1, 3)])
def test_pixel_latent_round_trip(s, st, T):
    v = torch.rand(2, T, 16, 24, 3) * 2 - 1
    lat = to_latent(v, s, st)
    assert lat.shape == (2, math.ceil(T / st), 3 * st * s * s, 16 // s, 24 // s)
    assert torch.equal(from_latent(lat, s, st, T), v)
    # a latent cell holds exactly its pixels: cell (0, 0) of latent frame 0 is frames 0..st-1, pixels s x s
    assert torch.equal(lat[0, 0, :, 0, 0], v[0, :st, :s, :s].reshape(-1)) if T >= st else True


def test_prefix_keep_marks_the_prefix_frames_only():
    cfg = get_preset("world")                                      # groups of 16 frames, 4 per latent frame
    keep = prefix_keep(cfg, 16, 4)
    assert keep.shape == (1, 4, 768, 16, 24)
    assert keep[:, 0].all() and not keep[:, 1:].any()            # 4 frames = latent frame 0
    three = prefix_keep(cfg, 16, cfg.overlap)                      # the world's overlap, 3 frames: 3/4 of its channels
    assert three[:, 0].float().mean().item() == 0.75 and not three[:, 1:].any()
    m = torch.zeros(1, 16, 128, 192, 3)
    m[:, :3] = 1
    assert torch.equal(three, to_latent(m, 8, 4) > 0)


# ------------------------------------------------------------------------------------ model
def test_fresh_backbone_is_zero_and_presets_build():
    cfg = get_preset("tiny")
    m = RendererModel(cfg.replace(parameterization="direct"))
    lat, t, text, mask, _ = inputs(cfg)
    assert torch.equal(m(lat, t, text, mask), torch.zeros_like(lat))     # adaLN-zero + zero output layer
    w = RendererModel(get_preset("world"), control=True)
    assert 4e6 < w.backbone.n_params() < 6e6 and len(w.control.blocks) == 3


@pytest.mark.parametrize("param", ["x0", "direct"])
def test_zero_init_control_leaves_backbone_output_unchanged(param):
    cfg = get_preset("tiny").replace(parameterization=param)
    m = randomised(RendererModel(cfg)).eval()
    lat, t, text, mask, feats = inputs(cfg)
    with torch.no_grad():
        before = m(lat, t, text, mask)
        m.attach_control()
        sem = m.semantic(feats)
        assert torch.equal(sem, torch.zeros_like(sem))               # the zero conv
        after = m(lat, t, text, mask, sem)
        assert torch.equal(after, before)
        # the branch does compute something: residuals before the zero linears are not zero
        vid, *_ = m.control.embed(lat, t, text, mask)
        assert vid.abs().sum() > 0
        # once the zero layers move, the output moves: the test can fail
        for lin in m.control.zero:
            lin.weight.normal_(0, 0.05)
        assert not torch.allclose(m(lat, t, text, mask, sem), before)
        m.upsampler.zero_conv.weight.normal_(0, 0.05)
        assert m.semantic(feats).abs().sum() > 0


def test_control_branch_copies_the_first_layers_and_freezing():
    cfg = get_preset("world").replace(layers=4, control_layers=2)
    m = randomised(RendererModel(cfg))
    m.attach_control()
    own, branch = m.backbone.state_dict(), m.control.state_dict()
    copied = [k for k in branch if not k.startswith("zero.")]
    assert {k.split(".")[1] for k in copied if k.startswith("blocks.")} == {"0", "1"}
    assert all(torch.equal(branch[k], own[k]) for k in copied)
    assert all(lin.weight.shape == (cfg.width, cfg.width) and lin.bias is None for lin in m.control.zero)
    m.freeze_backbone()
    assert not any(p.requires_grad for p in m.backbone.parameters())
    assert all(p.requires_grad for p in m.control.parameters()) and all(p.requires_grad for p in m.upsampler.parameters())
    assert m.n_params(trainable=True) == sum(p.numel() for p in [*m.control.parameters(), *m.upsampler.parameters()])


def test_text_padding_is_masked():
    cfg = get_preset("tiny")
    m = randomised(RendererModel(cfg)).eval()
    lat, t, _, _, _ = inputs(cfg, batch=1)
    s = torch.randn(4, cfg.text_dim)
    a = m(lat, t, *pad_text([s], cfg.text_dim))
    text, mask = pad_text([s, torch.randn(9, cfg.text_dim)], cfg.text_dim)      # padded to 9 in a batch
    b = m(lat.expand(2, -1, -1, -1, -1), t.expand(2), text, mask)[:1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------ schedule
def test_scheduler_is_the_releases():
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler
    cfg = get_preset("world")
    dpm, ddim = make_scheduler(cfg), make_scheduler(cfg, "ddim")
    assert isinstance(dpm, CogVideoXDPMScheduler) and isinstance(ddim, CogVideoXDDIMScheduler)
    assert dpm.config.prediction_type == "v_prediction" and dpm.config.snr_shift_scale == 3.0
    assert dpm.alphas_cumprod[-1].item() == 0.0                 # zero terminal SNR
    assert torch.equal(dpm.alphas_cumprod, ddim.alphas_cumprod)
    dpm.set_timesteps(20)
    assert dpm.timesteps[0].item() == 999 and len(dpm.timesteps) == 20 and dpm.timesteps[-1].item() == 49
    lin = make_scheduler(cfg.replace(spacing="linspace"), "ddim")
    lin.set_timesteps(20)
    assert lin.timesteps[0].item() == 999 and lin.timesteps[-1].item() == 0 and len(lin.timesteps) == 20


def test_dynamic_guidance():
    assert guidance_scale(0, 50, 6.0) == 1.0
    for i in (10, 25, 49):
        assert guidance_scale(i, 50, 6.0) == pytest.approx(1 + 6 * (1 - math.cos(math.pi * (i / 50) ** 5)) / 2)
    assert guidance_scale(49, 50, 6.0) > 6.5 and guidance_scale(3, 50, 6.0, "constant") == 6.0


@pytest.mark.parametrize("kind", ["v_prediction", "epsilon", "sample"])
def test_prediction_conversions_invert(kind):
    g = torch.Generator().manual_seed(0)
    x0, x_t = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    ab = torch.tensor([0.0, 0.5, 0.99])
    pred = from_x0(x0, x_t, ab, kind)
    ok = slice(None) if kind != "epsilon" else slice(1, None)        # epsilon cannot say x0 at zero SNR
    torch.testing.assert_close(to_x0(pred, x_t, ab, kind)[ok], x0[ok], atol=1e-4, rtol=1e-4)
    if kind == "v_prediction":      # v = sqrt(ab) eps - sqrt(1 - ab) x0 with eps from x_t
        eps = (x_t - ab.sqrt()[:, None] * x0) / (1 - ab).sqrt()[:, None]
        torch.testing.assert_close(pred, ab.sqrt()[:, None] * eps - (1 - ab).sqrt()[:, None] * x0)


@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
@pytest.mark.parametrize("sampler", ["dpm", "ddim"])
def test_same_seed_same_sample(sampler, spacing):
    cfg = get_preset("tiny")
    m = randomised(RendererModel(cfg, control=True), std=0.02).eval()
    lat, t, text, mask, feats = inputs(cfg, batch=1)
    sem = m.semantic(feats)
    kw = dict(steps=4, sampler=sampler, guidance=3.0, uncond=null_text(1, cfg.text_dim), spacing=spacing)
    calls = []
    a = sample_latent(m, lat.shape, text, mask, sem, generator=torch.Generator().manual_seed(7),
                      progress=lambda: calls.append(1), **kw)
    b = sample_latent(m, lat.shape, text, mask, sem, generator=torch.Generator().manual_seed(7), **kw)
    c = sample_latent(m, lat.shape, text, mask, sem, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c) and len(calls) == 4
    assert torch.isfinite(a).all()


@pytest.mark.parametrize("sampler", ["dpm", "ddim"])
def test_start_from_a_noised_init(sampler):
    """strength < 1 (SDEdit): the first model call sees ``init`` noised by the scheduler to the step
    ``steps`` before the end of a ``steps / strength`` schedule; ``steps`` model calls; the same seed
    the same sample."""
    cfg = get_preset("tiny")
    m = randomised(RendererModel(cfg), std=0.02).eval()
    seen = []
    m.register_forward_pre_hook(lambda mod, args: seen.append((args[0].clone(), args[1].clone())))
    lat, _, text, mask, _ = inputs(cfg, batch=1)
    init = torch.randn(lat.shape, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    kw = dict(steps=3, sampler=sampler, init=init, strength=0.25)
    a = sample_latent(m, lat.shape, text, mask, generator=torch.Generator().manual_seed(1), **kw)
    first_x, first_t = seen[0]
    sched = make_scheduler(cfg, sampler)
    sched.set_timesteps(12)
    t = sched.timesteps[12 - 3]
    noise = torch.randn(lat.shape, generator=torch.Generator().manual_seed(1))
    assert len(seen) == 3 and int(first_t[0]) == int(t)
    assert torch.allclose(first_x, sched.add_noise(init, noise, t[None]), atol=1e-6)
    b = sample_latent(m, lat.shape, text, mask, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\], got 0"):
        sample_latent(m, lat.shape, text, mask, steps=3, generator=torch.Generator(), init=init, strength=0.0)


def test_clean_prefix_is_kept():
    cfg = get_preset("tiny")
    m = randomised(RendererModel(cfg), std=0.02).eval()
    lat, _, text, mask, _ = inputs(cfg, batch=1)
    keep = prefix_keep(cfg, cfg.group, 1)
    out = sample_latent(m, lat.shape, text, mask, steps=3, generator=torch.Generator().manual_seed(0),
                        prefix=lat, keep=keep)
    assert torch.equal(out[keep], lat[keep]) and not torch.equal(out[~keep], lat[~keep])


def test_continuity_measure():
    f = np.zeros((9, 2, 2, 3))
    f[:, 0, 0, 0] = np.arange(9) * 4.0           # a steady ramp: each step differs by 4 / 12
    f[5:, 0, 0, 0] += 12.0                       # a seam before frame 5
    r = continuity(f, [5])
    assert r["within"] == pytest.approx(4 / 12) and r["boundary"] == pytest.approx(16 / 12)
    assert r["ratio"] == pytest.approx(4.0) and r["boundaries"] == 1
    assert continuity(np.repeat(f[:1], 4, 0) + np.arange(4)[:, None, None, None], [2])["ratio"] == pytest.approx(1.0)
