"""The command-line options both generation trainers (``generation.lm.train``,
``generation.diffusion.train``) take: steps, AdamW and its schedule, precision, logging,
checkpoints, a time limit, threads and the seed. Each trainer gives its own defaults."""
from __future__ import annotations

import argparse


def add_run_args(p: argparse.ArgumentParser, *, lr: float, warmup: int, weight_decay: float, beta2: float) -> None:
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--min-lr", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=warmup, help="linear warm-up steps")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--weight-decay", type=float, default=weight_decay)
    p.add_argument("--beta2", type=float, default=beta2)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--max-minutes", type=float, default=0, help="stop (with a checkpoint) after this long")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: leave)")
    p.add_argument("--seed", type=int, default=0)
