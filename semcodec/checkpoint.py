"""Checkpoints: safetensors weights with the config and a content hash in the metadata.

The content hash is the model identity that token streams carry, so a stream can only be decoded
by the model that made it. Format 2 (written now) hashes the config JSON and then the tensors
(names, dtypes, shapes and bytes, in name order); format 1 (the shipped ``s128``) hashed the
tensors only and is still read, so its streams keep their identity.

A model's identity is its name plus that content hash (:class:`ModelIdentity`): the name is
recorded in the metadata (``name``) by export and training, and is not the preset's name (the
config's ``name``, which says which architecture to build); a checkpoint without one (the shipped
``s128``) is named by its config.

A checkpoint is a file from anywhere: its header is parsed with bounded memory, its config
checked against ``limits`` and against the size of its tensors, and its hash verified, all
before a model is built. The model is then built on the meta device (no memory, no random
initialisation) and takes the file's tensors as its own (``load_state_dict(assign=True)``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import atomic_path
from .limits import check_config, min_parameters
from .presets import CodecConfig

FORMAT = "semcodec-checkpoint-2"                    # what save_checkpoint writes
FORMATS = ("semcodec-checkpoint-1", FORMAT)         # what load_checkpoint reads
MAX_HEADER = 4 << 20                                # safetensors JSON header: tensor table + metadata


def content_hash(state: dict[str, torch.Tensor], config_json: str | None = None) -> str:
    """SHA-256 over ``config_json`` (format 2; None for format 1) and the tensors."""
    h = hashlib.sha256()
    if config_json is not None:
        h.update(f"config|{len(config_json)}|".encode() + config_json.encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def atomic_save_file(tensors: dict, path: str | Path, metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


PRIOR_KEY = "entropy.token_counts"     # int64 K: token frequencies on the training data


@dataclass(frozen=True)
class ModelIdentity:
    """Which model made a token stream or a dataset: ``name`` (a label, e.g. ``"s128"``) and
    ``content_hash`` (SHA-256 of its config and weights: the part that is checked)."""
    name: str
    content_hash: str

    def __str__(self) -> str:
        return f"{self.name} ({self.content_hash[:12]})"


@dataclass
class Checkpoint:
    model: torch.nn.Module          # VideoTokenizer, float32, eval mode
    config: CodecConfig             # config.name is the preset (architecture), not the model's name
    content_hash: str
    token_counts: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    model_name: str | None = None   # the model's own name (None: the config's)

    @property
    def name(self) -> str:
        return self.model_name or self.config.name

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(self.name, self.content_hash)


def save_checkpoint(model: torch.nn.Module, config: CodecConfig, path: str | Path, dtype: torch.dtype | None = None,
                    extra: dict | None = None, token_counts: np.ndarray | None = None,
                    name: str | None = None) -> str:
    """Write ``model.state_dict()`` (optionally cast to ``dtype``) and, when given, the entropy
    prior ``token_counts``; return the content hash (which covers both). ``name`` is the model's
    name (recorded in streams it makes; default: the preset's)."""
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.to(dtype) if (dtype is not None and v.is_floating_point()) else v
    if token_counts is not None:
        state[PRIOR_KEY] = torch.as_tensor(np.asarray(token_counts, dtype=np.int64))
    config_json = config.to_json()
    digest = content_hash(state, config_json)
    meta = {"format": FORMAT, "config": config_json, "content_hash": digest, "name": check_name(name or config.name),
            "extra": json.dumps(extra or {}, sort_keys=True)}
    atomic_save_file(state, path, meta)
    return digest


def read_header(path: str | Path) -> tuple[dict, int]:
    """The safetensors header of ``path``: its ``__metadata__`` (a semcodec checkpoint's) and the
    number of elements its tensors hold. Reads at most ``MAX_HEADER`` bytes; ValueError."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or n > MAX_HEADER or 8 + n > size:
            raise ValueError("not a semcodec checkpoint (no safetensors header)")
        raw = f.read(n)
    meta, elements, data = parse_header(raw)
    if 8 + n + data != size:
        raise ValueError(f"truncated or damaged: the tensor data takes {data} bytes, the file holds {size - 8 - n}")
    return meta, elements


def parse_header(raw: bytes) -> tuple[dict, int, int]:
    """``read_header`` on the header's JSON bytes: metadata, tensor elements, data bytes."""
    try:
        d = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("not a semcodec checkpoint (unreadable safetensors header)") from None
    meta = d.pop("__metadata__", None) if isinstance(d, dict) else None
    if not isinstance(meta, dict) or meta.get("format") not in FORMATS:
        raise ValueError("not a semcodec checkpoint")
    if not all(isinstance(meta.get(k), str) for k in ("config", "content_hash")):
        raise ValueError("not a semcodec checkpoint (config or content hash missing)")
    elements, data = 0, 0
    for name, t in d.items():
        shape, span = (t.get("shape"), t.get("data_offsets")) if isinstance(t, dict) else (None, None)
        if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)
                and isinstance(span, list) and len(span) == 2 and all(type(s) is int for s in span)):
            raise ValueError(f"tensor '{str(name)[:64]}' has no valid shape or data offsets")
        elements += int(np.prod(shape, dtype=object))
        data = max(data, span[1])
    return meta, elements, data


