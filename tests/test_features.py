"""Feature spaces: pixels (exact inverse), the conv stem/head, a pretrained backbone from a path."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from semcodec import VideoTokenizer, get_preset
from semcodec.features import ConvFeatures, PixelPatches, ViTBackbone, ViTConfig, patchify, unpatchify
from semcodec.features.backbone import PretrainedBackbone, load_backbone, save_backbone
from semcodec.features.motion import block_flow, compensate, warp


@settings(max_examples=40, deadline=None)
@given(p=st.sampled_from([1, 2, 4, 8, 16]), t=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3))
def test_patchify_is_an_exact_inverse(p, t, h, w):
    x = torch.rand(2, t, h * p, w * p, 3)
    f = patchify(x, p)
    assert f.shape == (2, t, h, w, p * p * 3)
    assert torch.equal(unpatchify(f, p), x)
    assert torch.equal(f[0, 0, 0, 0].view(p, p, 3), x[0, 0, :p, :p])      # a cell is its own patch


def test_pixel_space_rejects_bad_sizes():
    with pytest.raises(ValueError, match=r"frame size \(20, 32\) is not a multiple of the patch 16"):
        PixelPatches(16).embed(torch.zeros(1, 1, 20, 32, 3))


@pytest.mark.parametrize("name", ["tiny", "s128"])
def test_conv_features_shapes_and_gradients(name):
    cfg = get_preset(name)
    m = ConvFeatures(cfg.patch, cfg.feature_dim, cfg.stem_channels)
    H, W = cfg.frame_size
    x = torch.rand(1, 2, H, W + cfg.patch, 3) * 2 - 1          # any multiple of the patch
    f = m.embed(x)
    assert f.shape == (1, 2, H // cfg.patch, W // cfg.patch + 1, cfg.feature_dim)
    y = m.render(f)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_warp_moves_a_picture_by_whole_and_half_pixels():
    img = torch.rand(2, 6, 9, 3)
    flow = torch.zeros(2, 6, 9, 2)
    assert torch.allclose(warp(img, flow), img, atol=1e-6)
    flow[..., 0] = 2                          # each place takes the pixel 2 to its right
    assert torch.allclose(warp(img, flow)[:, :, :7], img[:, :, 2:], atol=1e-6)
    assert torch.allclose(warp(img, flow)[:, :, 7:], img[:, :, 8:9].expand(-1, -1, 2, -1), atol=1e-6)  # border
    flow[..., 0], flow[..., 1] = 0, -0.5      # half a pixel up: the mean of two rows
    assert torch.allclose(warp(img, flow)[:, 1:], (img[:, 1:] + img[:, :-1]) / 2, atol=1e-6)


def test_block_flow_finds_a_moved_square():
    video = torch.full((1, 3, 32, 48, 3), -0.5)
    video[0, 0, 8:16, 8:16] = 0.8
    video[0, 1, 8:16, 11:19] = 0.8            # 3 px right
    video[0, 2, 10:18, 11:19] = 0.8           # then 2 px down
    f = block_flow(video)
    assert f.shape == (1, 3, 8, 12, 2) and not f[:, 0].any()
    # blocks on the square's edges look 3 px left (resp. 2 px up) in the frame before; flat blocks stay still
    assert torch.equal(f[0, 1, 2:4, 2, 0], torch.tensor([-3.0, -3.0])) and torch.equal(f[0, 1, 2:4, 4, 0], torch.tensor([-3.0, -3.0]))
    assert torch.equal(f[0, 2, 2, 2:5, 1], torch.tensor([-2.0, -2.0, -2.0]))
    assert not f[0, 1, :, 6:].any() and not f[0, 1, 6:].any()


def test_moving_flow_averages_the_moving_blocks_of_each_part():
    from semcodec.features.motion import moving_flow
    flow = torch.zeros(1, 2, 4, 6, 2)
    flow[0, 1, 0, 0] = torch.tensor([2.0, 0.0])      # part (0, 0): one block moves 2 px, one -1 px in x
    flow[0, 1, 1, 1] = torch.tensor([-1.0, 0.0])
    flow[0, 1, 3, 5] = torch.tensor([0.0, 3.0])      # part (1, 1): one block moves 3 px down
    out = moving_flow(flow, (2, 2))
    assert out.shape == (1, 2, 2, 2, 2) and not out[:, 0].any()
    assert torch.allclose(out[0, 1, 0, 0], torch.tensor([0.5, 0.0])) and torch.allclose(out[0, 1, 1, 1], torch.tensor([0.0, 3.0]))
    assert not out[0, 1, 0, 1].any() and not out[0, 1, 1, 0].any()


def test_motion_compensation_chains_frames():
    torch.manual_seed(0)
    rgb = torch.rand(1, 4, 5, 7, 3)
    still = torch.zeros(1, 4, 5, 7, 2)
    assert torch.equal(compensate(rgb, still, torch.zeros(1, 4, 5, 7, 1)), rgb)       # weight 0: own pictures
    held = compensate(rgb, still, torch.ones(1, 4, 5, 7, 1))                           # weight 1: frame 0 held
    assert torch.allclose(held, rgb[:, :1].expand(-1, 4, -1, -1, -1))
    moving = still.clone()
    moving[..., 0] = -1                       # frame t = frame t-1 moved one pixel right
    out = compensate(rgb, moving, torch.ones(1, 4, 5, 7, 1))
    assert torch.allclose(out[:, 3, :, 3:], rgb[:, 0, :, :4], atol=1e-6)


def test_pframe_warp_head_starts_near_the_plain_head_and_learns_its_flow():
    cfg = get_preset("tiny").replace(name="tiny-warp", pframe_warp=True)
    torch.manual_seed(0)
    m = VideoTokenizer(cfg)
    plain = VideoTokenizer(get_preset("tiny"))
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if "motion" not in k and "flow_head" not in k})
    video = torch.rand(1, cfg.group, *cfg.frame_size, 3) * 2 - 1
    out, ref = m(video), plain(video)
    assert torch.equal(out["video"][:, 0], ref["video"][:, 0])                       # the IFrame is untouched
    assert not torch.equal(out["video"][:, 1:], ref["video"][:, 1:])
    assert "flow_loss" in out and "flow_loss" not in ref
    (out["recon_loss"] + out["flow_loss"]).backward()
    for lin in (m.features.motion, m.tokenizer.decoder.flow_head, m.tokenizer.encoder.motion_proj):
        assert lin.weight.grad.abs().sum() > 0          # the whole motion path learns from the first step
    with torch.no_grad():                               # decoding reads the P tokens' motion too
        ids = m.encode(video)
        assert m.tokenizer.decode_flow(ids).shape == (1, cfg.group, 2, 2, 2)
        assert torch.allclose(m.decode(ids, cfg.frame_size), out["video"].clamp(-1, 1), atol=1e-4)
    with pytest.raises(Exception, match="pframe_warp needs features='conv'"):
        get_preset("tiny").replace(name="x", features="pixels", feature_dim=768, pframe_warp=True)


def test_pretrained_backbone_from_a_local_path(tmp_path):
    """A Theia-like ViT saved to disk (small, random) becomes the feature space of a tokenizer."""
    torch.manual_seed(0)
    vit = ViTBackbone(ViTConfig(width=48, depth=2, heads=4, patch=16, pos_grid=(4, 4)))
    path = tmp_path / "vit.safetensors"
    save_backbone(vit, path)
    again = load_backbone(path)
    x = torch.rand(2, 3, 64, 96)
    assert torch.allclose(again.eval()(x), vit.eval()(x), atol=1e-6)

    cfg = get_preset("tiny").replace(name="tiny-backbone", features="backbone", feature_dim=48, frame_size=(64, 96))
    assert "backbone_path" not in cfg.to_dict()            # a path of this machine is never part of a config
    model = VideoTokenizer(cfg, backbone=str(path)).eval()
    video = torch.rand(1, 3, 64, 96, 3) * 2 - 1
    with torch.no_grad():
        feats = model.features.embed(video)
        assert feats.shape == (1, 3, 4, 6, 48)
        ids = model.encode(video)
        assert ids.shape == (1, cfg.tokens_for_frames(3))
        rec = model.tokenizer.decode(ids, (4, 6))
        assert rec.shape == feats.shape
        out = model(video)
    assert "video" not in out and out["recon_loss"] > 0                  # loss is on features
    assert not any(k.startswith("features.") for k in model.state_dict())  # the backbone is not ours to ship
    with pytest.raises(NotImplementedError, match="PretrainedBackbone cannot render features back to pixels"):
        model.decode(ids, (64, 96))


def test_backbone_errors(tmp_path):
    from semcodec import SemcodecError
    with pytest.raises(SemcodecError, match=r"this model's features come from a pretrained backbone: give its "
                                            r"local folder \(--backbone DIR, or backbone=DIR\)"):
        PretrainedBackbone(None, 16, 768).embed(torch.zeros(1, 1, 16, 16, 3))
    with pytest.raises(FileNotFoundError, match="backbone weights not found"):
        PretrainedBackbone(str(tmp_path / "none.safetensors"), 16, 768).embed(torch.zeros(1, 1, 16, 16, 3))
