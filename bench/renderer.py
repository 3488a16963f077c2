"""The renderer against the direct decode: time per 4 s clip, sharpness, evaluator scores, seams.

``python -m bench.renderer --model world --renderer WEIGHTS [--clips 20] [--steps N] [--threads 2]
[--detail D [D ...]] [--out results/renderer.json]``

Renders ``--clips`` clips of a split of the captioned world (4 s at 8 fps, 128 x 192, written as
lossless H.264 and coded as ``semcodec encode`` does), then decodes each stream twice: with the
model's own decoder and with the diffusion renderer (``Codec.renderer``, as ``semcodec decode
--renderer diffusion`` does), frames taken before the video writer. Reports

- seconds per clip for both decodes, wall and CPU (``--threads`` torch threads; the issue's target:
  a 4 s clip in under a minute on 2 CPU cores at the default steps; on a shared machine the CPU
  seconds over the threads bound the wall time an idle one would take);
- sharpness: the mean gradient magnitude of the luma (forward differences, 0-255 levels) of each
  decode over the source's, per clip then averaged (1 = as sharp as the source; a blurry decode is
  below 1); and as ratios of the means over the clips, on the whole frame, on the shapes (every
  pixel within 2 px of one, from the scene's own masks) and on the background (the rest). The
  per-clip average is pulled up by clips with plain backgrounds, whose own gradient is small; and a
  decode can blur the shapes while it overshoots the background's hard-edged patterns;
- ``generation.evaluate`` on the source, the direct decode and the renderer, against the scene
  specs (every dimension);
- continuity at the semantic rate (groups cross-faded as the codec does): mean |frame difference|
  where a group's new frames begin, over the mean inside groups, for the source, the direct
  decode and the renderer.

A residual renderer adds ``detail`` x the detail it draws to the direct decode. Its sampling chain
does not depend on ``detail`` (each group continues the one before as drawn), so with several
``--detail`` values each group is drawn once, at the first, and the others are the same groups
recombined (``DiffusionRenderer.parts``): the frames ``--renderer`` decodes at that detail, and
columns ``renderer@D`` in the table.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.world_clips import FPS, percent, save_result, split_clips, write_video


def gradient_map(frames: np.ndarray) -> np.ndarray:
    """|grad| of the luma of ``T x H x W x 3`` frames (0-255), forward differences:
    ``T x (H - 1) x (W - 1)``."""
    y = np.asarray(frames, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    dx, dy = y[:, :-1, 1:] - y[:, :-1, :-1], y[:, 1:, :-1] - y[:, :-1, :-1]
    return np.sqrt(dx * dx + dy * dy)


def mean_over(g: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean of a :func:`gradient_map` over all pixels, or at ``where`` (``T x H x W`` bool; NaN
    where none is)."""
    if where is None:
        return float(g.mean())
    w = np.asarray(where, bool)[:, :-1, :-1]
    return float(g[w].mean()) if w.any() else float("nan")


