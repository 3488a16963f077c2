"""The tokenizer model: sizes, masks (flex block masks vs the dense reference), attention paths,
shapes for short groups and batches, and a CPU overfit run."""
import numpy as np
import pytest
import torch

from semcodec import SemanticTokenizer, VideoTokenizer, get_preset
from semcodec.model.masks import TokenLayout, dense_reference, get_mask, mask_mod_for


def layout_of(name, frames=None, grid=None):
    c = get_preset(name)
    return TokenLayout(frames or c.group, grid or c.grid, c.iframe_tokens, c.pframe_tokens)


class TestLandiffPreset:
    def test_parameter_counts_and_tokens(self):
        cfg = get_preset("landiff")
        with torch.device("meta"):
            m = SemanticTokenizer(cfg)
        n_enc = sum(p.numel() for p in m.encoder.parameters())
        n_dec = sum(p.numel() for p in m.decoder.parameters())
        assert abs(n_enc - 85e6) / 85e6 < 0.05, n_enc
        assert abs(n_dec - 85e6) / 85e6 < 0.05, n_dec
        assert m.tokens_per_group == 1218 == 330 + 12 * 74
        assert cfg.grid == (30, 45) and cfg.feature_dim == 768 and cfg.codebook_size == 2048
        assert cfg.codebook_dim == 16 and cfg.enc_layers == cfg.dec_layers == 12

    def test_sequence_length(self):
        assert layout_of("landiff").length == 13 * 1350 + 1218


