"""The ``landiff`` structure on the paper's backbone: diffusers' CogVideoX-2B, frozen, steered by
a control branch (the release's ControlNet: its first 15 of 30 layers, zero linears, semantic
upsampler).

- :func:`load_cogvideox`: ``CogVideoXTransformer3DModel`` and ``AutoencoderKLCogVideoX`` from a
  local folder in the diffusers layout (``transformer/``, ``vae/``; the user's own weights, never a
  download), frozen, in eval mode.
- :class:`CogVideoXControl`: copies of the transformer's patch embedding, timestep embedding and
  first ``layers`` blocks (default half); each block's video states -> zero-initialised
  ``Linear(inner, inner, bias=False)``; the :class:`~generation.diffusion.control.SemanticUpsampler`
  (channels 512, multipliers (0.25, 1), 4 res blocks, PixelShuffle, out 64, zero 3x3 conv to the 16
  latent channels) on the tokenizer's features, interpolated in time to the latent frames.
- :class:`ControlledCogVideoX`: the transformer's forward, block by block (as diffusers writes it),
  with the branch's residuals added after blocks ``0 .. layers-1``; the same call as
  :class:`~generation.diffusion.control.RendererModel`, so :func:`~generation.diffusion.sample.sample_latent`
  samples it.
- :func:`landiff_parameters`: built on the meta device with the CogVideoX-2B config, the counts
  (the branch is the trainable part).

Only configs with absolute (sincos) positions are supported, as CogVideoX-2B has; the text states
(T5) must be padded to ``max_text_seq_length`` (226), as CogVideoX's pipeline pads them.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import RendererConfig
from .control import SemanticUpsampler

# THUDM/CogVideoX-2b transformer/config.json (diffusers)
COGVIDEOX_2B = dict(num_attention_heads=30, attention_head_dim=64, in_channels=16, out_channels=16,
                    flip_sin_to_cos=True, freq_shift=0, time_embed_dim=512, text_embed_dim=4096, num_layers=30,
                    dropout=0.0, attention_bias=True, sample_width=90, sample_height=60, sample_frames=49,
                    patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226,
                    activation_fn="gelu-approximate", timestep_activation_fn="silu", norm_elementwise_affine=True,
                    norm_eps=1e-5, spatial_interpolation_scale=1.875, temporal_interpolation_scale=1.0,
                    use_rotary_positional_embeddings=False, use_learned_positional_embeddings=False)

# the release's sampling: v-prediction, zero terminal SNR, SNR shift 3, DPM++ 2M, 50 steps, dynamic CFG 6
# (a RendererConfig of which only the schedule and sampling fields are read)
SCHEDULE = RendererConfig(name="cogvideox", prediction="v_prediction", parameterization="direct", steps=50,
                          guidance=6.0, guidance_schedule="dynamic", sampler="dpm")


def load_cogvideox(folder, dtype: torch.dtype = torch.float32):
    """(transformer, vae) from ``folder/transformer`` and ``folder/vae``, frozen; no hub access."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    folder = Path(folder)
    for sub in ("transformer", "vae"):
        if not (folder / sub / "config.json").is_file():
            raise FileNotFoundError(f"{folder / sub}: no config.json (a CogVideoX folder in the diffusers layout "
                                    f"holds transformer/ and vae/)")
    kw = dict(torch_dtype=dtype, local_files_only=True, low_cpu_mem_usage=False)    # (no accelerate needed)
    tr = CogVideoXTransformer3DModel.from_pretrained(folder, subfolder="transformer", **kw)
    vae = AutoencoderKLCogVideoX.from_pretrained(folder, subfolder="vae", **kw)
    for m in (tr, vae):
        m.requires_grad_(False)
        m.eval()
    return tr, vae


def _check(transformer) -> None:
    c = transformer.config
    if c.use_rotary_positional_embeddings or c.patch_size_t is not None or c.ofs_embed_dim:
        raise ValueError("only CogVideoX configs with absolute positions and no temporal patching "
                         "(CogVideoX-2B) are supported")


