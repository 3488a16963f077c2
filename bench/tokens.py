"""The token budget: tokens/s and raw bits/s of our presets and of other video tokenizers.

``python -m bench.tokens [--size 480x720] [--json results/tokens.json]``

Every figure is **computed** (not measured) from each design's published compression factors:

- our presets (``semcodec.get_preset``): one group of ``group`` semantic frames at ``fps`` holds
  ``iframe_tokens + (group - 1) * pframe_tokens`` tokens; back to back that is
  ``tokens_per_group * fps / group`` tokens/s, with the 20% overlap of long videos
  ``tokens_per_group * fps / (group - overlap)``. The count is the same at any resolution (query
  tokens, not a grid: s128 scales every video to 128 px on the short side first);
- LanDiff (paper): a 49-frame clip at 8 fps -> 13 semantic frames -> 330 + 12 x 74 = 1218 tokens
  per 49 / 8 = 6.125 s, codebook 2048 (11 bits);
- MagViT2: causal 4x temporal (1 + (T - 1) / 4 latent frames), 8 x 8 spatial, lookup-free codebook
  of 2^18 (18 bits);
- Cosmos DV 8x16x16: causal 8x temporal (1 + (T - 1) / 8 latent frames), 16 x 16 spatial, FSQ
  vocabulary 64,000 (log2 = 15.97 -> 16 bits).

Raw bits/s = tokens/s x ceil(log2(codebook)) (fixed-length codes, before entropy coding). "clip" is
the design's unit (one group, one 49- or 121-frame clip: a causal first frame included); "long
video" the rate of a stream of such units (for the causal grid tokenizers: fps / t tokens frames
per second; for our presets: with overlap).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

LANDIFF_CLIP_FRAMES, LANDIFF_CLIP_FPS = 49, 8.0       # the paper's clip: 49 frames at 8 fps
LANDIFF_TOKENS = 330 + 12 * 74                         # 13 semantic frames
LANDIFF_CODEBOOK = 2048


def bits_for(codebook: int) -> int:
    return math.ceil(math.log2(codebook))


def _row(design, basis, fps, clip_frames, clip_tokens, steady_tps, codebook, note=""):
    clip_s = clip_frames / fps
    bits = bits_for(codebook)
    return {"design": design, "basis": basis, "fps": fps, "clip_frames": clip_frames, "clip_s": clip_s,
            "clip_tokens": clip_tokens, "clip_tokens_per_s": clip_tokens / clip_s,
            "tokens_per_s": steady_tps, "codebook": codebook, "bits_per_token": bits,
            "raw_bits_per_s": steady_tps * bits, "note": note}


def preset_row(name: str) -> dict:
    """A preset of ours: clip = one group (no overlap), long video = with overlap."""
    from semcodec import get_preset
    c = get_preset(name)
    tpg = c.tokens_per_group
    r = _row(f"semcodec `{name}`", f"{c.iframe_tokens} + {c.group - 1} x {c.pframe_tokens} tokens per {c.group} frames, "
             f"overlap {c.overlap}", c.fps, c.group, tpg, tpg * c.fps / (c.group - c.overlap), c.codebook_size,
             f"any resolution (video scaled to {c.short_side} px short side, long side <= {c.max_long_side})")
    r["tokens_per_s_no_overlap"] = tpg * c.fps / c.group
    return r


def landiff_paper() -> dict:
    tps = LANDIFF_TOKENS / (LANDIFF_CLIP_FRAMES / LANDIFF_CLIP_FPS)
    return _row("LanDiff (paper)", "330 + 12 x 74 tokens per 49 frames (13 semantic frames, ~2 fps)",
                LANDIFF_CLIP_FPS, LANDIFF_CLIP_FRAMES, LANDIFF_TOKENS, tps, LANDIFF_CODEBOOK,
                "no overlap; 480x720 features")


def causal_grid_row(design: str, t: int, s: int, codebook: int, size: tuple[int, int], fps: float,
                    clip_frames: int, basis_extra: str = "") -> dict:
    """A causal 3-D grid tokenizer: 1 + (T - 1) / t latent frames of (H / s) x (W / s) tokens."""
    h, w = size
    per_frame = math.ceil(h / s) * math.ceil(w / s)
    latent = 1 + math.ceil((clip_frames - 1) / t)
    return _row(design, f"causal {t}x temporal, {s}x{s} spatial: {math.ceil(h / s)} x {math.ceil(w / s)} = "
                f"{per_frame} tokens per latent frame{basis_extra}", fps, clip_frames, latent * per_frame,
                per_frame * fps / t, codebook, f"{h}x{w}")


def rows(size: tuple[int, int] = (480, 720)) -> list[dict]:
    from semcodec import list_presets
    out = [preset_row(n) for n in list_presets()]
    out.append(landiff_paper())
    out.append(causal_grid_row("MagViT2", 4, 8, 2 ** 18, size, 8.0, 49, ", LFQ 2^18"))
    out.append(causal_grid_row("MagViT2", 4, 8, 2 ** 18, size, 24.0, 17, ", LFQ 2^18"))
    out.append(causal_grid_row("Cosmos DV 8x16x16", 8, 16, 64000, size, 24.0, 121, ", FSQ 64,000"))
    out.append(causal_grid_row("Cosmos DV 8x16x16", 8, 16, 64000, size, 8.0, 49, ", FSQ 64,000"))
    ref = landiff_paper()["tokens_per_s"]
    for r in out:
        r["vs_landiff"] = r["tokens_per_s"] / ref
    return out


def table(rs: list[dict], size: tuple[int, int]) -> str:
    lines = [f"Computed from published compression factors (not measured), at {size[0]}x{size[1]}:", "",
             "| design | frame rate assumed | unit (clip) | tokens per clip | tokens/s, clip | tokens/s, long video "
             "| bits/token | raw kbit/s, long video | x LanDiff |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rs:
        rate = f"{r['fps']:g} fps" + (" semantic, any source rate" if r["design"].startswith("semcodec") else "")
        lines.append(f"| {r['design']} | {rate} | {r['clip_frames']} frames = {r['clip_s']:.3g} s: {r['basis']} "
                     f"| {r['clip_tokens']:,} | {r['clip_tokens_per_s']:,.1f} | {r['tokens_per_s']:,.1f} "
                     f"| {r['bits_per_token']} | {r['raw_bits_per_s'] / 1000:,.2f} | {r['vs_landiff']:.2f} |")
    lines.append("")
    lines.append("Long video: our presets with their overlap (groups share `overlap` frames); the others as "
                 "back-to-back units (LanDiff: the paper's ~200 tokens/s; causal grids: fps / t latent frames per "
                 "second). Our presets give the same count at any resolution; `landiff` is the paper's layout at "
                 "2 fps exactly (13 frames = 6.5 s), the paper row its 49-frame 8 fps clip (6.125 s).")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m bench.tokens", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="480x720", help="H x W for the grid tokenizers")
    p.add_argument("--json", default=None, help="also write the rows as JSON")
    a = p.parse_args(argv)
    h, w = (int(v) for v in a.size.lower().split("x"))
    rs = rows((h, w))
    print(table(rs, (h, w)))
    print(f"\n(computed {time.strftime('%Y-%m-%d')})")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"size": [h, w], "computed": True, "rows": rs}, indent=1))
    return rs


if __name__ == "__main__":
    main()
