"""Procedural captioned clips: moving shapes over a background, with exact captions.

A :class:`Scene` is drawn from a seed (:func:`random_scene`); :func:`render` turns it into frames
``T x H x W x 3`` uint8 at any size and frame rate, and :func:`caption` into one English sentence.
Every attribute in the caption (shape, colour, size, direction, speed, background) is exactly
what was drawn, so compositions ("a small red triangle moves left while a large blue circle
moves up") can be tested.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
    "orange": (240, 140, 30), "purple": (140, 60, 190), "pink": (240, 120, 180), "cyan": (40, 200, 210),
    "white": (245, 245, 245), "black": (20, 20, 20), "brown": (130, 80, 40), "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross")
SIZES = {"small": 0.12, "medium": 0.2, "large": 0.3}         # fraction of the short side
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1),
              "down and to the right": (0.707, 0.707), "up and to the left": (-0.707, -0.707),
              "up and to the right": (0.707, -0.707), "down and to the left": (-0.707, 0.707)}
SPEEDS = {"slowly": 0.1, "steadily": 0.25, "quickly": 0.5}    # fraction of the short side per second
BACKGROUNDS = ("plain", "gradient", "stripes", "checkerboard", "noise")


@dataclass
class Shape:
    shape: str
    colour: str
    size: str
    direction: str
    speed: str
    x0: float          # start centre, fraction of width / height
    y0: float


@dataclass
class Scene:
    background: str
    bg_colour: str
    shapes: list[Shape] = field(default_factory=list)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def random_scene(seed: int, max_shapes: int = 3) -> Scene:
    rng = np.random.default_rng(seed)
    pick = lambda seq: seq[int(rng.integers(len(seq)))]
    bg_colour = pick(list(COLOURS))
    shapes = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        colour = pick([c for c in COLOURS if c != bg_colour])
        shapes.append(Shape(pick(SHAPES), colour, pick(list(SIZES)), pick(list(DIRECTIONS)), pick(list(SPEEDS)),
                            float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8))))
    return Scene(pick(BACKGROUNDS), bg_colour, shapes, seed)


def caption(scene: Scene) -> str:
    parts = [f"a {s.size} {s.colour} {s.shape} moves {s.speed} {s.direction}" for s in scene.shapes]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " while " + parts[-1]
    bg = f"a plain {scene.bg_colour}" if scene.background == "plain" else f"a {scene.bg_colour} {scene.background}"
    return f"{body[0].upper()}{body[1:]} on {bg} background."


def _background(scene: Scene, h: int, w: int) -> np.ndarray:
    c = np.array(COLOURS[scene.bg_colour], dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    s = min(h, w)
    if scene.background == "plain":
        a = np.ones((h, w), np.float32)
    elif scene.background == "gradient":
        a = 0.35 + 0.65 * xx / max(w - 1, 1)
    elif scene.background == "stripes":
        a = 0.55 + 0.45 * (np.sin(2 * np.pi * xx / (0.15 * s)) > 0)
    elif scene.background == "checkerboard":
        a = 0.55 + 0.45 * (((xx // (0.125 * s)) + (yy // (0.125 * s))) % 2)
    else:  # smooth value noise, deterministic in the seed
        rng = np.random.default_rng(scene.seed + 7)
        coarse = rng.uniform(0.4, 1.0, size=(6, 6)).astype(np.float32)
        ys, xs = np.linspace(0, 5, h), np.linspace(0, 5, w)
        a = np.array([np.interp(xs, np.arange(6), row) for row in coarse])
        a = np.array([np.interp(ys, np.arange(6), col) for col in a.T]).T
    return a[..., None] * c


def _shape_mask(kind: str, xx, yy, cx, cy, r) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if kind == "circle":
        return dx ** 2 + dy ** 2 <= r ** 2
    if kind == "square":
        return (abs(dx) <= r * 0.85) & (abs(dy) <= r * 0.85)
    if kind == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (abs(dx) <= (dy + r) * 0.6)
    if kind == "diamond":
        return abs(dx) + abs(dy) <= r
    if kind == "ring":
        d = dx ** 2 + dy ** 2
        return (d <= r ** 2) & (d >= (0.55 * r) ** 2)
    if kind == "cross":
        return ((abs(dx) <= r * 0.3) & (abs(dy) <= r)) | ((abs(dy) <= r * 0.3) & (abs(dx) <= r))
    raise ValueError(kind)


def render(scene: Scene, frames: int, size: tuple[int, int], fps: float) -> np.ndarray:
    """-> ``frames x H x W x 3`` uint8. Shapes bounce off the frame edges."""
    h, w = size
    s = min(h, w)
    bg = _background(scene, h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
        img = bg.copy()
        for sh in scene.shapes:
            r = SIZES[sh.size] * s / 2
            dx, dy = DIRECTIONS[sh.direction]
            dist = SPEEDS[sh.speed] * s * t / fps
            cx = _bounce(sh.x0 * w + dx * dist, r, w - r)
            cy = _bounce(sh.y0 * h + dy * dist, r, h - r)
            img[_shape_mask(sh.shape, xx, yy, cx, cy, r)] = COLOURS[sh.colour]
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _bounce(v: float, lo: float, hi: float) -> float:
    if hi <= lo:
        return (lo + hi) / 2
    span = hi - lo
    m = (v - lo) % (2 * span)
    return lo + (m if m <= span else 2 * span - m)