@pytest.mark.parametrize("role", ["encoder", "decoder"])
class TestMasks:
    @pytest.mark.parametrize("name,frames", [("tiny", None), ("tiny", 1), ("tiny", 3), ("s128", None), ("s128", 2)])
    def test_mask_mod_equals_reference(self, name, frames, role):
        lay = layout_of(name, frames)
        ref = dense_reference(lay, role)
        assert torch.equal(get_mask(lay, role).dense("cpu"), ref)

    @pytest.mark.parametrize("name", ["tiny", "s128", "landiff"])
    def test_block_mask_equals_reference(self, name, role):
        """Block-level: a block is skipped iff the reference has no True in it, and a block marked
        full (mask_mod not evaluated there) is all True; partial blocks carry the element rule,
        which the test above checks."""
        lay = layout_of(name)
        ref = dense_reference(lay, role)
        bm = get_mask(lay, role).block_mask("cpu")
        B = bm.BLOCK_SIZE[0]
        L = lay.length
        nb = -(-L // B)
        pad = torch.zeros(nb * B, nb * B, dtype=torch.bool)
        pad[:L, :L] = ref
        valid = torch.zeros(nb * B, nb * B, dtype=torch.bool)
        valid[:L, :L] = True
        blocks = pad.view(nb, B, nb, B)
        any_true = blocks.any(dim=(1, 3))
        all_true = (blocks | ~valid.view(nb, B, nb, B)).all(dim=(1, 3)) & valid.view(nb, B, nb, B).any(dim=(1, 3))
        occupancy = bm.to_dense()[0, 0].bool()
        assert torch.equal(occupancy, any_true)
        full = torch.zeros(nb, nb, dtype=torch.bool)
        if bm.full_kv_num_blocks is not None:
            for i in range(nb):
                n = int(bm.full_kv_num_blocks[0, 0, i])
                full[i, bm.full_kv_indices[0, 0, i, :n].long()] = True
        assert not (full & ~all_true).any()

    def test_rule_spot_checks(self, role):
        lay = TokenLayout(3, (2, 2), 2, 2)       # 12 visual, 2 I, 4 P
        m = dense_reference(lay, role)
        V = 12
        assert m[4, 3] and not m[3, 4]                       # frame 1 sees frame 0, not the reverse
        assert not m[V, 4] and m[V, 3]                        # an IFrame query sees frame 0 only
        assert m[V + 1, V] and not m[V, V + 1]                # IFrame queries are causal
        assert m[V + 2, 7] and not m[V + 2, 8]                # PFrame query of frame 1 sees frames <= 1
        assert m[V + 4, V + 3] and m[V + 4, V]                # ... and every earlier query
        if role == "encoder":
            assert not m[0, V] and not m[5, V + 2]            # visual tokens see no query
        else:
            assert m[0, V] and m[0, V + 1] and not m[0, V + 2]  # frame 0 positions: IFrame tokens only
            assert m[5, V + 2] and m[5, V + 3] and not m[5, V + 4]  # frame 1: + PFrame tokens of frame 1


@pytest.mark.parametrize("name", ["tiny", "s128"])
class TestTokenizer:
    def test_flex_equals_sdpa(self, name):
        cfg = get_preset(name)
        torch.manual_seed(0)
        m = SemanticTokenizer(cfg).eval()
        feats = torch.randn(1, cfg.group, *cfg.grid, cfg.feature_dim)
        with torch.no_grad():
            m.set_attention_backend("sdpa")
            z_ref = m.encoder(feats)
            idx = m.encode(feats)
            rec_ref = m.decode(idx)
            m.set_attention_backend("flex")
            z = m.encoder(feats)
            rec = m.decode(idx)
        assert (z - z_ref).abs().max() < 1e-5
        assert (rec - rec_ref).abs().max() < 1e-5

    @pytest.mark.parametrize("frames", [1, 2])
    def test_short_groups_and_batches(self, name, frames):
        cfg = get_preset(name)
        m = SemanticTokenizer(cfg).eval()
        feats = torch.randn(3, frames, *cfg.grid, cfg.feature_dim)
        with torch.no_grad():
            idx = m.encode(feats)
            assert idx.shape == (3, cfg.tokens_for_frames(frames)) and idx.dtype == torch.long
            assert int(idx.min()) >= 0 and int(idx.max()) < cfg.codebook_size
            rec = m.decode(idx)
            assert rec.shape == feats.shape
            # batching does not mix groups: item 1 alone decodes the same
            assert torch.allclose(m.decode(idx[1:2]), rec[1:2], atol=1e-5)

    def test_causal_in_time(self, name):
        """Tokens of frames < k do not depend on frame k (the masks at work)."""
        cfg = get_preset(name)
        torch.manual_seed(1)
        m = SemanticTokenizer(cfg).eval()
        feats = torch.randn(1, 3, *cfg.grid, cfg.feature_dim)
        other = feats.clone()
        other[:, 2] = torch.randn_like(other[:, 2])
        with torch.no_grad():
            a, b = m.encoder(feats), m.encoder(other)
        n = cfg.tokens_for_frames(2)
        assert torch.allclose(a[:, :n], b[:, :n], atol=1e-5)
        assert not torch.allclose(a[:, n:], b[:, n:], atol=1e-3)


def test_bad_token_count_is_rejected():
    m = SemanticTokenizer(get_preset("tiny"))
    with pytest.raises(ValueError, match="is not 8 \\+ k x 4"):
        m.decode(torch.zeros(1, 9, dtype=torch.long))


def test_tiny_overfits_one_clip():
    """The small model overfits one fixed clip on CPU: loss falls 10x within a few hundred steps."""
    from semcodec.data import synth
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    model = VideoTokenizer(cfg)
    scene = synth.random_scene(5)
    clip = torch.from_numpy(synth.render(scene, cfg.group, cfg.frame_size, cfg.fps)).float()[None] / 127.5 - 1
    with torch.no_grad():
        model.tokenizer.quantizer.init_from(model.tokenizer.encoder(model.features.embed(clip)))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for step in range(300):
        out = model(clip)
        loss = out["recon_loss"] + out["commit_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < first / 10, (first, last)


@pytest.mark.parametrize("grid", [(8, 12), (8, 19), (30, 45)])
def test_grid_query_positions_cover_their_frame(grid):
    lay = TokenLayout(3, grid, 224, 128)
    pos = lay.positions("grid")
    q = pos[lay.n_visual:]
    frames = [q[:224], q[224:352], q[352:]]
    for k, f in enumerate(frames):
        assert torch.all(f[:, 0] == k)                                     # at their frame's time
        assert f[:, 1].min() >= -0.5 and f[:, 1].max() <= grid[0] - 0.5   # inside the grid
        assert f[:, 2].min() >= -0.5 and f[:, 2].max() <= grid[1] - 0.5
        assert len(torch.unique(f[:, 1:], dim=0)) == len(f)               # no two queries share a place
    diag = lay.positions("diagonal")[lay.n_visual:]
    assert torch.equal(diag[:, 0], torch.arange(lay.n_latent).float()) and torch.equal(diag[:, 0], diag[:, 2])


def test_lattice_skip_places_queries_where_they_sit():
    """grid_to_lattice samples the feature at each query's RoPE place; lattice_to_grid puts the
    latents back: a field that is linear in (h, w) survives the round trip at interior cells."""
    from semcodec.model.tokenizer import grid_to_lattice, lattice_to_grid
    cfg = get_preset("s128")
    T, grid = 3, (8, 12)
    hh, ww = torch.meshgrid(torch.arange(8.0), torch.arange(12.0), indexing="ij")
    field = torch.stack([hh, ww], -1)[None, None].expand(1, T, 8, 12, 2).contiguous()
    q = grid_to_lattice(field, cfg)[0]
    lay = TokenLayout(T, grid, cfg.iframe_tokens, cfg.pframe_tokens)
    pos = lay.positions("grid")[lay.n_visual:, 1:]
    inside = (pos[:, 0] > 0.5) & (pos[:, 0] < 6.5) & (pos[:, 1] > 0.5) & (pos[:, 1] < 10.5)
    assert torch.allclose(q[inside], pos[inside], atol=0.05)
    back = lattice_to_grid(q[None], T, grid, cfg)[0]
    assert back.shape == (T, 8, 12, 2)
    assert torch.allclose(back[:, 1:-1, 1:-1], field[0, :, 1:-1, 1:-1], atol=0.1)


def test_caches_built_under_inference_mode_still_train():
    """RoPE tables and masks are cached per layout; the first use may be a codec call under
    torch.inference_mode, and training on the same layout afterwards must still work."""
    cfg = get_preset("tiny").replace(name="tiny-cache", group=3)
    m = VideoTokenizer(cfg)
    x = torch.rand(1, 3, *cfg.frame_size, 3) * 2 - 1
    with torch.inference_mode():
        m.encode(x)
    out = m(x)
    (out["recon_loss"] + out["commit_loss"]).backward()
    assert m.tokenizer.encoder.in_proj.weight.grad is not None


@pytest.mark.parametrize("iframe_skip", [False, True])
def test_iframe_skip_carries_the_iframe_into_pframes(iframe_skip):
    """With no attention blocks a P-frame's picture depends on the IFrame tokens only through
    ``iframe_skip`` (its positions start from the IFrame latents); the IFrame never depends on P."""
    torch.manual_seed(0)
    cfg = get_preset("tiny").replace(enc_layers=0, dec_layers=0, iframe_skip=iframe_skip)
    model = VideoTokenizer(cfg).eval()
    ids = torch.randint(0, cfg.codebook_size, (1, cfg.tokens_for_frames(3)))
    other = ids.clone()
    other[:, :cfg.iframe_tokens] = (other[:, :cfg.iframe_tokens] + 1) % cfg.codebook_size
    with torch.no_grad():
        a, b = model.decode(ids, (32, 48)), model.decode(other, (32, 48))
    assert not torch.equal(a[:, 0], b[:, 0])
    assert torch.equal(a[:, 1:], b[:, 1:]) != iframe_skip
    p = ids.clone()
    p[:, cfg.iframe_tokens:] = (p[:, cfg.iframe_tokens:] + 1) % cfg.codebook_size
    with torch.no_grad():
        assert torch.equal(model.decode(p, (32, 48))[:, 0], a[:, 0])


def test_iframe_skip_needs_the_lattice():
    with pytest.raises(ValueError, match="iframe_skip needs lattice_skip"):
        get_preset("tiny").replace(iframe_skip=True, lattice_skip=False)
