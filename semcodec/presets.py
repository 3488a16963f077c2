"""Named model configurations (the zoo), CompressAI-style.

A :class:`CodecConfig` fixes everything a checkpoint needs to be rebuilt: the feature space the
query tokenizer sees, the group-of-pictures layout and token counts, and the transformer sizes.
``landiff`` is the paper exactly; the ``s128`` presets are small enough to train on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config_dict import ConfigDict
from .errors import ConfigError


@dataclass(frozen=True)
class CodecConfig(ConfigDict):
    # from_dict drops fields it does not know (e.g. ``backbone_path``, which older checkpoints saved:
    # a path on the machine that trained them)
    strict = False
    name: str
    # --- feature space: what the query tokenizer sees (DESIGN.md §3)
    features: str = "conv"            # "pixels" | "conv" | "backbone"
    feature_dim: int = 256            # channels C of the B x T x h x w x C feature grid
    patch: int = 16                   # pixels per feature cell along each axis
    frame_size: tuple[int, int] = (128, 192)   # nominal working H x W (pixels), multiples of patch
    short_side: int = 128             # video frames are resized so their short side is this
    max_long_side: int = 320          # ... and their long side at most this (then padded)
    stem_channels: tuple[int, ...] = (64, 96)   # conv stem widths before the last stage
    stem_blocks: int = 1              # residual blocks per conv stem stage
    head_blocks: int = 1              # residual blocks per conv head stage
    refine_channels: int = 0          # a full-resolution residual stage after the conv head (0 = none):
                                      # the head draws each 4 x 4 pixel block from one place of its
                                      # last stage, this smooths across the blocks' edges
    backbone_fit: str = "interpolate"  # "backbone": how a frame meets the ViT (semcodec.features.backbone):
                                       # "interpolate" its position table to the frame's grid, or
                                       # "pad_square" (the release: grey-pad to a square, keep the frame's rows)
    # --- group of pictures
    fps: float = 4.0                  # semantic frame rate
    group: int = 8                    # frames per group (frame 0 is the IFrame)
    overlap: int | None = None        # frames shared by consecutive groups; None = round(0.2*group)
    iframe_tokens: int = 224
    pframe_tokens: int = 128
    # --- quantizer
    codebook_size: int = 2048
    codebook_dim: int = 16
    quantizer: str = "cosine"         # "cosine" (the paper) or "euclidean" (the release: L2, rotation trick)
    # --- transformer
    width: int = 256
    heads: int = 4
    enc_layers: int = 1
    dec_layers: int = 1
    mlp_ratio: float = 2.0
    rope_split: tuple[int, int, int] = (16, 24, 24)   # head dim split t:h:w
    rope_theta: float = 10000.0
    query_layout: str = "grid"        # RoPE positions of queries: "diagonal" (paper) or "grid"
    pre_norm: bool = False            # LayerNorm over the whole sequence before the first block (the release)
    latent_mask: str = "causal"       # decoder latents: "causal" (the encoder's rule for queries) or
                                      # "frame" (the release: a frame's latents see each other and earlier frames')
    locality_slopes: tuple[float, ...] | None = (1.0, 0.25, 0.0625, 0.0)   # per-head 2D ALiBi; None = off
    lattice_skip: bool = True         # queries start from the features at their lattice place, and
                                      # decoder positions from the latents at theirs (needs "grid")
    iframe_skip: bool = False         # decoder positions of P-frames also start from the IFrame latents
                                      # at their place: P tokens then code what changed (needs lattice_skip)
    pframe_warp: bool = False         # motion compensation in the conv head: frame t is frame t-1's
                                      # picture moved by a predicted flow, blended with its own picture

    def __post_init__(self):
        if self.overlap is None:
            object.__setattr__(self, "overlap", round(0.2 * self.group))
        if sum(self.rope_split) != self.width // self.heads:
            raise ConfigError(f"rope_split {self.rope_split} must sum to the head dim {self.width // self.heads}")
        if any(s % 2 for s in self.rope_split):
            raise ConfigError("each rope_split part must be even")
        if self.iframe_skip and not self.lattice_skip:
            raise ConfigError("iframe_skip needs lattice_skip")
        if self.lattice_skip and self.query_layout != "grid":
            raise ConfigError("lattice_skip needs query_layout='grid'")
        if self.refine_channels and self.features != "conv":
            raise ConfigError("refine_channels needs features='conv'")
        if self.pframe_warp and self.features != "conv":
            raise ConfigError("pframe_warp needs features='conv'")
        if self.locality_slopes is not None and len(self.locality_slopes) != self.heads:
            raise ConfigError(f"locality_slopes needs one slope per head ({self.heads})")
        if not 0 <= self.overlap < self.group:
            raise ConfigError(f"overlap must be in [0, group), got {self.overlap}")
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")

    @property
    def grid(self) -> tuple[int, int]:
        """Nominal feature grid h x w for ``frame_size``."""
        return self.frame_size[0] // self.patch, self.frame_size[1] // self.patch

    @property
    def tokens_per_group(self) -> int:
        return self.iframe_tokens + (self.group - 1) * self.pframe_tokens

    def tokens_for_frames(self, t: int) -> int:
        """Token count of a group holding ``t`` valid frames (a short last group)."""
        return self.iframe_tokens + (t - 1) * self.pframe_tokens

    @property
    def tokens_per_second(self) -> float:
        """Stream rate with overlap: one group per (group - overlap) frames."""
        return self.tokens_per_group * self.fps / (self.group - self.overlap)



# the string fields and the values they may take
CHOICES = {"features": ("pixels", "conv", "backbone"), "query_layout": ("diagonal", "grid"),
           "quantizer": ("cosine", "euclidean"), "latent_mask": ("causal", "frame"),
           "backbone_fit": ("interpolate", "pad_square")}

_PRESETS: dict[str, CodecConfig] = {}


def register_preset(cfg: CodecConfig) -> CodecConfig:
    _PRESETS[cfg.name] = cfg
    return cfg


def get_preset(name: str) -> CodecConfig:
    """The named configuration; ``ValueError`` naming the known ones otherwise."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset '{name}' (known: {', '.join(sorted(_PRESETS))})") from None


