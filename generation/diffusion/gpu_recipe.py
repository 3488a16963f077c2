"""Train the `world` renderer on one lent GPU, within one call of the device tool (10 minutes).

On a CPU the renderer is compute-bound (2.4 groups/s for stage 2 on 2 cores: docs/renderer.md);
this recipe is what a lent GPU should run. Nothing but the code travels:

``python -m generation.diffusion.gpu_recipe wheels`` (here, once): diffusers (pure Python, its
schedulers; no dependencies) into ``runs/wheels-gen``, the one package the bare machine lacks.

``python -m generation.diffusion.gpu_recipe train --out $OUT/renderer --minutes 8`` (there; carry
``runs/wheels-gen``, put its wheel on ``PYTHONPATH``):

1. pairs: ``--clips`` clips of the world's train split rendered there by all cores and coded by
   the shipped `world` tokenizer on the GPU (``generation.diffusion.data`` with a ``world:train``
   source: no PyAV, no video files, no lossy coding of the source);
2. stage 1, the text-conditioned backbone, for ``--stage1-share`` of the time left, then stage 2
   for the rest: the control branch and upsampler, with the backbone trained too, drawing the
   residual over the direct decode (``--residual``, the better of the two on the CPU:
   docs/renderer.md; ``--residual 0``: the paper's, on the frozen backbone); each stage's cosine
   schedule sized from a timing of its first steps; bf16 autocast;
3. ``final-int8.safetensors`` of stage 2 (about 9 MB) comes back. Judge it with
   ``python -m bench.renderer --renderer .../final-int8.safetensors`` before copying it to
   ``generation/diffusion/weights/world.safetensors``.

The text encoder is the hashing one (``hash:384``) by default: the MiniLM weights' package is not on
the bare machine, and decodes (the renderer's main use) read no text; ``--text minilm`` where it is
installed. bf16 autocast only where it is native (``semcodec.precision``): on a CPU without it the
same recipe runs in float32.

The device tool's command line: ``PYTHONPATH=$(ls runs/wheels-gen/*.whl | tr '\\n' :) python -m
generation.diffusion.gpu_recipe train --out $OUT/renderer --minutes 8``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def wheels(out: str) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    from importlib.metadata import version
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", out,
                    f"diffusers=={version('diffusers')}"], check=True)


def _steps_per_second(common: list[str], out: Path, extra: list[str], probe: int, batch: int) -> float:
    """Steps per second of a scratch run of ``2 x probe`` steps, read from its log's second
    interval (the first holds the warm-up: allocator, kernels)."""
    from .train import main as train_main
    scratch = out / f"timing-{extra[1]}"
    train_main(common + extra + ["--out", str(scratch), "--steps", str(2 * probe), "--warmup", "1",
                                 "--log-every", str(probe), "--ckpt-every", "100000"])
    rows = [json.loads(x) for x in (scratch / "log.jsonl").read_text().splitlines() if x.strip()]
    return rows[-1]["groups_per_s"] / batch


def train(a) -> Path:
    import torch
    from .data import build_pairs
    t_start = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    pairs = out / "pairs"
    if not (pairs / "meta.json").exists():
        meta = build_pairs(["world:train"], pairs, a.model, max_clips=a.clips, scale=2, device=dev,
                           workers=a.workers, log=lambda m: print(m, file=sys.stderr))
        print(f"pairs: {meta['groups']} groups in {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    from semcodec.precision import fast_bf16
    common = ["--data", str(pairs), "--preset", "world", "--batch", str(a.batch), "--log-every", "20",
              "--lr", str(a.lr), "--min-lr", str(a.lr / 20)] + (["--bf16"] if fast_bf16(dev) else [])
    s1 = ["--stage", "1", "--config", json.dumps({"text_encoder": a.text, "text_dim": 384})]
    rate1 = _steps_per_second(common, out, s1, a.probe, a.batch)
    left = 60 * a.minutes - (time.perf_counter() - t_start)
    steps1 = max(10, int(rate1 * left * a.stage1_share * 0.95))
    from .train import main as train_main
    train_main(common + s1 + ["--out", str(out / "stage1"), "--steps", str(steps1), "--warmup", str(min(200, steps1 // 10)),
                              "--ckpt-every", "1000", "--max-minutes", str(max(0.25, left * a.stage1_share / 60))])
    backbone = out / "stage1" / "final.safetensors"
    s2 = ["--stage", "2", "--backbone", str(backbone)]
    if a.residual:
        s2 += ["--unfreeze-backbone", "--config", json.dumps({"residual_scale": a.residual})]
    rate2 = _steps_per_second(common, out, s2, a.probe, a.batch)
    left = 60 * a.minutes - (time.perf_counter() - t_start)
    steps2 = max(10, int(rate2 * left * 0.95))
    train_main(common + s2 + ["--out", str(out / "stage2"), "--steps", str(steps2), "--warmup", str(min(200, steps2 // 10)),
                              "--ckpt-every", "1000", "--ship-dtype", "int8", "--max-minutes", str(max(0.5, left / 60))])
    print(json.dumps({"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "stage1_steps": steps1,
                      "stage2_steps": steps2, "stage1_steps_per_s": rate1, "stage2_steps_per_s": rate2,
                      "batch": a.batch, "seconds": time.perf_counter() - t_start}))
    return out / "stage2" / "final-int8.safetensors"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m generation.diffusion.gpu_recipe", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wheels", help="download diffusers (no deps) for the bare GPU machine")
    w.add_argument("-o", "--out", default="runs/wheels-gen")
    t = sub.add_parser("train", help="pairs, stage 1 and stage 2 within --minutes")
    t.add_argument("--out", required=True)
    t.add_argument("--minutes", type=float, default=8.0)
    t.add_argument("--model", default="world", help="the tokenizer whose tokens it renders")
    t.add_argument("--clips", type=int, default=2000, help="world train clips (two groups each)")
    t.add_argument("--workers", type=int, default=14, help="processes rendering the clips")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--stage1-share", type=float, default=0.4, help="of the time left after the pairs")
    t.add_argument("--residual", type=float, default=2.5,
                   help="stage 2 draws (frames - direct decode) x this, backbone trained too; 0: frozen backbone")
    t.add_argument("--probe", type=int, default=10, help="steps timed to size each schedule")
    t.add_argument("--text", default="hash:384", choices=["hash:384", "minilm"],
                   help="the text encoder (MiniLM where its package is installed: a CPU run here)")
    a = p.parse_args(argv)
    if a.cmd == "wheels":
        wheels(a.out)
    else:
        print(train(a))


if __name__ == "__main__":
    main()
