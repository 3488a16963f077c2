"""The `landiff` structure on diffusers' CogVideoX: a tiny random config saved to disk (no download),
loaded frozen, controlled; and the CogVideoX-2B structure counted on the meta device."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from test_diffusion import one_torch_thread, randomised  # noqa: E402,F401 (fixture)

from generation.diffusion.cogvideox import (COGVIDEOX_2B, CogVideoXControl, ControlledCogVideoX,  # noqa: E402
                                            decode_latent, encode_video, landiff_parameters, load_cogvideox)
from generation.diffusion.sample import sample_latent  # noqa: E402

TINY = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=8,
            text_embed_dim=16, num_layers=4, sample_width=4, sample_height=4, sample_frames=5, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=6)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("cogvideox")
    randomised(CogVideoXTransformer3DModel(**TINY), std=0.1).save_pretrained(root / "transformer")
    AutoencoderKLCogVideoX(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
                           down_block_types=("CogVideoXDownBlock3D",) * 4,
                           up_block_types=("CogVideoXUpBlock3D",) * 4).save_pretrained(root / "vae")
    return root


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 2, 4, 4, 4, generator=g), torch.tensor([700]), torch.randn(1, 6, 16, generator=g),
            torch.randn(1, 3, 2, 2, 12, generator=g))


def test_loads_frozen_and_matches_diffusers(folder):
    tr, vae = load_cogvideox(folder)
    assert not any(p.requires_grad for p in [*tr.parameters(), *vae.parameters()]) and not tr.training
    lat, t, text, _ = _inputs()
    with torch.no_grad():
        ref = tr(lat, text, t).sample
        assert ref.abs().sum() > 0
        assert torch.equal(ControlledCogVideoX(tr)(lat, t, text), ref)      # our block loop is diffusers'


def test_fresh_control_branch_changes_nothing(folder):
    tr, _ = load_cogvideox(folder)
    ctl = CogVideoXControl(tr, feature_dim=12, channels=16, res_blocks=1, up_out=8)
    assert ctl.layers == 2 and all(p.requires_grad for p in ctl.parameters())
    assert all(torch.equal(a, b) for a, b in zip(ctl.blocks[1].parameters(), tr.transformer_blocks[1].parameters()))
    m = ControlledCogVideoX(tr, ctl)
    lat, t, text, feats = _inputs()
    with torch.no_grad():
        sem = m.semantic(feats, frames=2)
        assert sem.shape == lat.shape and not sem.any()
        ref = tr(lat, text, t).sample
        assert torch.equal(m(lat, t, text, sem=sem), ref)
        for lin in ctl.zero:
            lin.weight.normal_(0, 0.1)
        assert not torch.allclose(m(lat, t, text, sem=sem), ref)
    # one training step moves the branch, never the frozen transformer
    before = {k: v.clone() for k, v in tr.state_dict().items()}
    opt = torch.optim.SGD(ctl.parameters(), lr=0.1)
    m(lat, t, text, sem=m.semantic(feats, 2)).square().mean().backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in tr.state_dict().items())
    assert all(p.grad is None for p in tr.parameters())


def test_sampling_and_vae(folder):
    tr, vae = load_cogvideox(folder)
    m = ControlledCogVideoX(tr, CogVideoXControl(tr, feature_dim=12, channels=16, res_blocks=1, up_out=8)).eval()
    lat, _, text, feats = _inputs()
    sem = m.semantic(feats, 2)
    a, b = (sample_latent(m, lat.shape, text, None, sem, steps=3, generator=torch.Generator().manual_seed(3))
            for _ in range(2))
    assert torch.equal(a, b) and torch.isfinite(a).all()
    video = torch.rand(1, 5, 16, 16, 3) * 2 - 1
    with torch.no_grad():
        z = encode_video(vae, video)
        assert z.shape == (1, 2, 4, 2, 2)
        out = decode_latent(vae, z)
    assert out.shape[0] == 1 and out.shape[2:] == (16, 16, 3) and out.abs().max() <= 1


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_cogvideox(tmp_path)


def test_landiff_control_branch_is_1b_on_the_meta_device():
    n = landiff_parameters()
    assert n["backbone"] == pytest.approx(1.69e9, rel=0.01)          # CogVideoX-2B
    assert n["control_layers"] == 15 == COGVIDEOX_2B["num_layers"] // 2
    assert n["zero_linears"] == 15 * 1920 * 1920
    assert 0.95e9 <= n["control_trainable"] <= 1.05e9                 # the paper: ~1B trainable
    assert n["control_trainable"] == n["control_blocks"] + n["zero_linears"] + n["upsampler"] + n["embeddings"]