class CogVideoXControl(nn.Module):
    """The control branch of a CogVideoX transformer (trainable; the transformer stays frozen)."""

    def __init__(self, transformer, layers: int | None = None, feature_dim: int = 768, channels: int = 512,
                 mult: tuple[float, ...] = (0.25, 1.0), res_blocks: int = 4, up_out: int = 64):
        super().__init__()
        _check(transformer)
        c = transformer.config
        inner = c.num_attention_heads * c.attention_head_dim
        self.layers = c.num_layers // 2 if layers is None else layers
        self.patch_embed = copy.deepcopy(transformer.patch_embed)
        self.time_proj = copy.deepcopy(transformer.time_proj)
        self.time_embedding = copy.deepcopy(transformer.time_embedding)
        self.blocks = nn.ModuleList(copy.deepcopy(transformer.transformer_blocks[i]) for i in range(self.layers))
        self.zero = nn.ModuleList(nn.Linear(inner, inner, bias=False) for _ in range(self.layers))
        for lin in self.zero:
            nn.init.zeros_(lin.weight)
        self.upsampler = SemanticUpsampler(feature_dim, c.in_channels, channels, mult, res_blocks, up_out)
        self.requires_grad_(True)

    def semantic(self, features: torch.Tensor, frames: int) -> torch.Tensor:
        """Tokenizer features ``B x T x h x w x Cf`` -> ``B x frames x C x 2^k h x 2^k w`` (linear
        interpolation in time to the latent frames, then the upsampler frame by frame)."""
        B, T, h, w, Cf = features.shape
        x = features.permute(0, 4, 1, 2, 3)                          # B x Cf x T x h x w
        if T != frames:
            x = F.interpolate(x.float(), size=(frames, h, w), mode="trilinear", align_corners=True)
        x = x.permute(0, 2, 1, 3, 4).reshape(B * frames, Cf, h, w)
        y = self.upsampler(x)
        return y.view(B, frames, *y.shape[1:])

    def forward(self, x, timestep, text) -> list[torch.Tensor]:
        emb = self.time_embedding(self.time_proj(timestep).to(x.dtype))
        h = self.patch_embed(text, x)
        n = text.shape[1]
        enc, h = h[:, :n], h[:, n:]
        out = []
        for blk, zero in zip(self.blocks, self.zero):
            h, enc = blk(hidden_states=h, encoder_hidden_states=enc, temb=emb)
            out.append(zero(h))
        return out


class ControlledCogVideoX(nn.Module):
    """``forward(latent, t, text, text_mask=None, sem=None)`` -> the v prediction ``B x F x C x H x W``
    (latent layout of diffusers' CogVideoX); without ``sem`` or a branch, exactly the transformer."""

    def __init__(self, transformer, control: CogVideoXControl | None = None):
        super().__init__()
        _check(transformer)
        self.transformer, self.control = transformer, control
        self.cfg = SCHEDULE
        self.has_control = control is not None

    def semantic(self, features: torch.Tensor, frames: int) -> torch.Tensor:
        return self.control.semantic(features, frames)

    def forward(self, latent, t, text, text_mask=None, sem=None):
        tr = self.transformer
        B, Fr, C, H, W = latent.shape
        residuals = None
        if self.control is not None and sem is not None:
            residuals = self.control(latent + sem.to(latent.dtype), t, text)
        emb = tr.time_embedding(tr.time_proj(t).to(latent.dtype))
        h = tr.embedding_dropout(tr.patch_embed(text, latent))
        n = text.shape[1]
        enc, h = h[:, :n], h[:, n:]
        for i, blk in enumerate(tr.transformer_blocks):
            h, enc = blk(hidden_states=h, encoder_hidden_states=enc, temb=emb)
            if residuals is not None and i < len(residuals):
                h = h + residuals[i]
        h = tr.proj_out(tr.norm_out(tr.norm_final(h), temb=emb))
        p = tr.config.patch_size
        out = h.reshape(B, Fr, H // p, W // p, -1, p, p)
        return out.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)


def encode_video(vae, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``B x T x H x W x 3`` in [-1, 1] (T = 4k + 1) -> scaled latents ``B x F x 16 x H/8 x W/8``."""
    dist = vae.encode(video.permute(0, 4, 1, 2, 3).to(vae.dtype)).latent_dist
    z = dist.sample(generator) if generator is not None else dist.mode()
    return (z * vae.config.scaling_factor).permute(0, 2, 1, 3, 4)


def decode_latent(vae, latent: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_video`: -> ``B x T x H x W x 3`` in [-1, 1]."""
    x = vae.decode((latent / vae.config.scaling_factor).permute(0, 2, 1, 3, 4).to(vae.dtype)).sample
    return x.permute(0, 2, 3, 4, 1).clamp(-1, 1)


def landiff_parameters(config: dict | None = None, feature_dim: int = 768, layers: int | None = None) -> dict:
    """Parameter counts of the LanDiff renderer built on the meta device (nothing allocated):
    ``backbone`` (frozen), ``control`` (trainable: blocks, embeddings, zero linears, upsampler),
    and its parts."""
    from diffusers import CogVideoXTransformer3DModel
    with torch.device("meta"):
        tr = CogVideoXTransformer3DModel(**(config or COGVIDEOX_2B))
        tr.requires_grad_(False)
        model = ControlledCogVideoX(tr, CogVideoXControl(tr, layers=layers, feature_dim=feature_dim))
    count = lambda m, trainable=None: sum(p.numel() for p in m.parameters()                # noqa: E731
                                          if trainable is None or p.requires_grad == trainable)
    ctl = model.control
    return {"backbone": count(tr), "control_trainable": count(model, True), "frozen": count(model, False),
            "control_layers": ctl.layers, "control_blocks": count(ctl.blocks), "zero_linears": count(ctl.zero),
            "upsampler": count(ctl.upsampler),
            "embeddings": count(ctl.patch_embed) + count(ctl.time_proj) + count(ctl.time_embedding)}
