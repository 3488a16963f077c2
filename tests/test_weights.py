"""Real weights: pretrained backbones in the Hugging Face layouts (ViT, DeiT, Theia) and the
authors' released tokenizer checkpoint, each tested with a tiny random model saved in that exact
layout and compared with a reference forward written here from the layout alone (within 1e-5)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

import semcodec
from semcodec import get_preset
from semcodec.features.backbone import PretrainedBackbone

tf = pytest.importorskip("transformers")          # the optional extra semcodec[backbone]
TOL = 1e-5


def _randomize(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))


def _read(path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


# ------------------------------------------------------------------------------- reference ViT
def reference_vit(s: dict, x: torch.Tensor, heads: int, prefix_tokens: int, eps: float, p: str = "") -> torch.Tensor:
    """The classic Hugging Face ViT / DeiT layout, forward written out: ``x`` N x 3 x H x W ->
    ``N x H/16 x W/16 x C`` patch tokens, the position table interpolated (bicubic) to the grid."""
    w = s[p + "embeddings.patch_embeddings.projection.weight"]
    patch = w.shape[-1]
    x = F.conv2d(x, w, s[p + "embeddings.patch_embeddings.projection.bias"], stride=patch)
    N, C, h, wd = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = s[p + "embeddings.position_embeddings"]
    side = math.isqrt(pos.shape[1] - prefix_tokens)
    grid = pos[:, prefix_tokens:].reshape(1, side, side, C).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, wd), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, -1, C)
    tokens = [s[p + "embeddings.cls_token"]] + ([s[p + "embeddings.distillation_token"]] if prefix_tokens == 2 else [])
    x = torch.cat([t.expand(N, -1, -1) for t in tokens] + [x], 1) + torch.cat([pos[:, :prefix_tokens], grid], 1)
    i = 0
    while p + f"encoder.layer.{i}.layernorm_before.weight" in s:
        q = f"{p}encoder.layer.{i}."
        y = F.layer_norm(x, (C,), s[q + "layernorm_before.weight"], s[q + "layernorm_before.bias"], eps)
        proj = [F.linear(y, s[q + f"attention.attention.{n}.weight"], s[q + f"attention.attention.{n}.bias"])
                .reshape(N, -1, heads, C // heads).transpose(1, 2) for n in ("query", "key", "value")]
        a = torch.softmax(proj[0] @ proj[1].transpose(-1, -2) / math.sqrt(C // heads), -1) @ proj[2]
        x = x + F.linear(a.transpose(1, 2).reshape(N, -1, C), s[q + "attention.output.dense.weight"],
                         s[q + "attention.output.dense.bias"])
        y = F.layer_norm(x, (C,), s[q + "layernorm_after.weight"], s[q + "layernorm_after.bias"], eps)
        y = F.gelu(F.linear(y, s[q + "intermediate.dense.weight"], s[q + "intermediate.dense.bias"]))
        x = x + F.linear(y, s[q + "output.dense.weight"], s[q + "output.dense.bias"])
        i += 1
    x = F.layer_norm(x, (C,), s[p + "layernorm.weight"], s[p + "layernorm.bias"], eps)
    return x[:, prefix_tokens:].reshape(N, h, wd, C)


def _video(seed: int, frames: int, h: int, w: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, frames, h, w, 3), generator=g).float() / 127.5 - 1


def _frames01(video: torch.Tensor) -> torch.Tensor:
    return (video[0].permute(0, 3, 1, 2) + 1) / 2


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    """A tiny ViT saved by transformers (config.json + model.safetensors + preprocessor_config.json)."""
    d = tmp_path_factory.mktemp("vit")
    m = tf.ViTModel(tf.ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                                 image_size=64, patch_size=16), add_pooling_layer=False)
    _randomize(m, 0)
    m.save_pretrained(d)
    (d / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
                                                            "image_std": [0.229, 0.224, 0.225]}))
    return d


def test_vit_folder_matches_reference_and_interpolates_to_the_frame_grid(vit_folder):
    s = _read(vit_folder / "model.safetensors")
    space = PretrainedBackbone(str(vit_folder), 16, 48)           # fit: interpolate (the paper)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    video = _video(1, 1, 480, 720)                                # 4 x 4 table -> the 30 x 45 grid
    ours = space.embed(video)[0]
    assert ours.shape == (1, 30, 45, 48)
    ref = reference_vit(s, (_frames01(video) - mean) / std, heads=4, prefix_tokens=1, eps=1e-12)
    assert (ours - ref).abs().max() <= TOL
    video = _video(2, 2, 96, 144)
    ref = reference_vit(s, (_frames01(video) - mean) / std, heads=4, prefix_tokens=1, eps=1e-12)
    assert (space.embed(video)[0] - ref).abs().max() <= TOL


def test_deit_folder_drops_both_prefix_tokens(tmp_path):
    m = tf.DeiTModel(tf.DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                   image_size=48, patch_size=16), add_pooling_layer=False)
    _randomize(m, 3)
    m.save_pretrained(tmp_path)
    video = _video(4, 2, 64, 96)
    ours = PretrainedBackbone(str(tmp_path), 16, 32).embed(video)[0]
    ref = reference_vit(_read(tmp_path / "model.safetensors"), (_frames01(video) - 0.5) / 0.5, heads=2,
                        prefix_tokens=2, eps=1e-12)                # no preprocessor file: ViT's 0.5 / 0.5
    assert ours.shape == (2, 4, 6, 32) and (ours - ref).abs().max() <= TOL


@pytest.fixture(scope="module")
def theia_folder(tmp_path_factory):
    """A tiny Theia in the Hub's layout: config.json naming a DeiT-tiny, the ViT under
    ``backbone.model.`` next to feature-translator tensors."""
    d = tmp_path_factory.mktemp("theia")
    m = tf.ViTModel(tf.ViTConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=384,
                                 image_size=32, patch_size=16), add_pooling_layer=False)
    _randomize(m, 5)
    tmp = tmp_path_factory.mktemp("vit192")
    m.save_pretrained(tmp)
    state = {"backbone.model." + k: v for k, v in _read(tmp / "model.safetensors").items()}
    state["translator.backbone_adapter.0.weight"] = torch.ones(192)
    state["translator.translator_heads.facebook_dinov2-large.adapter.0.weight"] = torch.zeros(8, 192)
    from safetensors.torch import save_file
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps({
        "architectures": ["TheiaModel"], "model_type": "theia", "backbone": "facebook/deit-tiny-patch16-224",
        "pretrained": False, "translator_type": "lconv", "feature_reduce_method": None,
        "target_feature_sizes": {"facebook/dinov2-large": [1024, 16, 16]}}))
    return d


def _theia_reference(folder, video: torch.Tensor) -> torch.Tensor:
    """The release's feature extractor: frames padded at the bottom with grey 127 to a square, Theia's
    DeiT on (x - 127.5) / 127.5 with its table interpolated to the square's grid, the frame's rows kept."""
    s = _read(folder / "model.safetensors")
    x = _frames01(video)
    H, W = x.shape[-2:]
    x = F.pad(x, (0, max(H, W) - W, 0, max(H, W) - H), value=127 / 255)
    out = reference_vit(s, (x - 0.5) / 0.5, heads=3, prefix_tokens=1, eps=1e-12, p="backbone.model.")
    return out[:, :H // 16, :W // 16]


def test_theia_folder_with_the_release_square_padding(theia_folder):
    video = _video(6, 2, 64, 96)
    ours = PretrainedBackbone(str(theia_folder), 16, 192, fit="pad_square").embed(video)[0]
    assert ours.shape == (2, 4, 6, 192)
    assert (ours - _theia_reference(theia_folder, video)).abs().max() <= TOL


def test_backbone_folder_errors(tmp_path, vit_folder):
    from semcodec import SemcodecError
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(SemcodecError, match="holds a 'bert' model: a backbone is a ViT, a DeiT or a Theia folder"):
        PretrainedBackbone(str(tmp_path), 16, 48).embed(_video(0, 1, 32, 32))
    with pytest.raises(SemcodecError, match="the backbone has patch 16 and width 48, the model needs 16 and 768"):
        PretrainedBackbone(str(vit_folder), 16, 768).embed(_video(0, 1, 32, 32))


# ------------------------------------------------------------------------- the release tokenizer
W, HEADS, NI, NP, T, GRID, C, K, D = 64, 2, 8, 4, 3, (2, 3), 192, 32, 8


def release_state(seed: int, layers: int = 2) -> dict:
    """Random tensors named and shaped as the release's VideoVQ state dict (feature extractor excluded)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: 0.2 * torch.randn(shape, generator=g)        # noqa: E731
    s = {"mean": torch.zeros(C), "std": torch.ones(C), "encoder.patch_embed.weight": r(W, C, 1, 1),
         "encoder.patch_embed.bias": r(W), "encoder.IFrame_latent_tokens": r(NI, W),
         "encoder.PFrame_latent_tokens": r(NP, W),
         "encoder.proj_out.weight": r(W, W), "encoder.proj_out.bias": r(W),
         "quantizer.project_in.weight": r(D, W), "quantizer.project_in.bias": r(D),
         "quantizer.project_out.weight": r(W, D), "quantizer.project_out.bias": r(W),
         "quantizer._codebook.embed": r(1, K, D), "quantizer._codebook.embed_avg": r(1, K, D),
         "quantizer._codebook.cluster_size": torch.ones(1, K), "quantizer._codebook.initted": torch.ones(1),
         "decoder.decoder_embed.weight": r(W, W), "decoder.decoder_embed.bias": r(W), "decoder.mask_token": r(1, 1, W),
         "decoder.ffn.0.weight": r(2 * W, W), "decoder.ffn.0.bias": r(2 * W), "decoder.ffn.2.weight": r(C, 2 * W),
         "decoder.ffn.2.bias": r(C)}
    for part in ("encoder", "decoder"):
        for n in ("ln_pre", "ln_post"):
            s[f"{part}.{n}.weight"], s[f"{part}.{n}.bias"] = 1 + r(W), r(W)
        for i in range(layers):
            b = f"{part}.transformer.{i}."
            for n in ("ln_1", "ln_2"):
                s[b + n + ".weight"], s[b + n + ".bias"] = 1 + r(W), r(W)
            for n in ("wq", "wk", "wv", "wo"):
                s[b + f"attn.{n}.weight"] = r(W, W)                        # bias=False in the release config
            s[b + "mlp.c_fc.weight"], s[b + "mlp.c_fc.bias"] = r(4 * W, W), r(4 * W)
            s[b + "mlp.c_proj.weight"], s[b + "mlp.c_proj.bias"] = r(W, 4 * W), r(W)
    return s


