"""Checkpoints: safetensors weights with the config and a content hash in the metadata.

The content hash (SHA-256 over tensor names, dtypes, shapes and bytes, in name order) is the
model identity that token streams carry, so a stream can only be decoded by the model that made it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .atomic import atomic_path
from .presets import CodecConfig

FORMAT = "semcodec-checkpoint-1"


def content_hash(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def atomic_save_file(tensors: dict, path: str | Path, metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


PRIOR_KEY = "entropy.token_counts"     # int64 K: token frequencies on the training data


@dataclass
class Checkpoint:
    model: torch.nn.Module          # VideoTokenizer, float32, eval mode
    config: CodecConfig
    content_hash: str
    token_counts: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name


def save_checkpoint(model: torch.nn.Module, config: CodecConfig, path: str | Path, dtype: torch.dtype | None = None,
                    extra: dict | None = None, token_counts: np.ndarray | None = None) -> str:
    """Write ``model.state_dict()`` (optionally cast to ``dtype``) and, when given, the entropy
    prior ``token_counts``; return the content hash (which covers both)."""
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.to(dtype) if (dtype is not None and v.is_floating_point()) else v
    if token_counts is not None:
        state[PRIOR_KEY] = torch.as_tensor(np.asarray(token_counts, dtype=np.int64))
    digest = content_hash(state)
    meta = {"format": FORMAT, "config": config.to_json(), "content_hash": digest,
            "extra": json.dumps(extra or {}, sort_keys=True)}
    atomic_save_file(state, path, meta)
    return digest


def read_metadata(path: str | Path) -> dict:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a semcodec checkpoint")
    return meta


def load_checkpoint(path: str | Path, map_location="cpu", verify: bool = True) -> Checkpoint:
    from .model.video_tokenizer import VideoTokenizer
    meta = read_metadata(path)
    config = CodecConfig.from_dict(json.loads(meta["config"]))
    state = load_file(str(path), device="cpu")
    digest = meta["content_hash"]
    if verify and content_hash(state) != digest:
        raise ValueError(f"{path}: weights do not match their content hash (corrupt file)")
    counts = state.pop(PRIOR_KEY, None)
    model = VideoTokenizer(config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return Checkpoint(model.to(map_location).eval(), config, digest,
                      None if counts is None else counts.numpy(), meta)
