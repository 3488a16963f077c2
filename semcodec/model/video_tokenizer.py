"""Video <-> tokens for one group: a feature space around the semantic tokenizer."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..features import build_feature_space
from ..features.motion import block_flow, moving_flow
from ..presets import CodecConfig
from .tokenizer import SemanticTokenizer


# What decides a group's token ids: the weights under these prefixes, and every config field but
# these (the decoder's, and the default semantic rate). A model trained from another with
# ``semcodec train --decoder-only`` differs from it only elsewhere, so it makes the same tokens
# (and the other's entropy models fit its streams).
ENCODER_SIDE = ("features.stem.", "tokenizer.encoder.", "tokenizer.quantizer.codebook")
TOKEN_NEUTRAL = ("name", "fps", "head_blocks", "refine_channels", "dec_layers", "latent_mask", "iframe_skip")


def token_difference(a: "VideoTokenizer", b: "VideoTokenizer") -> str | None:
    """None when ``a`` and ``b`` make the same token ids from any video (equal encoder-side
    weights and config); otherwise what differs, in a few words."""
    ca, cb = a.config.to_dict(), b.config.to_dict()
    for k in sorted(set(ca) | set(cb)):
        if k not in TOKEN_NEUTRAL and ca.get(k) != cb.get(k):
            return f"config field '{k}' differs ({ca.get(k)!r} against {cb.get(k)!r})"
    sa, sb = a.state_dict(), b.state_dict()
    for k in sorted(set(sa) | set(sb)):
        if k.startswith(ENCODER_SIDE) and (k not in sa or k not in sb or sa[k].shape != sb[k].shape
                                           or not torch.equal(sa[k].float(), sb[k].float())):
            return f"encoder weight '{k}' differs"
    return None


class VideoTokenizer(nn.Module):
    """``features`` (stem / head or a fixed space) + ``tokenizer`` (:class:`SemanticTokenizer`).
    ``backbone``: the local pretrained backbone of ``features="backbone"`` (see
    :mod:`semcodec.features.backbone`).

    ``encode(video)``: ``B x T x H x W x 3`` float in [-1, 1] (T <= group, H and W multiples of
    the patch) -> ``B x N`` int64 token ids. ``decode(indices, size)``: -> ``B x T x H x W x 3``
    in [-1, 1] (clamped). ``forward(video)`` -> dict of losses and the reconstruction (with
    ``pframe_warp`` also ``flow_loss``: the decoder's flow against block matching, in cells^2).
    """

    def __init__(self, config: CodecConfig, backbone=None):
        super().__init__()
        self.config = config
        self.features = build_feature_space(config, backbone)
        self.tokenizer = SemanticTokenizer(config)

    def grid_for(self, size: tuple[int, int]) -> tuple[int, int]:
        p = self.config.patch
        return size[0] // p, size[1] // p

    def motion(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """With ``pframe_warp``: the block-matching flow of ``video`` (``B x T x H/4 x W/4 x 2``,
        pixels) and the same per feature cell in cells (what the encoder is told); else Nones."""
        if not self.config.pframe_warp:
            return None, None
        flow = block_flow(video)
        k = self.config.patch // 4
        cells = F.avg_pool2d(flow.flatten(0, 1).permute(0, 3, 1, 2), k).permute(0, 2, 3, 1) / self.config.patch
        return flow, cells.reshape(*flow.shape[:2], *cells.shape[1:])

    def latents(self, video: torch.Tensor, cells: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output before quantization, ``B x N x codebook_dim``, told the motion
        where the model takes it (``cells``: ``motion(video)[1]``, measured here when None)."""
        if cells is None:
            cells = self.motion(video)[1]
        return self.tokenizer.encoder(self.features.embed(video), cells)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.quantizer(self.latents(video))[1]

    def decode(self, indices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        grid = self.grid_for(size)
        feats = self.tokenizer.decode(indices, grid)
        flow = self.tokenizer.decode_flow(indices, grid)
        return (self.features.render(feats, flow) if flow is not None else self.features.render(feats)).clamp(-1, 1)

    def forward(self, video: torch.Tensor) -> dict:
        feats = self.features.embed(video)
        flow, cells = self.motion(video)
        out = self.tokenizer(feats, cells)
        if self.features.can_render and self.features.trainable:
            # end to end: the loss is on pixels, through the learned head
            recon, pred = self.features.render(out["recon"], out["lattice_flow"], with_flow=True) \
                if flow is not None else (self.features.render(out["recon"]), None)
            out["video"] = recon
            out["recon_loss"] = F.mse_loss(recon.float(), video.float())
            if pred is not None:
                # the decoder's flows learn from the measured one (in cells, so of the order of 1):
                # the drawn flow everywhere, each PFrame token's from the moving blocks of its part
                p = self.config.patch
                lat = out["lattice_flow"]
                out["flow_loss"] = F.mse_loss(pred[:, 1:] / p, flow[:, 1:] / p) + \
                    F.mse_loss(lat[:, 1:] / p, moving_flow(flow[:, 1:], lat.shape[2:4]) / p)
        elif self.features.can_render:
            out["video"] = self.features.render(out["recon"])
        return out
