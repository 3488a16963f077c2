"""The diffusion renderer as a semcodec plugin: ``semcodec decode tokens.bin -o out.mp4 --renderer
diffusion [--steps N] [--seed S]``.

:func:`load_renderer` is the entry point (``semcodec.renderers: diffusion`` in pyproject.toml).
Weights: ``--renderer diffusion:PATH``, or by default ``generation/diffusion/weights/MODEL.safetensors``
for the stream's model ``MODEL``; they must have been trained on that very model's tokens (its
content hash).

:class:`DiffusionRenderer` renders a stream group by group (the long-video sampler): the group's
tokens -> the frozen tokenizer's decoder features -> the semantic control; noise -> ``steps``
sampler steps -> frames. Each group after the first keeps the ``overlap`` frames it shares with
the group before (the codec's group overlap) clean, copied from that group's rendering, so the
chunks join without a seam (the codec's cross-fade then blends equal frames). No prompt reaches a
decode (streams carry none): the text is the null text and guidance is off unless a prompt is given
in Python.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from semcodec.renderers import RendererError

from .latent import from_latent, pad_frames, to_latent
from .sample import null_text, pad_text, prefix_keep, sample_latent

WEIGHTS_DIR = Path(__file__).parent / "weights"


class DiffusionRenderer:
    """Tokens of consecutive groups -> frames. ``decode_group(tokens, size)`` as semcodec's
    ``Codec.decode_group``; ``reset()`` before another stream; ``on_step`` is called per step."""

    def __init__(self, model, codec, steps: int | None = None, seed: int = 0, sampler: str | None = None,
                 guidance: float | None = None, prompt: str | None = None, strength: float | None = None,
                 spacing: str | None = None, detail: float | None = None, device="cpu"):
        cfg = model.cfg
        self.model, self.codec, self.cfg = model.to(device).eval(), codec, cfg
        self.steps = cfg.steps if steps is None else int(steps)
        if self.steps < 1:
            raise RendererError(f"--steps must be at least 1, got {self.steps}")
        self.seed, self.sampler, self.device = int(seed), sampler or cfg.sampler, torch.device(device)
        self.guidance = cfg.guidance if guidance is None else float(guidance)
        try:                                # the config's own checks
            run = cfg.replace(strength=cfg.strength if strength is None else float(strength),
                              spacing=spacing or cfg.spacing, detail=cfg.detail if detail is None else float(detail))
        except ValueError as e:
            raise RendererError(str(e)) from None
        self.strength, self.spacing, self.detail = run.strength, run.spacing, run.detail
        self.scale = cfg.scale              # semcodec draws our frames at scale x its model size
        self._encoder = None
        self.set_prompt(prompt)
        self.on_step: Callable[[], None] | None = None
        self.reset()

    def set_prompt(self, prompt: str | None) -> None:
        """Condition what follows on ``prompt`` (classifier-free guidance at ``self.guidance``), or,
        with ``None``, on the null text without guidance (a decode: streams carry no caption)."""
        cfg = self.cfg
        if prompt:
            if self._encoder is None:
                from generation.lm.text import get_text_encoder
                self._encoder = get_text_encoder(cfg.text_encoder, cfg.max_text_tokens)
            self.text = pad_text(self._encoder.encode([prompt]), cfg.text_dim)
            self.uncond = null_text(1, cfg.text_dim)
        else:
            self.text, self.uncond = null_text(1, cfg.text_dim), None

    def reset(self) -> None:
        self._prev: torch.Tensor | None = None          # the previous group's frames, 1 x T x H x W x 3
        self._drawn: torch.Tensor | None = None         # ... as the model drew them (all its detail)
        self.parts: tuple[torch.Tensor, torch.Tensor] | None = None    # a residual renderer's last group
        self._gen = torch.Generator().manual_seed(self.seed)

    def features(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Token ids ``N`` of a group coded at ``size`` -> the tokenizer's decoder features
        ``1 x T x h x w x Cf``."""
        m = self.codec.model
        return m.tokenizer.decode(tokens[None].to(self.codec.device), m.grid_for(size)).float().to(self.device)

    @torch.no_grad()
    def render(self, tokens, size: tuple[int, int], prefix: torch.Tensor | None = None) -> torch.Tensor:
        """One group coded at the model size ``size``: ids -> ``1 x T x H x W x 3`` in [-1, 1] with
        ``H x W = scale x size``; ``prefix`` ``1 x k x H x W x 3``: its first ``k`` frames, kept.
        With ``strength`` below 1 the sampler starts from the direct decode, noised (SDEdit). A
        residual renderer adds ``detail`` x its drawn detail to the direct decode; the prefix is
        given as the model drew it (``self._drawn``: all its detail), so the chain it continues is
        its own whatever ``detail`` is."""
        cfg = self.cfg
        ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
        feats = self.features(ids, size)
        size = (size[0] * self.scale, size[1] * self.scale)
        T = feats.shape[1]
        G = max(T, cfg.group)
        s, st, r = cfg.space_to_depth, cfg.time_to_depth, cfg.residual_scale
        base = init = None
        if self.strength < 1 or r:
            base = pad_frames(direct_frames(self.codec, feats, size).to(self.device), G)[:, :G]
            init = to_latent(torch.zeros_like(base) if r else base, s, st)
        feats = pad_frames(feats, G)[:, :G]
        sem = self.model.semantic(feats) if self.model.has_control else None
        shape = (1, cfg.latent_frames(G), cfg.latent_channels, size[0] // s, size[1] // s)
        keep = prefix_lat = None
        if prefix is not None and prefix.shape[1]:
            k = prefix.shape[1]
            video = torch.cat([prefix, prefix[:, -1:].expand(1, G - k, -1, -1, -1)], 1).to(self.device)
            if r:
                video = (video - base) * r
            prefix_lat = to_latent(pad_frames(video, st), s, st)
            keep = prefix_keep(cfg, G, k, size=tuple(size))
        lat = sample_latent(self.model, shape, self.text[0], self.text[1], sem, steps=self.steps, generator=self._gen,
                            sampler=self.sampler, guidance=self.guidance, schedule=cfg.guidance_schedule,
                            uncond=self.uncond, prefix=prefix_lat, keep=keep, init=init, strength=self.strength,
                            spacing=self.spacing, progress=self.on_step)
        out = from_latent(lat, s, st, T)
        if r:
            base, out = base[:, :T].cpu(), out.cpu() / r
            self.parts = base, out                      # the direct decode and the drawn detail
            self._drawn = with_detail(base, out, 1.0)
            return with_detail(base, out, self.detail)
        self.parts = None
        self._drawn = out.clamp(-1, 1).cpu()
        return self._drawn

    def decode_group(self, tokens, size: tuple[int, int]) -> torch.Tensor:
        """semcodec's hook: ids of the next group of the stream (coded at ``size``) -> ``T x H x W x 3``
        in [-1, 1] at ``scale x size``."""
        k = min(self.codec.config.overlap, len(self._prev[0]) if self._prev is not None else 0)
        drawn = (size[0] * self.scale, size[1] * self.scale)
        prefix = self._prev[:, -k:] if k and tuple(self._prev.shape[2:4]) == drawn else None
        out = self.render(tokens, size, prefix)
        self._prev = self._drawn
        return out[0]


def with_detail(base: torch.Tensor, drawn: torch.Tensor, detail: float) -> torch.Tensor:
    """A residual renderer's frames: the direct decode ``base`` plus ``detail`` x the ``drawn``
    detail, in [-1, 1]."""
    return (base + detail * drawn).clamp(-1, 1)


def direct_frames(codec, feats: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The tokenizer's own decode of its decoder features ``B x T x h x w x Cf``, resized
    (bicubic) to ``size``: ``B x T x H x W x 3`` in [-1, 1], on the codec's device. The base a
    residual renderer (``residual_scale`` > 0) adds its detail to, and an SDEdit start."""
    with torch.no_grad():
        video = codec.model.features.render(feats.to(codec.device)).float().clamp(-1, 1)
    B, T, h, w, _ = video.shape
    if (h, w) != tuple(size):
        x = video.reshape(B * T, h, w, 3).permute(0, 3, 1, 2)
        x = torch.nn.functional.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False)
        video = x.permute(0, 2, 3, 1).reshape(B, T, *size, 3).clamp(-1, 1)
    return video


def default_weights(codec) -> Path:
    return WEIGHTS_DIR / f"{codec.config.name}.safetensors"


def load_renderer(codec, weights: str | None = None, steps: int | None = None, seed: int = 0,
                  **options) -> DiffusionRenderer:
    """The ``semcodec.renderers`` entry point: a :class:`DiffusionRenderer` for ``codec``."""
    try:
        import diffusers  # noqa: F401  (the schedulers)
    except ImportError:
        raise RendererError("renderer 'diffusion' needs the 'diffusers' package: "
                            "pip install -e \".[generation]\"") from None
    from .checkpoint import load_renderer_checkpoint
    path = Path(weights) if weights else default_weights(codec)
    if not path.is_file():
        if weights:
            raise RendererError(f"no such renderer weights file: {weights}")
        raise RendererError(f"renderer 'diffusion' has no weights for model '{codec.config.name}' (looked for "
                            f"{path}); train them with python -m generation.diffusion.train and pass "
                            f"--renderer diffusion:PATH")
    try:
        ck = load_renderer_checkpoint(path)
    except ValueError as e:
        raise RendererError(f"cannot load renderer weights: {e}") from None
    if ck.stage != 2:
        raise RendererError(f"{path} is a stage-1 backbone (text to video): the renderer needs the stage-2 "
                            f"checkpoint with its control branch")
    if ck.config.codec_hash != codec.content_hash:
        raise RendererError(f"the renderer {path} was trained on the tokens of model '{ck.config.codec}' "
                            f"({ck.config.codec_hash[:12]}), not of '{codec.config.name}' ({codec.content_hash[:12]})")
    return DiffusionRenderer(ck.model, codec, steps=steps, seed=seed, device=codec.device, **options)
