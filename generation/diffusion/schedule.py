"""Noise schedule, schedulers and guidance: diffusers' CogVideoX schedulers, configured as the
release configures them.

- :func:`make_scheduler`: ``CogVideoXDPMScheduler`` (DPM++ 2M, the release's sampler; stochastic,
  so it takes the sampling generator) or ``CogVideoXDDIMScheduler`` (DDIM, eta 0: deterministic),
  both with the scaled-linear betas, the SNR shift (3.0), zero terminal SNR, the config's timestep
  spacing (the release's: trailing) and its prediction type. Training draws ``x_t`` with the same scheduler's
  ``add_noise``, so training and sampling share one ``alphas_cumprod``.
- :func:`guidance_scale`: classifier-free guidance per step, constant or the release's dynamic
  schedule ``1 + s (1 - cos(pi (i / N)^5)) / 2`` (no guidance at the first, noisiest step).
- :func:`to_x0` / :func:`from_x0`: convert between the prediction types, given ``x_t`` and
  ``alphas_cumprod[t]``.
"""
from __future__ import annotations

import math

import torch

from .config import RendererConfig


def make_scheduler(cfg: RendererConfig, kind: str | None = None):
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler
    kind = kind or cfg.sampler
    cls = {"dpm": CogVideoXDPMScheduler, "ddim": CogVideoXDDIMScheduler}.get(kind)
    if cls is None:
        raise ValueError(f"unknown sampler {kind!r} (dpm, ddim)")
    return cls(num_train_timesteps=cfg.train_timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
               beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=True,
               prediction_type=cfg.prediction, timestep_spacing=cfg.spacing,
               rescale_betas_zero_snr=cfg.zero_snr, snr_shift_scale=cfg.snr_shift)


def alphas_cumprod(cfg: RendererConfig) -> torch.Tensor:
    """``train_timesteps`` values of alpha-bar (float32), as the schedulers hold them."""
    return make_scheduler(cfg, "ddim").alphas_cumprod.float()


def guidance_scale(i: int, n: int, scale: float, schedule: str = "dynamic") -> float:
    """Guidance at step ``i`` of ``n`` (0-based): ``scale`` or the dynamic ramp to about ``1 + scale``."""
    if schedule == "constant":
        return float(scale)
    if schedule == "dynamic":
        return 1.0 + scale * (1.0 - math.cos(math.pi * (i / n) ** 5.0)) / 2.0
    raise ValueError(f"unknown guidance schedule {schedule!r} (dynamic, constant)")


def _ab(alpha_bar: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = alpha_bar.to(like.dtype).view(-1, *[1] * (like.dim() - 1))
    return a.sqrt(), (1 - a).clamp_min(0).sqrt()


def to_x0(pred: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, kind: str) -> torch.Tensor:
    """The clean sample a prediction of type ``kind`` implies."""
    a, s = _ab(alpha_bar, x_t)
    if kind == "v_prediction":
        return a * x_t - s * pred
    if kind == "epsilon":
        return (x_t - s * pred) / a.clamp_min(1e-4)
    return pred


def from_x0(x0: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, kind: str) -> torch.Tensor:
    """The prediction of type ``kind`` that implies the clean sample ``x0`` (exact inverse of
    :func:`to_x0` wherever the noise level is above zero)."""
    a, s = _ab(alpha_bar, x_t)
    if kind == "v_prediction":
        return (a * x_t - x0) / s.clamp_min(1e-4)
    if kind == "epsilon":
        return (x_t - a * x0) / s.clamp_min(1e-4)
    return x0
