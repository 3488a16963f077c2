"""Training data packed as arrays, for a machine without PyAV (a lent GPU).

``python -m semcodec.data.pack --data bigbuckbunny.mp4 /usr/share/backgrounds synth --weights 0.5 0.3 0.2
--val bikes.mp4 carphone_pristine.mp4 --preset s128 -o runs/pack.npz [--max-mib 48]``

The pack is one uncompressed ``.npz`` (numpy only, memory-mappable) holding, in the order given:

- ``src<i>.video.<j>``: a real video's frames ``T x H x W x 3`` uint8 at 128 px on the short side
  (``src<i>.video.<j>.fps``: its frame rate);
- ``src<i>.photo.<j>``: photos ``H x W x 3`` uint8, the long side at most ``--photo-side`` (lowered
  until the pack fits ``--max-mib``);
- ``src<i>.synth``: a marker: procedural clips are rendered on the fly (numpy only);
- ``val.<name>``: the first ``--val-groups`` groups of each validation clip at the model geometry,
  ``G x T x h x w x 3`` uint8, with ``val.<name>.scaled`` (the picture's size inside the padding);
- ``weights``: the sampling weight of each source ``i``.

``semcodec train --data runs/pack.npz --val runs/pack.npz`` then draws from the same mix as
``--data`` / ``--weights`` did here (one source of the run, :class:`PackSource`).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np


class PackSource:
    """The sources of a pack, each drawn with its packed weight."""

    def __init__(self, parts: list, weights: np.ndarray, name: str):
        self.parts, self.p, self.name = parts, weights / weights.sum(), name

    def sample(self, rng, frames: int, size, fps: float | None = None) -> np.ndarray:
        return self.parts[rng.choice(len(self.parts), p=self.p)].sample(rng, frames, size, fps)


def load_pack(path, fps: float) -> list:
    """``[PackSource]`` for ``make_sources``."""
    from .sources import PhotoSource, SynthSource, VideoSource
    z = np.load(str(path), allow_pickle=False)
    weights = z["weights"].astype(np.float64)
    parts, w = [], []
    for i, wi in enumerate(weights):
        pre = f"src{i}."
        keys = sorted(k for k in z.files if k.startswith(pre))
        if pre + "synth" in keys:
            parts.append(SynthSource(fps))
            w.append(wi)
            continue
        videos = [k for k in keys if ".video." in k and not k.endswith(".fps")]
        photos = [z[k] for k in keys if ".photo." in k]
        subs = [VideoSource(k, fps, short_sides=(128,), frames=z[k], src_fps=float(z[k + ".fps"])) for k in videos]
        if photos:
            subs.append(PhotoSource([], images=photos))
        for s in subs:          # the source's weight is shared by its files, as make_sources does per path
            parts.append(s)
            w.append(wi / len(subs))
    return [PackSource(parts, np.array(w), f"pack({Path(path).name})")]


def load_pack_val(path) -> list:
    """``[(name, clips B x T x h x w x 3 float in [-1, 1], geo)]`` as ``train.load_val_clips``."""
    import torch
    z = np.load(str(path), allow_pickle=False)
    out = []
    for k in sorted(z.files):
        if k.startswith("val.") and not k.endswith(".scaled"):
            clips = torch.from_numpy(z[k]).float() / 127.5 - 1
            out.append((k[4:], clips, SimpleNamespace(scaled=tuple(int(v) for v in z[k + ".scaled"]))))
    return out


def build_pack(data, weights, val, cfg, val_groups: int, photo_side: int, max_mib: float, log=print) -> dict:
    from ..train import load_val_clips
    from ..video import iter_frames, probe, resize
    from ..video import is_video_file
    from .sources import PHOTO_EXT
    import torch
    weights = list(weights) if weights else [1.0] * len(data)
    if len(weights) != len(data):
        raise SystemExit(f"error: --weights has {len(weights)} values for {len(data)} sources")
    arrays: dict[str, np.ndarray] = {"weights": np.asarray(weights, np.float64)}
    photos: dict[str, np.ndarray] = {}
    for i, spec in enumerate(data):
        if spec == "synth":
            arrays[f"src{i}.synth"] = np.zeros(0, np.uint8)
            continue
        p = Path(spec)
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        j = 0
        for f in files:
            if is_video_file(f):
                frames = torch.from_numpy(np.stack(list(iter_frames(f)))).float()
                k = 128 / min(frames.shape[1:3])
                size = (round(frames.shape[1] * k), round(frames.shape[2] * k))
                arrays[f"src{i}.video.{j}"] = resize(frames, size).round().clamp(0, 255).byte().numpy()
                arrays[f"src{i}.video.{j}.fps"] = np.float64(probe(f).fps)
                j += 1
            elif f.suffix.lower() in PHOTO_EXT:
                try:
                    photos[f"src{i}.photo.{j}"] = next(iter_frames(f))
                    j += 1
                except Exception:        # unreadable photo: skipped, as the trainer does
                    pass
    for name, clips, geo in load_val_clips(val, cfg, val_groups):
        arrays[f"val.{name}"] = ((clips + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        arrays[f"val.{name}.scaled"] = np.asarray(geo.scaled, np.int64)
    fixed = sum(a.nbytes for a in arrays.values())
    side = photo_side
    while True:
        small = {}
        for k, img in photos.items():
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()[None]
            s = min(1.0, side / max(t.shape[-2:]))
            if s < 1:
                t = torch.nn.functional.interpolate(t, scale_factor=s, mode="bilinear", antialias=True)
            small[k] = t[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
        total = fixed + sum(a.nbytes for a in small.values())
        if total <= max_mib * 2 ** 20 or side <= 160:
            break
        side = int(side * 0.85)
    if total > max_mib * 2 ** 20:
        raise SystemExit(f"error: the pack needs {total / 2 ** 20:.1f} MiB, more than --max-mib {max_mib:g}")
    log(f"pack: {total / 2 ** 20:.1f} MiB, {len(small)} photos at <= {side} px, "
        f"{sum(1 for k in arrays if '.video.' in k and not k.endswith('.fps'))} videos, "
        f"{sum(1 for k in arrays if k.startswith('val.') and not k.endswith('.scaled'))} validation clips")
    return {**arrays, **small}


def main(argv=None):
    from ..atomic import atomic_path
    from ..presets import get_preset
    p = argparse.ArgumentParser(prog="python -m semcodec.data.pack", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="video files, folders of videos/photos, or 'synth'")
    p.add_argument("--weights", type=float, nargs="+", help="sampling weight per --data source")
    p.add_argument("--val", nargs="*", default=[], help="held-out videos (their first groups are packed)")
    p.add_argument("--val-groups", type=int, default=1)
    p.add_argument("--preset", default="s128", help="model geometry of the validation clips")
    p.add_argument("--photo-side", type=int, default=400, help="longest photo side to start from")
    p.add_argument("--max-mib", type=float, default=48.0)
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args(argv)
    arrays = build_pack(a.data, a.weights, a.val, get_preset(a.preset), a.val_groups, a.photo_side, a.max_mib)
    with atomic_path(a.output) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    print(f"-> {a.output}")


if __name__ == "__main__":
    main()
