r"""Train the token LM on a token dataset (``semcodec dataset build``):

    python -m generation.lm.train --data ds/ --out runs/lm --preset lm-world
    torchrun --nproc-per-node 2 -m generation.lm.train --data ds/ --out runs/lm-ddp   # DDP (gloo on CPU)
    torchrun --nproc-per-node 8 -m generation.lm.train --data ds/ --out big/ --preset landiff --fsdp --bf16 \
        --text-encoder t5:DIR         # sharded (FSDP2); DIR: a saved flan-T5-XXL

Each step draws ``--batch`` sequences per process (``--unit group``: one group each; ``clip``: a
whole clip), encodes their captions with the frozen text encoder (states cached per caption),
drops conditions for classifier-free guidance (text 10%, motion 50%, frames 50%), packs the
sequences into rows of ``--pack-len`` positions (each sample attends to itself only) and takes
the cross-entropy on the ids after BOS (codes and specials). AdamW (lr 1e-3, betas 0.9 / 0.95),
linear warm-up (1000 steps) then cosine decay, gradient clipping at 1, optional bf16 autocast.

The token layout and codebook come from the dataset; the preset sizes the network (``--config``
overrides fields as JSON). What a run directory holds:

- ``ckpt/``: ``model.safetensors`` (weights, config, content hash), ``optim.safetensors``,
  ``state.json`` (step, arguments); written to a temporary folder and renamed, so that a run
  killed at any moment (SIGKILL included) resumes from its last complete checkpoint, exactly:
  the items of step s on rank r, and the condition dropout, come from generators seeded by
  (seed, s, r), with no hidden state;
- ``log.jsonl``: one line per logged step (loss, bits per code, lr, tokens/s) and per validation
  (``--val DS``: held-out bits per code); lines past the checkpoint are dropped on resume;
- ``final.safetensors`` the model and ``train.png`` the curves, when the run ends
  (``generation.lm.load_lm`` loads the model).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from semcodec.atomic import atomic_dir
from semcodec.checkpoint import atomic_save_file
from semcodec.precision import slow_bf16_warning
from semcodec.train import (check_replicas, end_dist, exit_after_torchrun, find_checkpoint, learning_rate,
                             past_time_limit, save_panels, setup_dist, truncate_log)

from generation.run_args import add_run_args

from .checkpoint import lm_state, load_weights, save_lm
from .layout import LMDataset
from .model import PRESETS, LMConfig, TokenLM, get_preset, packed_inputs
from .text import CachedTextEncoder, TextEncoder, get_text_encoder


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m generation.lm.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="token dataset folder (semcodec dataset build)")
    p.add_argument("--out", required=True, help="run directory (resumed if it holds a checkpoint)")
    p.add_argument("--preset", default="lm-world", choices=sorted(PRESETS))
    p.add_argument("--config", help="JSON of LMConfig fields overriding the preset")
    p.add_argument("--unit", choices=["group", "clip"], default="group",
                   help="one sequence per group (default) or per whole clip")
    p.add_argument("--text-encoder", help="text encoder spec (default: the preset's): minilm, minilm:DIR, "
                                          "t5:DIR, hash, hash:DIM")
    p.add_argument("--batch", type=int, default=16, help="sequences per step and process")
    p.add_argument("--pack-len", type=int, default=0,
                   help="positions per packed row (0: the longest sequence of the step; sequences shorter "
                        "than a row share it)")
    p.add_argument("--fsdp", action="store_true",
                   help="under torchrun: shard parameters, gradients and optimizer state (FSDP2, one unit per block "
                        "plus the rest) instead of replicating them (DDP); for large presets such as landiff")
    p.add_argument("--val", help="held-out token dataset for validation bits per code")
    p.add_argument("--val-items", type=int, default=256, help="sequences of --val per validation")
    p.add_argument("--val-every", type=int, default=500)
    add_run_args(p, lr=1e-3, warmup=1000, weight_decay=0.1, beta2=0.95)
    return p.parse_args(argv)


# ------------------------------------------------------------------ data
def _seed(*xs: int) -> int:
    return int(np.random.SeedSequence([int(x) for x in xs]).generate_state(1)[0])


@lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def step_items(step: int, rank: int, world: int, batch: int, n: int, seed: int) -> list[int]:
    """Dataset items of ``step`` on ``rank``: the global stream is one permutation of the ``n``
    items per epoch (seeded by ``(seed, epoch)``), dealt out ``batch`` per rank and step."""
    start = (step * world + rank) * batch
    return [int(_epoch_order(seed, k // n, n)[k % n]) for k in range(start, start + batch)]


def condition_keep(cfg: LMConfig, batch: int, seed: int, step: int, rank: int) -> dict[str, torch.Tensor]:
    """Which conditions each sample keeps (False: dropped for classifier-free guidance)."""
    g = torch.Generator().manual_seed(_seed(seed, step, rank, 7))
    u = torch.rand(3, batch, generator=g)
    return {"text": u[0] >= cfg.text_drop, "frames": u[1] >= cfg.frames_drop, "motion": u[2] >= cfg.motion_drop}


class LMLoss(torch.nn.Module):
    """The training forward (what DDP wraps): conditions, packing, transformer, cross-entropy."""

    def __init__(self, model: TokenLM):
        super().__init__()
        self.model = model

    def forward(self, ids, text, frames, motion, keep, capacity):
        m = self.model
        pre = m.prefix(text, frames, motion, keep)
        x, pos, mask, targets, _ = packed_inputs(m, ids, pre, capacity)
        logits = m(x, pos, mask)
        sel = targets >= 0
        t = targets[sel]
        nll = F.cross_entropy(logits[sel].float(), t, reduction="none")
        code = t < m.vocab.codebook_size
        return nll.mean(), nll[code].detach().sum(), int(code.sum()), int(len(t))


# ------------------------------------------------------------------ checkpoints
_SD = dict(full_state_dict=True, cpu_offload=True)


def gather_state(model: TokenLM, opt, fsdp: bool) -> tuple[dict, dict, dict]:
    """Whole-model tensors, and the optimizer's state keyed by parameter name
    (``"NAME|exp_avg"``, ...) with its param groups: complete on rank 0 (a collective under FSDP,
    which every rank calls)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, \
        get_optimizer_state_dict
    opts = StateDictOptions(**_SD)
    state = get_model_state_dict(model, options=opts) if fsdp else lm_state(model)
    o = get_optimizer_state_dict(model, opt, options=opts)
    tensors = {f"{name}|{k}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
               for name, st in o.get("state", {}).items() for k, v in st.items()}
    return state, tensors, {"param_groups": json.dumps(o.get("param_groups", []))}


