"""Bounds on what semcodec accepts from files it did not write: source videos, model configs and
the output a token stream may ask for.

Every bound is checked before anything is allocated or built, so that a hostile or broken file
costs seconds and megabytes, never hours or gigabytes. Token streams have their own bounds in
``bitstream`` (format limits and the decode-work budget) and are matched against the model by
``Codec.check_stream``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import SemcodecError
from .presets import CHOICES

# Sources: DCI 4K is the largest picture semcodec takes (a decoded frame is held as float32 for
# the resize: ~100 MB), no side above 8192, and frame rates a camera or screen records.
MAX_SOURCE_PIXELS = 4096 * 2160
MAX_SOURCE_SIDE = 8192
MIN_SOURCE_FPS, MAX_SOURCE_FPS = 0.1, 240.0
# The semantic frame rate the encoder may be asked for (``--fps``, a model's ``fps``).
MIN_SEMANTIC_FPS, MAX_SEMANTIC_FPS = 0.5, 30.0
MAX_SEARCH_STEPS = 1000           # rounds of encoder-side token search per group
MAX_ADAPT_STEPS = 10000           # steps of the decoder adaptation fit per stream
# Decoding: the output frames a stream asks for may hold this many pixels per byte of the stream
# (decode work bounded by the file's size). s128 writes ~1.7 KB per 1.5 s group: 4K at 120 fps
# needs 0.5 M pixels per byte; a forged 1 KB stream gets at most ~1 G pixels (seconds of work).
MAX_OUTPUT_PIXELS_PER_BYTE = 1 << 20


class LimitError(SemcodecError, ValueError):
    """A value outside semcodec's bounds; the message is a user-facing fragment."""


def check_semantic_fps(fps: float) -> float:
    """``fps`` as a float when it is a semantic rate semcodec codes (``--fps``), else ``LimitError``."""
    if not (math.isfinite(fps) and MIN_SEMANTIC_FPS <= fps <= MAX_SEMANTIC_FPS):
        raise LimitError(f"--fps must be between {MIN_SEMANTIC_FPS:g} and {MAX_SEMANTIC_FPS:g}, got {fps:g}")
    return float(fps)


def check_source(width: int, height: int, fps: float) -> None:
    """A video semcodec can code (or a stream header's claim about one)."""
    if not (1 <= width <= MAX_SOURCE_SIDE and 1 <= height <= MAX_SOURCE_SIDE
            and width * height <= MAX_SOURCE_PIXELS):
        raise LimitError(f"{width}x{height} is larger than semcodec takes (at most {MAX_SOURCE_PIXELS} "
                         f"pixels, e.g. 4096x2160, and {MAX_SOURCE_SIDE} per side)")
    if not (math.isfinite(fps) and MIN_SOURCE_FPS <= fps <= MAX_SOURCE_FPS):
        raise LimitError(f"a frame rate of {fps:g} fps is outside {MIN_SOURCE_FPS:g}..{MAX_SOURCE_FPS:g}")


# --------------------------------------------------------------------------------------------
# model configs
# --------------------------------------------------------------------------------------------

# (lo, hi) per integer field: a few times the largest preset (``landiff``), far below anything
# that could exhaust memory before the file's own tensors are compared.
_INTS = {
    "feature_dim": (1, 4096), "patch": (1, 64), "short_side": (16, 4096), "max_long_side": (16, 8192),
    "stem_blocks": (0, 16), "head_blocks": (0, 16), "refine_channels": (0, 256), "group": (1, 64), "iframe_tokens": (1, 4096),
    "pframe_tokens": (1, 4096), "codebook_size": (2, 65536), "codebook_dim": (1, 1024),
    "width": (8, 4096), "heads": (1, 64), "enc_layers": (0, 48), "dec_layers": (0, 48),
}


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _ints(d: dict, key: str, n: int | None, lo: int, hi: int) -> None:
    v = d.get(key)
    if not isinstance(v, (list, tuple)) or (n is not None and len(v) != n) or not 1 <= len(v) <= 8 \
            or not all(_is_int(x) and lo <= x <= hi for x in v):
        size = f"{n}" if n is not None else "1..8"
        raise LimitError(f"config field '{key}' must be a list of {size} integers in [{lo}, {hi}], got {v!r}")


