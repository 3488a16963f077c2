"""How fast does a variant of the world tokenizer learn to keep shapes? A probe on IFrames alone.

``python -m bench.world_iframes --name NAME [--minutes 8] [--threads 1] [--config JSON]
[--continuous | --start-from FILE] [--shape-weight W] [--clips N] [--out results/world_iframes.json]
[--picture PNG]``

Trains the ``world`` preset (``--config`` overrides its fields) from scratch on single frames of
the world's training split (batches of 32, AdamW 5e-4, bf16 where the CPU has it natively) for
``--minutes``, then prints the PSNR of its reconstructions of 48 test-split frames (64 x 96, frame
0 of each scene) and writes one JSON entry per variant name. ``--continuous``: the quantizer
passes the encoder's output through (what the architecture can do with unlimited bits).
``--start-from``: the weights a ``--continuous`` variant saved (``--save``), its codebook seeded
from its encoder's outputs, then trained quantized: the autoencoder phase of ``semcodec train
--continuous-steps``.
``--shape-weight``: the loss of ``semcodec train --shape-weight`` (shape pixels count more).
``--clips``: then the evaluator's scores of that many 4 s test clips, every frame coded alone
as an IFrame (what the IFrames keep of the captions). ``--picture``: source / reconstruction
pairs of 8 test frames.
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
    p.add_argument("--shape-weight", type=float, default=0.0,
                   help="pixels within 1 px of a shape count 1 + this in the loss (semcodec train --shape-weight)")
    p.add_argument("--clips", type=int, default=0,
                   help="then score this many 4 s test clips, every frame coded as an IFrame, with the evaluator")
    a = p.parse_args(argv)
    import torch
    from safetensors.torch import load_file, save_file
    from semcodec.data.sources import SynthSource
    from semcodec.data import world
    from semcodec.model.video_tokenizer import VideoTokenizer
    from semcodec.precision import fast_bf16
    from semcodec.presets import get_preset
    from semcodec.train import seed_codebook, shape_weighted_mse
    torch.set_num_threads(a.threads)
    bf16 = fast_bf16("cpu")
    cfg = get_preset("world").replace(**json.loads(a.config))
    torch.manual_seed(0)
    model = VideoTokenizer(cfg)
    q = model.tokenizer.quantizer
    src = SynthSource(cfg.fps, "train")
    as_input = lambda v: torch.from_numpy(v).float()[:, None] / 127.5 - 1     # noqa: E731

    def batch(step: int, masks: bool = False):
        rng = np.random.default_rng([0, step])
        if not masks:
            return as_input(np.stack([src.sample(rng, 1, SIZE, cfg.fps)[0] for _ in range(a.batch)]))
        drawn = [src.sample_masked(rng, 1, SIZE, cfg.fps) for _ in range(a.batch)]
        return as_input(np.stack([v[0] for v, _ in drawn])), torch.from_numpy(np.stack([m for _, m in drawn]))

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
        x, shapes = batch(step, masks=True) if a.shape_weight else (batch(step), None)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            o = model(x)
        recon = o["recon_loss"] if shapes is None else \
            shape_weighted_mse(o["video"].float(), x, shapes, a.shape_weight)
        loss = recon + o["commit_loss"]
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
             "psnr_at_start": start_psnr, "test_psnr": final, "tokens_per_frame": cfg.iframe_tokens,
             "shape_weight": a.shape_weight}
    if a.clips:
        entry["evaluator"] = score_as_iframes(model, a.clips)
    print(f"{a.name}: {step} steps in {seconds / 60:.1f} min, test PSNR {final:.2f} dB"
          + (f" (quantized at the start: {start_psnr:.2f} dB)" if start_psnr is not None else ""))
    if a.clips:
        print(f"{a.name}, {a.clips} test clips coded frame by frame as IFrames: "
              + ", ".join(f"{d} {100 * v:.1f}%" for d, v in entry["evaluator"].items()))
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


def score_as_iframes(model, clips: int) -> dict:
    """The evaluator's score per dimension of ``clips`` 4 s test-split clips (128 x 192), each frame
    shrunk to 64 x 96 as the codec shrinks it, coded alone as an IFrame, and scaled back (bicubic)."""
    import torch
    from generation.evaluate import DIMENSIONS, evaluate
    from semcodec.video import resize
    from bench.world_clips import FPS, SIZE as BIG, split_clips
    model.eval()
    videos, targets = [], []
    with torch.no_grad():
        for scene, video in split_clips("test", clips):
            x = resize(torch.from_numpy(video).float(), SIZE).round().clamp(0, 255) / 127.5 - 1
            rec = model(x[:, None])["video"].float().clamp(-1, 1)[:, 0]
            videos.append(resize((rec + 1) * 127.5, BIG, mode="bicubic").round().clamp(0, 255).byte().numpy())
            targets.append(scene.to_dict())
    model.train()
    report = evaluate(videos, targets, FPS)
    return {d: report.scores[d] for d in DIMENSIONS}


if __name__ == "__main__":
    main()
