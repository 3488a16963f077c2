r"""Train the renderer on (video, tokens) pairs (``python -m generation.diffusion.data``):

    python -m generation.diffusion.train --data pairs/train --out runs/dit --stage 1 --preset world
    python -m generation.diffusion.train --data pairs/train --out runs/ctl --stage 2 \
        --backbone runs/dit/final.safetensors
    torchrun --nproc-per-node 2 -m generation.diffusion.train ...    # DDP (gloo on CPU)

Stage 1 trains the backbone alone as a text-to-video diffusion model on the pairs' frames and
captions. Stage 2 loads it, freezes it, attaches the control branch (a copy of its first layers)
and the semantic upsampler, and trains those two on the tokens' decoder features (the frozen
tokenizer of the pairs' codec decodes them at each step), as the paper does.

Each step draws ``--batch`` groups per process; their frames become the pixel latent ``x0``; a
timestep ``t`` is drawn uniformly from 0..999 and ``x_t = add_noise(x0, noise, t)`` with the
scheduler's own ``alphas_cumprod`` (SNR shift 3, zero terminal SNR); with probability
``prefix_prob`` the group's first ``overlap`` frames stay clean (and out of the loss), as long-video
sampling keeps them; captions are dropped (the null text) with probability ``text_drop``. The loss
is ``min(1 + SNR, loss_cap) * (x0_hat - x0)^2`` (the v-loss, capped) whatever the parameterisation.
AdamW (lr 3e-4, betas 0.9 / 0.99, weight decay 0.01 on matrices), linear warm-up then cosine,
gradient clipping at 1, optional bf16 autocast.

What a run directory holds (the house pattern, as ``generation.lm.train``):

- ``ckpt/``: ``model.safetensors`` (weights, config, content hash), ``optim.safetensors``,
  ``state.json`` (step, arguments, config, stage); written to a temporary folder and renamed, so a
  run killed at any moment resumes from its last complete checkpoint, exactly: the items of step
  ``s`` on rank ``r`` and every random draw (timesteps, noise, prefix, caption dropout) come from
  generators seeded by ``(seed, s, r)``;
- ``log.jsonl``: one line per logged step (loss, lr, groups/s); lines past the checkpoint are
  dropped on resume;
- ``final.safetensors`` (float32; ``--ship-dtype float16`` also writes ``final-float16``), and
  ``train.png``, when the run ends. ``generation.diffusion.load_renderer_checkpoint`` loads it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from semcodec.atomic import atomic_dir
from semcodec.checkpoint import atomic_save_file
from semcodec.precision import slow_bf16_warning
from semcodec.train import (check_replicas, end_dist, exit_after_torchrun, find_checkpoint, learning_rate,
                             past_time_limit, setup_dist, truncate_log)

from generation.lm.text import CachedTextEncoder, get_text_encoder
from generation.lm.train import _seed, gather_state, load_optimizer, step_items
from generation.run_args import add_run_args

from .checkpoint import load_renderer_checkpoint, save_renderer
from .config import PRESETS, RendererConfig, get_preset
from .control import RendererModel
from .data import PairDataset
from .latent import pad_frames, to_latent
from .render import direct_frames
from .sample import pad_text, prefix_keep
from .schedule import to_x0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m generation.diffusion.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="pairs folder (python -m generation.diffusion.data)")
    p.add_argument("--out", required=True, help="run directory (resumed if it holds a checkpoint)")
    p.add_argument("--stage", type=int, choices=[1, 2], default=1,
                   help="1: the backbone, text-conditioned; 2: control branch + upsampler on a frozen backbone")
    p.add_argument("--preset", default="world", choices=sorted(PRESETS))
    p.add_argument("--config", help="JSON of RendererConfig fields overriding the preset (stage 1) or the backbone's")
    p.add_argument("--backbone", help="stage 2: the stage-1 renderer checkpoint to freeze and control")
    p.add_argument("--init", help="stage 2: a stage-2 renderer checkpoint to go on from (its weights and config; "
                                  "--config may add parts that start as the identity, such as refine_channels)")
    p.add_argument("--codec", help="the pairs' tokenizer checkpoint (default: the path recorded in the pairs)")
    p.add_argument("--unfreeze-backbone", action="store_true", help="stage 2: train the backbone too")
    p.add_argument("--text-encoder", help="text encoder spec (default: the config's)")
    p.add_argument("--batch", type=int, default=8, help="groups per step and process")
    p.add_argument("--ship-dtype", choices=["float16", "bfloat16", "int8"],
                   help="also write final-DTYPE.safetensors (int8: per-row int8 matrices, a quarter of float32)")
    add_run_args(p, lr=3e-4, warmup=500, weight_decay=0.01, beta2=0.99)
    return p.parse_args(argv)


# ------------------------------------------------------------------ config and model
def data_fields(ds: PairDataset, codec) -> dict:
    """What the pairs and their codec fix: frame size, group, overlap, features, codec identity."""
    c = codec.config
    H, W = ds.meta["frame_size"]
    s = int(ds.meta.get("scale", 1))
    return {"frame_size": (H, W), "scale": s, "group": c.group, "overlap": c.overlap, "feature_dim": c.feature_dim,
            "feature_grid": (H // s // c.patch, W // s // c.patch), "codec": c.name, "codec_hash": codec.content_hash}


def load_codec(args, ds: PairDataset, device="cpu"):
    from semcodec.codec import Codec
    codec = Codec.load(args.codec or ds.meta["codec"]["path"], device)
    if codec.content_hash != ds.codec_hash:
        raise SystemExit(f"the codec {args.codec or ds.meta['codec']['path']} ({codec.content_hash[:12]}) is not the "
                         f"one that made {args.data} ({ds.codec_hash[:12]})")
    codec.model.requires_grad_(False)
    return codec


def build_model(args, ds: PairDataset, codec, ck: Path | None) -> RendererModel:
    if args.init and args.stage != 2:
        raise SystemExit("--init is for --stage 2 (a trained renderer with its control branch)")
    if ck is not None:           # the run's own config and stage, whatever the arguments say now
        st = json.loads((ck / "state.json").read_text())
        model = RendererModel(RendererConfig.from_dict(st["config"]), control=st["stage"] == 2)
        model.load_state_dict(load_file(str(ck / "model.safetensors")))
        args.unfreeze_backbone = st["args"].get("unfreeze_backbone", False)
    elif args.stage == 1:
        over, data = json.loads(args.config or "{}"), data_fields(ds, codec)
        want = over.get("scale", get_preset(args.preset).scale)
        if want != data["scale"]:
            raise SystemExit(f"{args.data} holds frames at {data['scale']} x the coded size, the {args.preset} preset "
                             f"draws at {want} x: rebuild the pairs with --scale {want} (or give "
                             f"--config '{{\"scale\": {data['scale']}}}')")
        model = RendererModel(get_preset(args.preset).replace(name=args.preset, **{**over, **data}))
    elif args.init:
        model = init_from_stage2(args, ds, codec)
    else:
        if not args.backbone:
            raise SystemExit("--stage 2 needs --backbone (a stage-1 renderer checkpoint)")
        try:
            base = load_renderer_checkpoint(args.backbone)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        cfg = base.config.replace(**{**json.loads(args.config or "{}"), **data_fields(ds, codec)})
        model = RendererModel(cfg)
        model.backbone.load_state_dict(base.model.backbone.state_dict())
        if cfg.residual_scale and not base.config.residual_scale:
            if not args.unfreeze_backbone:
                raise SystemExit("a residual renderer (residual_scale > 0) on a backbone that drew frames needs "
                                 "--unfreeze-backbone")
            model.backbone.zero_output()          # a residual of zero: it starts as the tokenizer's own decode
        model.attach_control()
    if model.cfg.residual_scale and not model.has_control:
        raise SystemExit("residual_scale > 0 is for stage 2: the residual is drawn over the decode of the tokens, "
                         "which only the control branch reads")
    if model.has_control:
        model.freeze_backbone(not args.unfreeze_backbone)
    if model.cfg.codec_hash != codec.content_hash:
        raise SystemExit(f"the renderer is for codec {model.cfg.codec!r} ({model.cfg.codec_hash[:12]}), the pairs "
                         f"were made by {codec.config.name!r} ({codec.content_hash[:12]})")
    return model


def init_from_stage2(args, ds: PairDataset, codec) -> RendererModel:
    """A fresh run from a trained stage-2 renderer: its weights, its config with ``--config``'s
    changes; parts the checkpoint lacks must start as the identity (the refiner)."""
    try:
        base = load_renderer_checkpoint(args.init)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if base.stage != 2:
        raise SystemExit(f"{args.init} is a stage-1 backbone: give it as --backbone")
    cfg = base.config.replace(**{**json.loads(args.config or "{}"), **data_fields(ds, codec)})
    model = RendererModel(cfg, control=True)
    missing, unexpected = model.load_state_dict(base.model.state_dict(), strict=False)
    new = [k for k in missing if not k.startswith("refiner.")]
    if new or unexpected:
        raise SystemExit(f"{args.init} does not fit the config asked for: missing {new[:3]}, unexpected {unexpected[:3]}")
    return model


# ------------------------------------------------------------------ one step
def features_of(codec, items: list[dict], group: int, grid: tuple[int, int]) -> torch.Tensor:
    """The frozen tokenizer's decoder features of each item's tokens, padded to the group:
    ``B x G x h x w x Cf``."""
    out = []
    with torch.no_grad():
        for it in items:
            f = codec.model.tokenizer.decode(it["tokens"][None].to(codec.device), grid)
            out.append(pad_frames(f, group)[0])
    return torch.stack(out).float()


def draws(cfg: RendererConfig, batch: int, seed: int, step: int, rank: int, shape) -> dict:
    """Every random choice of a step, from its own generator: timesteps, noise, prefix, caption drop."""
    g = torch.Generator().manual_seed(_seed(seed, step, rank, 13))
    t = torch.randint(0, cfg.train_timesteps, (batch,), generator=g)
    u = torch.rand(2, batch, generator=g)
    noise = torch.randn(shape, generator=g)
    return {"t": t, "noise": noise, "prefix": (u[0] < cfg.prefix_prob) & (cfg.overlap > 0),
            "drop_text": u[1] < cfg.text_drop}


class DiffusionLoss(torch.nn.Module):
    """The training forward (what DDP wraps): noising, prefix, model, weighted x0 error."""

    def __init__(self, model: RendererModel, scheduler):
        super().__init__()
        self.model, self.scheduler = model, scheduler

    def forward(self, x0, noise, t, text, text_mask, keep, features=None):
        m = self.model
        cfg = m.cfg
        x_t = self.scheduler.add_noise(x0, noise, t)
        x_t = torch.where(keep, x0, x_t)
        sem = m.semantic(features) if features is not None else None
        pred = m(x_t, t, text, text_mask, sem)
        ab = m.alpha_bar[t]
        x0_hat = to_x0(pred.float(), x_t.float(), ab, cfg.prediction)
        w = torch.clamp(1 / (1 - ab).clamp_min(1e-8), max=cfg.loss_cap)       # 1 + SNR = 1 / (1 - alpha_bar)
        err = (x0_hat - x0.float()) ** 2 * w.view(-1, 1, 1, 1, 1)
        free = (~keep).float()
        return (err * free).sum() / free.sum().clamp_min(1)


def save_run(out: Path, step: int, model: RendererModel, gathered: tuple, args) -> None:
    _state, optim, meta = gathered
    with atomic_dir(out / "ckpt") as tmp:
        save_renderer(model, tmp / "model.safetensors", extra={"step": step})
        atomic_save_file(optim, tmp / "optim.safetensors", meta)
        (tmp / "state.json").write_text(json.dumps({"step": step, "args": vars(args), "config": model.cfg.to_dict(),
                                                    "stage": 2 if model.has_control else 1}, indent=1))


def plot_log(log: Path, png: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("weighted x0 loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


# ------------------------------------------------------------------ main loop
def train(args) -> Path:
    rank, world, dev = setup_dist()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        ds = PairDataset(args.data)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if len(ds) == 0:
        raise SystemExit(f"{args.data} holds no groups")
    codec = load_codec(args, ds, dev)
    ck = find_checkpoint(out)
    torch.manual_seed(args.seed)
    model = build_model(args, ds, codec, ck).to(dev)
    cfg = model.cfg
    step = json.loads((ck / "state.json").read_text())["step"] if ck is not None else 0
    encoder = CachedTextEncoder(get_text_encoder(args.text_encoder or cfg.text_encoder, cfg.max_text_tokens))
    if encoder.dim != cfg.text_dim:
        raise SystemExit(f"the text encoder {encoder.spec} gives {encoder.dim}-wide states, "
                         f"the config says {cfg.text_dim}")
    from .schedule import make_scheduler
    loss_fn = DiffusionLoss(model, make_scheduler(cfg))
    ddp = torch.nn.parallel.DistributedDataParallel(loss_fn) if world > 1 else loss_fn
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for n, p in params if p.ndim >= 2], "weight_decay": args.weight_decay},
                             {"params": [p for n, p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, args.beta2))
    if ck is not None:
        load_optimizer(model, opt, ck / "optim.safetensors")
    log = out / "log.jsonl"
    if rank == 0:
        truncate_log(log, step)
        if step:
            print(f"resuming {out} at step {step}", file=sys.stderr)
        else:
            print(f"{cfg.name} stage {2 if model.has_control else 1}: {model.n_params() / 1e6:.2f}M parameters "
                  f"({model.n_params(trainable=True) / 1e6:.2f}M trainable), {len(ds)} groups, text encoder "
                  f"{encoder.spec}", file=sys.stderr)
        if args.bf16 and (slow := slow_bf16_warning(dev)):
            print(slow, file=sys.stderr)

    t_start, t_log = time.time(), time.time()
    acc = {"loss": 0.0, "n": 0, "items": 0}
    while step < args.steps:
        model.train()
        lr = learning_rate(args, step)
        for g in opt.param_groups:
            g["lr"] = lr
        items = [ds[i] for i in step_items(step, rank, world, args.batch, len(ds), args.seed)]
        video = torch.stack([it["frames"] for it in items]).float() / 127.5 - 1
        feats = features_of(codec, items, cfg.group, tuple(cfg.feature_grid)).to(dev) if model.has_control else None
        if cfg.residual_scale:         # the detail the tokenizer's own decode lacks
            base = direct_frames(codec, feats, video.shape[2:4]).cpu()[:, :video.shape[1]]
            video = (video - base) * cfg.residual_scale
        x0 = to_latent(video, cfg.space_to_depth, cfg.time_to_depth)
        d = draws(cfg, len(items), args.seed, step, rank, x0.shape)
        states = encoder.encode([it["caption"] for it in items])
        states = [s[:0] if drop else s for s, drop in zip(states, d["drop_text"].tolist())]
        text, text_mask = pad_text(states, cfg.text_dim)
        keep = prefix_keep(cfg, cfg.group, cfg.overlap, len(items)) & d["prefix"].view(-1, 1, 1, 1, 1)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = ddp(x0.to(dev), d["noise"].to(dev), d["t"].to(dev), text.to(dev), text_mask.to(dev),
                       keep.to(dev), feats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for _, p in params], args.grad_clip)
        opt.step()
        step += 1
        acc["loss"] += loss.item()
        acc["n"] += 1
        acc["items"] += len(items)
        if rank == 0 and (step % args.log_every == 0 or step == args.steps):
            now = time.time()
            row = {"step": step, "loss": acc["loss"] / acc["n"], "lr": lr,
                   "groups_per_s": acc["items"] * world / (now - t_log), "elapsed_s": now - t_start}
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            acc = {k: 0 for k in acc}
            t_log = now
        out_of_time = past_time_limit(args.max_minutes, t_start, world)
        if step % args.ckpt_every == 0 or step == args.steps or out_of_time:
            gathered = gather_state(model, opt, False)
            if rank == 0:
                save_run(out, step, model, gathered, args)
            if world > 1:
                dist.barrier()
        if out_of_time:
            break
    check_replicas(model, out, rank, world)
    if rank == 0:
        extra = {"step": step, "data": str(args.data), "stage": 2 if model.has_control else 1}
        save_renderer(model, out / "final.safetensors", extra=extra)
        if args.ship_dtype:
            save_renderer(model, out / f"final-{args.ship_dtype}.safetensors", extra=extra,
                          dtype=getattr(torch, args.ship_dtype))
        plot_log(log, out / "train.png")
    del ddp, loss_fn, model, opt
    end_dist(world)
    return out


def main(argv=None):
    train(parse_args(argv))


if __name__ == "__main__":
    main()
    exit_after_torchrun()
