"""Side-by-side frames: source / semcodec / the best fair anchor at equal or lower rate.

``python -m bench.frames --results results/rd.json [--model s128] [--fps F] [--entropy MODE] [--out docs/frames]``

For each clip of an RD results file (``python -m bench.rd``): the semcodec operating point of
``--model`` at semantic rate ``--fps`` (default: the model's own) in entropy mode ``--entropy``
(default ``context``; the mode sets the rate, not the picture), and among the anchors the point
with the highest PSNR@128 at a rate no higher than semcodec's. Both are coded again here (the
same settings give the same bytes), decoded to source size and rate as in the benchmark, and a
few frames are drawn at 128 px on the short side, each column labelled with its rate and PSNR.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def pick_points(entry: dict, model: str, fps: float, entropy: str = "context",
                search: int | None = None) -> tuple[dict, dict | None]:
    """The semcodec point (of the curve searched ``search`` rounds, where the results hold curves
    per search setting: ``bench.rd --search``) and the best anchor at an equal or lower rate."""
    sem = [r for r in entry["results"] if r["family"] == "semcodec" and r.get("entropy") == entropy
           and r["model"] == model and abs(r.get("semantic_fps", fps) - fps) < 1e-6]
    if search is not None and any("-search" in r.get("codec", "") for r in sem):
        sem = [r for r in sem if f"-search{search}@" in r.get("codec", "")]
    if not sem:
        raise SystemExit(f"error: no {entropy} point of model '{model}' at {fps:g} fps"
                         + (f" searched {search} rounds" if search is not None else "") + " in the results")
    s = sem[0]
    ok = [r for r in entry["results"] if r.get("anchor") and r["bitrate_kbps"] <= s["bitrate_kbps"]]
    return s, max(ok, key=lambda r: r["psnr_128"]) if ok else None


def semcodec_frames(codec, clip: str, fps: float, tmp: Path, search: int | None = None) -> np.ndarray:
    from bench.rd import read_frames
    bin_, mp4 = tmp / "t.bin", tmp / "r.mp4"
    codec.encode_file(clip, bin_, entropy="adaptive", fps=fps, search=search)      # the same tokens as any mode
    codec.decode_file(bin_, mp4)
    return read_frames(mp4)


def anchor_frames(point: dict, src: np.ndarray, src_fps: float, tmp: Path) -> np.ndarray:
    from bench.anchors import ANCHOR_CODECS, SHORT_SIDE, decode_raw, encode_raw, kept_indices, restore
    from bench.rd import even_short_side, resize_uint8
    codec = point["family"]
    fmt, suffix, opts, _ = ANCHOR_CODECS[codec]
    n, h, w = src.shape[:3]
    kept = kept_indices(n, src_fps, point["params"]["fps"])
    small = resize_uint8(src[kept], even_short_side(h, w, SHORT_SIDE), "area")
    eff = src_fps * (len(kept) - 1) / max(1, kept[-1]) if len(kept) > 1 else point["params"]["fps"]
    raw = tmp / f"a.{suffix}"
    encode_raw(small, raw, codec, fmt, eff, {**opts, "crf": point["params"]["crf"]})
    return np.concatenate(list(restore(decode_raw(raw), kept, n, (h, w))))


def draw(name: str, columns: list[tuple[str, np.ndarray]], times: list[int], src_fps: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bench.metrics import at_short_side
    small = [(label, at_short_side(f[times]).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())
             for label, f in columns]
    h, w = small[0][1].shape[1:3]
    fig, axes = plt.subplots(len(times), len(small), figsize=(len(small) * w / 45, len(times) * h / 45 + 0.6),
                             squeeze=False)
    for j, (label, frames) in enumerate(small):
        for i, t in enumerate(times):
            ax = axes[i][j]
            ax.imshow(frames[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{t / src_fps:.1f} s", fontsize=8)
    fig.suptitle(name, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> list[str]:
    p = argparse.ArgumentParser(prog="python -m bench.frames", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results/rd.json", help="output of python -m bench.rd")
    p.add_argument("--model", default="s128", help="semcodec model (as named in the results)")
    p.add_argument("--model-path", default=None, help="where to load it from [default: the shipped model]")
    p.add_argument("--fps", type=float, default=None, help="semantic fps of the semcodec point [default: the model's]")
    p.add_argument("--entropy", default="context", help="entropy mode of the semcodec point [context]")
    p.add_argument("--search", type=int, default=None, help="rounds of token search [default: semcodec encode's]")
    p.add_argument("--frames", type=int, default=3, help="frames per clip, spread over the clip")
    p.add_argument("--clips", nargs="*", default=None, help="clip names of the results [default: all]")
    p.add_argument("--out", default="docs/frames")
    a = p.parse_args(argv)
    os.environ.setdefault("SVT_LOG", "1")
    from bench.rd import read_frames
    from semcodec.codec import Codec
    from semcodec.video import probe
    codec = Codec.load(a.model_path or a.model, "cpu")
    fps = codec.semantic_fps(a.fps)
    doc = json.loads(Path(a.results).read_text())
    written = []
    for name, entry in doc["clips"].items():
        if a.clips and name not in a.clips:
            continue
        clip = entry["source"]["file"]
        src = read_frames(clip, entry["source"]["frames"])
        src_fps = probe(clip).fps
        search = codec.search_steps if a.search is None else a.search
        s, anchor = pick_points(entry, a.model, fps, a.entropy, search)
        with tempfile.TemporaryDirectory() as tmp:
            cols = [("source", src),
                    (f"semcodec {a.model} @{fps:g} fps\n{s['bitrate_kbps']:.2f} kbit/s, {s['psnr_128']:.2f} dB",
                     semcodec_frames(codec, clip, fps, Path(tmp), search))]
            if anchor:
                pr = anchor["params"]
                cols.append((f"{anchor['codec']} {pr['fps']:g} fps crf {pr['crf']}\n"
                             f"{anchor['bitrate_kbps']:.2f} kbit/s, {anchor['psnr_128']:.2f} dB",
                             anchor_frames(anchor, src, src_fps, Path(tmp))))
        times = [int(round(x)) for x in np.linspace(0, len(src) - 1, a.frames + 2)[1:-1]]
        path = Path(a.out) / f"{name}.png"
        draw(name, cols, times, src_fps, path)
        written.append(str(path))
        print(f"{name}: -> {path}")
    return written


if __name__ == "__main__":
    main()
