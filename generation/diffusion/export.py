"""Ship a trained renderer: its stage-2 weights, with the sampling defaults chosen for it.

``python -m generation.diffusion.export runs/ctl/final.safetensors -o world.safetensors
[--dtype int8] [--detail D] [--steps N] [--strength S] [--spacing trailing|linspace]``

A renderer's sampling defaults (steps, spacing, SDEdit strength, a residual renderer's detail) are
fields of its config, so ``semcodec decode --renderer diffusion`` uses what was measured best
without options. This writes the same weights with those fields changed (and a new content hash:
the config is part of it); nothing else moves, and the tokenizer the renderer belongs to stays.
"""
from __future__ import annotations

import argparse
import sys

import torch

from .checkpoint import load_renderer_checkpoint, save_renderer
from .control import RendererModel

DTYPES = {"int8": torch.int8, "float16": torch.float16, "float32": torch.float32}


def export(src, dst, dtype: str = "int8", **defaults) -> str:
    """``src`` (a renderer checkpoint) -> ``dst`` with the sampling ``defaults`` given (None: kept);
    returns the new content hash. ValueError (one line) for a bad file or value."""
    ck = load_renderer_checkpoint(src)
    if ck.stage != 2:
        raise ValueError(f"{src} is a stage-1 backbone: a renderer ships its stage-2 checkpoint")
    cfg = ck.config.replace(**{k: v for k, v in defaults.items() if v is not None})
    model = RendererModel(cfg, control=True)
    model.load_state_dict(ck.model.state_dict())
    return save_renderer(model, dst, ck.extra, DTYPES[dtype])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m generation.diffusion.export", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="a stage-2 renderer checkpoint (final.safetensors of a run)")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--dtype", choices=list(DTYPES), default="int8",
                   help="int8: every matrix int8 with a float16 scale per row (a quarter of float32)")
    p.add_argument("--detail", type=float, default=None, help="a residual renderer's share of its drawn detail, [0, 1]")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--strength", type=float, default=None)
    p.add_argument("--spacing", choices=["trailing", "linspace"], default=None)
    a = p.parse_args(argv)
    if a.steps is not None and a.steps < 1:
        p.error(f"--steps must be at least 1, got {a.steps}")
    try:
        digest = export(a.src, a.out, a.dtype, detail=a.detail, steps=a.steps, strength=a.strength, spacing=a.spacing)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{a.out}: content hash {digest[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