def release_masks(frames: int, tpf: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's VideoEncoderMask / VideoDecoderMask rules (their ``_mask_fn``), index by index."""
    V, n_lat = frames * tpf, NI + (frames - 1) * NP
    L = V + n_lat

    def enc(q, k):
        if q < V:
            return k // tpf <= q // tpf
        if q < V + NI:
            return k < tpf or (V <= k < V + NI and k <= q)
        f = (q - NI - V) // NP + 1
        if k < (f + 1) * tpf:
            return True
        if k < V:
            return False
        return k <= q

    def dec(q, k):
        if q < tpf:
            return k < tpf or V <= k < V + NI
        if q < V:
            f = q // tpf
            return k // tpf <= f if k < V else k < V + NI + f * NP
        if q < V + NI:
            return k < tpf or V <= k < V + NI
        f = (q - NI - V) // NP + 1
        return k < (f + 1) * tpf or V <= k < V + NI + f * NP
    return (torch.tensor([[enc(q, k) for k in range(L)] for q in range(L)]),
            torch.tensor([[dec(q, k) for k in range(L)] for q in range(L)]))


def release_rope(frames: int, grid, n_lat: int) -> torch.Tensor:
    """The release's 3-D RoPE (``Rope3DPosEmb``, multiple 16: t gets D/4 of the head dim, h and w
    3D/8 each), complex ``L x D/2``: visual (t, h, w), then latents n at (n, n, n)."""
    hd = W // HEADS
    t_dim, hw_dim = hd // 4, hd // 8 * 3
    ft = 1.0 / (10000 ** (torch.arange(0, t_dim, 2)[: t_dim // 2].float() / t_dim))
    fhw = 1.0 / (10000 ** (torch.arange(0, hw_dim, 2)[: hw_dim // 2].float() / hw_dim))
    t, h, w = torch.meshgrid(torch.arange(frames), torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    pos = torch.cat([torch.stack([t, h, w], -1).reshape(-1, 3), torch.arange(n_lat)[:, None].expand(-1, 3)]).float()
    ang = torch.cat([torch.outer(pos[:, 0], ft), torch.outer(pos[:, 1], fhw), torch.outer(pos[:, 2], fhw)], -1)
    return torch.polar(torch.ones_like(ang), ang)


def release_blocks(s: dict, part: str, x: torch.Tensor, mask: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    x = F.layer_norm(x, (W,), s[f"{part}.ln_pre.weight"], s[f"{part}.ln_pre.bias"])
    B, L, _ = x.shape
    i = 0
    while f"{part}.transformer.{i}.ln_1.weight" in s:
        b = f"{part}.transformer.{i}."
        y = F.layer_norm(x, (W,), s[b + "ln_1.weight"], s[b + "ln_1.bias"])
        q, k, v = (F.linear(y, s[b + f"attn.{n}.weight"]).reshape(B, L, HEADS, -1) for n in ("wq", "wk", "wv"))
        q, k = (torch.view_as_real(torch.view_as_complex(z.reshape(B, L, HEADS, -1, 2)) * cis[:, None]).flatten(-2)
                for z in (q, k))                                    # interleaved pairs (2i, 2i + 1)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
        o = (torch.softmax(att, -1) @ v).transpose(1, 2).reshape(B, L, W)
        x = x + F.linear(o, s[b + "attn.wo.weight"])
        y = F.layer_norm(x, (W,), s[b + "ln_2.weight"], s[b + "ln_2.bias"])
        x = x + F.linear(F.gelu(F.linear(y, s[b + "mlp.c_fc.weight"], s[b + "mlp.c_fc.bias"])),
                         s[b + "mlp.c_proj.weight"], s[b + "mlp.c_proj.bias"])
        i += 1
    return x


def release_encode(s: dict, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's ``encode_to_index`` from features ``B x T x h x w x C``: (pre-VQ vectors, ids)."""
    B, frames, h, w, _ = feats.shape
    x = F.linear(feats.reshape(B, -1, C), s["encoder.patch_embed.weight"][:, :, 0, 0], s["encoder.patch_embed.bias"])
    lat = torch.cat([s["encoder.IFrame_latent_tokens"], s["encoder.PFrame_latent_tokens"].repeat(frames - 1, 1)])
    n_lat, V = lat.shape[0], x.shape[1]
    enc_mask, _ = release_masks(frames, h * w)
    x = release_blocks(s, "encoder", torch.cat([x, lat.expand(B, -1, -1)], 1), enc_mask,
                       release_rope(frames, (h, w), n_lat))
    z = F.linear(F.layer_norm(x[:, V:], (W,), s["encoder.ln_post.weight"], s["encoder.ln_post.bias"]),
                 s["encoder.proj_out.weight"], s["encoder.proj_out.bias"])
    z = F.linear(z, s["quantizer.project_in.weight"], s["quantizer.project_in.bias"])
    return z, torch.cdist(z, s["quantizer._codebook.embed"][0][None]).argmin(-1)


def release_decode(s: dict, ids: torch.Tensor, frames: int, grid) -> torch.Tensor:
    """The release's ``index_to_feature``: ids -> features ``B x T x h x w x C``."""
    codes = F.linear(s["quantizer._codebook.embed"][0][ids], s["quantizer.project_out.weight"],
                     s["quantizer.project_out.bias"])
    x = F.linear(codes, s["decoder.decoder_embed.weight"], s["decoder.decoder_embed.bias"])
    B, n_lat = ids.shape
    V = frames * grid[0] * grid[1]
    _, dec_mask = release_masks(frames, grid[0] * grid[1])
    x = release_blocks(s, "decoder", torch.cat([s["decoder.mask_token"].expand(B, V, -1), x], 1), dec_mask,
                       release_rope(frames, grid, n_lat))
    y = F.layer_norm(x[:, :V], (W,), s["decoder.ln_post.weight"], s["decoder.ln_post.bias"])
    y = F.linear(torch.tanh(F.linear(y, s["decoder.ffn.0.weight"], s["decoder.ffn.0.bias"])),
                 s["decoder.ffn.2.weight"], s["decoder.ffn.2.bias"])
    return y.reshape(B, frames, *grid, C)


def tiny_landiff():
    """The landiff preset at the tiny release's sizes and a 32 x 48 frame (a 2 x 3 grid)."""
    return get_preset("landiff").replace(name="landiff", width=W, heads=HEADS, rope_split=(8, 12, 12), group=T,
                                         overlap=1,
                                         frame_size=(32, 48), short_side=32, max_long_side=48, fps=4.0)


@pytest.fixture(scope="module")
def release_file(tmp_path_factory):
    from safetensors.torch import save_file
    p = tmp_path_factory.mktemp("release") / "model.safetensors"
    save_file(release_state(7), str(p))
    return p


def test_release_checkpoint_converts_to_the_same_function(release_file):
    from semcodec.checkpoint import build_from_state
    from semcodec.convert import load_release
    s = _read(release_file)
    config, state = load_release(release_file, tiny_landiff())
    assert (config.quantizer, config.backbone_fit, config.latent_mask, config.pre_norm) == ("euclidean", "pad_square",
                                                                                           "frame", True)
    assert (config.iframe_tokens, config.pframe_tokens, config.codebook_size, config.codebook_dim) == (NI, NP, K, D)
    tok = build_from_state(config, state).tokenizer.eval()
    g = torch.Generator().manual_seed(8)
    for frames in (T, 1):                                        # a full group and a short last group
        feats = torch.randn(2, frames, *GRID, C, generator=g)
        z_ref, ids_ref = release_encode(s, feats)
        with torch.no_grad():
            z = tok.encoder(feats)
            ids = tok.encode(feats)
            rec = tok.decode(ids, GRID)
        assert (z - z_ref).abs().max() <= TOL
        assert torch.equal(ids, ids_ref)
        assert (rec - release_decode(s, ids_ref, frames, GRID)).abs().max() <= TOL


def test_convert_command_and_the_whole_codec_on_release_weights(capsys, tmp_path, release_file, theia_folder):
    """`semcodec convert`, then the codec end to end on Theia + release weights: its tokens are
    the release's on the release's features."""
    from semcodec.cli import main
    from semcodec.convert import convert
    out = tmp_path / "landiff.safetensors"
    digest = convert(release_file, out, base=tiny_landiff())
    meta = semcodec.checkpoint.read_metadata(out)
    assert "backbone_path" not in json.loads(meta["config"]) and str(tmp_path.parent) not in json.dumps(meta)
    codec = semcodec.Codec.from_pretrained(out, "cpu", backbone=theia_folder)
    assert (codec.name, codec.content_hash) == ("landiff", digest)
    g = torch.Generator().manual_seed(9)
    frames = torch.randint(0, 256, (6, 32, 48, 3), generator=g, dtype=torch.uint8).numpy()
    stream = codec.encode(frames, fps=4.0)                       # semantic rate = source rate: every frame coded
    video = torch.from_numpy(frames).float()[None] / 127.5 - 1
    s = _read(release_file)
    for rec in stream.groups:
        clip = video[:, rec.start:rec.start + rec.valid]
        feats = _theia_reference(theia_folder, clip)[None]
        assert rec.tokens.tolist() == release_encode(s, feats)[1][0].tolist()
    # a release file is recognised as one and named for what it is
    capsys.readouterr()
    code = main(["convert", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x.safetensors")])
    missing = tmp_path / "missing.safetensors"
    assert (code, capsys.readouterr().err) == (1, f"error: no such checkpoint file: {missing}\n")
    with pytest.raises(semcodec.SemcodecError, match=r"the release checkpoint does not fit the 'landiff' preset"):
        semcodec.Codec.from_pretrained(release_file, "cpu")


def test_euclidean_quantizer_nearest_code_and_rotation_trick():
    from semcodec.model.quantizer import EuclideanQuantizer
    torch.manual_seed(0)
    q = EuclideanQuantizer(16, 4)
    z = torch.randn(10, 4, requires_grad=True)
    q.train()
    zq, idx, commit = q(z)
    assert torch.equal(idx, torch.cdist(z.detach(), q.codebook.detach()).argmin(-1))
    assert torch.allclose(zq, q.codebook[idx].detach(), atol=1e-6)        # the value is the code
    g = torch.randn(10, 4)
    (zq * g).sum().backward()
    # the gradient reaching z is the rotation (z's direction onto the code's) scaled by |q| / |z|
    e, c = z.detach(), q.codebook[idx].detach()
    u, qh = F.normalize(e, dim=-1), F.normalize(c, dim=-1)
    w = F.normalize(u + qh, dim=-1)
    R = torch.eye(4) - 2 * w[:, :, None] * w[:, None, :] + 2 * qh[:, :, None] * u[:, None, :]
    expect = (R.transpose(1, 2) @ g[:, :, None])[:, :, 0] * (c.norm(dim=-1) / e.norm(dim=-1))[:, None]
    assert torch.allclose(z.grad, expect, atol=1e-5)
    assert commit > 0


def test_frame_latent_mask_rule_equals_its_reference_and_the_release():
    from semcodec.model.masks import TokenLayout, dense_reference, get_mask
    lay = TokenLayout(T, GRID, NI, NP)
    m = get_mask(lay, "decoder", latent_mask="frame").dense("cpu")
    assert torch.equal(m, dense_reference(lay, "decoder", "frame"))
    enc, dec = release_masks(T, GRID[0] * GRID[1])
    assert torch.equal(m, dec) and torch.equal(get_mask(lay, "encoder").dense("cpu"), enc)
