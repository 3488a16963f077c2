"""Renderer checkpoints: safetensors weights with the config and a content hash in the metadata.

The metadata holds ``format`` (``generation-renderer-1``), ``config`` (the :class:`RendererConfig`
JSON), ``content_hash`` (SHA-256 over the config JSON and the tensors, as semcodec's format-2
checkpoints: :func:`semcodec.checkpoint.content_hash`), ``stage`` (1: backbone only; 2: backbone,
control branch and semantic upsampler) and ``extra`` (JSON: training step, data, ...).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from semcodec.checkpoint import atomic_save_file, content_hash, read_tagged

from .config import RendererConfig
from .control import RendererModel

FORMAT = "generation-renderer-1"


@dataclass
class RendererCheckpoint:
    model: RendererModel             # float32, eval mode
    config: RendererConfig
    content_hash: str
    stage: int
    extra: dict = field(default_factory=dict)


SCALE = ".int8_scale"        # int8 checkpoints: a quantised matrix's per-row scales (float16)


def model_state(model: RendererModel, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The state to write: floating tensors cast to ``dtype``; with ``torch.int8``, every weight
    of 2+ dimensions becomes int8 with one float16 scale per output row (symmetric, absmax / 127:
    a shipped renderer at a quarter of its float32 size) and the rest float16."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if dtype == torch.int8 and v.is_floating_point() and v.ndim >= 2:
            rows = v.float().reshape(v.shape[0], -1)
            scale = (rows.abs().amax(1) / 127).clamp_min(1e-12).half()
            out[k] = torch.round(rows / scale.float()[:, None]).clamp(-127, 127).to(torch.int8).reshape(v.shape)
            out[k + SCALE] = scale
        elif dtype == torch.int8:
            out[k] = v.half() if v.is_floating_point() else v
        else:
            out[k] = v.to(dtype) if (dtype is not None and v.is_floating_point()) else v
    return out


def float_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A stored state as float32 (int8 matrices times their row scales)."""
    out = {}
    for k, v in state.items():
        if k.endswith(SCALE):
            continue
        if k + SCALE in state:
            scale = state[k + SCALE].float()
            if v.dtype != torch.int8 or scale.shape != (v.shape[0],):
                raise ValueError(f"malformed int8 tensor {k}")
            v = (v.float().reshape(v.shape[0], -1) * scale[:, None]).reshape(v.shape)
        out[k] = v.float() if v.is_floating_point() else v
    return out


def save_renderer(model: RendererModel, path, extra: dict | None = None, dtype: torch.dtype | None = None) -> str:
    """Write ``model`` atomically (floating tensors cast to ``dtype`` when given, ``torch.int8``
    as :func:`model_state` says); return the hash."""
    state = model_state(model, dtype)
    cfg_json = model.cfg.to_json()
    digest = content_hash(state, cfg_json)
    atomic_save_file(state, path, {"format": FORMAT, "config": cfg_json, "content_hash": digest,
                                   "stage": str(2 if model.has_control else 1),
                                   "extra": json.dumps(extra or {}, sort_keys=True)})
    return digest


def load_renderer_checkpoint(path, map_location="cpu", verify: bool = True) -> RendererCheckpoint:
    """A checkpoint written by :func:`save_renderer`; ValueError (one line) for anything wrong."""
    meta, cfg, state = read_tagged(path, FORMAT, "a renderer checkpoint", RendererConfig.from_dict, verify)
    stage = 2 if any(k.startswith("control.") for k in state) else 1
    model = RendererModel(cfg, control=stage == 2)
    try:
        model.load_state_dict(float_state(state))
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: the weights do not fit the config ({str(e).splitlines()[0]})") from None
    return RendererCheckpoint(model.to(map_location).eval(), cfg, meta["content_hash"], stage,
                              json.loads(meta.get("extra", "{}")))
