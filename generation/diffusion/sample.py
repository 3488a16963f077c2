"""Sampling: one group of frames from noise, and a long video group by group.

:func:`sample_latent` runs a diffusers scheduler (:mod:`generation.diffusion.schedule`) over the
model's predictions with classifier-free guidance on the text (the semantic control is given to
both branches, as in the release) and an optional clean prefix: latent entries where ``keep`` is
True are held at ``prefix`` before every model call and at the end, the way the model was trained
(``prefix_prob``). The generator draws the initial noise and DPM++'s per-step noise, so the same
seed gives the same video.

Continuity (:func:`continuity`): the mean absolute frame difference across chunk boundaries over
the mean difference between consecutive frames inside chunks; 1 means a boundary looks like any
other frame step, more means a visible seam.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .latent import to_latent
from .schedule import guidance_scale, make_scheduler


def pad_text(states: list[torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prompt states ``n_i x D`` -> ``B x n x D`` (zero-padded) and the key mask ``B x n``.
    An empty list entry (or a 0-row tensor) becomes the null text: one zero state."""
    states = [s if len(s) else torch.zeros(1, dim) for s in states]
    n = max(len(s) for s in states)
    out = torch.zeros(len(states), n, dim)
    mask = torch.zeros(len(states), n, dtype=torch.bool)
    for i, s in enumerate(states):
        out[i, :len(s)] = s
        mask[i, :len(s)] = True
    return out, mask


def null_text(batch: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The unconditional text (what training's caption dropout shows): one zero state per sample."""
    return torch.zeros(batch, 1, dim), torch.ones(batch, 1, dtype=torch.bool)


def prefix_keep(cfg, frames: int, n_prefix: int, batch: int = 1, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Latent-shaped bool mask: True on the entries made from the first ``n_prefix`` of ``frames``
    frames of ``size`` (default ``cfg.frame_size``): whole latent frames when the prefix is a
    multiple of ``time_to_depth``, some of a latent frame's channels otherwise."""
    H, W = size or cfg.frame_size
    m = torch.zeros(batch, frames, H, W, 3)
    m[:, :n_prefix] = 1
    return to_latent(m, cfg.space_to_depth, cfg.time_to_depth) > 0.5


@torch.no_grad()
def sample_latent(model, shape, text, text_mask, sem=None, *, steps: int, generator: torch.Generator,
                  sampler: str | None = None, guidance: float = 1.0, schedule: str = "dynamic",
                  uncond: tuple[torch.Tensor, torch.Tensor] | None = None,
                  prefix: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                  init: torch.Tensor | None = None, strength: float = 1.0, spacing: str | None = None,
                  progress: Callable[[], None] | None = None) -> torch.Tensor:
    """A clean latent ``shape`` (``B x F x C x h x w``) for text states ``B x n x D`` (+ mask) and
    semantic control ``sem`` (latent-shaped, or None). ``uncond``: the unconditional text (guidance
    is used where its scale exceeds 1 and ``uncond`` is given).

    ``init`` (latent-shaped) with ``strength`` in (0, 1): start from ``init`` noised to the level
    ``strength`` of the way from clean to pure noise (SDEdit) instead of from noise; the schedule
    is ``steps / strength`` long and its last ``steps`` are run, so ``steps`` is always the work.
    ``spacing``: the timestep spacing, if not the config's."""
    cfg = model.cfg
    dev = next(model.parameters()).device
    kind = sampler or cfg.sampler
    sched = make_scheduler(cfg.replace(spacing=spacing) if spacing else cfg, kind)
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength:g}")
    from_init = init is not None and strength < 1
    sched.set_timesteps(max(steps, round(steps / strength)) if from_init else steps)
    first = len(sched.timesteps) - steps
    ts = sched.timesteps
    x = torch.randn(shape, generator=generator).to(dev)
    if from_init:
        x = sched.add_noise(init.to(dev, x.dtype), x, ts[first:first + 1])
    if prefix is not None:
        keep = keep.to(dev)
        prefix = prefix.to(dev, x.dtype)
    B = shape[0]
    text = text.to(dev)
    if text_mask is None:           # a model that reads every text position (CogVideoX: padded to 226)
        text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=dev)
    text_mask = text_mask.to(dev)
    both = None
    if uncond is not None:
        u, um = uncond
        n = max(text.shape[1], u.shape[1])
        pad = lambda s, m: (torch.nn.functional.pad(s, (0, 0, 0, n - s.shape[1])),        # noqa: E731
                            torch.nn.functional.pad(m, (0, n - m.shape[1])))
        (tc, mc), (tu, mu) = pad(text, text_mask), pad(u.to(dev), um.to(dev))
        both = (torch.cat([tc, tu]), torch.cat([mc, mu]))
    old = None
    for i in range(first, len(ts)):
        t = ts[i]
        if prefix is not None:
            x = torch.where(keep, prefix, x)
        tb = torch.full((B,), int(t), device=dev, dtype=torch.long)
        s = guidance_scale(i, len(ts), guidance, schedule)
        if both is not None and s != 1.0:
            out = model(torch.cat([x, x]), torch.cat([tb, tb]), *both,
                        None if sem is None else torch.cat([sem, sem]))
            c, u = out.float().chunk(2)
            pred = u + s * (c - u)
        else:
            pred = model(x, tb, text, text_mask, sem).float()
        if kind == "dpm":
            x, old = sched.step(pred, old, t, ts[i - 1] if i > first else None, x, generator=generator,
                                return_dict=False)
        else:
            x = sched.step(pred, t, x, eta=0.0, return_dict=False)[0]
        if progress:
            progress()
    if prefix is not None:
        x = torch.where(keep, prefix, x)
    return x


def continuity(frames: np.ndarray, starts: list[int]) -> dict:
    """``frames`` ``T x H x W x 3`` (any numeric type) and the first frame of each chunk after the
    first: mean |f[k] - f[k-1]| at those boundaries, inside chunks, and their ratio."""
    f = np.asarray(frames, dtype=np.float32)
    d = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))         # d[k-1] = |f[k] - f[k-1]|
    at = [d[k - 1] for k in starts if 0 < k < len(f)]
    inside = [d[k - 1] for k in range(1, len(f)) if k not in set(starts)]
    b = float(np.mean(at)) if at else float("nan")
    w = float(np.mean(inside)) if inside else float("nan")
    return {"boundary": b, "within": w, "ratio": b / w if w > 0 else float("nan"), "boundaries": len(at)}
