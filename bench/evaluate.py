"""Calibration of the world evaluator (``generation.evaluate``): truth high, nonsense at chance.

``python -m bench.evaluate [--clips 100] [--random 20] [--out results/evaluate.json]``

- **ground truth**: ``--clips`` clips of the world's test split as ``semcodec dataset synth
  --split test`` writes them (4 s at 8 fps, 128 x 192, H.264 through PyAV, read back), scored
  against their paraphrased captions (parsed: the parser is part of what is measured);
- **mismatched**: the same videos against the caption of the next clip (a derangement);
- **random videos**, ``--random`` of each kind, against test captions: ``noise`` (independent
  frames of smoothed colour noise), ``drifting noise`` (the same noise field drifting, so that
  blobs move coherently), ``shuffled frames`` (frames drawn from all the test clips), and
  ``random tokens`` (a shipped tokenizer, ``--codec``, decoding uniformly random token ids);
- **chance**: the expected score when video and caption are independent scenes of the test
  split and the evaluator sees the video perfectly: Monte Carlo over ``--chance-pairs`` pairs,
  with the true attributes of scene B scored against the caption of scene A by the same scoring
  code (a direction or speed asked in a motion family the object does not have is a uniform
  guess). Mismatched pairs should land there; random videos at or below it.

Flicker and consistency are video-quality dimensions (the same whatever the caption): they have
no chance level; mismatched pairs score as the truth does, random videos near 0.

Prints a table and writes the JSON (one entry per dimension per condition, plus the evaluator's
seconds per clip).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.world_clips import percent, save_result, write_video


def _gt_clips(n: int, start: int, frames: int, size, fps: float, tmp: Path):
    """(videos, captions, scenes) of the first ``n`` test-split clips, through an H.264 file."""
    from semcodec.data import synth, world
    from semcodec.video import iter_frames
    videos, captions, scenes = [], [], []
    for i, seed in enumerate(world.split_seeds("test", n, start)):
        rec = world.world_record(i, seed, frames, size, fps)
        scene = synth.Scene.from_dict(rec["scene"])
        path = write_video(tmp / rec["path"], synth.render(scene, frames, size, fps), fps, crf=None)
        videos.append(np.stack(list(iter_frames(path))))
        captions.append(rec["caption"])
        scenes.append(rec["scene"])
    return videos, captions, scenes


def _noise(rng, frames: int, size, drift: bool) -> np.ndarray:
    """Smoothed colour noise (blobs of ~8 px), full range: independent frames, or one field drifting."""
    from scipy import ndimage
    h, w = size
    if drift:
        big = ndimage.gaussian_filter(rng.normal(size=(h + 64, w + 64, 3)), (4, 4, 0))
        dy, dx = rng.uniform(-2, 2, size=2)
        out = [big[int(32 + dy * t) % 64:int(32 + dy * t) % 64 + h, int(32 + dx * t) % 64:int(32 + dx * t) % 64 + w]
               for t in range(frames)]
    else:
        out = [ndimage.gaussian_filter(rng.normal(size=(h, w, 3)), (4, 4, 0)) for _ in range(frames)]
    v = np.stack(out)
    v = (v - v.mean()) / (v.std() + 1e-9)
    return np.clip(128 + 80 * v, 0, 255).astype(np.uint8)


def _random_tokens(codec_name: str, n: int, rng, size):
    """``n`` videos decoded from uniformly random token ids by a shipped codec, and its fps."""
    import torch
    from semcodec.codec import Codec
    codec = Codec.load(codec_name, "cpu")
    cfg = codec.config
    geo = codec.geometry(*size)
    out = []
    for _ in range(n):
        ids = rng.integers(cfg.codebook_size, size=cfg.tokens_per_group)
        x = codec.decode_group(ids, geo.padded)[:, :geo.scaled[0], :geo.scaled[1]]
        x = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
        out.append(((x.permute(0, 2, 3, 1).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy())
    return out, float(cfg.fps)


class _Oracle:
    """A perfectly seen object (chance levels): true attributes; a direction or speed asked in
    another motion family is a uniform guess."""

    def __init__(self, shape, rng):
        self.colour, self.shape, self.size, self.motion = shape.colour, shape.shape, shape.size, shape.motion
        self._s, self._rng = shape, rng

    def direction_for(self, motion, direction=None):
        from generation.evaluate import _family
        from semcodec.data import synth
        fam = _family(motion, direction)
        if fam == _family(self.motion, self._s.direction or None):
            return self._s.direction
        values = list(synth.DIRECTIONS) if fam == "translate" else list(synth.ROTATIONS)
        return values[int(self._rng.integers(len(values)))]

    def speed_for(self, motion):
        from generation.evaluate import _family
        from semcodec.data import synth
        if _family(motion, None) == _family(self.motion, self._s.direction or None) and self._s.speed:
            return self._s.speed
        return list(synth.SPEEDS)[int(self._rng.integers(3))]


def chance_levels(pairs: int = 4000, seed: int = 0) -> dict:
    """Per prompt dimension, the mean score of a test caption against another test scene seen
    perfectly (see the module docstring)."""
    from generation.evaluate import DIMENSIONS, PROMPT_FREE, Analysis, score_clip
    from semcodec.data import world
    rng = np.random.default_rng(seed)
    scenes = [world.world_scene(s) for s in world.split_seeds("test", 400)]
    tot = {d: [0.0, 0] for d in DIMENSIONS}
    for _ in range(pairs):
        a, b = rng.choice(len(scenes), size=2, replace=False)
        vb = scenes[b]
        seen = Analysis(0, 0, 0, 8.0, vb.bg_colour, vb.background, [_Oracle(s, rng) for s in vb.shapes], 1.0, 1.0)
        for d, (p, n) in score_clip(seen, scenes[a]).items():
            tot[d][0] += p
            tot[d][1] += n
    return {d: (None if d in PROMPT_FREE else tot[d][0] / tot[d][1]) for d in DIMENSIONS}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=100, help="test-split clips (ground truth, mismatched)")
    p.add_argument("--random", type=int, default=20, help="random videos of each kind")
    p.add_argument("--start", type=int, default=0, help="first scene seed to draw the test seeds from")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--codec", default="s128", help="model decoding random tokens ('' to skip)")
    p.add_argument("--chance-pairs", type=int, default=4000)
    p.add_argument("--out", default="results/evaluate.json")
    a = p.parse_args(argv)
    from generation.evaluate import DIMENSIONS, analyse, evaluate, score_clip, summarise
    size = (128, 192)
    rng = np.random.default_rng(0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        videos, captions, scenes = _gt_clips(a.clips, a.start, a.frames, size, a.fps, Path(tmp))
        render_s = time.perf_counter() - t
    # one analysis per video (caption-free), scored against its caption and against the next one's
    analyses = [analyse(v, a.fps) for v in videos]
    secs = sum(x.seconds for x in analyses)
    gt = summarise([score_clip(x, c) for x, c in zip(analyses, captions)], [{}] * len(videos), secs)
    shifted = captions[1:] + captions[:1]
    results["ground truth"] = gt
    results["mismatched"] = summarise([score_clip(x, c) for x, c in zip(analyses, shifted)], [{}] * len(videos), secs)
    kinds = {"noise": [_noise(rng, a.frames, size, False) for _ in range(a.random)],
             "drifting noise": [_noise(rng, a.frames, size, True) for _ in range(a.random)]}
    pool = np.concatenate(videos)
    kinds["shuffled frames"] = [pool[rng.integers(len(pool), size=a.frames)] for _ in range(a.random)]
    fps_of = {k: a.fps for k in kinds}
    if a.codec:
        try:
            kinds["random tokens"], fps_of["random tokens"] = _random_tokens(a.codec, a.random, rng, size)
        except Exception as e:           # no such model here: the other kinds still tell
            print(f"(random tokens skipped: {e})")
    for k, vids in kinds.items():
        caps = [captions[int(i)] for i in rng.integers(len(captions), size=len(vids))]
        results[k] = evaluate(vids, caps, fps_of[k])
    chance = chance_levels(a.chance_pairs)
    cols = list(results)
    print(f"| dimension | {' | '.join(cols)} | chance |\n|---|{'---|' * (len(cols) + 1)}")
    for d in DIMENSIONS:
        print(f"| {d} | {' | '.join(percent(results[c].scores[d]) for c in cols)} | {percent(chance[d])} |")
    print(f"\n{a.clips} test clips ({a.frames} frames at {a.fps:g} fps, 128 x 192), {a.random} random videos "
          f"of each kind; evaluator {gt.seconds_per_clip:.2f} s per clip on this machine")
    doc = {"name": "evaluate", "clips": a.clips, "random": a.random, "frames": a.frames, "fps": a.fps,
           "seconds_per_clip": gt.seconds_per_clip, "render_seconds": render_s,
           "dimensions": {d: {**{c: results[c].scores[d] for c in cols}, "chance": chance[d],
                              "n": results["ground truth"].counts[d]} for d in DIMENSIONS}}
    save_result(doc, a.out)
    return doc


if __name__ == "__main__":
    main()
