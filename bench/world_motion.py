"""Where does the motion go? How much of it each stage of a ``pframe_warp`` tokenizer carries.

``python -m bench.world_motion --model PATH [--clips 24] [--split val] [--out results/world_motion.json]``

Renders ``--clips`` clips of a split of the world at the model's size (one group of frames each),
measures each PFrame token's motion as the tokenizer's training target does (the mean block flow
of the moving blocks of its part of the frame, ``semcodec.features.motion.moving_flow``), then
asks how well it can be read back from the encoder's output before quantization (``z``), after
it (``zq``, the code), and from the decoder's flow head: R^2 of a least-squares linear map fitted
on the first half of the tokens and scored on the second (the flow head as it is, on all).
1 means the stage carries the motion, 0 no better than its mean.
"""
from __future__ import annotations

import argparse

import numpy as np


def held_out_r2(x, y) -> float:
    """R^2 on the second half of the rows of a least-squares affine map ``x -> y`` fitted on the first."""
    import torch
    x = torch.cat([x, torch.ones(x.shape[0], 1)], 1)
    n = x.shape[0] // 2
    w = torch.linalg.lstsq(x[:n], y[:n]).solution
    return r2(x[n:] @ w, y[n:])


def r2(pred, y) -> float:
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum().clamp(min=1e-12))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.world_motion", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a pframe_warp model: checkpoint file or folder")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/world_motion.json")
    a = p.parse_args(argv)
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    from bench.world_clips import save_result, split_clips
    from semcodec.codec import Codec
    from semcodec.features.motion import moving_flow
    from semcodec.model.masks import lattice_shape
    codec = Codec.load(a.model, "cpu")
    cfg, model = codec.config, codec.model.float().eval()
    if not cfg.pframe_warp:
        raise SystemExit(f"error: model '{codec.name}' has no pframe_warp: its tokens carry no motion to measure")
    video = torch.stack([torch.from_numpy(v).float() / 127.5 - 1
                         for _, v in split_clips(a.split, a.clips, frames=cfg.group, size=cfg.frame_size, fps=cfg.fps)])
    grid = model.grid_for(cfg.frame_size)
    with torch.inference_mode():
        flow, cells = model.motion(video)
        z = model.latents(video, cells)
        zq, _, _ = model.tokenizer.quantizer(z)
        nI = cfg.iframe_tokens
        target = moving_flow(flow[:, 1:], lattice_shape(cfg.pframe_tokens, grid)).reshape(-1, 2) / cfg.patch
        head = model.tokenizer.decoder.lattice_flow(zq, grid)[:, 1:].reshape(-1, 2) / cfg.patch
        doc = {"name": "world-motion", "model": codec.name, "model_hash": codec.content_hash, "split": a.split,
               "clips": a.clips, "tokens": int(target.shape[0]),
               "moving_tokens": float((target.abs().sum(-1) > 0).float().mean()),
               "r2_z": held_out_r2(F.normalize(z[:, nI:].float(), dim=-1).reshape(-1, z.shape[-1]), target),
               "r2_zq": held_out_r2(zq[:, nI:].float().reshape(-1, zq.shape[-1]), target),
               "r2_flow_head": r2(head, target)}
    print(f"{codec.name}: {doc['tokens']} PFrame tokens ({100 * doc['moving_tokens']:.0f}% over moving blocks), "
          f"held-out R^2 of their motion: encoder output {doc['r2_z']:.3f}, code {doc['r2_zq']:.3f}; "
          f"the decoder's flow head {doc['r2_flow_head']:.3f}")
    save_result(doc, a.out)
    return doc


if __name__ == "__main__":
    main()
