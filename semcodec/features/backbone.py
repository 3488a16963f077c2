"""A pretrained semantic backbone (Theia / DeiT / ViT), frozen, loaded from a local path.

Nothing is downloaded, and the path is never saved in a model's config: it is given when the model
is loaded (``Codec.from_pretrained(..., backbone=DIR)``, ``semcodec encode --backbone DIR``). A
backbone is one of

- a Hugging Face folder of a ViT or DeiT (``config.json`` with ``model_type`` ``"vit"`` or
  ``"deit"`` and the weights ``save_pretrained`` writes), read through ``transformers`` (the
  optional extra ``semcodec[backbone]``); pixel statistics from its ``preprocessor_config.json``,
  else ViT's 0.5 / 0.5;
- a Theia folder as released on the Hub (``theaiinstitute/theia-base-patch16-224-cddsv``:
  ``config.json`` naming its DeiT, e.g. ``"backbone": "facebook/deit-base-patch16-224"``, and
  ``model.safetensors`` with that ViT under ``backbone.model.``); the ViT's sizes are read from
  the weights, the feature translators are left out, and pixels are scaled to ``[-1, 1]`` as
  Theia's DeiT wrapper does;
- a safetensors file of semcodec's own :class:`ViTBackbone` (:func:`save_backbone`).

Features are the last layer's patch tokens (class / distillation tokens dropped) on the frame's
grid, ``N x H/p x W/p x C``; a 480 x 720 frame gives 30 x 45 x 768 with Theia-base. The learned
position table (14 x 14 for 224 px) is interpolated (bicubic) to the grid the frame needs, and
``fit`` says how a frame that is not square meets it:

- ``"interpolate"``: the table is stretched to the frame's own grid (30 x 45), as the paper says;
- ``"pad_square"``: the frame is padded at the bottom (or right) with grey 127 to a square, the
  table interpolated to the square's grid (45 x 45) and the frame's rows kept (30 x 45): what the
  authors' release does (its tokenizer was trained on such features).
"""
from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..errors import ModelError
from .base import FeatureSpace

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
GREY = 127 / 255                      # the release's padding value (uint8 127)
FITS = ("interpolate", "pad_square")
# heads of the DeiT / ViT sizes by width (a Theia folder names its DeiT but holds no ViT config)
_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


@dataclass(frozen=True)
class ViTConfig:
    width: int = 768
    depth: int = 12
    heads: int = 12
    patch: int = 16
    pos_grid: tuple[int, int] = (14, 14)     # grid of the learned position table (interpolated)


class ViTBackbone(nn.Module):
    """semcodec's own ViT layout. Frames ``N x 3 x H x W`` (normalised) -> ``N x H/p x W/p x width``."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        self.patch, self.width = cfg.patch, cfg.width
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


class HFViT(nn.Module):
    """A ``transformers`` ViT / DeiT model as a backbone: ``N x 3 x H x W`` (normalised with
    ``mean`` / ``std``) -> ``N x H/p x W/p x C``, the position table interpolated to the input's
    grid, the ``prefix`` class / distillation tokens dropped."""

    def __init__(self, model: nn.Module, prefix: int, mean, std):
        super().__init__()
        self.model, self.prefix = model, prefix
        self.mean, self.std = tuple(mean), tuple(std)
        self.patch = int(model.config.patch_size)
        self.width = int(model.config.hidden_size)

    def forward(self, x):
        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        out = self.model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        return out[:, self.prefix:].reshape(x.shape[0], h, w, -1)


def save_backbone(model: ViTBackbone, path: str | Path) -> None:
    from safetensors.torch import save_file
    cfg = asdict(model.cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"vit_config": json.dumps(cfg)})


def load_backbone(path: str | Path) -> nn.Module:
    """The backbone at ``path`` (a folder or a file, see the module doc), frozen, in eval mode.
    ``ModelError`` for anything that is not one; ``FileNotFoundError`` for a missing path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    model = _load_folder(path) if path.is_dir() else _load_own(path)
    return model.requires_grad_(False).eval()


