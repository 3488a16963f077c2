"""Does a tokenizer keep what the world's captions say? The evaluator on its reconstructions.

``python -m bench.world_codec [--model world] [--clips 40] [--split test] [--out results/world_codec.json]``

Renders ``--clips`` clips of a split of the captioned world (``semcodec.data.world``: legible
scenes, 4 s at 8 fps, 128 x 192), writes each as an MP4, codes it with ``semcodec encode``'s
path (``Codec.encode_file``, adaptive entropy coding) and decodes it back, then scores both the
ground truth and the reconstruction with ``generation.evaluate`` against the scene spec. Prints
the per-dimension table side by side, the tokens per group, bits per token and kbit/s; writes
one JSON entry per dimension, and the PSNR by a frame's place after its group's IFrame (frame j
of a clip is place ``j mod (group - overlap)``: the IFrame at 0, then the P-frames; shapes that
the P-frames lose show as a PSNR falling with the place).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.world_clips import FPS, percent, save_result, split_clips, write_video


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.world_codec", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="world", help="shipped model name or checkpoint path")
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--start", type=int, default=0, help="first scene seed to draw the split's seeds from")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--search", type=int, default=None,
                   help="rounds of encoder-side token search per group [default: semcodec encode's]")
    p.add_argument("--out", default="results/world_codec.json")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    from generation.evaluate import DIMENSIONS, evaluate
    from semcodec.codec import Codec, stream_stats
    from semcodec.video import iter_frames
    codec = Codec.load(a.model, "cpu")
    fps = FPS
    frames = int(round(a.seconds * fps))
    gts, recs, targets, stats = [], [], [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (scene, video) in enumerate(split_clips(a.split, a.clips, a.start, frames)):
            src, bin_, rec = Path(tmp) / f"{i}.mp4", Path(tmp) / f"{i}.bin", Path(tmp) / f"{i}-rec.mp4"
            write_video(src, video)
            codec.encode_file(src, bin_, entropy="adaptive", search=a.search)
            codec.decode_file(bin_, rec)
            stats.append(stream_stats(bin_))
            gts.append(video)
            recs.append(np.stack(list(iter_frames(rec))))
            targets.append(scene.to_dict())
    code_s = time.perf_counter() - t0
    gt = evaluate(gts, targets, fps)
    rc = evaluate(recs, targets, fps)
    mse = [np.mean((g.astype(float) - r.astype(float)) ** 2) for g, r in zip(gts, recs)]
    psnr = float(np.mean([10 * np.log10(255 ** 2 / max(m, 1e-10)) for m in mse]))
    cfg = codec.config
    by_place = by_group_place(gts, recs, cfg.group - cfg.overlap)
    tok = {k: float(np.mean([s[k] for s in stats])) for k in ("tokens_per_s", "bits_per_token", "kbit_per_s")}
    search = codec.search_steps if a.search is None else a.search
    doc = {"name": "world-codec", "model": codec.name, "model_hash": codec.content_hash, "split": a.split,
           "search_steps": search,
           "clips": a.clips, "seconds": a.seconds, "tokens_per_group": cfg.tokens_per_group,
           "iframe_tokens": cfg.iframe_tokens, "pframe_tokens": cfg.pframe_tokens, **tok, "psnr": psnr,
           "code_seconds_per_clip": code_s / a.clips,
           "psnr_by_group_place": by_place,
           "dimensions": {d: {"ground_truth": gt.scores[d], "reconstruction": rc.scores[d], "n": rc.counts[d]}
                          for d in DIMENSIONS}}
    print(f"{codec.name}: {cfg.tokens_per_group} tokens per group ({cfg.iframe_tokens} + {cfg.group - 1} x "
          f"{cfg.pframe_tokens}), {tok['tokens_per_s']:.0f} tokens/s, {tok['bits_per_token']:.2f} bits/token "
          f"(adaptive), {tok['kbit_per_s']:.2f} kbit/s, PSNR {psnr:.2f} dB; {a.clips} {a.split}-split clips; "
          f"token search {search} rounds")
    print("PSNR by place after the IFrame: " + " ".join(f"{v:.2f}" for v in by_place))
    print("\n| dimension | ground truth | reconstruction | n |\n|---|---|---|---|")
    for d in DIMENSIONS:
        print(f"| {d} | {percent(gt.scores[d])} | {percent(rc.scores[d])} | {rc.counts[d]} |")
    save_result(doc, a.out)
    return doc


def by_group_place(gts: list[np.ndarray], recs: list[np.ndarray], stride: int) -> list[float]:
    """Mean PSNR (dB) of the frames at each place ``j mod stride`` (``T x H x W x 3`` uint8 clips)."""
    sums, counts = np.zeros(stride), np.zeros(stride)
    for g, r in zip(gts, recs):
        mse = ((g.astype(np.float64) - r.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
        for j, m in enumerate(mse):
            sums[j % stride] += 10 * np.log10(255 ** 2 / max(m, 1e-10))
            counts[j % stride] += 1
    return [float(v) for v in sums / np.maximum(counts, 1)]


if __name__ == "__main__":
    main()
