"""Turn a training run into a shippable model: EMA weights in float16 plus the entropy prior.

``semcodec export RUN_DIR -o my-model.safetensors [--name NAME] [--prior-batches N]``
(also ``python -m semcodec.export``).

The model's identity is its name plus its content hash: the name is ``--name``, else the output
file's stem (``my-model``), never the preset's, so the streams it makes cannot be mistaken for
those of a shipped model of that preset. The prior is the token frequency of the model on its own
training data (the run's ``--data`` sources, read back from its saved :class:`TrainConfig`, fresh
batches drawn with another seed), add-one smoothed so every code stays codable.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from .checkpoint import build_from_state, save_checkpoint
from .errors import ConfigError
from .model.video_tokenizer import VideoTokenizer
from .presets import CodecConfig
from .train_config import TrainConfig


@torch.no_grad()
def measure_prior(model: VideoTokenizer, batches, n: int) -> np.ndarray:
    counts = np.ones(model.config.codebook_size, dtype=np.int64)
    for i in range(n):
        idx = model.encode(batches(10_000_000 + i, 0))
        counts += np.bincount(idx.flatten().numpy(), minlength=len(counts))
    return counts


def read_run(run_dir: str | Path) -> tuple[dict, CodecConfig, TrainConfig]:
    """A run folder's last checkpoint: ``(state.json, model config, training config)``."""
    from .train import find_checkpoint
    run = Path(run_dir)
    ck = find_checkpoint(run) if run.is_dir() else None
    if ck is None:
        raise ConfigError(f"{run_dir} is not a training run with a checkpoint (no ckpt/state.json)")
    state = json.loads((ck / "state.json").read_text())
    return state, CodecConfig.from_dict(state["config"]), TrainConfig.from_dict(state["args"])


def export(run_dir: str | Path, out: str | Path, prior_batches: int = 100, name: str | None = None,
           backbone: str | None = None, fps: float | None = None, prior_from: str | None = None) -> str:
    """Write the run's EMA weights (float16) and token prior to ``out``; returns the content hash.
    ``name``: the model's name (default: ``out``'s stem). ``backbone``: the run's backbone folder
    (default: the one it trained with). ``fps``: the model's own semantic rate (default: the run's).
    ``prior_from``: take the token prior of this model, which must make the same tokens (a
    ``--decoder-only`` run's ``--init``), so streams coded with its prior stay decodable."""
    from .checkpoint import check_name
    from .data.sources import make_sources
    from .train import Batches, find_checkpoint
    if prior_batches < 0:
        raise ConfigError(f"--prior-batches must be 0 or more, got {prior_batches}")
    name = name or Path(out).stem
    try:
        check_name(name)
    except ValueError as e:
        raise ConfigError(f"--name: {e}") from None
    state, cfg, args = read_run(run_dir)
    if fps is not None:
        from .limits import LimitError, check_semantic_fps
        try:
            cfg = cfg.replace(fps=check_semantic_fps(fps))
        except LimitError as e:
            raise ConfigError(str(e)) from None
    backbone = backbone or args.backbone
    from safetensors.torch import load_file
    ema = load_file(str(find_checkpoint(Path(run_dir)) / "ema.safetensors"))
    # round-trip through float16 first so the prior is measured on exactly the shipped weights
    half = build_from_state(cfg, {k: v.half().float() if v.is_floating_point() else v for k, v in ema.items()},
                            backbone=backbone).eval()
    counts = None                # prior_batches 0: a quick snapshot with no prior
    if prior_from is not None:
        from .model.video_tokenizer import token_difference
        from .zoo import load_model
        donor = load_model(prior_from, "cpu")
        why = token_difference(donor.model, half)
        if why:
            raise ConfigError(f"--prior-from {prior_from} does not make the run's tokens: {why}")
        if donor.token_counts is None:
            raise ConfigError(f"--prior-from {prior_from} holds no token prior")
        counts = donor.token_counts
    elif prior_batches > 0:
        batches = Batches(make_sources(args.data, cfg.fps), args.weights or None, cfg,
                          list(args.widths) or [cfg.frame_size[1]], 1, args.seed)
        counts = measure_prior(half, batches, prior_batches)
    # the run's folder name, not its path: a checkpoint carries no path of the machine that made it
    return save_checkpoint(half, cfg, out, dtype=torch.float16, token_counts=counts, name=name,
                           extra={"step": state["step"], "run": Path(run_dir).resolve().name,
                                  "prior_batches": 0 if prior_from else prior_batches,
                                  **({"prior_from": donor.name} if prior_from else {})})


def main(argv=None) -> int:
    """``python -m semcodec.export``: the ``semcodec export`` command on its own."""
    from .cli import export as export_cmd, run_click
    return run_click(export_cmd, argv, "python -m semcodec.export")


if __name__ == "__main__":
    sys.exit(main())
