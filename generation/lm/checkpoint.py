"""LM checkpoints: safetensors weights with the config and a content hash in the metadata.

The metadata holds ``format`` (``generation-lm-1``), ``config`` (the :class:`LMConfig` JSON),
``content_hash`` (SHA-256 over the config JSON and the tensors, as semcodec's format-2 codec
checkpoints: :func:`semcodec.checkpoint.content_hash`) and ``extra`` (JSON: training step, ...).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from semcodec.checkpoint import atomic_save_file, content_hash, read_tagged

from .model import LMConfig, TokenLM

FORMAT = "generation-lm-1"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"      # shipped LMs: generation/weights/NAME.safetensors


def shipped_lms() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("lm-*.safetensors"))


def resolve_lm(name_or_path) -> Path:
    """A shipped LM's name (``lm-world``) or a checkpoint path -> the file; ValueError if neither."""
    s = str(name_or_path)
    if s in shipped_lms():
        return WEIGHTS_DIR / f"{s}.safetensors"
    p = Path(s)
    if p.is_file():
        return p
    if p.suffix == ".safetensors" or p.exists():
        raise ValueError(f"no such LM file: {s}")
    raise ValueError(f"unknown LM '{s}' (shipped: {', '.join(shipped_lms()) or 'none'})")


@dataclass
class LMCheckpoint:
    model: TokenLM                   # float32, eval mode
    config: LMConfig
    content_hash: str
    extra: dict = field(default_factory=dict)


def lm_state(model: TokenLM, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model's tensors on the CPU, floating ones cast to ``dtype`` when given."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        out[k] = v.to(dtype) if (dtype is not None and v.is_floating_point()) else v
    return out


def save_lm(model: TokenLM, path, extra: dict | None = None, dtype: torch.dtype | None = None,
            config: LMConfig | None = None, state: dict | None = None) -> str:
    """Write ``model`` (config: its own, or ``config``; tensors: its own, or ``state``, e.g. gathered
    from shards) atomically; return the content hash."""
    if state is not None:
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in state.items()}
    else:
        state = lm_state(model, dtype)
    cfg_json = (config or model.config).to_json()
    digest = content_hash(state, cfg_json)
    atomic_save_file(state, path, {"format": FORMAT, "config": cfg_json, "content_hash": digest,
                                   "extra": json.dumps(extra or {}, sort_keys=True)})
    return digest


def load_lm(path, map_location="cpu", verify: bool = True) -> LMCheckpoint:
    """A checkpoint written by :func:`save_lm` (a path, or a shipped LM's name); ValueError for
    anything wrong with the file."""
    path = resolve_lm(path)
    meta, cfg, state = read_tagged(path, FORMAT, "an LM checkpoint", LMConfig.from_dict, verify)
    model = TokenLM(cfg)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as e:
        raise ValueError(f"{path}: the weights do not fit the config ({str(e).splitlines()[0]})") from None
    return LMCheckpoint(model.to(map_location).eval(), cfg, meta["content_hash"], json.loads(meta.get("extra", "{}")))


def load_weights(model: TokenLM, path) -> None:
    """Load a checkpoint's tensors into ``model`` (same config; resume)."""
    model.load_state_dict(load_file(str(Path(path))))
