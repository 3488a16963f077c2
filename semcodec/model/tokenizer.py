"""The LanDiff semantic tokenizer: query-token encoder, cosine quantizer, mask-token decoder.

Read top to bottom: ``Block`` (pre-LN transformer block with 3D RoPE and a layout mask), then
``Encoder``, ``Decoder`` and ``SemanticTokenizer`` which ties them to the quantizer.

Layouts: features are ``B x T x h x w x C`` floats (a group of T <= G frames on an h x w grid);
token ids are ``B x N`` int64 with ``N = nI + (T-1) * nP``, IFrame tokens first, then the
PFrame tokens of frames 1..T-1 in order.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels import masked_attention

from ..features.motion import moving_flow
from ..presets import CodecConfig
from .masks import AttentionMask, TokenLayout, lattice_shape
from .init import randn
from .quantizer import make_quantizer
from .rope import apply_rope, rope_angles


class LayoutCache:
    """What a transformer derives from a group's token layout alone -- RoPE tables (per device)
    and attention masks -- built on first use and kept by the model that owns it (never at module
    level, never in the state dict), at most ``size`` layouts, least recently used dropped.
    Tables are normal tensors even when first built under ``torch.inference_mode`` (they serve
    training too)."""

    def __init__(self, cfg: CodecConfig, size: int = 16):
        self.cfg, self.size = cfg, size
        self._rope: OrderedDict = OrderedDict()
        self._masks: OrderedDict = OrderedDict()

    def _get(self, table: OrderedDict, key, build):
        if key in table:
            table.move_to_end(key)
            return table[key]
        with torch.inference_mode(False):
            value = table[key] = build()
        while len(table) > self.size:
            table.popitem(last=False)
        return value

    def rope(self, layout: TokenLayout, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)``, each ``L x head_dim / 2``, on ``device``."""
        c = self.cfg

        def build():
            ang = rope_angles(layout.positions(c.query_layout), c.rope_split, c.rope_theta)
            return ang.cos().to(device), ang.sin().to(device)
        return self._get(self._rope, (layout, str(device)), build)

    def mask(self, layout: TokenLayout, role: str) -> AttentionMask:
        c = self.cfg
        return self._get(self._masks, (layout, role),
                         lambda: AttentionMask(layout, role, c.locality_slopes, c.query_layout, c.latent_mask))

    def clear(self) -> None:
        self._rope.clear()
        self._masks.clear()


def _resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``N x h x w x C`` -> ``N x size x C``, bilinear on cell centres (antialiased when shrinking)."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    # float32: the antialiased kernel has no bfloat16 version (bf16 autocast training)
    y = F.interpolate(x.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", align_corners=False,
                      antialias=size[0] < x.shape[1] or size[1] < x.shape[2])
    return y.permute(0, 2, 3, 1).to(x.dtype)


def grid_to_lattice(vis: torch.Tensor, cfg: CodecConfig) -> torch.Tensor:
    """Visual states ``B x T x h x w x W`` -> each query's state at its lattice place, ``B x N x W``
    (IFrame queries from frame 0, the PFrame queries of frame k from frame k)."""
    B, T, h, w, W = vis.shape
    ri, ci = lattice_shape(cfg.iframe_tokens, (h, w))
    out = [_resample(vis[:, 0], (ri, ci)).reshape(B, -1, W)]
    if T > 1:
        rp, cp = lattice_shape(cfg.pframe_tokens, (h, w))
        out.append(_resample(vis[:, 1:].reshape(B * (T - 1), h, w, W), (rp, cp)).reshape(B, -1, W))
    return torch.cat(out, dim=1)


def lattice_to_grid(lat: torch.Tensor, T: int, grid: tuple[int, int], cfg: CodecConfig) -> torch.Tensor:
    """Inverse placement: latents ``B x N x W`` -> ``B x T x h x w x W`` (frame 0 from the IFrame
    latents, frame k from the PFrame latents of frame k)."""
    B, N, W = lat.shape
    ri, ci = lattice_shape(cfg.iframe_tokens, grid)
    nI = cfg.iframe_tokens
    out = [_resample(lat[:, :nI].reshape(B, ri, ci, W), grid)[:, None]]
    if T > 1:
        rp, cp = lattice_shape(cfg.pframe_tokens, grid)
        p = _resample(lat[:, nI:].reshape(B * (T - 1), rp, cp, W), grid)
        out.append(p.reshape(B, T - 1, *grid, W))
    return torch.cat(out, dim=1)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x, cos, sin, mask, backend):
        B, L, W = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = masked_attention(q, k, v, mask, backend=backend)
        return self.proj(o.transpose(1, 2).reshape(B, L, W))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x, cos, sin, mask, backend):
        x = x + self.attn(self.norm1(x), cos, sin, mask, backend)
        return x + self.mlp(self.norm2(x))


