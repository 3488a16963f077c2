"""Training clip sources: real videos, photos with simulated camera motion, procedural scenes.

Each source answers ``sample(rng, frames, size) -> frames x H x W x 3 uint8`` for a clip at the
model's semantic frame rate. :func:`make_sources` turns command-line paths into sources: a video
file or a folder of videos, a folder of photos, ``synth`` for procedural clips, or a pack of all
of these as arrays (``python -m semcodec.data.pack``: for machines without PyAV).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..video import VideoError, is_video_file, iter_frames, probe, resize
from . import synth

PHOTO_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def _random_crop(clip: torch.Tensor, size, rng: np.random.Generator) -> torch.Tensor:
    h, w = size
    y = int(rng.integers(0, clip.shape[1] - h + 1))
    x = int(rng.integers(0, clip.shape[2] - w + 1))
    return clip[:, y:y + h, x:x + w]


class VideoSource:
    """Clips of a real video, decoded once and kept in memory at a few scales (short side >= 128)."""

    def __init__(self, path, fps: float, short_sides=(128, 160, 200), frames: np.ndarray | None = None,
                 src_fps: float | None = None):
        """From a video file, or (``frames`` ``T x H x W x 3`` uint8 at ``src_fps``) from memory."""
        if frames is None:
            info = probe(path)
            frames, src_fps = np.stack(list(iter_frames(path))), info.fps
        self.name, self.src_fps, self.fps = str(path), float(src_fps), fps
        frames = torch.from_numpy(np.ascontiguousarray(frames))
        self.scales = []
        h, w = frames.shape[1:3]
        for s in short_sides:
            k = s / min(h, w)
            size = (max(s, round(h * k)), max(s, round(w * k)))
            out = torch.cat([resize(frames[i:i + 16].float(), size).round().clamp(0, 255).to(torch.uint8)
                             for i in range(0, len(frames), 16)])
            self.scales.append(out)

    def sample(self, rng, frames: int, size, fps: float | None = None) -> np.ndarray:
        cands = [s for s in self.scales if s.shape[1] >= size[0] and s.shape[2] >= size[1]]
        if not cands:   # narrower than asked: take the largest scale, resize up
            cands = [self.scales[-1]]
        clip_src = cands[int(rng.integers(len(cands)))]
        n, step = len(clip_src), self.src_fps / (fps or self.fps)
        span = (frames - 1) * step
        t0 = float(rng.uniform(0, max(0.0, n - 1 - span)))
        idx = [min(n - 1, int(round(t0 + j * step))) for j in range(frames)]
        if rng.random() < 0.5:
            idx = idx[::-1]
        clip = clip_src[idx]
        if clip.shape[1] < size[0] or clip.shape[2] < size[1]:
            k = max(size[0] / clip.shape[1], size[1] / clip.shape[2])
            clip = resize(clip.float(), (math.ceil(clip.shape[1] * k), math.ceil(clip.shape[2] * k))).to(torch.uint8)
        clip = _random_crop(clip, size, rng)
        if rng.random() < 0.5:
            clip = clip.flip(2)
        return clip.numpy()


class PhotoSource:
    """A still photo seen by a moving camera: a linear pan and zoom across the picture."""

    def __init__(self, paths, max_side: int = 640, images: list[np.ndarray] | None = None):
        """From photo files, or from ``images`` (each ``H x W x 3`` uint8) in memory."""
        self.images = []
        for p in (images if images is not None else paths):
            try:
                arr = p if images is not None else next(iter_frames(p))
                img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float()[None]
            except (VideoError, StopIteration):
                continue
            k = min(1.0, max_side / max(img.shape[-2:]))
            if k < 1:
                img = F.interpolate(img, scale_factor=k, mode="bilinear", antialias=True)
            self.images.append(img)
        if not self.images:
            raise VideoError(f"no readable photos among {len(paths)} files")
        self.name = f"photos({len(self.images)})"

    def sample(self, rng, frames: int, size, fps: float | None = None) -> np.ndarray:
        img = self.images[int(rng.integers(len(self.images)))]
        H, W = img.shape[-2:]
        h, w = size
        # window scale: fraction of the photo the view covers (zoom), kept inside the picture
        max_z = min(H / h, W / w)
        z0, z1 = (float(rng.uniform(min(1.0, max_z), min(2.0, max_z))) for _ in range(2))
        if max_z < 1:
            z0 = z1 = max_z
        pts = []
        for z in (z0, z1):
            vh, vw = h * z, w * z
            pts.append((z, float(rng.uniform(vh / 2, H - vh / 2)), float(rng.uniform(vw / 2, W - vw / 2))))
        theta = []
        for j in range(frames):
            a = j / max(1, frames - 1)
            z, cy, cx = (p0 * (1 - a) + p1 * a for p0, p1 in zip(*pts))
            # affine_grid maps output [-1, 1] to input [-1, 1]
            sx, sy = (w * z) / W, (h * z) / H
            tx, ty = 2 * cx / W - 1, 2 * cy / H - 1
            theta.append([[sx, 0, tx], [0, sy, ty]])
        theta = torch.tensor(theta, dtype=torch.float32)
        grid = F.affine_grid(theta, (frames, 3, h, w), align_corners=False)
        out = F.grid_sample(img.expand(frames, -1, -1, -1), grid, mode="bilinear", align_corners=False)
        return out.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


RENDER_SHORT_SIDE = 128          # the captioned world's frames: 128 x 192


class SynthSource:
    """Procedural moving shapes (``semcodec.data.synth``); with ``split`` (``synth:train``), the
    captioned world's scenes (``semcodec.data.world.world_scene``: legible, and in ``train`` never
    a held-out colour x shape pair) whose seed is in that split."""

    def __init__(self, fps: float, split: str | None = None):
        self.fps, self.split = fps, split
        self.name = "synth" + (f":{split}" if split else "")

    def _scene(self, rng):
        from . import world
        while True:
            seed = int(rng.integers(2 ** 31))
            if not self.split:
                return synth.random_scene(seed)
            if world.split_of(seed) == self.split:
                return world.world_scene(seed)

    def sample(self, rng, frames: int, size, fps: float | None = None) -> np.ndarray:
        return self._render(self._scene(rng), frames, size, fps or self.fps)

    def sample_masked(self, rng, frames: int, size, fps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`sample` (the same clip for the same ``rng``) and where its shapes are: ``frames x H
        x W`` float32 in [0, 1], the share of each pixel that a shape covers."""
        k = _render_scale(size)
        video, masks = synth.render_masked(self._scene(rng), frames, (size[0] * k, size[1] * k), fps or self.fps)
        masks = torch.from_numpy(masks).float()
        return _shrink(video, size), (F.avg_pool2d(masks, k) if k > 1 else masks).numpy()

    @staticmethod
    def _render(scene, frames: int, size, fps: float) -> np.ndarray:
        """Drawn at the world's own scale (short side >= 128 px) and resized as the codec resizes
        a video file (antialiased), so that a model coding small frames trains on what it codes."""
        k = _render_scale(size)
        return _shrink(synth.render(scene, frames, (size[0] * k, size[1] * k), fps), size)


