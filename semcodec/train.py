"""Train a codec: ``semcodec train --preset P --data SRC... --out RUN_DIR`` or
``torchrun --nproc-per-node N -m semcodec.train ...`` (DDP: gloo on CPU, NCCL on GPU). The options
are the fields of :class:`~semcodec.train_config.TrainConfig`.

What a run directory holds:
- ``ckpt/`` the latest checkpoint: ``model.safetensors`` (weights, config, content hash),
  ``ema.safetensors``, ``optim.safetensors`` (AdamW moments, its hyper-parameters in metadata)
  and ``state.json`` (step, the ``TrainConfig``, the model config); written as one folder by
  ``atomic.atomic_dir``, so a run killed at any moment (SIGKILL included) resumes from its last
  complete checkpoint;
- ``log.jsonl`` one line per logged step (loss, PSNR, codebook usage and perplexity, speed) and
  per validation; on resume, lines past the checkpoint's step are dropped so the curve continues;
- ``train.png`` the curves; ``final.safetensors`` the EMA weights in float16 when the run ends.

Resume is exact: the batch of step s on rank r is drawn from a generator seeded by (seed, s, r),
and dead-code re-seeding uses a generator seeded by (seed, s), so no hidden RNG state is needed.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file

from .atomic import atomic_dir, old_dir
from .checkpoint import atomic_save_file, save_checkpoint
from .model.video_tokenizer import VideoTokenizer
from .precision import slow_bf16_warning
from .presets import CodecConfig
from .train_config import TrainConfig

FLOW_WEIGHT = 1.0    # pframe_warp: the decoder's flow error (cells^2) beside the pixel MSE ([-1, 1]^2)


# ------------------------------------------------------------------ distributed
def setup_dist():
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        dev = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        rank, world = 0, 1
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return rank, world, dev


def end_dist(world: int) -> None:
    """Leave the process group together, once the caller has dropped its model and optimizer: the
    garbage goes first, so that no gloo work handle (FSDP keeps some) outlives the group."""
    if world > 1:
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def exit_after_torchrun(status: int = 0) -> int:
    """A trainer's last call. Under torchrun the process ends here without the interpreter's
    teardown: a gloo thread that still frees a tensor then can abort a finished run (SIGABRT,
    "terminate called without an active exception"), and torchrun would call the run failed."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


# ------------------------------------------------------------------ data
def shape_weighted_mse(out: torch.Tensor, target: torch.Tensor, shapes: torch.Tensor, weight: float) -> torch.Tensor:
    """The mean squared error (``B x T x H x W x 3``) with each pixel within one pixel of a shape
    (``shapes``: ``B x T x H x W`` coverage in [0, 1]) counted ``1 + weight x`` its coverage times:
    a shape is a few percent of a frame, and an unweighted loss draws it as a blob of its colour."""
    near = F.max_pool2d(shapes.flatten(0, 1)[:, None], 3, 1, 1).view_as(shapes)
    w = (1 + weight * near)[..., None]
    return ((out - target) ** 2 * w).sum() / (w.sum() * out.shape[-1])