def check_config(d: Any) -> None:
    """A model config (the JSON object stored in a checkpoint) within sane bounds: every field of
    the right type and size. Fields it does not name are left to ``CodecConfig`` itself."""
    if not isinstance(d, dict):
        raise LimitError(f"the model config is not a JSON object (got {type(d).__name__})")
    if not isinstance(d.get("name"), str) or not 1 <= len(d["name"]) <= 256:
        raise LimitError(f"config field 'name' must be a string of 1..256 characters, got {d.get('name')!r}")
    for key, (lo, hi) in _INTS.items():
        if key in d and not (_is_int(d[key]) and lo <= d[key] <= hi):
            raise LimitError(f"config field '{key}' must be an integer in [{lo}, {hi}], got {d[key]!r}")
    if _is_int(d.get("width")) and _is_int(d.get("heads")) and d["width"] % d["heads"]:
        raise LimitError(f"config field 'width' ({d['width']}) must be a multiple of 'heads' ({d['heads']})")
    for key, allowed in CHOICES.items():
        if key in d and d[key] not in allowed:
            raise LimitError(f"config field '{key}' must be one of {', '.join(allowed)}, got {d[key]!r}")
    if "frame_size" in d:
        _ints(d, "frame_size", 2, 16, 8192)
    if "stem_channels" in d:
        _ints(d, "stem_channels", None, 1, 4096)
    if "rope_split" in d:
        _ints(d, "rope_split", 3, 0, 4096)
    if "overlap" in d and d["overlap"] is not None and not _is_int(d["overlap"]):
        raise LimitError(f"config field 'overlap' must be an integer or null, got {d['overlap']!r}")
    if "fps" in d and not (_is_real(d["fps"]) and MIN_SEMANTIC_FPS <= d["fps"] <= MAX_SEMANTIC_FPS):
        raise LimitError(f"config field 'fps' must be a number in [{MIN_SEMANTIC_FPS:g}, "
                         f"{MAX_SEMANTIC_FPS:g}], got {d['fps']!r}")
    if "mlp_ratio" in d and not (_is_real(d["mlp_ratio"]) and 0.25 <= d["mlp_ratio"] <= 16):
        raise LimitError(f"config field 'mlp_ratio' must be a number in [0.25, 16], got {d['mlp_ratio']!r}")
    if "rope_theta" in d and not (_is_real(d["rope_theta"]) and 1 <= d["rope_theta"] <= 1e9):
        raise LimitError(f"config field 'rope_theta' must be a number in [1, 1e9], got {d['rope_theta']!r}")
    slopes = d.get("locality_slopes")
    if slopes is not None and not (isinstance(slopes, (list, tuple)) and len(slopes) <= 64
                                   and all(_is_real(s) for s in slopes)):
        raise LimitError(f"config field 'locality_slopes' must be a list of numbers or null, got {slopes!r}")
    for flag in ("lattice_skip", "iframe_skip", "pre_norm"):
        if flag in d and not isinstance(d[flag], bool):
            raise LimitError(f"config field '{flag}' must be true or false, got {d[flag]!r}")


def min_parameters(cfg) -> int:
    """A lower bound on the parameter count of the model ``cfg`` builds (the big terms only):
    a checkpoint must hold at least this many numbers, so building its model costs memory in
    proportion to the file's size, whatever its config says."""
    w = cfg.width
    block = int((4 + 2 * cfg.mlp_ratio) * w * w)          # qkv, proj, two MLP matrices
    n = (cfg.enc_layers + cfg.dec_layers) * block
    n += (cfg.iframe_tokens + cfg.pframe_tokens) * w + cfg.codebook_size * cfg.codebook_dim
    n += 2 * cfg.feature_dim * w                           # in_proj, decoder head
    if cfg.features == "conv":
        n += sum(18 * cfg.head_blocks * c * c for c in cfg.stem_channels)   # the head's res blocks
        n += 36 * cfg.refine_channels ** 2                                  # the refine stage's res blocks
    return n