class _Transformer(nn.Module):
    def __init__(self, cfg: CodecConfig, layers: int):
        super().__init__()
        self.cfg = cfg
        # the release normalises the whole sequence once before its blocks (``ln_pre``)
        self.norm_in = nn.LayerNorm(cfg.width) if cfg.pre_norm else None
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(layers))
        self.attn_backend = "auto"
        self.layout_cache = LayoutCache(cfg)

    def run_blocks(self, x, layout: TokenLayout, role: str):
        cos, sin = self.layout_cache.rope(layout, x.device)
        mask = self.layout_cache.mask(layout, role)
        if self.norm_in is not None:
            x = self.norm_in(x)
        for blk in self.blocks:
            x = blk(x, cos, sin, mask, self.attn_backend)
        return x

    def layout(self, frames: int, grid: tuple[int, int]) -> TokenLayout:
        if not 1 <= frames <= self.cfg.group:
            raise ValueError(f"a group holds 1..{self.cfg.group} frames, got {frames}")
        return TokenLayout(frames, tuple(grid), self.cfg.iframe_tokens, self.cfg.pframe_tokens)


class Encoder(_Transformer):
    """Features ``B x T x h x w x C`` -> query states ``B x N x codebook_dim`` (before quantization)."""

    def __init__(self, cfg: CodecConfig):
        super().__init__(cfg, cfg.enc_layers)
        self.in_proj = nn.Linear(cfg.feature_dim, cfg.width)       # the 1x1 projection
        self.iframe_queries = nn.Parameter(randn(cfg.iframe_tokens, cfg.width))
        self.pframe_queries = nn.Parameter(randn(cfg.pframe_tokens, cfg.width))  # shared by P-frames
        self.norm_out = nn.LayerNorm(cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.codebook_dim)
        # pframe_warp: each cell's measured motion since the frame before. Not zero-initialised (a
        # dead start, as for the decoder's flow head); still cells (every IFrame cell) are
        # unchanged either way
        self.motion_proj = nn.Linear(2, cfg.width, bias=False) if cfg.pframe_warp else None
        # ... and each PFrame token's part's motion, straight into its code: one attention layer
        # and a resampling dilute the cells' motion to nothing a linear map can read back
        self.motion_out = nn.Linear(2, cfg.codebook_dim, bias=False) if cfg.pframe_warp else None
        if self.motion_proj is not None and not self.motion_proj.weight.is_meta:
            nn.init.normal_(self.motion_proj.weight, std=0.5)
            nn.init.normal_(self.motion_out.weight, std=20.0)    # z: norm about 10 (world3, measured)

    def forward(self, feats: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        """``motion``: ``B x T x h x w x 2``, each cell's flow to the frame before, in cells (only
        with ``pframe_warp``)."""
        B, T, h, w, C = feats.shape
        layout = self.layout(T, (h, w))
        vis = self.in_proj(feats.reshape(B, T * h * w, C))
        if self.motion_proj is not None and motion is not None:
            vis = vis + self.motion_proj(motion.to(vis.dtype).reshape(B, T * h * w, 2))
        queries = torch.cat([self.iframe_queries, self.pframe_queries.repeat(T - 1, 1)]).to(vis.dtype)
        queries = queries.expand(B, -1, -1)
        if self.cfg.lattice_skip:
            queries = queries + grid_to_lattice(vis.view(B, T, h, w, -1), self.cfg)
        x = torch.cat([vis, queries], dim=1)
        x = self.run_blocks(x, layout, "encoder")
        z = self.out_proj(self.norm_out(x[:, layout.n_visual:]))
        if self.motion_out is not None and motion is not None and T > 1:
            part = moving_flow(motion[:, 1:].float(), lattice_shape(self.cfg.pframe_tokens, (h, w)))
            nI = self.cfg.iframe_tokens
            z = torch.cat([z[:, :nI], z[:, nI:] + self.motion_out(part.to(z.dtype)).reshape(B, -1, z.shape[-1])], 1)
        return z


class Decoder(_Transformer):
    """Quantized latents ``B x N x codebook_dim`` -> features ``B x T x h x w x C``."""

    def __init__(self, cfg: CodecConfig):
        super().__init__(cfg, cfg.dec_layers)
        self.latent_proj = nn.Linear(cfg.codebook_dim, cfg.width)
        self.mask_token = nn.Parameter(randn(cfg.width, std=0.02))   # one token, every position
        self.head = nn.Sequential(nn.LayerNorm(cfg.width), nn.Linear(cfg.width, 2 * cfg.width), nn.Tanh(),
                                  nn.Linear(2 * cfg.width, cfg.feature_dim))
        # pframe_warp: each P token also says how its part of the frame moved. Small but not zero:
        # its gradient is what teaches the encoder to put motion in the P tokens (zero weights
        # would send none back through the quantizer, and nothing would ever start)
        self.flow_head = nn.Linear(cfg.codebook_dim, 2, bias=False) if cfg.pframe_warp else None
        if self.flow_head is not None and not self.flow_head.weight.is_meta:
            nn.init.normal_(self.flow_head.weight, std=0.05)

    def frames_for(self, n_latent: int) -> int:
        nI, nP = self.cfg.iframe_tokens, self.cfg.pframe_tokens
        if n_latent < nI or (n_latent - nI) % nP:
            raise ValueError(f"{n_latent} tokens is not {nI} + k x {nP}")
        return 1 + (n_latent - nI) // nP

    def lattice_flow(self, zq: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor | None:
        """With ``pframe_warp``: the motion each PFrame token codes, ``B x T x rows x cols x 2``
        (x, y in output pixels, backward: where its part of frame t was in frame t-1; frame 0
        zeros) on the PFrame lattice; None otherwise."""
        if self.flow_head is None:
            return None
        B, N, _ = zq.shape
        T = self.frames_for(N)
        rp, cp = lattice_shape(self.cfg.pframe_tokens, grid)
        f = self.flow_head(zq[:, self.cfg.iframe_tokens:].float()).reshape(B, T - 1, rp, cp, 2) * self.cfg.patch
        return torch.cat([f.new_zeros(B, 1, rp, cp, 2), f], 1)

    def forward(self, zq: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        B, N, _ = zq.shape
        T = self.frames_for(N)
        layout = self.layout(T, grid)
        lat = self.latent_proj(zq)
        pos = self.mask_token.to(lat.dtype).expand(B, layout.n_visual, -1)
        if self.cfg.lattice_skip:
            g = lattice_to_grid(lat, T, grid, self.cfg)
            if self.cfg.iframe_skip and T > 1:
                # every P-frame starts from the IFrame's picture: its own tokens code what changed
                g = torch.cat([g[:, :1], g[:, 1:] + g[:, :1]], dim=1)
            pos = pos + g.reshape(B, layout.n_visual, -1)
        x = self.run_blocks(torch.cat([pos, lat], dim=1), layout, "decoder")
        return self.head(x[:, :layout.n_visual]).reshape(B, T, grid[0], grid[1], -1)


class SemanticTokenizer(nn.Module):
    """Features -> discrete tokens -> features.

    ``encode(feats)``: ``B x T x h x w x C`` float (T <= group) -> ``B x N`` int64 in [0, K).
    ``decode(indices, grid)``: ``B x N`` -> ``B x T x h x w x C``.
    ``forward(feats)`` -> dict with ``recon`` (features), ``indices``, ``recon_loss`` (MSE) and
    ``commit_loss``.
    """

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = make_quantizer(config)
        self.decoder = Decoder(config)

    @property
    def tokens_per_group(self) -> int:
        return self.config.tokens_per_group

    def set_attention_backend(self, backend: str) -> None:
        self.encoder.attn_backend = self.decoder.attn_backend = backend

    def encode(self, feats: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        _, idx, _ = self.quantizer(self.encoder(feats, motion))
        return idx

    def decode(self, indices: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        grid = grid or self.config.grid
        return self.decoder(self.quantizer.lookup(indices).to(self.decoder.latent_proj.weight.dtype), grid)

    def decode_flow(self, indices: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor | None:
        """The PFrame tokens' motion (``Decoder.lattice_flow``); None without ``pframe_warp``."""
        if self.decoder.flow_head is None:
            return None
        return self.decoder.lattice_flow(self.quantizer.lookup(indices), grid or self.config.grid)

    def forward(self, feats: torch.Tensor, motion: torch.Tensor | None = None) -> dict:
        z = self.encoder(feats, motion)
        zq, idx, commit = self.quantizer(z)
        recon = self.decoder(zq, feats.shape[2:4])
        return {"recon": recon, "indices": idx, "z": z, "commit_loss": commit,
                "lattice_flow": self.decoder.lattice_flow(zq, feats.shape[2:4]),
                "recon_loss": F.mse_loss(recon.float(), feats.float())}