class Batches:
    def __init__(self, sources, weights, cfg: CodecConfig, widths, batch: int, seed: int, group_frames=None,
                 fps_choices=None, ratio: int = 1):
        self.sources, self.cfg, self.widths, self.batch, self.seed = sources, cfg, widths, batch, seed
        self.ratio = max(1, ratio)          # frames drawn per semantic frame (--shown-ratio)
        self.group_frames = group_frames or [cfg.group]
        self.fps_choices = fps_choices or [cfg.fps]
        if any(not 1 <= t <= cfg.group for t in self.group_frames):
            raise ValueError(f"--group-frames must be in 1..{cfg.group}")
        w = np.array(weights if weights else [1.0] * len(sources), dtype=np.float64)
        if len(w) != len(sources):
            raise ValueError(f"--weights has {len(w)} values for {len(sources)} sources")
        self.p = w / w.sum()

    def __call__(self, step: int, rank: int) -> torch.Tensor:
        """Batch of ``step`` for ``rank``: ``B x T x H x W x 3`` float in [-1, 1]; with a ``ratio``
        r > 1, ``B x ((T - 1) r + 1) x H x W x 3`` at r times the semantic rate (every r-th frame
        is a semantic frame)."""
        return self.draw(step, rank)[0]

    def semantic(self, step: int, rank: int) -> torch.Tensor:
        """The semantic frames of :meth:`__call__`'s batch (every ``ratio``-th): what the model codes."""
        return self(step, rank)[:, ::self.ratio]

    def draw(self, step: int, rank: int, masks: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(batch, shapes)``: the batch of :meth:`__call__` and, with ``masks``, ``B x T x H x W``
        float in [0, 1], the share of each pixel that a procedural shape covers (0 for sources
        that know none)."""
        shared = np.random.default_rng([self.seed, step])          # the same on every rank
        width = self.widths[shared.integers(len(self.widths))]
        frames = self.group_frames[shared.integers(len(self.group_frames))]
        # drawn only when there is a choice, so that runs without --fps-choices keep their batches
        fps = self.fps_choices[shared.integers(len(self.fps_choices))] if len(self.fps_choices) > 1 else self.fps_choices[0]
        n = max(1, self.batch * self.cfg.group // frames)
        rng = np.random.default_rng([self.seed, step, rank, 1])
        size = (self.cfg.short_side, width)
        r = self.ratio
        clips, shapes = [], []
        for _ in range(n):
            src = self.sources[rng.choice(len(self.sources), p=self.p)]
            args = (rng, (frames - 1) * r + 1, size, fps * r)
            if masks and hasattr(src, "sample_masked"):
                clip, shape = src.sample_masked(*args)
            else:
                clip = src.sample(*args)
                shape = np.zeros(clip.shape[:3], np.float32) if masks else None
            clips.append(clip)
            shapes.append(shape)
        x = torch.from_numpy(np.stack(clips)).float() / 127.5 - 1
        return x, torch.from_numpy(np.stack(shapes)) if masks else None


def load_val_clips(paths, cfg: CodecConfig, groups: int):
    """First ``groups`` groups of semantic frames of each clip, at the model geometry (a pack's
    validation clips as packed)."""
    from .video import Geometry, iter_semantic_frames, probe, to_model
    out = []
    for p in paths:
        if str(p).endswith(".npz"):
            from .data.pack import load_pack_val
            out += load_pack_val(p)
            continue
        info = probe(p)
        geo = Geometry.fit((info.height, info.width), cfg.short_side, cfg.max_long_side, cfg.patch)
        frames = []
        for f in iter_semantic_frames(p, info, cfg.fps):
            frames.append(f)
            if len(frames) == groups * cfg.group:
                break
        x = to_model(np.stack(frames), geo)
        n = len(x) // cfg.group * cfg.group or len(x)
        clips = x[:n].reshape(-1, min(cfg.group, n), *x.shape[1:])
        out.append((Path(p).stem, clips, geo))
    return out


@torch.no_grad()
def validate(model: VideoTokenizer, val_clips) -> dict:
    res = {}
    for name, clips, geo in val_clips:
        psnrs = []
        for clip in clips:
            rec = model.decode(model.encode(clip[None]), clip.shape[1:3])[0]
            a = (rec[:, :geo.scaled[0], :geo.scaled[1]] + 1) * 127.5
            b = (clip[:, :geo.scaled[0], :geo.scaled[1]] + 1) * 127.5
            mse = ((a.round() - b.round()) ** 2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
            psnrs += (10 * torch.log10(255 ** 2 / mse)).tolist()
        res[f"val_psnr_{name}"] = float(np.mean(psnrs))
    return res


# ------------------------------------------------------------------ checkpoints
def _optim_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def _load_optim(opt: torch.optim.Optimizer, path: Path) -> None:
    from safetensors import safe_open
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def shown_blend(frames: int, ratio: int) -> torch.Tensor:
    """``((frames - 1) ratio + 1) x frames``: each shown frame as the decoder blends it from the two
    semantic frames around it (linearly, as ``Codec`` decodes)."""
    from .video import blend_at
    m = (frames - 1) * ratio + 1
    mix = torch.zeros(m, frames)
    for i in range(m):
        a, b, w = blend_at(i / ratio, frames)
        mix[i, a] += 1 - w
        mix[i, b] += w
    return mix


def gradient_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the horizontal and vertical pixel differences of ``y`` and
    ``x`` (``B x T x H x W x 3``): MSE alone is minimised by blur; edges cost here."""
    dy = lambda v: v[:, :, 1:] - v[:, :, :-1]      # noqa: E731
    dx = lambda v: v[:, :, :, 1:] - v[:, :, :, :-1]  # noqa: E731
    return (dy(y) - dy(x)).abs().mean() + (dx(y) - dx(x)).abs().mean()


def model_name(args: TrainConfig) -> str:
    """The name a run's checkpoints record: ``--name``, else the run directory's name."""
    return args.name or Path(args.out).resolve().name


def save_run(out: Path, step: int, model, ema: dict, opt, cfg: CodecConfig, args: TrainConfig) -> None:
    with atomic_dir(out / "ckpt") as tmp:
        save_checkpoint(model, cfg, tmp / "model.safetensors", extra={"step": step}, name=model_name(args))
        atomic_save_file({k: v.contiguous() for k, v in ema.items()}, tmp / "ema.safetensors", {"step": str(step)})
        t, meta = _optim_tensors(opt)
        atomic_save_file(t, tmp / "optim.safetensors", {k: json.dumps(v) for k, v in meta.items()})
        (tmp / "state.json").write_text(json.dumps({"step": step, "args": args.to_dict(), "config": cfg.to_dict()},
                                                   indent=1))


def find_checkpoint(out: Path) -> Path | None:
    for d in (out / "ckpt", old_dir(out / "ckpt")):     # .ckpt-old survives a kill between the two renames
        if (d / "state.json").exists():
            return d
    return None


def past_time_limit(max_minutes: float, t_start: float, world: int) -> bool:
    """Whether ``--max-minutes`` has run out, as rank 0 sees it (every rank stops at the same step)."""
    out = bool(max_minutes) and (time.time() - t_start) > 60 * max_minutes
    if world > 1:
        flag = torch.tensor([float(out)])
        dist.broadcast(flag, 0)
        out = bool(flag.item())
    return out


def truncate_log(log: Path, step: int) -> None:
    if not log.exists():
        return
    keep = []
    for line in log.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            pass                   # a line cut by the kill
    log.write_text("".join(k + "\n" for k in keep))


def plot_log(log: Path, png: Path) -> None:
    if not log.exists():
        return
    try:
        import matplotlib
    except ImportError:        # a bare GPU machine: the JSONL log is the record
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    tr = [r for r in rows if "loss" in r]
    va = [r for r in rows if any(k.startswith("val_psnr") for k in r)]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    if tr:
        s = [r["step"] for r in tr]
        ax[0].semilogy(s, [r["recon_loss"] for r in tr], label="recon")
        ax[0].semilogy(s, [r["commit_loss"] for r in tr], label="commit")
        ax[1].plot(s, [r["psnr"] for r in tr], label="train (batch)", alpha=0.5)
        ax[2].plot(s, [r["perplexity"] for r in tr], label="perplexity")
        ax[2].plot(s, [r["codes_used"] for r in tr], label="codes used")
    for k in sorted({k for r in va for k in r if k.startswith("val_psnr")}):
        ax[1].plot([r["step"] for r in va if k in r], [r[k] for r in va if k in r], "o-", label=k[9:])
    save_panels(fig, ax, ("loss", "PSNR (dB)", "codebook"), png)


def save_panels(fig, axes, titles, png) -> None:
    """A training curve's last touches: titles, step axes, legends, grids; written and closed."""
    import matplotlib.pyplot as plt
    for a, t in zip(axes, titles):
        a.set_title(t)
        a.set_xlabel("step")
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


def check_replicas(model, out: Path, rank: int, world: int) -> None:
    """Under DDP every replica must hold the same weights: gather their content hashes, record
    them in ``replicas.json`` and stop loudly if they differ."""
    if world == 1:
        return
    from .checkpoint import content_hash
    mine = content_hash({k: v.detach().cpu() for k, v in model.state_dict().items()})
    hashes = [None] * world
    dist.all_gather_object(hashes, mine)
    if rank == 0:
        (out / "replicas.json").write_text(json.dumps({"world": world, "hashes": hashes}, indent=1))
    if len(set(hashes)) != 1:
        raise RuntimeError(f"DDP replicas diverged: weight hashes {hashes}")


def freeze_encoder(model: VideoTokenizer) -> None:
    """Everything that decides the token ids (stem, encoder, codebook) stops learning."""
    from .model.video_tokenizer import ENCODER_SIDE
    for name, p in model.named_parameters():
        if name.startswith(ENCODER_SIDE):
            p.requires_grad_(False)


def warm_start(model: VideoTokenizer, path) -> list[str]:
    """Copy a checkpoint's weights into ``model`` (a preset that may be deeper: more transformer
    blocks or residual blocks). Every block the checkpoint lacks is made the identity (zero output
    projections), so the model starts out computing what the checkpoint computed; tensors of
    another shape (other token counts) keep their initialisation. Returns the names of the tensors
    not taken from the checkpoint."""
    from .checkpoint import PRIOR_KEY
    state = load_file(str(path))
    state.pop(PRIOR_KEY, None)
    own = model.state_dict()
    # tensors whose shape the new preset changes (other token counts: the query embeddings) keep
    # their fresh initialisation
    reshaped = {k for k, v in state.items() if k in own and own[k].shape != v.shape}
    res = model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()
                                 if k not in reshaped}, strict=False)
    if res.unexpected_keys:
        raise ValueError(f"{path} has tensors the model lacks: {res.unexpected_keys[:5]}")
    missing = set(res.missing_keys)
    from .model.tokenizer import Block
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, Block) and all(f"{name}.{k}" in missing for k, _ in mod.named_parameters()):
                for lin in (mod.attn.proj, mod.mlp[2]):
                    lin.weight.zero_()
                    lin.bias.zero_()
    return sorted(missing | reshaped)


