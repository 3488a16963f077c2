"""A pretrained semantic backbone (Theia / DeiT-like ViT) loaded from a local path.

Nothing is downloaded: the user points ``backbone_path`` at a safetensors file holding a
:class:`ViTBackbone` state dict, with its :class:`ViTConfig` as JSON in the metadata key
``vit_config`` (:func:`save_backbone` writes one). The backbone is frozen; frames (``[-1, 1]``)
are normalised with ImageNet statistics, cut into ``patch`` x ``patch`` patches and the last
layer's patch tokens form the feature grid, e.g. 480 x 720 -> 30 x 45 x 768 for Theia-base.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .base import FeatureSpace

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViTConfig:
    width: int = 768
    depth: int = 12
    heads: int = 12
    patch: int = 16
    pos_grid: tuple[int, int] = (14, 14)     # grid of the learned position table (interpolated)


class ViTBackbone(nn.Module):
    """Frames ``N x 3 x H x W`` (ImageNet-normalised) -> patch features ``N x H/p x W/p x width``."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(3, cfg.width, cfg.patch, stride=cfg.patch)
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, cfg.width, *cfg.pos_grid))
        layer = nn.TransformerEncoderLayer(cfg.width, cfg.heads, 4 * cfg.width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, x):
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = x + F.interpolate(self.pos_embed, size=(h, w), mode="bicubic", align_corners=False)
        x = self.norm(self.blocks(rearrange(x, "n c h w -> n (h w) c")))
        return rearrange(x, "n (h w) c -> n h w c", h=h)


def save_backbone(model: ViTBackbone, path: str | Path) -> None:
    from safetensors.torch import save_file
    cfg = asdict(model.cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"vit_config": json.dumps(cfg)})


def load_backbone(path: str | Path) -> ViTBackbone:
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "vit_config" not in meta:
        raise ValueError(f"{path} has no 'vit_config' metadata: not a semcodec backbone file")
    d = json.loads(meta["vit_config"])
    d["pos_grid"] = tuple(d["pos_grid"])
    model = ViTBackbone(ViTConfig(**d))
    model.load_state_dict(load_file(str(path)))
    return model


class PretrainedBackbone(FeatureSpace):
    can_render = False
    trainable = False

    def __init__(self, path: str | None, patch: int, feature_dim: int, model: ViTBackbone | None = None):
        super().__init__()
        self.patch, self.feature_dim, self.path = patch, feature_dim, path
        # built lazily from ``path``; kept out of the state dict: it is not ours to ship
        object.__setattr__(self, "_model", model)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def model(self) -> ViTBackbone:
        if self._model is None:
            if not self.path:
                raise ValueError("the 'backbone' feature space needs backbone_path: a local safetensors file "
                                 "of a Theia-like ViT (see semcodec.features.backbone)")
            object.__setattr__(self, "_model", load_backbone(self.path))
        m = self._model
        if m.cfg.patch != self.patch or m.cfg.width != self.feature_dim:
            raise ValueError(f"backbone has patch {m.cfg.patch} / width {m.cfg.width}, config wants "
                             f"{self.patch} / {self.feature_dim}")
        m.requires_grad_(False).eval()
        return m

    @torch.no_grad()
    def embed(self, video):
        self.check_video(video)
        B = video.shape[0]
        x = rearrange(video, "b t h w c -> (b t) c h w")
        x = ((x + 1) / 2 - self.mean.to(x)) / self.std.to(x)
        return rearrange(self.model.to(x.device)(x), "(b t) h w c -> b t h w c", b=B)
