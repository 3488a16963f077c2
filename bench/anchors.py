"""The fair classic anchor at semcodec's operating point (DESIGN.md §7).

A classic codec at full resolution is a straw man at 8 kbit/s: it cannot even reach that rate.
The fair anchor codes what semcodec codes: the picture at 128 px on the short side, at a reduced
frame rate. For each codec, frame rate and CRF:

1. keep the source frames nearest to times ``j / fps`` (4 or 8 fps);
2. area-downscale them to 128 px on the short side (both sides even, 4:2:0);
3. encode (x265 / x264 ``veryslow``, SVT-AV1 preset 4) into a **raw elementary stream**
   (Annex-B H.264 / HEVC, AV1 low-overhead OBUs): its size is the rate; the same encode muxed
   into MP4 is reported apart as ``container_bytes``;
4. decode, upsample bicubically to the source size and blend linearly in time back to every
   source frame, exactly as ``semcodec decode`` restores size and rate;
5. measure with :func:`bench.rd.quality`, exactly as semcodec is measured.

``anchor_points`` returns one JSON row per point; ``envelope`` keeps, per codec, the points no
other frame rate beats (lower rate and higher PSNR): the "best classic at equal rate" curve.
"""
from __future__ import annotations

import math
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# codec -> (raw format, suffix, options, CRF ladder); presets are the slowest sensible ones
ANCHOR_CODECS = {
    "libx265": ("hevc", "hevc", {"preset": "veryslow", "x265-params": "log-level=error"}, (35, 39, 43, 47, 51)),
    "libx264": ("h264", "h264", {"preset": "veryslow"}, (35, 39, 43, 47, 51)),
    "libsvtav1": ("obu", "obu", {"preset": "4"}, (45, 50, 55, 59, 63)),
}
ANCHOR_FPS = (4.0, 8.0)
SHORT_SIDE = 128


def kept_indices(n: int, src_fps: float, fps: float) -> np.ndarray:
    """Source frames nearest to times j / fps spanning the clip (the first is always kept)."""
    if fps >= src_fps:
        return np.arange(n)
    count = max(1, math.ceil(n * fps / src_fps - 1e-9))
    return np.unique(np.minimum(n - 1, np.round(np.arange(count) * src_fps / fps).astype(int)))


def restore(frames: np.ndarray, kept: np.ndarray, n: int, size: tuple[int, int], chunk: int = 16):
    """Decoded low-rate frames ``K x h x w x 3`` uint8 (frame ``i`` shows source frame ``kept[i]``)
    -> ``n x H x W x 3`` uint8: bicubic to ``size``, linear blend between the kept frames around
    each source frame (held after the last one). Yields chunks to bound memory."""
    big = {}

    def up(i: int) -> torch.Tensor:
        if i not in big:
            x = torch.from_numpy(np.ascontiguousarray(frames[i])).permute(2, 0, 1)[None].float()
            big[i] = F.interpolate(x, size=size, mode="bicubic", align_corners=False)[0].clamp(0, 255)
            for k in [k for k in big if k < i - 1]:
                del big[k]
        return big[i]

    out = []
    for t in range(n):
        j = int(np.searchsorted(kept, t, side="right")) - 1      # last kept frame at or before t
        if j >= len(kept) - 1 or kept[j] == t:
            f = up(min(j, len(kept) - 1))
        else:
            a = (t - kept[j]) / (kept[j + 1] - kept[j])
            f = up(j) * (1 - a) + up(j + 1) * a
        out.append(f.round().to(torch.uint8).permute(1, 2, 0).numpy())
        if len(out) == chunk:
            yield np.stack(out)
            out = []
    if out:
        yield np.stack(out)


def encode_raw(frames: np.ndarray, path: Path, codec: str, fmt: str, fps: float, options: dict) -> None:
    import av
    with av.open(str(path), mode="w", format=fmt) as out:
        s = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.options = {k: str(v) for k, v in options.items()}
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        out.mux(s.encode())


def decode_raw(path: Path) -> np.ndarray:
    import av
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def anchor_points(src: np.ndarray, src_fps: float, tmp: Path, codecs=tuple(ANCHOR_CODECS), fps_list=ANCHOR_FPS,
                  ladders: dict | None = None, log=print) -> list[dict]:
    """One row per (codec, frame rate, CRF) of the fair anchor on ``src`` (``T x H x W x 3`` uint8)."""
    from bench.rd import even_short_side, quality, resize_uint8
    n, h, w = src.shape[:3]
    duration = n / src_fps
    size = even_short_side(h, w, SHORT_SIDE)
    rows = []
    for codec in codecs:
        fmt, suffix, opts, ladder = ANCHOR_CODECS[codec]
        ladder = (ladders or {}).get(codec, ladder)
        for fps in fps_list:
            kept = kept_indices(n, src_fps, fps)
            small = resize_uint8(src[kept], size, "area")
            eff_fps = src_fps * (len(kept) - 1) / max(1, kept[-1]) if len(kept) > 1 else fps
            for crf in ladder:
                raw = tmp / f"anchor-{codec}-{fps:g}-{crf}.{suffix}"
                t0 = time.perf_counter()
                encode_raw(small, raw, codec, fmt, eff_fps, {**opts, "crf": crf})
                t1 = time.perf_counter()
                dec = decode_raw(raw)
                if len(dec) != len(kept):
                    raise RuntimeError(f"{codec}: {len(dec)} frames decoded of {len(kept)}")
                acc, got = {}, 0
                for part in restore(dec, kept, n, (h, w)):
                    q = quality(src[got:got + len(part)], part)
                    for k, v in q.items():
                        acc[k] = acc.get(k, 0.0) + v * len(part)
                    got += len(part)
                q = {k: v / n for k, v in acc.items()}
                nbytes = raw.stat().st_size
                # the same encode muxed into MP4 (global headers), for the container overhead
                mp4 = raw.with_suffix(".mp4")
                encode_raw(small, mp4, codec, "mp4", eff_fps, {**opts, "crf": crf})
                cbytes = mp4.stat().st_size
                raw.unlink()
                mp4.unlink()
                label = f"{codec}-{SHORT_SIDE}p"
                row = {"codec": label, "family": codec, "anchor": True,
                       "params": {"crf": crf, "fps": fps, **{k: v for k, v in opts.items() if k != "x265-params"}},
                       "coded_size": [size[1], size[0]], "coded_frames": int(len(kept)),
                       "bitrate_kbps": 8 * nbytes / duration / 1000, "payload_kbps": 8 * nbytes / duration / 1000,
                       "bytes": nbytes, "payload_bytes": nbytes, "container_bytes": cbytes,
                       "container_kbps": 8 * cbytes / duration / 1000,
                       "frames": int(n), "duration_s": duration, **q, "encode_s": t1 - t0}
                rows.append(row)
                log(f"  {label:16s} {fps:g} fps crf {crf:2d} {row['bitrate_kbps']:8.2f} kbit/s (mp4 "
                    f"{row['container_kbps']:.2f})  PSNR@128 {row['psnr_128']:6.2f}  SSIM@128 {row['ssim_128']:.4f}")
    return rows


def envelope(rows: list[dict], key: str = "psnr_128") -> list[dict]:
    """The points of ``rows`` that no other point beats (lower or equal rate and higher ``key``),
    sorted by rate: the best the codec does at each rate over all its frame rates."""
    pts = sorted(rows, key=lambda r: (r["bitrate_kbps"], -r[key]))
    out, best = [], -math.inf
    for r in pts:
        if r[key] > best:
            out.append(r)
            best = r[key]
    return out