def load_optimizer(model: TokenLM, opt, path: Path) -> None:
    """Load what :func:`gather_state` saved (whole on every rank; sharded anew under FSDP)."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    state: dict[str, dict] = {}
    for key, v in load_file(str(path)).items():
        name, k = key.rsplit("|", 1)
        state.setdefault(name, {})[k] = v
    with safe_open(str(path), "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
    set_optimizer_state_dict(model, opt, {"state": state, "param_groups": groups},
                             options=StateDictOptions(full_state_dict=True, strict=False))


def save_run(out: Path, step: int, model: TokenLM, gathered: tuple, args) -> None:
    state, optim, meta = gathered
    with atomic_dir(out / "ckpt") as tmp:
        save_lm(model, tmp / "model.safetensors", extra={"step": step}, state=state)
        atomic_save_file(optim, tmp / "optim.safetensors", meta)
        (tmp / "state.json").write_text(json.dumps({"step": step, "args": vars(args),
                                                    "config": model.config.to_dict()}, indent=1))


def plot_log(log: Path, png: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [json.loads(l) for l in log.read_text().splitlines() if l.strip()] if log.exists() else []
    tr = [r for r in rows if "loss" in r]
    va = [r for r in rows if "val_bits_code" in r]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    if tr:
        ax[0].plot([r["step"] for r in tr], [r["loss"] for r in tr], label="train loss (nats)")
        ax[1].plot([r["step"] for r in tr], [r["bits_code"] for r in tr], label="train", alpha=0.6)
    if va:
        ax[1].plot([r["step"] for r in va], [r["val_bits_code"] for r in va], "o-", label="held out")
    save_panels(fig, ax, ("loss", "bits per code"), png)


def run_config(args, ds: LMDataset) -> tuple[LMConfig, TextEncoder]:
    """The run's config and text encoder: the preset, ``--config``'s fields, then the dataset's token
    layout and codec identity and the text encoder's spec and width."""
    cfg = get_preset(args.preset).replace(name=args.preset, **json.loads(args.config or "{}"))
    encoder = get_text_encoder(args.text_encoder or cfg.text_encoder, cfg.max_text_tokens)
    t, m = ds.tokens.meta["tokens"], ds.tokens.model
    cfg = cfg.replace(codebook_size=int(t["codebook_size"]), iframe_tokens=int(t["iframe_tokens"]),
                      pframe_tokens=int(t["pframe_tokens"]), group=int(t["group"]), codec=m["name"],
                      codec_hash=m["hash"], text_encoder=encoder.spec, text_dim=encoder.dim)
    return cfg, encoder


