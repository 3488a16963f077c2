"""Shipped models: ``semcodec/weights/NAME.safetensors``, found by name; or any checkpoint path."""
from __future__ import annotations

from pathlib import Path

from .bitstream.context import is_context_file
from .checkpoint import Checkpoint, load_checkpoint
from .errors import ModelError
from .presets import list_presets

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "s128"


# Named operating points: a shipped model at another semantic frame rate (the rate control: its
# tokens/s scale with the rate). Streams record the weights' name, so they decode alike.
OPERATING_POINTS = {"s128-2fps": ("s128", 2.0), "s128-4fps": ("s128", 4.0), "s128-8fps": ("s128", 8.0)}


# Shipped models whose decoder alone was retrained (``semcodec train --decoder-only``): content
# hash -> the hashes of the earlier shipped versions that make the same tokens. Their streams
# decode with it (Codec.check_stream), so an upgrade loses no file; the key is the content hash,
# which loading verifies, never a name a user's model could also take.
SAME_TOKENS = {
    # s128 of the sixth session (decoder retrained) <- s128 of 2026-11-27
    "ed4767d3a484aaace6d8b8cdf9a91dab": ("58a54fc9e7b04cd2966af907cf2da4487124927fb6523c6f72f875a68ae94d77",),
}


def operating_point(model: str | Path | None) -> tuple[str | Path | None, float | None]:
    """``(model to load, semantic fps or None for the model's own)`` for a name or path."""
    if isinstance(model, str) and model in OPERATING_POINTS:
        return OPERATING_POINTS[model]
    return model, None


def shipped_models() -> list[str]:
    # NAME.context[.HASH].safetensors beside NAME.safetensors are NAME's entropy models, not models
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors") if "." not in p.stem)


def model_file(model: str | Path | None) -> Path | None:
    """The weights file ``load_model(model)`` reads (None for a name it does not know, or a
    folder without one)."""
    model = str(model or DEFAULT_MODEL)
    path = Path(model)
    if path.is_dir():
        try:
            return checkpoint_in(path)
        except ModelError:
            return None
    if path.suffix == ".safetensors" or path.exists():
        return path
    return WEIGHTS_DIR / f"{model}.safetensors" if model in shipped_models() else None


def checkpoint_in(folder: Path) -> Path:
    """The checkpoint a model folder holds: ``model.safetensors``, or its only ``*.safetensors``."""
    if (folder / "model.safetensors").is_file():
        return folder / "model.safetensors"
    files = sorted(p for p in folder.glob("*.safetensors") if not is_context_file(p))
    if len(files) != 1:
        raise ModelError(f"no model in {folder}: a model folder holds model.safetensors "
                         f"({'no' if not files else len(files)} other .safetensors files found)")
    return files[0]


def load_model(model: str | Path | None = None, device="cpu", backbone=None) -> Checkpoint:
    """``model``: None (the default), a shipped model name, a checkpoint file or a folder holding
    one. The authors' released tokenizer checkpoint is converted on the way (``semcodec.convert``;
    ``semcodec convert`` writes it once). ``backbone``: the local pretrained backbone of a model
    whose features come from one."""
    model = str(model or DEFAULT_MODEL)
    path = Path(model)
    if path.is_dir():
        path = checkpoint_in(path)
    elif path.suffix == ".safetensors" or path.exists():
        if not path.is_file():
            raise ModelError(f"no such model file: {model}")
    elif model in shipped_models():
        path = WEIGHTS_DIR / f"{model}.safetensors"
    elif model in list_presets():
        raise ModelError(f"model '{model}' is a preset with no shipped weights (shipped: "
                         f"{', '.join(shipped_models()) or 'none'}); train one with `semcodec train --preset {model}`")
    else:
        raise ModelError(f"unknown model '{model}' (shipped: {', '.join(shipped_models()) or 'none'})")
    try:
        if _is_release(path):
            return _load_release(path, device, backbone)
        return load_checkpoint(path, map_location=device, backbone=backbone)
    except (ValueError, OSError) as e:
        raise ModelError(f"cannot load model {path}: {_one_line(e)}") from None


def _is_release(path: Path) -> bool:
    """A safetensors file without semcodec's metadata whose tensors are the release tokenizer's."""
    from .checkpoint import parse_header
    from .convert import is_release_state
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > 64 << 20:
                return False
            raw = f.read(n)
        import json
        d = json.loads(raw)
    except (OSError, ValueError):
        return False
    if not isinstance(d, dict):
        return False
    try:
        parse_header(raw)
        return False                       # a semcodec checkpoint
    except ValueError:
        return is_release_state(k for k in d if k != "__metadata__")


def _load_release(path: Path, device, backbone) -> Checkpoint:
    from .checkpoint import Checkpoint, build_from_state, content_hash
    from .convert import load_release
    config, state = load_release(path)
    model = build_from_state(config, state, backbone=backbone)
    digest = content_hash(model.state_dict(), config.to_json())
    return Checkpoint(model.to(device).eval(), config, digest, None, {}, "landiff")


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
