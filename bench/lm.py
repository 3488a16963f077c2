"""Token LM benchmark: sampling speed with and without the KV cache, and held-out bits per code.

    python -m bench.lm                                  # speed of lm-world (random weights), CPU
    python -m bench.lm --model lm.safetensors --train ds/train --test ds/test --json out.json

1. Speed: ``--batch`` prompts, one group of ``--frames`` frames each, classifier-free guidance at
   ``--cfg`` (cond and uncond rows in one batch: 2 x batch rows), temperature 1, on ``--device``
   (cpu, or cuda when there is one). Codes drawn per second over all prompts, wall time of the
   whole ``sample`` call (prefill included), median of ``--repeats``, and per CPU second of the
   process (the figure to compare on a shared machine, with ``--threads 1``); once with the KV cache and
   once recomputing the whole sequence at every step. The same seeds give the same tokens both
   ways (checked). The text encoder is the hashing one (its cost is not the LM's).
2. Bits per code (``--train`` and ``--test`` token datasets): the unigram and previous-slot count
   baselines fitted on ``--train`` (``generation.lm.score``), and with ``--model`` the LM's own
   teacher-forced cost on ``--test`` (its text encoder on the captions).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time

import torch

from generation.lm import build_model, load_lm, sample
from generation.lm.text import HashTextEncoder

PROMPTS = ["A small red circle moves left on a blue background.",
           "A large green triangle spins clockwise while a white cross bounces.",
           "A purple star zigzags slowly up on a brown dots background scrolling down.",
           "A tiny yellow square stays still."]


def speed(model, frames: int, batch: int, cfg: float, repeats: int, device: str) -> dict:
    """Codes per second with and without the KV cache (median of ``repeats``)."""
    model = model.to(device).eval()
    enc = HashTextEncoder(model.config.text_dim)
    states = enc.encode([PROMPTS[i % len(PROMPTS)] for i in range(batch)])
    n_codes = batch * model.vocab.group_tokens(frames)
    res, ids = {}, {}
    for cache in (True, False):
        times, cpu = [], []
        for r in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t, c = time.perf_counter(), time.process_time()
            out = sample(model, text_states=states, valids=[frames], cfg_scale=cfg, seed=r, use_cache=cache)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            ids.setdefault(r, []).append(out.ids)
        res["kv_cache" if cache else "no_cache"] = {"codes_per_s": n_codes / statistics.median(times),
                                                     "codes_per_cpu_s": n_codes / statistics.median(cpu),
                                                     "seconds": times, "cpu_seconds": cpu}
    same = all(torch.equal(a, b) for a, b in ids.values())
    return {"frames": frames, "batch": batch, "rows": batch * (2 if cfg != 1 else 1), "cfg": cfg,
            "codes": n_codes, "sequence": model.vocab.sequence_length([frames]), "same_tokens": same,
            "speedup": res["kv_cache"]["codes_per_s"] / res["no_cache"]["codes_per_s"], **res}


def bits(train_dir, test_dir, model=None, items: int | None = None) -> dict:
    from generation.lm.layout import LMDataset
    from generation.lm.score import baselines, lm_bits
    from generation.lm.text import CachedTextEncoder, get_text_encoder
    from semcodec.data import TokenDataset
    out = {"baselines": baselines(TokenDataset(train_dir), TokenDataset(test_dir))}
    if model is not None:
        enc = CachedTextEncoder(get_text_encoder(model.config.text_encoder, model.config.max_text_tokens))
        ds = LMDataset(test_dir)
        out["lm"] = lm_bits(model, ds, enc, range(min(items or len(ds), len(ds))))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.lm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="an LM checkpoint (default: the --preset with random weights)")
    p.add_argument("--preset", default="lm-world")
    p.add_argument("--frames", type=int, default=3, help="frames of the sampled group")
    p.add_argument("--batch", type=int, default=1, help="prompts per sample call")
    p.add_argument("--cfg", type=float, default=6.5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--train", help="training token dataset (count baselines)")
    p.add_argument("--test", help="held-out token dataset")
    p.add_argument("--items", type=int, help="held-out sequences for the LM's bits (default: all)")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = load_lm(a.model).model if a.model else build_model(a.preset)
    rep = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} "
           f"threads, torch {torch.__version__}", "device": a.device, "model": a.model or f"{a.preset} (random)",
           "params": model.n_params(),
           "speed": speed(model, a.frames, a.batch, a.cfg, a.repeats, a.device)}
    if a.train and a.test:
        rep["bits_per_code"] = bits(a.train, a.test, model.cpu() if a.model else None, a.items)
    s = rep["speed"]
    print(f"{rep['model']}, {rep['params'] / 1e6:.2f}M params, {s['rows']} rows (cfg {s['cfg']}), "
          f"{s['codes']} codes, sequence {s['sequence']}: KV cache {s['kv_cache']['codes_per_s']:.1f} codes/s "
          f"({s['kv_cache']['codes_per_cpu_s']:.1f} per CPU s), no cache {s['no_cache']['codes_per_s']:.1f} codes/s "
          f"({s['no_cache']['codes_per_cpu_s']:.1f} per CPU s; x{s['speedup']:.1f}; same tokens: {s['same_tokens']})")
    if "bits_per_code" in rep:
        b = rep["bits_per_code"]
        line = (f"bits/code on the test set: unigram {b['baselines']['unigram']:.3f}, "
                f"prev-slot {b['baselines']['prev_slot']:.3f}")
        if "lm" in b:
            line += f", LM {b['lm']['bits_code']:.3f} (specials {b['lm']['bits_special']:.3f})"
        print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rep, f, indent=1)
    return rep


if __name__ == "__main__":
    main()
