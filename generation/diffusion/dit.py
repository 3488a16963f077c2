"""The backbone: a small video DiT in the manner of CogVideoX, top to bottom.

Inputs: a noisy latent ``B x F x C x h x w`` (:mod:`generation.diffusion.latent`), the diffusion
timestep ``B`` (0..999), and the prompt's per-token text states ``B x n x D`` with a key mask
``B x n`` (True = a real token).

- patchify: each latent cell (``C`` values: ``st x s x s`` pixels) -> Linear -> one video token,
  ``L = F h w`` tokens; the text states -> Linear -> ``n`` text tokens;
- timestep: sinusoidal embedding -> Linear -> SiLU -> Linear (``time_dim``);
- ``layers`` blocks over the joint sequence ``[text; video]`` (full attention, text padding masked):
  expert adaLN-zero (separate shift / scale / gate for text and video, from the timestep, zero-
  initialised so that every block starts as the identity), qk-LayerNorm, 3D RoPE on the video
  tokens (head dim split t:h:w), GELU-tanh MLP;
- out: LayerNorm, adaLN shift / scale, zero-initialised Linear back to ``C`` values per cell.

The control branch (:mod:`generation.diffusion.control`) adds one residual ``B x L x width`` to the
video tokens after each of the first ``control_layers`` blocks.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from semcodec.model.rope import apply_rope, rope_angles

from .config import RendererConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """``B`` timesteps -> ``B x dim`` sinusoids (cos half first, as diffusers' flip_sin_to_cos)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    a = t.float()[:, None] * freqs[None]
    return torch.cat([a.cos(), a.sin()], dim=-1)


@functools.lru_cache(maxsize=16)
def _rope(frames: int, h: int, w: int, split: tuple[int, int, int], theta: float):
    with torch.inference_mode(False):
        f, y, x = torch.meshgrid(torch.arange(frames), torch.arange(h), torch.arange(w), indexing="ij")
        ang = rope_angles(torch.stack([f, y, x], -1).reshape(-1, 3), split, theta)
        return ang.cos(), ang.sin()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    def __init__(self, freq: int, dim: int):
        super().__init__()
        self.freq = freq
        self.mlp = nn.Sequential(nn.Linear(freq, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq).to(self.mlp[0].weight.dtype))


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = nn.LayerNorm(width // heads, eps=1e-6)
        self.k_norm = nn.LayerNorm(width // heads, eps=1e-6)
        self.proj = nn.Linear(width, width)

    def forward(self, x, n_text: int, cos, sin, mask):
        """``x`` B x (n + L) x W, text first; RoPE rotates the video part only."""
        B, S, W = x.shape
        q, k, v = self.qkv(x).view(B, S, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        q = torch.cat([q[:, :, :n_text], apply_rope(q[:, :, n_text:], cos, sin)], dim=2)
        k = torch.cat([k[:, :, :n_text], apply_rope(k[:, :, n_text:], cos, sin)], dim=2)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(o.transpose(1, 2).reshape(B, S, W))


class DiTBlock(nn.Module):
    """Pre-norm block over ``[text; video]`` with expert adaLN-zero (12 modulation vectors)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, time_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Linear(time_dim, 12 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, vid, txt, temb, cos, sin, mask):
        n = txt.shape[1]
        (sv, cv, gv, st, ct, gt, sv2, cv2, gv2, st2, ct2, gt2) = self.ada(F.silu(temb))[:, None].chunk(12, dim=-1)
        h = torch.cat([modulate(self.norm1(txt), st, ct), modulate(self.norm1(vid), sv, cv)], dim=1)
        a = self.attn(h, n, cos, sin, mask)
        txt, vid = txt + gt * a[:, :n], vid + gv * a[:, n:]
        h = torch.cat([modulate(self.norm2(txt), st2, ct2), modulate(self.norm2(vid), sv2, cv2)], dim=1)
        m = self.mlp(h)
        return vid + gv2 * m[:, n:], txt + gt2 * m[:, :n]


class DiTTrunk(nn.Module):
    """Embeddings and ``layers`` blocks: what the backbone and its control branch share."""

    def __init__(self, cfg: RendererConfig, layers: int):
        super().__init__()
        self.cfg = cfg
        self.patch_in = nn.Linear(cfg.latent_channels, cfg.width)
        self.text_in = nn.Linear(cfg.text_dim, cfg.width)
        self.time = TimestepEmbedder(cfg.time_freq, cfg.time_dim)
        self.blocks = nn.ModuleList(DiTBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.time_dim) for _ in range(layers))

    def embed(self, latent, t, text, text_mask):
        """-> video tokens ``B x L x W``, text tokens ``B x n x W``, temb ``B x time_dim``, RoPE
        tables and the attention mask (``B x 1 x 1 x (n + L)`` bool)."""
        B, Fr, C, h, w = latent.shape
        vid = self.patch_in(latent.permute(0, 1, 3, 4, 2).reshape(B, Fr * h * w, C))
        txt = self.text_in(text.to(vid.dtype))
        temb = self.time(t)
        cos, sin = _rope(Fr, h, w, self.cfg.rope_split, self.cfg.rope_theta)
        mask = torch.cat([text_mask.bool(), text_mask.new_ones(B, Fr * h * w, dtype=torch.bool)], dim=1)
        return vid, txt, temb, (cos.to(vid.device), sin.to(vid.device), mask[:, None, None, :])


class VideoDiT(DiTTrunk):
    """The backbone: ``forward(latent, t, text, text_mask, control=None)`` -> the model output
    (v, x0 or noise, as ``cfg.prediction`` says) in the latent's layout ``B x F x C x h x w``.
    ``control``: residuals ``B x L x width`` added to the video tokens after blocks 0, 1, ..."""

    def __init__(self, cfg: RendererConfig):
        super().__init__(cfg, cfg.layers)
        self.norm_out = nn.LayerNorm(cfg.width, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(cfg.time_dim, 2 * cfg.width)
        self.proj_out = nn.Linear(cfg.width, cfg.latent_channels)
        for lin in (self.ada_out, self.proj_out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def zero_output(self) -> None:
        """Zero the output head, as a fresh backbone has it: the model then predicts zero."""
        with torch.no_grad():
            for lin in (self.ada_out, self.proj_out):
                lin.weight.zero_()
                lin.bias.zero_()

    def forward(self, latent, t, text, text_mask, control: list[torch.Tensor] | None = None):
        B, Fr, C, h, w = latent.shape
        vid, txt, temb, (cos, sin, mask) = self.embed(latent, t, text, text_mask)
        for i, blk in enumerate(self.blocks):
            vid, txt = blk(vid, txt, temb, cos, sin, mask)
            if control is not None and i < len(control):
                vid = vid + control[i].to(vid.dtype)
        shift, scale = self.ada_out(F.silu(temb))[:, None].chunk(2, dim=-1)
        out = self.proj_out(modulate(self.norm_out(vid), shift, scale))
        return out.view(B, Fr, h, w, C).permute(0, 1, 4, 2, 3)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