def gradient_magnitude(frames: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean |grad| of the luma of ``T x H x W x 3`` frames (0-255), forward differences; ``where``
    (``T x H x W`` bool): only at those pixels (NaN where none is)."""
    return mean_over(gradient_map(frames), where)


def near_shapes(masks: np.ndarray, reach: int = 2) -> np.ndarray:
    """``T x H x W`` bool shape masks -> the pixels within ``reach`` px (Chebyshev) of a shape."""
    from scipy import ndimage
    return ndimage.binary_dilation(np.asarray(masks, bool), np.ones((1, 2 * reach + 1, 2 * reach + 1), bool))


def sharpness(outs: dict, src: list, regions: list) -> tuple[dict, dict]:
    """Each decode's gradient magnitude over the source's: on the whole frame per clip, then
    averaged; on the shapes / the background (``regions``: per clip, the ``near_shapes`` mask) and
    the frame as the ratio of the means over the clips that have the region (a plain background's
    own gradient is zero, so a per-clip ratio would divide by it)."""
    maps = {"source": [gradient_map(s) for s in src]} | {n: [gradient_map(d) for d in v] for n, v in outs.items()}
    picks = {"shapes": lambda m: m, "background": lambda m: ~m, "frame": lambda m: None}
    means = {part: {n: np.array([mean_over(g, pick(m)) for g, m in zip(gs, regions)]) for n, gs in maps.items()}
             for part, pick in picks.items()}
    whole = {n: float(np.mean(means["frame"][n] / means["frame"]["source"])) for n in outs}
    parts = {}
    for part, m in means.items():
        ref = m["source"]
        parts[part] = {}
        for n in outs:
            ok = np.isfinite(ref) & np.isfinite(m[n])
            parts[part][n] = float(m[n][ok].mean() / ref[ok].mean()) if ok.any() and ref[ok].mean() > 0 else float("nan")
    return whole, parts


class Replay:
    """A residual renderer's recorded groups (direct decode, drawn detail) recombined at ``detail``,
    as ``DiffusionRenderer.render`` combines them."""

    def __init__(self, parts, detail: float):
        self.parts, self.detail = iter(parts), detail

    def decode_group(self, tokens, size):
        from generation.diffusion.render import with_detail
        return with_detail(*next(self.parts), self.detail)[0]


class Recording:
    """A renderer (``Codec.renderer``) that passes each group to ``fn`` and keeps what it returns, so
    one decode gives both the output frames and the groups' frames for the continuity measure.
    ``scale``: the frames ``fn`` draws per pixel the tokenizer codes, along each axis (the codec
    reads it to size them: a renderer's 2 x frames taken at 1 x are their top-left quarter)."""
    steps, on_step = 1, None

    def __init__(self, fn, scale: int = 1):
        self.fn, self.groups, self.scale = fn, [], scale

    def decode_group(self, tokens, size):
        out = self.fn(tokens, size)
        self.groups.append(out.numpy())
        return out


def direct(codec):
    """The model's own decoder, as ``Codec.decode_group`` runs it without a renderer."""
    import torch

    def fn(tokens, size):
        with torch.inference_mode():
            return codec.model.decode(torch.as_tensor(np.asarray(tokens, np.int64))[None], size)[0].float().cpu()
    return fn


def semantic_frames(header, groups: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Groups' frames cross-faded as the codec does (``N x h x w x 3`` uint8 at the model size, the
    semantic rate) and where each group's new frames begin."""
    from semcodec.gop import CrossFader, plan_groups
    h = header
    plan = plan_groups(h.semantic_frames, h.group, h.overlap)
    fader, out = CrossFader(plan, h.overlap), []
    for g, f in zip(plan, groups):
        out += [x for _, x in fader.push(g, f)]
    out += [x for _, x in fader.flush()]
    frames = np.clip(np.rint((np.stack(out) + 1) * 127.5), 0, 255).astype(np.uint8)
    return frames, [g.start + h.overlap for g in plan[1:]]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.renderer", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="world", help="the tokenizer: shipped name or checkpoint path")
    p.add_argument("--renderer", required=True, help="the renderer's stage-2 weights")
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--start", type=int, default=0, help="first scene seed to draw the split's seeds from")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--size", default="128x192", help="H x W of the clips")
    p.add_argument("--steps", type=int, default=None, help="sampling steps [default: the renderer's]")
    p.add_argument("--strength", type=float, default=None,
                   help="start from the direct decode noised to this level, in (0, 1] [default: the renderer's]")
    p.add_argument("--spacing", choices=["trailing", "linspace"], default=None,
                   help="sampling timesteps [default: the renderer's]")
    p.add_argument("--detail", type=float, nargs="+", default=None,
                   help="a residual renderer's share of its drawn detail, in [0, 1]; several: one column each "
                        "[default: the renderer's]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/renderer.json")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    from generation.diffusion.render import load_renderer
    from generation.diffusion.sample import continuity
    from generation.evaluate import DIMENSIONS, evaluate
    from semcodec.bitstream import StreamReader
    from semcodec.codec import Codec
    from semcodec.video import semantic_source_index
    codec = Codec.load(a.model, "cpu")
    renderer = load_renderer(codec, weights=a.renderer, steps=a.steps, seed=a.seed, strength=a.strength,
                             spacing=a.spacing, detail=a.detail[0] if a.detail else None)
    if a.detail and len(a.detail) > 1 and not renderer.cfg.residual_scale:
        p.error("several --detail values need a residual renderer (residual_scale > 0)")
    details = {f"renderer@{d:g}": d for d in (a.detail or [])[1:]}
    extra = list(details)
    fps = FPS
    size = tuple(int(x) for x in a.size.split("x"))
    n_frames = int(round(a.seconds * fps))
    from semcodec.data import synth
    src, targets, regions, times = [], [], [], {"direct": 0.0, "renderer": 0.0}
    outs = {n: [] for n in ["direct", "renderer"] + extra}
    cpu = dict(times)
    cont = {n: [] for n in ["source", "direct", "renderer"] + extra}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (scene, video) in enumerate(split_clips(a.split, a.clips, a.start, n_frames, size, fps)):
            path, stream = Path(tmp) / f"{i}.mp4", Path(tmp) / f"{i}.bin"
            write_video(path, video, fps)
            codec.encode_file(path, stream, entropy="adaptive")
            renderer.reset()
            parts = []

            def drawn(tokens, size):
                out = renderer.decode_group(tokens, size)
                parts.append(renderer.parts)
                return out
            fns = {"direct": direct(codec), "renderer": drawn}
            for name in ["direct", "renderer"] + extra:        # the replays after the drawing they replay
                fn = fns[name] if name in fns else Replay(parts, details[name]).decode_group
                codec.renderer = rec = Recording(fn, 1 if name == "direct" else renderer.scale)
                t0, c0 = time.perf_counter(), time.process_time()
                outs[name].append(np.stack(list(codec.iter_decode(str(stream)))))     # with the model's prior
                if name in times:
                    times[name] += time.perf_counter() - t0
                    cpu[name] += time.process_time() - c0
                codec.renderer = None
                with StreamReader(stream) as reader:
                    header = reader.header
                sem, starts = semantic_frames(header, rec.groups)
                cont[name].append(continuity(sem, starts))
            pick = [semantic_source_index(j, fps, codec.semantic_fps(None), len(video)) for j in range(len(sem))]
            cont["source"].append(continuity(video[pick], starts))      # the source at the semantic rate
            src.append(video)
            targets.append(scene.to_dict())
            regions.append(near_shapes(synth.render_masked(scene, n_frames, size, fps)[1]))
    sharp, sharp_parts = sharpness(outs, src, regions)
    reports = {n: evaluate(v, targets, fps) for n, v in ({"source": src} | outs).items()}
    c = {n: {k: float(np.nanmean([x[k] for x in v])) for k in ("boundary", "within", "ratio")} for n, v in cont.items()}
    doc = {"name": "renderer", "model": codec.name, "model_hash": codec.content_hash, "renderer": a.renderer,
           "steps": renderer.steps, "strength": renderer.strength, "spacing": renderer.spacing,
           "detail": renderer.detail, "details": list(a.detail or [renderer.detail]),
           "sampler": renderer.sampler,
           "threads": a.threads, "clips": a.clips,
           "split": a.split, "seconds": a.seconds, "size": list(size),
           "seconds_per_clip": {k: v / a.clips for k, v in times.items()},
           "cpu_seconds_per_clip": {k: v / a.clips for k, v in cpu.items()},
           "sharpness_vs_source": sharp, "sharpness_by_region": sharp_parts, "continuity": c,
           "dimensions": {d: {n: reports[n].scores[d] for n in reports} | {"n": reports["direct"].counts[d]}
                          for d in DIMENSIONS}}
    print(f"{a.clips} {a.split} clips of {a.seconds:g} s at {size[0]}x{size[1]}; tokenizer {codec.name} "
          f"({codec.content_hash[:12]}); renderer {renderer.steps} {renderer.sampler} steps ({renderer.spacing}) from "
          f"strength {renderer.strength:g}, detail {renderer.detail:g}, {a.threads} threads")
    print(f"seconds per clip (wall): direct {doc['seconds_per_clip']['direct']:.2f}, renderer "
          f"{doc['seconds_per_clip']['renderer']:.2f}; CPU seconds (all threads): direct "
          f"{doc['cpu_seconds_per_clip']['direct']:.2f}, renderer {doc['cpu_seconds_per_clip']['renderer']:.2f}")
    print("sharpness (mean gradient magnitude / source's): " + ", ".join(f"{n} {v:.3f}" for n, v in sharp.items()))
    for part, v in sharp_parts.items():
        print(f"  on the {part}: " + ", ".join(f"{n} {x:.3f}" for n, x in v.items()))
    print("continuity (boundary / within): " + ", ".join(f"{n} {v['ratio']:.2f}" for n, v in c.items()))
    cols = ["source"] + list(outs)
    print(f"\n| dimension | {' | '.join(cols)} | n |\n|{'---|' * (len(cols) + 2)}")
    for d in DIMENSIONS:
        s = doc["dimensions"][d]
        print(f"| {d} | {' | '.join(percent(s[n]) for n in cols)} | {s['n']} |")
    save_result(doc, a.out)
    return doc


if __name__ == "__main__":
    main()