def read_metadata(path: str | Path) -> dict:
    return read_header(path)[0]


def read_tagged(path, fmt: str, what: str, config_from_dict, verify: bool = True) -> tuple[dict, object, dict]:
    """A safetensors file whose metadata holds ``format`` ``fmt``, a JSON ``config`` and the
    ``content_hash`` of its tensors and config (generation's LM and renderer checkpoints):
    ``(metadata, config_from_dict(config), tensors)``. ValueError, one line naming ``what``
    ("an LM checkpoint"), for anything wrong with the file."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not {what} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if meta.get("format") != fmt or "config" not in meta or "content_hash" not in meta:
        raise ValueError(f"{path}: not {what} (format {meta.get('format')!r})")
    try:
        cfg = config_from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: invalid config ({e})") from None
    try:
        state = load_file(str(path))
    except SafetensorError as e:
        raise ValueError(f"{path}: corrupt safetensors data ({e})") from None
    if verify and content_hash(state, meta["config"]) != meta["content_hash"]:
        raise ValueError(f"{path}: weights do not match their content hash (corrupt file)")
    return meta, cfg, state


def check_name(name: str) -> str:
    """A model name: 1..256 printable characters (it is written into every stream's header)."""
    if not isinstance(name, str) or not 1 <= len(name) <= 256 or not name.isprintable():
        raise ValueError(f"a model name must be 1..256 printable characters, got {name!r}")
    return name


def checked_config(meta: dict, elements: int) -> CodecConfig:
    """The checkpoint's config, within ``limits`` and backed by enough tensor elements; ValueError."""
    try:
        d = json.loads(meta["config"])
        check_config(d)
        config = CodecConfig.from_dict(d)
    except (ValueError, TypeError, RecursionError) as e:     # LimitError, bad JSON, CodecConfig's own checks
        raise ValueError(f"invalid model config: {e}") from None
    need = min_parameters(config)
    if need > elements:
        raise ValueError(f"invalid model config: it needs at least {need} parameters, the file holds {elements}")
    return config


def load_checkpoint(path: str | Path, map_location="cpu", verify: bool = True, backbone=None) -> Checkpoint:
    """A checkpoint from ``path``; ValueError (one line) for anything wrong with the file.
    ``backbone``: the pretrained backbone of a ``features="backbone"`` model (a local folder or
    file, see ``semcodec.features.backbone``; never read from the checkpoint)."""
    from .bitstream import quantize_prior
    meta, elements = read_header(path)
    config = checked_config(meta, elements)
    name = meta.get("name")
    try:
        name = None if name is None else check_name(name)
    except ValueError as e:
        raise ValueError(f"invalid model name: {e}") from None
    try:
        state = load_file(str(path), device="cpu")
    except SafetensorError as e:
        raise ValueError(f"corrupt safetensors data ({e})") from None
    digest = meta["content_hash"]
    scheme = meta["config"] if meta["format"] == FORMAT else None
    if verify and content_hash(state, scheme) != digest:
        raise ValueError(f"{path}: weights do not match their content hash (corrupt file)")
    counts = state.pop(PRIOR_KEY, None)
    if counts is not None:
        try:
            quantize_prior(counts.numpy())
            if len(counts) != config.codebook_size:
                raise ValueError(f"{len(counts)} counts for a codebook of {config.codebook_size}")
        except (ValueError, TypeError) as e:
            raise ValueError(f"invalid token prior: {e}") from None
    try:
        model = build_from_state(config, state, backbone=backbone)
    except (ValueError, RuntimeError, TypeError, ArithmeticError, IndexError, KeyError) as e:
        raise ValueError(f"the weights do not fit the config ({str(e).splitlines()[0]})") from None
    return Checkpoint(model.to(map_location).eval(), config, digest,
                      None if counts is None else counts.numpy(), meta, name)


def build_from_state(config: CodecConfig, state: dict[str, torch.Tensor], backbone=None) -> torch.nn.Module:
    """A :class:`~semcodec.model.video_tokenizer.VideoTokenizer` for ``config`` holding ``state``
    (float32): built on the meta device, so no memory is spent on weights that are replaced at
    once, then given the tensors themselves (``assign=True``: no copy). Every parameter and
    persistent buffer must be in ``state`` and nothing else (strict)."""
    from .model.video_tokenizer import VideoTokenizer
    with torch.device("meta"):
        model = VideoTokenizer(config, backbone=backbone)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                          strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"the model has tensors the file does not set: {left[:3]}")
    return model
