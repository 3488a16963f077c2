"""What the world benches share (``bench.world_codec``, ``bench.renderer``, ``bench.evaluate``):
the first clips of a split of the world, rendered; a clip written to a video file; the score
format of their tables; their JSON result."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

FPS = 8.0
SIZE = (128, 192)


def split_clips(split: str, n: int, start: int = 0, frames: int = 32, size=SIZE,
                fps: float = FPS) -> Iterator[tuple[object, np.ndarray]]:
    """``(scene, video)`` for the first ``n`` scenes of ``split`` from seed ``start``:
    ``frames x H x W x 3`` uint8 at ``size``, rendered without loss."""
    from semcodec.data import synth, world
    for seed in world.split_seeds(split, n, start):
        scene = world.world_scene(seed)
        yield scene, synth.render(scene, frames, size, fps)


def write_video(path, video: np.ndarray, fps: float = FPS, crf: int | None = 0) -> Path:
    """``video`` (``T x H x W x 3`` uint8) to ``path``: lossless H.264 (``crf`` 0), or the
    writer's default quality (``crf`` None)."""
    from semcodec.video import VideoWriter
    kw = {} if crf is None else {"crf": crf}
    with VideoWriter(path, fps, video.shape[1:3], **kw) as w:
        for f in video:
            w.write(f)
    return Path(path)


def percent(v: float | None) -> str:
    """A table cell: a score in percent, or ``-`` where the dimension did not apply."""
    return "-" if v is None else f"{100 * v:.1f}%"


def save_result(doc: dict, out) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(doc, indent=1))
    print(f"-> {out}")