def _shrink(video: np.ndarray, size) -> np.ndarray:
    """A drawn clip (``T x H x W x 3`` uint8) resized to ``size`` as the codec resizes a video."""
    if tuple(video.shape[1:3]) == tuple(size):
        return video
    x = resize(torch.from_numpy(video).float(), tuple(size))
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def _render_scale(size) -> int:
    """The whole factor a procedural scene is drawn larger than ``size`` at (short side >= 128 px)."""
    return max(1, -(-RENDER_SHORT_SIDE // min(size)))


def make_sources(specs, fps: float) -> list:
    """``specs``: video files, folders (videos and / or photos), or the word ``synth``."""
    out = []
    for spec in specs:
        if spec == "synth" or spec.startswith("synth:"):
            split = spec.partition(":")[2] or None
            if split and split not in ("train", "val", "test"):
                raise VideoError(f"unknown synth split '{split}' (train, val or test)")
            out.append(SynthSource(fps, split))
            continue
        p = Path(spec)
        if p.is_file() and p.suffix == ".npz":
            from .pack import load_pack
            out += load_pack(p, fps)
        elif p.is_file():
            (out.append(PhotoSource([p])) if p.suffix.lower() in PHOTO_EXT else out.append(VideoSource(p, fps)))
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
            photos = [f for f in files if f.suffix.lower() in PHOTO_EXT]
            out += [VideoSource(f, fps) for f in files if is_video_file(f)]
            if photos:
                out.append(PhotoSource(photos))
        else:
            raise VideoError(f"no such data source: {spec}")
    if not out:
        raise VideoError("no training data found in the given sources")
    return out