@torch.no_grad()
def seed_codebook(model: VideoTokenizer, batches, seed: int, dev) -> None:
    """Data-seeded codebook: codes drawn from the encoder's outputs on the first batches (as many
    outputs as codes, or 8 batches). ``batches(step, rank)``: semantic frames, as
    :meth:`Batches.semantic`; every DDP rank
    draws rank 0's batches with the same seed: the same codebook."""
    q = model.tokenizer.quantizer
    zs, n, i = [], 0, 0
    while n < q.size and i < 8:
        z = model.latents(batches(i, 0).to(dev))
        zs.append(z.reshape(-1, z.shape[-1]))
        n, i = n + zs[-1].shape[0], i + 1
    q.init_from(torch.cat(zs), torch.Generator().manual_seed(seed))


def _loaded_backbone(model: VideoTokenizer):
    """The backbone ``model`` already holds (a copy of the model shares it, not reloads it)."""
    return model.features.model if model.config.features == "backbone" else None


def learning_rate(args, step: int) -> float:
    if args.warmup and step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.schedule == "cosine":
        a = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
        return args.min_lr + (args.lr - args.min_lr) * 0.5 * (1 + np.cos(np.pi * a))
    return args.lr


# ------------------------------------------------------------------ main loop
def train(args: TrainConfig) -> Path:
    """Run (or resume) the training ``args`` describes; returns the run directory."""
    args.check()
    cfg = args.codec_config()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        from .errors import ConfigError
        raise ConfigError(f"--out is a file, not a run directory: {out}")
    rank, world, dev = setup_dist()
    if args.threads:
        torch.set_num_threads(args.threads)
    from .data.sources import make_sources
    batches = Batches(make_sources(args.data, cfg.fps), args.weights or None, cfg, list(args.widths) or
                      [cfg.frame_size[1]], args.batch, args.seed, list(args.group_frames) or None,
                      list(args.fps_choices) or None, args.shown_ratio)
    out.mkdir(parents=True, exist_ok=True)         # after the sources are read: a typo leaves no folder

    torch.manual_seed(args.seed)
    model = VideoTokenizer(cfg, backbone=args.backbone).to(dev)
    model.tokenizer.set_attention_backend("auto")
    if args.decoder_only:
        freeze_encoder(model)
    if batches.ratio > 1 and not (model.features.can_render and model.features.trainable):
        from .errors import ConfigError
        raise ConfigError("--shown-ratio needs a model whose head draws pixels")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                            weight_decay=args.weight_decay, betas=(0.9, 0.99))
    step = 0
    ck = find_checkpoint(out)
    if ck is not None:
        model.load_state_dict(load_file(str(ck / "model.safetensors")))
        _load_optim(opt, ck / "optim.safetensors")
        ema = {k: v.to(dev) for k, v in load_file(str(ck / "ema.safetensors")).items()}
        step = json.loads((ck / "state.json").read_text())["step"]
    elif args.init:
        new = warm_start(model, args.init)
        if rank == 0 and new:
            print(f"initialised from {args.init}; {len(new)} new tensors", file=sys.stderr)
        ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        seed_codebook(model, batches.semantic, args.seed, dev)
        ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    log = out / "log.jsonl"
    if rank == 0:
        truncate_log(log, step)
        if step:
            print(f"resuming {out} at step {step}", file=sys.stderr)
        if args.bf16 and (slow := slow_bf16_warning(dev)):
            print(slow, file=sys.stderr)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    val_clips = load_val_clips(args.val, cfg, args.val_groups) if (rank == 0 and args.val) else []

    t_start, t_log, n_log = time.time(), time.time(), 0
    acc = {"loss": 0.0, "recon_loss": 0.0, "commit_loss": 0.0, "psnr": 0.0}
    from tqdm import tqdm
    bar = tqdm(total=args.steps, initial=step, disable=rank != 0 or not sys.stderr.isatty(), desc="train")
    q = model.tokenizer.quantizer
    while step < args.steps:
        q.bypass = step < args.continuous_steps
        if step == args.continuous_steps > 0:      # the autoencoder phase ends: codes from what it learned
            seed_codebook(model, batches.semantic, args.seed, dev)
            for k, v in model.state_dict().items():
                if k.startswith("tokenizer.quantizer."):
                    ema[k].copy_(v)
        lr = learning_rate(args, step)
        for g in opt.param_groups:
            g["lr"] = lr
        x, shapes = batches.draw(step, rank, masks=args.shape_weight > 0)
        x = x.to(dev)
        shown = None
        if batches.ratio > 1:
            shown, x = x, x[:, ::batches.ratio]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            o = ddp(x)
        pred, target, recon = o.get("video"), x, o["recon_loss"]
        if shown is not None:       # the frames as shown: the decoded ones blended to every drawn frame
            mix = shown_blend(x.shape[1], batches.ratio).to(dev)
            pred, target = torch.einsum("st,bthwc->bshwc", mix, pred.float()), shown.float()
        if shapes is not None and pred is not None:
            recon = shape_weighted_mse(pred.float(), target.float(), shapes.to(dev), args.shape_weight)
        elif shown is not None:
            recon = F.mse_loss(pred, target)
        loss = args.recon_weight * recon + args.commit_weight * o["commit_loss"]
        if "flow_loss" in o:        # pframe_warp: the decoder's flow against the measured one
            loss = loss + FLOW_WEIGHT * o["flow_loss"]
        if args.grad_weight and "video" in o:
            loss = loss + args.grad_weight * gradient_loss(o["video"].float(), x.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            if args.reseed_every and step % args.reseed_every == 0 and not q.bypass and not args.decoder_only:
                if rank == 0:
                    q.reseed_dead_codes(o["z"].detach(), threshold=args.reseed_threshold, generator=torch.Generator().manual_seed(args.seed * 1000003 + step))
                if world > 1:
                    dist.broadcast(q.codebook.data, 0)
                    dist.broadcast(q.usage, 0)
            if world > 1:
                dist.all_reduce(q.usage)
                q.usage.div_(world)
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    ema[k].mul_(args.ema).add_(v.detach(), alpha=1 - args.ema)
                else:
                    ema[k].copy_(v)
        mse = F.mse_loss(o["video"].detach().float(), x.float()) if "video" in o else o["recon_loss"].detach()
        acc["loss"] += loss.item()
        acc["recon_loss"] += o["recon_loss"].item()
        acc["commit_loss"] += o["commit_loss"].item()
        acc["psnr"] += float(10 * torch.log10(4.0 / mse.clamp(min=1e-10)))
        n_log += 1
        bar.update(1)
        if rank == 0 and (step % args.log_every == 0 or step == args.steps):
            now = time.time()
            row = {"step": step, **{k: v / n_log for k, v in acc.items()}, "lr": lr,
                   "perplexity": q.perplexity(), "codes_used": int((q.usage > args.reseed_threshold * q.usage.mean()).sum()),
                   "steps_per_s": n_log / (now - t_log), "elapsed_s": now - t_start}
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['psnr']:.2f}")
            acc = {k: 0.0 for k in acc}
            t_log, n_log = now, 0
        if rank == 0 and val_clips and (step % args.val_every == 0 or step == args.steps):
            emodel = VideoTokenizer(cfg, backbone=_loaded_backbone(model)).to(dev).eval()
            emodel.load_state_dict(ema)
            with log.open("a") as f:
                f.write(json.dumps({"step": step, **validate(emodel, val_clips)}) + "\n")
        out_of_time = past_time_limit(args.max_minutes, t_start, world)
        if step % args.ckpt_every == 0 or step == args.steps or out_of_time:
            if rank == 0:
                save_run(out, step, model, ema, opt, cfg, args)
                plot_log(log, out / "train.png")
            if world > 1:
                dist.barrier()
        if out_of_time:
            break
    bar.close()
    check_replicas(model, out, rank, world)
    if rank == 0:
        final = VideoTokenizer(cfg, backbone=_loaded_backbone(model))
        final.load_state_dict({k: v.cpu() for k, v in ema.items()})
        save_checkpoint(final, cfg, out / "final.safetensors", dtype=torch.float16, extra={"step": step},
                        name=model_name(args))
    del ddp, model, opt
    end_dist(world)
    return out


def main(argv=None) -> int:
    """``python -m semcodec.train`` (and torchrun): the ``semcodec train`` command on its own;
    returns the exit status (user mistakes: one ``error:`` line, status 1 or 2)."""
    from .cli import run_click, train as train_cmd
    return run_click(train_cmd, argv, "python -m semcodec.train")


if __name__ == "__main__":
    sys.exit(exit_after_torchrun(main()))