# ------------------------------------------------------------------ main loop
def train(args) -> Path:
    rank, world, dev = setup_dist()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = LMDataset(args.data, unit=args.unit)
    if len(ds) == 0:
        raise SystemExit(f"{args.data} holds no sequences")
    ck = find_checkpoint(out)
    if ck is not None:            # the run's own config, whatever the arguments say now
        cfg = LMConfig.from_dict(json.loads((ck / "state.json").read_text())["config"])
        encoder = get_text_encoder(args.text_encoder or cfg.text_encoder, cfg.max_text_tokens)
    else:
        cfg, encoder = run_config(args, ds)
    encoder = CachedTextEncoder(encoder)
    if ds.vocab != cfg.vocab:
        raise SystemExit(f"the dataset's token layout {ds.vocab} is not the run's {cfg.vocab}")

    if args.fsdp and (world == 1 or args.val):
        raise SystemExit("--fsdp runs under torchrun with 2 or more processes, without --val")
    torch.manual_seed(args.seed)
    model = TokenLM(cfg).to(dev)
    step = 0
    if ck is not None:
        load_weights(model, ck / "model.safetensors")
        step = json.loads((ck / "state.json").read_text())["step"]
    loss_fn = LMLoss(model)
    if args.fsdp:
        from torch.distributed.fsdp import fully_shard
        for layer in model.layers:
            fully_shard(layer)
        fully_shard(loss_fn)         # the root: embeddings, conditions, final norm and head
        ddp = loss_fn
    else:
        ddp = torch.nn.parallel.DistributedDataParallel(loss_fn) if world > 1 else loss_fn
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "emb" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "emb" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, args.beta2))
    if ck is not None:
        load_optimizer(model, opt, ck / "optim.safetensors")
    log = out / "log.jsonl"
    if rank == 0:
        truncate_log(log, step)
        if step:
            print(f"resuming {out} at step {step}", file=sys.stderr)
        else:
            print(f"{cfg.name}: {model.n_params() / 1e6:.2f}M parameters, {len(ds)} sequences, "
                  f"text encoder {encoder.spec}", file=sys.stderr)
        if args.bf16 and (slow := slow_bf16_warning(dev)):
            print(slow, file=sys.stderr)
    val = LMDataset(args.val, unit=args.unit) if (rank == 0 and args.val) else None

    t_start, t_log = time.time(), time.time()
    acc = {"loss": 0.0, "bits": 0.0, "codes": 0, "tokens": 0, "n": 0}
    while step < args.steps:
        model.train()
        lr = learning_rate(args, step)
        for g in opt.param_groups:
            g["lr"] = lr
        items = [ds[i] for i in step_items(step, rank, world, args.batch, len(ds), args.seed)]
        text = encoder.encode([it["caption"] for it in items])
        frames = torch.tensor([float(it["frames"]) for it in items], device=dev)
        motion = torch.tensor([it["motion"] for it in items], device=dev)
        keep = {k: v.to(dev) for k, v in condition_keep(cfg, len(items), args.seed, step, rank).items()}
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss, code_nll, n_code, n_tok = ddp([it["ids"] for it in items], text, frames, motion, keep,
                                                args.pack_len or None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        step += 1
        acc["loss"] += loss.item()
        acc["bits"] += float(code_nll) / math.log(2)
        acc["codes"] += n_code
        acc["tokens"] += n_tok
        acc["n"] += 1
        if rank == 0 and (step % args.log_every == 0 or step == args.steps):
            now = time.time()
            row = {"step": step, "loss": acc["loss"] / acc["n"], "bits_code": acc["bits"] / max(acc["codes"], 1),
                   "lr": lr, "tokens_per_s": acc["tokens"] * world / (now - t_log), "elapsed_s": now - t_start}
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            acc = {k: 0 for k in acc}
            t_log = now
        if val is not None and (step % args.val_every == 0 or step == args.steps):
            from .score import lm_bits
            r = lm_bits(model, val, encoder, range(min(args.val_items, len(val))), batch=args.batch,
                        capacity=args.pack_len or None)
            with log.open("a") as f:
                f.write(json.dumps({"step": step, "val_bits_code": r["bits_code"],
                                    "val_bits_all": r["bits_all"]}) + "\n")
        out_of_time = past_time_limit(args.max_minutes, t_start, world)
        if step % args.ckpt_every == 0 or step == args.steps or out_of_time:
            gathered = gather_state(model, opt, args.fsdp)
            if rank == 0:
                save_run(out, step, model, gathered, args)
            if world > 1:
                dist.barrier()
        if out_of_time:
            break
    if args.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        state = get_model_state_dict(model, options=StateDictOptions(**_SD))
    else:
        check_replicas(model, out, rank, world)
        state = None
    if rank == 0:
        save_lm(model, out / "final.safetensors", extra={"step": step, "data": str(args.data)}, state=state)
        plot_log(log, out / "train.png")
    del ddp, loss_fn, model, opt, state
    end_dist(world)
    return out


def main(argv=None):
    train(parse_args(argv))


if __name__ == "__main__":
    main()
    exit_after_torchrun()
