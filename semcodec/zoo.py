"""Shipped models: ``semcodec/weights/NAME.safetensors``, found by name; or any checkpoint path."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import Checkpoint, load_checkpoint
from .presets import list_presets

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "s128"


# Named operating points: a shipped model at another semantic frame rate (the rate control: its
# tokens/s scale with the rate). Streams record the weights' name, so they decode alike.
OPERATING_POINTS = {"s128-2fps": ("s128", 2.0), "s128-8fps": ("s128", 8.0)}


def operating_point(model: str | Path | None) -> tuple[str | Path | None, float | None]:
    """``(model to load, semantic fps or None for the model's own)`` for a name or path."""
    if isinstance(model, str) and model in OPERATING_POINTS:
        return OPERATING_POINTS[model]
    return model, None


class ModelError(ValueError):
    """A model that cannot be found or loaded (message is user-facing)."""


def shipped_models() -> list[str]:
    # NAME.context.safetensors beside NAME.safetensors is NAME's entropy model, not a model
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors") if "." not in p.stem)


def model_file(model: str | Path | None) -> Path | None:
    """The weights file ``load_model(model)`` reads (None for a name it does not know)."""
    model = str(model or DEFAULT_MODEL)
    if Path(model).suffix == ".safetensors" or Path(model).exists():
        return Path(model)
    return WEIGHTS_DIR / f"{model}.safetensors" if model in shipped_models() else None


def load_model(model: str | Path | None = None, device="cpu") -> Checkpoint:
    """``model``: None (the default), a shipped model name, or a path to a checkpoint."""
    model = str(model or DEFAULT_MODEL)
    path = Path(model)
    if path.suffix == ".safetensors" or path.exists():
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
        return load_checkpoint(path, map_location=device)
    except (ValueError, OSError) as e:
        raise ModelError(f"cannot load model {path}: {_one_line(e)}") from None


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
