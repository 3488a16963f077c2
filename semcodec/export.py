"""Turn a training run into a shippable model: EMA weights in float16 plus the entropy prior.

``python -m semcodec.export RUN_DIR -o semcodec/weights/NAME.safetensors [--prior-batches N]``

The prior is the token frequency of the model on its own training data (the run's ``--data``
sources, fresh batches drawn with another seed), add-one smoothed so every code stays codable.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .checkpoint import save_checkpoint
from .model.video_tokenizer import VideoTokenizer
from .presets import CodecConfig


@torch.no_grad()
def measure_prior(model: VideoTokenizer, batches, n: int) -> np.ndarray:
    counts = np.ones(model.config.codebook_size, dtype=np.int64)
    for i in range(n):
        idx = model.encode(batches(10_000_000 + i, 0))
        counts += np.bincount(idx.flatten().numpy(), minlength=len(counts))
    return counts


def export(run_dir: str | Path, out: str | Path, prior_batches: int = 100, name: str | None = None) -> str:
    from .data.sources import make_sources
    from .train import Batches
    run = Path(run_dir)
    state = json.loads((run / "ckpt" / "state.json").read_text())
    cfg = CodecConfig.from_dict(state["config"])
    if name:
        cfg = cfg.replace(name=name)
    args = state["args"]
    # round-trip through float16 first so the prior is measured on exactly the shipped weights
    half = VideoTokenizer(cfg).eval()
    ema = load_file(str(run / "ckpt" / "ema.safetensors"))
    half.load_state_dict({k: (v.half().float() if v.is_floating_point() else v) for k, v in ema.items()})
    counts = None                # prior_batches 0: a quick snapshot with no prior
    if prior_batches > 0:
        batches = Batches(make_sources(args["data"], cfg.fps), args.get("weights"), cfg,
                          args.get("widths") or [cfg.frame_size[1]], 1, args.get("seed", 0))
        counts = measure_prior(half, batches, prior_batches)
    return save_checkpoint(half, cfg, out, dtype=torch.float16, token_counts=counts,
                           extra={"step": state["step"], "run": str(run), "prior_batches": prior_batches})


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m semcodec.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--prior-batches", type=int, default=100, help="batches to measure the token prior on (0: none)")
    p.add_argument("--name", help="model name to record (default: the preset's)")
    a = p.parse_args(argv)
    digest = export(a.run_dir, a.out, a.prior_batches, a.name)
    print(f"wrote {a.out} ({Path(a.out).stat().st_size / 1e6:.2f} MB, hash {digest[:16]})")


if __name__ == "__main__":
    main()