def _load_own(path: Path) -> ViTBackbone:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ModelError(f"{path} is not a backbone (not a safetensors file: {e})") from None
    if "vit_config" not in meta:
        raise ModelError(f"{path} has no 'vit_config' metadata: not a semcodec backbone file "
                         f"(a Hugging Face ViT / DeiT / Theia backbone is a folder)")
    d = json.loads(meta["vit_config"])
    d["pos_grid"] = tuple(d["pos_grid"])
    model = ViTBackbone(ViTConfig(**d))
    model.load_state_dict(load_file(str(path)))
    return model


@contextmanager
def _quiet_transformers():
    """transformers reports unused checkpoint tensors (Theia's translators) as warnings and shows a
    progress bar while loading: neither belongs on semcodec's stderr."""
    from transformers.utils import logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ModelError("a Hugging Face backbone folder needs transformers: "
                         "pip install 'semcodec[backbone]'") from None
    return transformers


def _load_folder(path: Path) -> HFViT:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelError(f"{path} is not a backbone folder (no config.json)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as e:
        raise ModelError(f"{cfg_file} is not JSON: {e}") from None
    kind = cfg.get("model_type")
    if kind in ("vit", "deit"):
        return _load_hf(path, kind)
    if isinstance(cfg.get("backbone"), str) and (kind == "theia" or "TheiaModel" in (cfg.get("architectures") or [])):
        return _load_theia(path, cfg["backbone"])
    raise ModelError(f"{path} holds a {kind or 'unknown'!r} model: a backbone is a ViT, a DeiT or a Theia folder")


def _pixel_stats(path: Path) -> tuple[tuple, tuple]:
    p = path / "preprocessor_config.json"
    if not p.is_file():
        return HALF, HALF
    d = json.loads(p.read_text())
    if not d.get("do_normalize", True):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean, std = d.get("image_mean", HALF), d.get("image_std", HALF)
    mean = tuple(mean) if isinstance(mean, (list, tuple)) else (mean,) * 3
    std = tuple(std) if isinstance(std, (list, tuple)) else (std,) * 3
    return mean, std


def _load_hf(path: Path, kind: str) -> HFViT:
    tf = _transformers()
    cls = tf.DeiTModel if kind == "deit" else tf.ViTModel
    with _quiet_transformers():
        try:
            model, info = cls.from_pretrained(str(path), add_pooling_layer=False, local_files_only=True,
                                              output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelError(f"cannot load the {kind} backbone in {path}: {str(e).splitlines()[0]}") from None
    _check_loaded(path, info)
    mean, std = _pixel_stats(path)
    return HFViT(model.float(), 2 if kind == "deit" else 1, mean, std)


def theia_vit_config(shapes: dict[str, list[int]], backbone: str, prefix: str = "backbone.model."):
    """The ``transformers.ViTConfig`` of a Theia checkpoint's DeiT, from its tensor shapes."""
    tf = _transformers()
    if "nocls" in backbone or "reg" in backbone:
        raise ModelError(f"Theia with a '{backbone}' backbone is not supported (the release uses a plain DeiT)")
    try:
        width = shapes[prefix + "embeddings.cls_token"][-1]
        patch = shapes[prefix + "embeddings.patch_embeddings.projection.weight"][-1]
        n_pos = shapes[prefix + "embeddings.position_embeddings"][1] - 1
        hidden = shapes[prefix + "encoder.layer.0.intermediate.dense.weight"][0]
    except KeyError as e:
        raise ModelError(f"not a Theia checkpoint: no tensor {e.args[0]}") from None
    layer = re.compile(re.escape(prefix) + r"encoder\.layer\.(\d+)\.")
    layers = 1 + max(int(m.group(1)) for k in shapes if (m := layer.match(k)))
    side = math.isqrt(n_pos)
    if side * side != n_pos:
        raise ModelError(f"not a Theia checkpoint: {n_pos} position embeddings is not a square grid")
    return tf.ViTConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=_HEADS.get(width, width // 64),
                        intermediate_size=hidden, patch_size=patch, image_size=side * patch,
                        qkv_bias=prefix + "encoder.layer.0.attention.attention.query.bias" in shapes,
                        layer_norm_eps=1e-12, hidden_act="gelu")


def _load_theia(path: Path, backbone: str) -> HFViT:
    from safetensors import safe_open
    tf = _transformers()
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{path} has no .safetensors weights")
    shapes = {}
    for f in files:
        with safe_open(str(f), "pt") as fh:
            shapes.update({k: list(fh.get_slice(k).get_shape()) for k in fh.keys()})
    vit_cfg = theia_vit_config(shapes, backbone)
    with _quiet_transformers():
        try:
            model, info = tf.ViTModel.from_pretrained(
                str(path), config=vit_cfg, add_pooling_layer=False, local_files_only=True, output_loading_info=True,
                key_mapping={r"^backbone\.model\.": ""})
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelError(f"cannot load the Theia backbone in {path}: {str(e).splitlines()[0]}") from None
    _check_loaded(path, info)
    return HFViT(model.float(), 1, HALF, HALF)    # Theia's DeiT wrapper: (x - 127.5) / 127.5


def _check_loaded(path: Path, info: dict) -> None:
    missing = [k for k in info.get("missing_keys", []) if "pooler" not in k]
    if missing:
        raise ModelError(f"the backbone in {path} lacks {len(missing)} tensors (e.g. {sorted(missing)[0]})")
    bad = info.get("mismatched_keys") or []
    if bad:
        raise ModelError(f"the backbone in {path} has tensors of the wrong shape (e.g. {bad[0][0]})")


class PretrainedBackbone(FeatureSpace):
    """The ``"backbone"`` feature space: a frozen pretrained ViT (module doc). ``source`` is a path
    (loaded on first use) or a loaded backbone; it is kept out of the state dict (not ours to ship)."""

    can_render = False
    trainable = False

    def __init__(self, source, patch: int, feature_dim: int, fit: str = "interpolate"):
        super().__init__()
        if fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
        self.patch, self.feature_dim, self.fit = patch, feature_dim, fit
        loaded = source if isinstance(source, nn.Module) else None
        self.source = None if loaded is not None else source
        object.__setattr__(self, "_model", loaded)

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            if not self.source:
                raise ModelError("this model's features come from a pretrained backbone: give its local folder "
                                 "(--backbone DIR, or backbone=DIR), e.g. a Theia or DeiT folder in the "
                                 "Hugging Face layout (see semcodec.features.backbone)")
            object.__setattr__(self, "_model", load_backbone(self.source))
        m = self._model
        if m.patch != self.patch or m.width != self.feature_dim:
            raise ModelError(f"the backbone has patch {m.patch} and width {m.width}, the model needs "
                             f"{self.patch} and {self.feature_dim}")
        return m.requires_grad_(False).eval()

    def _apply(self, fn, *args, **kwargs):
        # .to(device) / .float() reach the backbone too, though it is not a registered submodule
        super()._apply(fn, *args, **kwargs)
        if self._model is not None:
            self._model._apply(fn, *args, **kwargs)
        return self

    @torch.no_grad()
    def embed(self, video):
        """``B x T x H x W x 3`` in ``[-1, 1]`` -> ``B x T x H/p x W/p x C``."""
        self.check_video(video)
        m = self.model
        B, T, H, W, _ = video.shape
        x = (rearrange(video, "b t h w c -> (b t) c h w").float() + 1) / 2
        if self.fit == "pad_square" and H != W:
            s = max(H, W)
            x = F.pad(x, (0, s - W, 0, s - H), value=GREY)
        x = (x - x.new_tensor(m.mean).view(1, 3, 1, 1)) / x.new_tensor(m.std).view(1, 3, 1, 1)
        feats = m.to(x.device)(x)[:, :H // self.patch, :W // self.patch]
        return rearrange(feats, "(b t) h w c -> b t h w c", b=B)