def list_presets() -> list[str]:
    return sorted(_PRESETS)


# The paper: Theia features (30 x 45 x 768 from a 480 x 720 frame), 13 frames at ~2 fps,
# 330 IFrame + 12 x 74 PFrame tokens, 2048 x 16 cosine codebook, 12+12 layers of width 768; the
# release's sequence LayerNorm and decoder latent mask (semcodec.convert reads its weights).
register_preset(CodecConfig(
    name="landiff", features="backbone", feature_dim=768, patch=16, frame_size=(480, 720),
    short_side=480, max_long_side=720, fps=2.0, group=13, iframe_tokens=330, pframe_tokens=74,
    codebook_size=2048, codebook_dim=16, width=768, heads=12, enc_layers=12, dec_layers=12,
    mlp_ratio=4.0, rope_split=(16, 24, 24), query_layout="diagonal", locality_slopes=None,
    lattice_skip=False, pre_norm=True, latent_mask="frame",
))

# The shipped default: 128 px short side, conv stem/head to a 8 x (W/16) grid, groups of 8 frames
# overlapping by 2; 1 + 1 attention blocks over 2 residual blocks per stem stage, 5 per head stage
# and a full-resolution refine stage. Its own rate is 8 semantic fps, one group per 0.75 s,
# (224 + 7 x 128) / 0.75 = 1493 tokens/s: the best point of the rate control within issue 10's
# 9 kbit/s on its validation clips (named operating points code 2 and 4 fps, zoo.OPERATING_POINTS).
register_preset(CodecConfig(name="s128", fps=8.0, stem_blocks=2, head_blocks=5, refine_channels=32))

# The baseline the query tokenizer must beat (issue 10): a per-frame conv VQ at the same tokens/s
# (both at 4 fps when compared). The stem and token lattice of s128, the head it had then (3
# residual blocks per stage), no transformer: each token codes only the features at its lattice
# place in its own frame (encoder and decoder are 0 blocks deep).
register_preset(CodecConfig(name="s128-framevq", enc_layers=0, dec_layers=0, stem_blocks=2, head_blocks=3))

# The world tokenizer for generation (issue 11). The procedural world's 128 x 192 clips are coded at
# 64 x 96: everything its captions say survives that (the evaluator scores such a round trip
# >= 97.5% on every dimension), and an 8 x 8 px cell holds half the detail of a 16 x 16 one for
# its one token. At the world's own 8 fps (no blended in-between frames, which would ghost moving
# shapes); groups of 2 s overlapping by 3 frames; one IFrame token per cell of the 8 x 12 grid and
# 8 per PFrame: 96 + 15 x 8 = 216 tokens per group (133 tokens/s), short enough for a language
# model trained on a CPU.
register_preset(CodecConfig(name="world", frame_size=(64, 96), short_side=64, max_long_side=160, patch=8,
                            stem_channels=(64,), fps=8.0, group=16, overlap=3, iframe_tokens=96,
                            pframe_tokens=8, enc_layers=1, dec_layers=1, stem_blocks=2, head_blocks=3,
                            iframe_skip=True))

# Same tokenizer over raw 16 x 16 pixel patches (no learned stem): the pure-transformer baseline.
register_preset(CodecConfig(name="s128-pixels", features="pixels", feature_dim=768))

# A very small model for tests and smoke runs.
register_preset(CodecConfig(
    name="tiny", features="conv", feature_dim=64, frame_size=(32, 48), short_side=32,
    max_long_side=64, stem_channels=(16, 32), fps=6.0, group=4, iframe_tokens=8, pframe_tokens=4,
    codebook_size=64, codebook_dim=8, width=64, heads=2, enc_layers=2, dec_layers=2,
    rope_split=(8, 12, 12), locality_slopes=(0.5, 0.0),
))
