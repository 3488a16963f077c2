"""The renderer's configuration: everything that fixes its tensors, its noise schedule and the
tokens it renders.

Sizes (:data:`PRESETS`): ``world`` renders the ``world`` tokenizer's 128 x 192 groups of 8 frames
on a CPU; ``tiny`` is for tests. The paper's sizes (CogVideoX-2B, 30 layers of width 1920, a
15-layer control branch) are reached through :mod:`generation.diffusion.cogvideox` instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from semcodec.config_dict import ConfigDict


@dataclass(frozen=True)
class RendererConfig(ConfigDict):
    kind = "renderer config"
    name: str = "custom"
    # --- the pixel latent (generation.diffusion.latent): frames -> space-to-depth cells
    frame_size: tuple[int, int] = (128, 192)   # H x W of the frames rendered: the codec's model size x scale
    scale: int = 2                     # rendered pixels per pixel the tokenizer codes (along each axis)
    space_to_depth: int = 8            # pixels per latent cell along each axis (CogVideoX's VAE: 8)
    time_to_depth: int = 4             # frames per latent frame (CogVideoX's VAE: 4)
    group: int = 16                    # frames per group (the codec's); shorter groups are padded
    overlap: int = 3                   # frames shared by consecutive groups: the clean prefix
    # --- backbone (generation.diffusion.dit)
    width: int = 192
    heads: int = 3
    layers: int = 6
    mlp_ratio: float = 4.0
    time_freq: int = 256               # sinusoidal timestep embedding width
    time_dim: int = 128                # adaLN conditioning width (the release: 512)
    rope_split: tuple[int, int, int] = (16, 24, 24)   # head dim split t:h:w for 3D RoPE
    rope_theta: float = 10000.0
    text_encoder: str = "minilm"       # spec for generation.lm.text.get_text_encoder
    text_dim: int = 384
    max_text_tokens: int = 64
    # --- control branch and semantic upsampler (generation.diffusion.control)
    control_layers: int = 3            # the first half of the backbone's layers
    feature_dim: int = 256             # width of the tokenizer's decoder features
    feature_grid: tuple[int, int] = (8, 12)   # their h x w at frame_size
    up_channels: int = 64              # upsampler base channels (the release: 512)
    up_mult: tuple[float, ...] = (0.25, 1.0)  # channel multipliers; one 2x PixelShuffle between levels
    up_res_blocks: int = 2             # per level (+1, VQGAN style; the release: 4)
    up_out: int = 32                   # channels before the zero conv (the release: 64)
    # --- diffusion (diffusers' CogVideoX schedulers)
    prediction: str = "v_prediction"   # what the schedulers read: or "sample" (x0), "epsilon"
    parameterization: str = "x0"       # what the network outputs: "x0" (converted to the prediction
                                       # type; pixel cells of 384 values are too wide for a 192-wide token
                                       # to carry noise, JiT) or "direct" (the prediction type itself)
    loss_cap: float = 5.0              # loss = min(1 + SNR, cap) x (x0 error)^2: the v-loss, capped (min-SNR)
    train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    snr_shift: float = 3.0
    zero_snr: bool = True
    text_drop: float = 0.1             # caption dropped (zero states) for classifier-free guidance
    prefix_prob: float = 0.5           # training groups whose first latent frames are kept clean
    refine_channels: int = 0           # > 0: a pixel-space conv refiner (zero-initialised) on the network's
                                       # clean-frame output, whose linear head draws each 8 x 8 x 4 cell alone
    residual_scale: float = 0.0        # > 0 (stage 2): draw (frames - the tokenizer's own decode) x this, the
                                       # detail its decode lacks, on top of that decode; 0: the frames (the paper)
    # --- sampling defaults
    sampler: str = "dpm"               # "dpm" (DPM++ 2M, CogVideoXDPMScheduler) or "ddim"
    steps: int = 20
    spacing: str = "trailing"          # the sampling timesteps: "trailing" (the release: 999 ... 49 at 20 steps)
                                       # or "linspace" (999 ... 0: the last prediction is made at t = 0)
    strength: float = 1.0              # < 1: start from the direct decode noised to this level (SDEdit)
    detail: float = 1.0                # residual renderer: the share of its drawn detail added to the direct
                                       # decode (1: all of it; 0: the direct decode itself)
    guidance: float = 6.0
    guidance_schedule: str = "dynamic"  # 1 + s (1 - cos(pi (i/N)^5)) / 2, or "constant"
    # --- the codec whose tokens it renders (name, content hash)
    codec: str = ""
    codec_hash: str = ""

    def __post_init__(self):
        H, W = self.frame_size
        s, p = self.space_to_depth, self.feature_patch
        if H % s or W % s:
            raise ValueError(f"frame_size {self.frame_size} is not a multiple of space_to_depth {s}")
        if sum(self.rope_split) != self.head_dim or any(x % 2 for x in self.rope_split):
            raise ValueError(f"rope_split {self.rope_split} must be even parts summing to the head dim {self.head_dim}")
        if not 0 <= self.control_layers <= self.layers:
            raise ValueError(f"control_layers must be in [0, {self.layers}]")
        up = 2 ** (len(self.up_mult) - 1)
        if p * self.feature_grid[0] != H or p * self.feature_grid[1] != W or p != s * up:
            raise ValueError(f"feature grid {self.feature_grid} upsampled {up}x must be the latent grid "
                             f"{self.latent_grid} (frame {self.frame_size}, space_to_depth {s})")
        if self.parameterization not in ("x0", "direct"):
            raise ValueError(f"unknown parameterization {self.parameterization!r} (x0, direct)")
        if self.prediction not in ("v_prediction", "sample", "epsilon"):
            raise ValueError(f"unknown prediction {self.prediction!r}")
        if self.sampler not in ("dpm", "ddim") or self.guidance_schedule not in ("dynamic", "constant"):
            raise ValueError(f"unknown sampler {self.sampler!r} or guidance schedule {self.guidance_schedule!r}")
        if self.spacing not in ("trailing", "linspace"):
            raise ValueError(f"unknown timestep spacing {self.spacing!r} (trailing, linspace)")
        if self.refine_channels < 0 or (self.refine_channels and self.parameterization != "x0"):
            raise ValueError(f"refine_channels must be >= 0, and is for parameterization 'x0' "
                             f"(got {self.refine_channels}, {self.parameterization!r})")
        if not 0 <= self.residual_scale < 100:
            raise ValueError(f"residual_scale must be in [0, 100), got {self.residual_scale}")
        if not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if not 0 <= self.detail <= 1:
            raise ValueError(f"detail must be in [0, 1], got {self.detail}")
        if self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {self.scale}")
        if not 0 <= self.overlap < self.group:
            raise ValueError(f"overlap must be in [0, group), got {self.overlap}")

    # ------------------------------------------------------------------ derived sizes
    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def feature_patch(self) -> int:
        """Pixels per tokenizer feature cell."""
        return self.frame_size[0] // self.feature_grid[0]

    @property
    def latent_channels(self) -> int:
        return 3 * self.time_to_depth * self.space_to_depth ** 2

    @property
    def latent_grid(self) -> tuple[int, int]:
        return self.frame_size[0] // self.space_to_depth, self.frame_size[1] // self.space_to_depth

    def latent_frames(self, frames: int) -> int:
        return math.ceil(frames / self.time_to_depth)

    @property
    def prefix_latents(self) -> int:
        """Latent frames wholly inside the overlap: kept clean from the previous group."""
        return self.overlap // self.time_to_depth



PRESETS: dict[str, RendererConfig] = {
    # the world tokenizer (64 x 96 coding, groups of 16 frames at 8 fps, features 8 x 12 x 256),
    # rendered at the world's own 128 x 192: 4 x 16 x 24 latent cells of 768 values (8 x 8 pixels x 4
    # frames, CogVideoX's VAE factors), 1536 tokens; 6 + 3 layers of width 192: a forward is 0.35
    # CPU-seconds, 20 steps x 3 groups of a 4 s clip about 21 s on one core
    "world": RendererConfig(name="world"),
    # tests: 4 frames of 32 x 48 (the tiny codec), 2 + 1 layers of width 32, a hashing text encoder
    "tiny": RendererConfig(name="tiny", frame_size=(32, 48), scale=1, space_to_depth=8, time_to_depth=1, group=4,
                           overlap=1, width=32, heads=2, layers=2, time_freq=32, time_dim=32,
                           rope_split=(4, 6, 6), text_encoder="hash:16", text_dim=16, max_text_tokens=16,
                           control_layers=1, feature_dim=64, feature_grid=(2, 3), up_channels=16,
                           up_mult=(0.5, 1.0), up_res_blocks=1, up_out=8, steps=4),
}


def get_preset(name: str) -> RendererConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown renderer preset {name!r} (known: {', '.join(sorted(PRESETS))})") from None
