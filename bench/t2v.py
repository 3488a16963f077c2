"""Text to video, scored: the evaluator's table on held-out prompts of the world's test split.

``python -m bench.t2v [--lm lm-world] [--prompts 24] [--seconds 4] [--cfg 1 6.5] [--renderer direct diffusion]
[--steps K] [--out results/t2v.json] [--grid docs/t2v.png]``

Prompts: scenes of the world's **test** split (never seen in training), three sets of
``--prompts`` each, captioned as ``semcodec.data.world`` does:

- ``seen``: scenes whose colour x shape pairs all occur in training, captions in the training
  templates and words;
- ``unseen``: scenes with a held-out colour x shape pair (``world.HELD_OUT_COMBOS``), captions in
  the training templates and words;
- ``paraphrased``: scenes as in ``seen``, captions in the test-only templates and words.

Every prompt is generated (``generation.t2v.TextToVideo``) at each ``--cfg`` scale and with each
``--renderer``, with the same seeds, and scored by ``generation.evaluate`` against the scene its
caption describes. ``mismatched``: the last setting's videos scored against the *next* prompt's
scene (what an LM that ignores its prompt would score on the same videos); ``chance``: the
evaluator's chance level (``bench.evaluate.chance_levels``). Also: seconds of compute per second
of video per setting (LM sampling and rendering, on this machine), and a grid of frames of a few
prompts (``--grid``). JSON: one entry per (set, setting, dimension).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SETS = ("seen", "unseen", "paraphrased")


def prompt_sets(n: int, start: int = 0) -> dict[str, list[tuple[str, dict]]]:
    """``n`` (caption, scene spec) pairs per set (see the module docstring), from test-split seeds."""
    from semcodec.data import world
    out = {s: [] for s in SETS}
    seed = start
    while min(len(v) for v in out.values()) < n:
        for seed in world.split_seeds("test", 64, seed):
            scene = world.world_scene(seed)
            rng = np.random.default_rng([world.WORLD_STREAM, 3, seed])
            shared = world.TEMPLATES[int(rng.integers(len(world.TEMPLATES)))].name
            test_t = world.TEST_TEMPLATES[int(rng.integers(len(world.TEST_TEMPLATES)))].name
            if world.has_held_out(scene):
                picks = [("unseen", shared, False)]
            else:
                picks = [("seen", shared, False), ("paraphrased", test_t, True)]
                picks = [picks[seed % 2]]            # a scene serves one set only
            for name, tmpl, words in picks:
                if len(out[name]) < n:
                    out[name].append((world.paraphrase(scene, tmpl, seed=seed, test_words=words), scene.to_dict()))
        seed += 1
    return out


def save_grid(clips, path: Path, frames=(0, 8, 16, 24)) -> None:
    """A picture: one row per clip (its prompt above), the given frames side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = len(clips)
    fig, ax = plt.subplots(rows, 1, figsize=(2.0 * len(frames), 1.75 * rows))
    for r, clip in enumerate(clips):
        a = ax[r] if rows > 1 else ax
        fs = [min(f, len(clip.frames) - 1) for f in frames]
        a.imshow(np.concatenate([clip.frames[f] for f in fs], 1))
        a.set_title(clip.prompt if len(clip.prompt) < 110 else clip.prompt[:107] + "...", fontsize=7)
        a.set_xticks([(i + 0.5) * clip.frames.shape[2] for i in range(len(fs))])
        a.set_xticklabels([f"{f / clip.fps:.1f} s" for f in fs], fontsize=6)
        a.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.t2v", description=__doc__.split("\n\n")[0])
    p.add_argument("--lm", default="lm-world", help="shipped LM name or checkpoint path")
    p.add_argument("--prompts", type=int, default=24, help="prompts per set")
    p.add_argument("--start", type=int, default=0, help="first test-split seed")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 6.5])
    p.add_argument("--renderer", nargs="+", default=["direct"])
    p.add_argument("--steps", type=int, default=None, help="sampler steps of a diffusion renderer (default: its own)")
    p.add_argument("--plausibility", type=float, default=None,
                   help="guided codes below this fraction of the prompt's most likely code are never drawn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=8, help="prompts sampled together")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/t2v.json")
    p.add_argument("--long", type=float, default=12.0, help="seconds of the long videos whose seams are measured (0: none)")
    p.add_argument("--long-prompts", type=int, default=8)
    p.add_argument("--grid", default=None, help="write a PNG grid of frames of the first prompts here")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    from generation.evaluate import DIMENSIONS, evaluate
    from generation.t2v import TextToVideo
    from .evaluate import chance_levels

    sets = prompt_sets(a.prompts, a.start)
    settings = [(r, c) for r in a.renderer for c in a.cfg]
    results, speed, last = {}, {}, {}
    for renderer in a.renderer:
        t2v = TextToVideo.load(a.lm, renderer=renderer)
        if a.steps is not None and t2v.renderer is not None:
            t2v.renderer.steps = a.steps
        if a.plausibility is not None:
            t2v.plausibility = a.plausibility
        for cfg in a.cfg:
            key = f"{renderer} cfg {cfg:g}"
            t0, secs = time.perf_counter(), 0.0
            for name, pairs in sets.items():
                clips = []
                for b in range(0, len(pairs), a.batch):
                    chunk = [c for c, _ in pairs[b:b + a.batch]]
                    clips += t2v.generate_many(chunk, a.seconds, cfg, seed=a.seed + b)
                secs += sum(len(c.frames) / c.fps for c in clips)
                results[name, key] = evaluate([c.frames for c in clips], [s for _, s in pairs], t2v.fps)
                last[name] = clips
            speed[key] = (time.perf_counter() - t0) / secs
    seams = None
    if a.long:
        from generation.t2v import seam_continuity
        t2v = TextToVideo.load(a.lm, renderer=a.renderer[0])
        pr = [c for c, _ in sets["seen"][:a.long_prompts]]
        t0 = time.perf_counter()
        clips = t2v.generate_many(pr, a.long, a.cfg[-1], seed=a.seed)
        long_speed = (time.perf_counter() - t0) / sum(len(c.frames) / c.fps for c in clips)
        plan = t2v.plan(a.long)
        per = [seam_continuity(c.frames, plan, t2v.codec.config.overlap) for c in clips]
        seams = {k: float(np.mean([p[k] for p in per])) for k in ("seam", "within", "ratio")}
        seams.update(seconds=a.long, prompts=len(pr), groups=len(plan), seconds_per_video_second=long_speed)
    chance = chance_levels()
    keys = [f"{r} cfg {c:g}" for r, c in settings]
    entries = []
    for name, pairs in sets.items():
        targets = [s for _, s in pairs]
        mism = evaluate([c.frames for c in last[name]], targets[1:] + targets[:1], last[name][0].fps)
        print(f"\n{name} ({len(pairs)} prompts)")
        wd = [max(16, len(k) + 2) for k in keys]
        print(f"{'dimension':<14}" + "".join(f"{k:>{w}}" for k, w in zip(keys, wd)) + f"{'mismatched':>12}{'chance':>9}")
        for d in DIMENSIONS:
            vals = [results[name, k].scores[d] for k in keys] + [mism.scores[d], chance.get(d)]
            print(f"{d:<14}" + "".join(f"{'-' if v is None else f'{100 * v:.1f}%':>{w}}" for v, w in zip(vals[:-2], wd))
                  + "".join(f"{'-' if v is None else f'{100 * v:.1f}%':>{w}}" for v, w in zip(vals[-2:], (12, 9))))
            for k, v in zip(keys + ["mismatched", "chance"], vals):
                entries.append({"set": name, "setting": k, "dimension": d, "score": None if v is None else round(v, 4),
                                "n": results[name, keys[0]].counts[d]})
    print()
    for k in keys:
        print(f"{k}: {speed[k]:.2f} s of compute per second of video ({a.threads} threads)")
    if seams:
        print(f"long videos ({seams['prompts']} x {seams['seconds']:g} s, {seams['groups']} groups): mean frame "
              f"difference {seams['seam']:.2f} across group seams vs {seams['within']:.2f} within groups "
              f"(ratio {seams['ratio']:.2f}); {seams['seconds_per_video_second']:.2f} s per second of video")
    res = {"name": "t2v", "lm": a.lm, "seconds": a.seconds, "prompts_per_set": a.prompts, "seed": a.seed,
           "threads": a.threads, "seconds_per_video_second": speed, "results": entries, "seams": seams,
           "prompts": {n: [c for c, _ in v] for n, v in sets.items()}}
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))
    if a.grid:
        save_grid([last["seen"][i] for i in range(min(3, len(last["seen"])))]
                  + [last["unseen"][0], last["paraphrased"][0]], Path(a.grid))
    return res


if __name__ == "__main__":
    main()
