"""Training step speed on this machine: fp32 against bf16 autocast, channels-last convs and
torch.compile, on the default preset's shapes.

``python -m bench.train_speed [--preset s128] [--config JSON] [--steps 12] [--threads 2] [--out results/train_speed.json]``

Each variant trains a fresh model for ``--steps`` steps on fixed random batches of each group
length the shipped recipe draws (2, 4 and 8 frames of 128 x 192, 8 frames per step) and reports
the median seconds per step after two warm-up steps, and frames per second. One JSON entry per
variant. Run it on a quiet machine: a second process on a 2-core CPU halves every figure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

VARIANTS = {
    "fp32": {},
    "bf16": {"bf16": True},
    "bf16+channels_last": {"bf16": True, "channels_last": True},
    "bf16+compile": {"bf16": True, "compile": True},
}


def time_variant(cfg, steps: int, group_frames=(2, 4, 8), bf16=False, channels_last=False, compile=False) -> dict:
    from semcodec.model.video_tokenizer import VideoTokenizer
    torch.manual_seed(0)
    model = VideoTokenizer(cfg)
    model.tokenizer.set_attention_backend("sdpa")
    if channels_last:
        model.features.to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    out = {}
    for t in group_frames:
        x = torch.rand(max(1, cfg.group // t), t, 128, 192, 3) * 2 - 1
        times = []
        for _ in range(steps + 2):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                o = fwd(x)
            loss = o["recon_loss"] + o["commit_loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times[2:])
        out[f"s_per_step_{t}f"] = med
        out[f"frames_per_s_{t}f"] = x.shape[0] * t / med
    out["s_per_step_mean"] = statistics.mean(out[f"s_per_step_{t}f"] for t in group_frames)
    return out


def main(argv=None) -> dict:
    from semcodec.presets import get_preset
    p = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="s128")
    p.add_argument("--config", default=None, help="JSON of CodecConfig fields overriding the preset")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/train_speed.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = get_preset(a.preset)
    if a.config:
        cfg = cfg.replace(**json.loads(a.config))
    rows = []
    for name in a.variants:
        r = {"variant": name, **time_variant(cfg, a.steps, **VARIANTS[name])}
        rows.append(r)
        print(f"{name:20s} " + "  ".join(f"{k[11:]} {v:.3f} s" for k, v in r.items() if k.startswith("s_per_step_")))
    base = rows[0]["s_per_step_mean"]
    for r in rows:
        r["speedup"] = base / r["s_per_step_mean"]
    doc = {"name": "train-speed", "preset": a.preset, "config": cfg.to_dict(), "threads": a.threads,
           "date": time.strftime("%Y-%m-%d"), "results": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print("\n| variant | s/step (2 / 4 / 8 frames) | speed-up |\n|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['s_per_step_2f']:.3f} / {r['s_per_step_4f']:.3f} / {r['s_per_step_8f']:.3f} "
              f"| x{r['speedup']:.2f} |")
    return doc


if __name__ == "__main__":
    main()
