"""How fast does a variant of the world tokenizer learn to keep shapes? A probe on IFrames alone.

``python -m bench.world_iframes --name NAME [--minutes 8] [--threads 1] [--config JSON]
[--continuous | --start-from FILE] [--out results/world_iframes.json] [--picture PNG]``

Trains the ``world`` preset (``--config`` overrides its fields) from scratch on single frames of
the world's training split (batches of 32, bf16, AdamW 5e-4) for ``--minutes``, then prints the
PSNR of its reconstructions of 48 test-split frames (64 x 96, frame 0 of each scene) and writes
one JSON entry per variant name. ``--continuous``: the quantizer passes the encoder's output
through (what the architecture can do with unlimited bits). ``--start-from``: the weights a
``--continuous`` variant saved (``--save``), its codebook seeded from its encoder's outputs, then
trained quantized: the autoencoder phase of ``semcodec train --continuous-steps``.
``--picture``: source / reconstruction pairs of 8 test frames.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.world_clips import save_result

SIZE = (64, 96)


def _frames(src, seeds) -> np.ndarray:
    from semcodec.data import world
    return np.stack([src._render(world.world_scene(s), 1, SIZE, 8.0)[0] for s in seeds])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.world_iframes", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--config", default="{}", help="JSON of CodecConfig fields overriding the world preset")
    p.add_argument("--continuous", action="store_true")
    p.add_argument("--start-from", default=None, help="weights saved by a --continuous variant")
    p.add_argument("--save", default=None, help="write the trained weights here (safetensors)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--out", default="results/world_iframes.json")
    p.add_argument("--picture", default=None)
    a = p.parse_args(argv)
    import torch
    from safetensors.torch import load_file, save_file
    from semcodec.data.sources import SynthSource
    from semcodec.data import world
    from semcodec.model.video_tokenizer import VideoTokenizer
    from semcodec.presets import get_preset
    from semcodec.train import seed_codebook
    torch.set_num_threads(a.threads)
    cfg = get_preset("world").replace(**json.loads(a.config))
    torch.manual_seed(0)
    model = VideoTokenizer(cfg)
    q = model.tokenizer.quantizer
    src = SynthSource(cfg.fps, "train")
    as_input = lambda v: torch.from_numpy(v).float()[:, None] / 127.5 - 1     # noqa: E731

    def batch(step: int):
        rng = np.random.default_rng([0, step])
        return as_input(np.stack([src.sample(rng, 1, SIZE, cfg.fps)[0] for _ in range(a.batch)]))

    if a.start_from:
        model.load_state_dict(load_file(a.start_from))
    q.bypass = a.continuous
    if not a.continuous:             # a data-seeded codebook: from the encoder as it stands
        seed_codebook(model, lambda i, rank: batch(10 ** 6 + i), 0, "cpu")
    test = as_input(_frames(src, world.split_seeds("test", 48)))

    def psnr() -> tuple[float, torch.Tensor]:
        model.eval()
        with torch.no_grad():
            rec = model(test)["video"].float().clamp(-1, 1)
        model.train()
        return float((10 * torch.log10(4 / ((rec - test) ** 2).mean(dim=(1, 2, 3, 4)))).mean()), rec

    start_psnr = psnr()[0] if a.start_from else None
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01, betas=(0.9, 0.99))
    t0, step = time.time(), 0
    while time.time() - t0 < 60 * a.minutes:
        for g in opt.param_groups:
            g["lr"] = 5e-4 * min(1.0, (step + 1) / 50)
        x = batch(step)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            o = model(x)
        loss = o["recon_loss"] + o["commit_loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 and not a.continuous:
            q.reseed_dead_codes(o["z"].detach(), threshold=0.03, generator=torch.Generator().manual_seed(step))
    seconds = time.time() - t0
    final, rec = psnr()
    entry = {"config": json.loads(a.config), "continuous": a.continuous, "start_from": a.start_from,
             "minutes": a.minutes, "threads": a.threads, "steps": step, "seconds_per_step": seconds / max(step, 1),
             "psnr_at_start": start_psnr, "test_psnr": final, "tokens_per_frame": cfg.iframe_tokens}
    print(f"{a.name}: {step} steps in {seconds / 60:.1f} min, test PSNR {final:.2f} dB"
          + (f" (quantized at the start: {start_psnr:.2f} dB)" if start_psnr is not None else ""))
    if a.save:
        Path(a.save).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, a.save)
    if a.picture:
        from PIL import Image
        img = lambda v: ((v[0] + 1) * 127.5).round().clamp(0, 255).byte().numpy()     # noqa: E731
        rows = [np.concatenate([img(test[i]), img(rec[i])], 1) for i in range(8)]
        grid = np.concatenate([np.concatenate(rows[:4], 0), np.concatenate(rows[4:], 0)], 1)
        Path(a.picture).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(a.picture)
    out = Path(a.out)
    doc = json.loads(out.read_text()) if out.exists() else {"name": "world-iframes", "variants": {}}
    doc["variants"][a.name] = entry
    save_result(doc, out)
    return entry


if __name__ == "__main__":
    main()
