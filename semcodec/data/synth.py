"""Procedural captioned clips: moving shapes over a background, with exact captions.

A :class:`Scene` is drawn from a seed (:func:`random_scene`); :func:`render` turns it into frames
``T x H x W x 3`` uint8 at any size and frame rate, and :func:`caption` into one English sentence.
Every attribute in the caption is exactly what was drawn, so compositions ("a small red triangle
moves left while a large blue star spins clockwise") can be tested:

- shape (10): circle, square, triangle, diamond, ring, cross, star, heart, hexagon, crescent
- colour (12), size (3: small, medium, large)
- motion (8): moves / zigzags (speed + one of 8 directions), circles / spins (speed + clockwise or
  counterclockwise), bounces (speed), grows, shrinks, stays still
- speed (3: slowly, steadily, quickly)
- background (7): plain, gradient, radial, stripes, checkerboard, dots, noise, in any colour;
  textured backgrounds may scroll in one of 4 directions (a camera pan)
- 1 to ``max_shapes`` shapes, drawn in caption order (later shapes cover earlier ones).

:func:`write_clips` writes N clips as H.264 files plus ``captions.jsonl`` (what
``semcodec dataset synth`` does). :mod:`semcodec.data.world` adds train / val / test splits,
held-out combinations and paraphrased captions on top (``semcodec dataset synth --split``).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
    "orange": (240, 140, 30), "purple": (140, 60, 190), "pink": (240, 120, 180), "cyan": (40, 200, 210),
    "white": (245, 245, 245), "black": (20, 20, 20), "brown": (130, 80, 40), "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross", "star", "heart", "hexagon", "crescent")
ROUND_SHAPES = ("circle", "ring")                            # spinning would not show
SIZES = {"small": 0.12, "medium": 0.2, "large": 0.3}         # fraction of the short side
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1),
              "down and to the right": (0.707, 0.707), "up and to the left": (-0.707, -0.707),
              "up and to the right": (0.707, -0.707), "down and to the left": (-0.707, 0.707)}
ROTATIONS = {"clockwise": 1.0, "counterclockwise": -1.0}     # image y points down: +angle is clockwise
SPEEDS = {"slowly": 0.1, "steadily": 0.25, "quickly": 0.5}    # fraction of the short side per second
TURN_RATE = {"slowly": 0.25, "steadily": 0.5, "quickly": 1.0}  # turns per second (circles, bounces)
# turns per second (spins): at most 16 degrees a frame at 8 fps, so that the turn of a 4- or 5-fold
# symmetric shape (square, cross, star) is not aliased and its sense can be seen
SPIN_RATE = {"slowly": 0.1, "steadily": 0.2, "quickly": 0.35}
GROW_RATE = 0.35                                               # log-size change per second (grows, shrinks)
# motion -> which attributes it takes: "direction" (DIRECTIONS), "rotation" (ROTATIONS), "speed"
MOTIONS = {"moves": ("direction", "speed"), "zigzags": ("direction", "speed"), "circles": ("rotation", "speed"),
           "spins": ("rotation", "speed"), "bounces": ("speed",), "grows": (), "shrinks": (), "stays still": ()}
MOTION_WEIGHTS = {"moves": 0.4, "zigzags": 0.1, "circles": 0.1, "spins": 0.1, "bounces": 0.1, "grows": 0.07,
                  "shrinks": 0.07, "stays still": 0.06}
BACKGROUNDS = ("plain", "gradient", "radial", "stripes", "checkerboard", "dots", "noise")
TEXTURED = ("stripes", "checkerboard", "dots", "noise")        # backgrounds that can scroll
SCROLLS = ("left", "right", "up", "down")
SCROLL_SPEED = 0.2                                             # fraction of the short side per second

VOCABULARY = {"shape": list(SHAPES), "colour": list(COLOURS), "size": list(SIZES), "motion": list(MOTIONS),
              "direction": list(DIRECTIONS), "rotation": list(ROTATIONS), "speed": list(SPEEDS),
              "background": list(BACKGROUNDS), "scroll": ["static", *SCROLLS]}


@dataclass
class Shape:
    shape: str
    colour: str
    size: str
    direction: str     # a DIRECTIONS key (moves, zigzags), a ROTATIONS key (circles, spins), or ""
    speed: str         # a SPEEDS key, or "" (grows, shrinks, stays still)
    x0: float          # start centre, fraction of width / height
    y0: float
    motion: str = "moves"
    phase: float = 0.0  # start angle in turns (circles, spins)


@dataclass
class Scene:
    background: str
    bg_colour: str
    shapes: list[Shape] = field(default_factory=list)
    seed: int = 0
    scroll: str = "static"     # "static" or a SCROLLS direction (textured backgrounds only)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        d = dict(d)
        d["shapes"] = [Shape(**s) for s in d.get("shapes", [])]
        return cls(**d)


def random_scene(seed: int, max_shapes: int = 3) -> Scene:
    rng = np.random.default_rng(seed)
    pick = lambda seq: seq[int(rng.integers(len(seq)))]
    bg_colour = pick(list(COLOURS))
    motions, weights = list(MOTION_WEIGHTS), np.array(list(MOTION_WEIGHTS.values()))
    shapes = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        colour = pick([c for c in COLOURS if c != bg_colour])
        motion = motions[int(rng.choice(len(motions), p=weights / weights.sum()))]
        kind = pick([s for s in SHAPES if not (motion == "spins" and s in ROUND_SHAPES)])
        takes = MOTIONS[motion]
        direction = pick(list(DIRECTIONS)) if "direction" in takes else \
            pick(list(ROTATIONS)) if "rotation" in takes else ""
        speed = pick(list(SPEEDS)) if "speed" in takes else ""
        shapes.append(Shape(kind, colour, pick(list(SIZES)), direction, speed, float(rng.uniform(0.2, 0.8)),
                            float(rng.uniform(0.2, 0.8)), motion, float(rng.uniform(0, 1))))
    background = pick(BACKGROUNDS)
    scroll = pick(SCROLLS) if background in TEXTURED and rng.random() < 0.3 else "static"
    return Scene(background, bg_colour, shapes, seed, scroll)


def _phrase(s: Shape) -> str:
    m = s.motion
    if m in ("moves", "zigzags"):
        verb = f"{m} {s.speed} {s.direction}"
    elif m in ("circles", "spins"):
        verb = f"{m} {s.speed} {s.direction}"
    elif m == "bounces":
        verb = f"bounces {s.speed}"
    else:
        verb = m
    return f"a {s.size} {s.colour} {s.shape} {verb}"


def caption(scene: Scene) -> str:
    parts = [_phrase(s) for s in scene.shapes]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " while " + parts[-1]
    bg = f"a plain {scene.bg_colour}" if scene.background == "plain" else f"a {scene.bg_colour} {scene.background}"
    tail = "" if scene.scroll == "static" else f" scrolling {scene.scroll}"
    return f"{body[0].upper()}{body[1:]} on {bg} background{tail}."


def _background(scene: Scene, h: int, w: int, ox: float = 0.0, oy: float = 0.0) -> np.ndarray:
    """The background, its texture shifted by (ox, oy) pixels (a scrolling camera)."""
    c = np.array(COLOURS[scene.bg_colour], dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx - ox, yy - oy
    s = min(h, w)
    b = scene.background
    if b == "plain":
        a = np.ones((h, w), np.float32)
    elif b == "gradient":
        a = 0.35 + 0.65 * (xx + ox) / max(w - 1, 1)
    elif b == "radial":
        r = np.hypot(xx + ox - (w - 1) / 2, yy + oy - (h - 1) / 2) / (0.5 * math.hypot(h, w))
        a = 1.0 - 0.6 * np.clip(r, 0, 1)
    elif b == "stripes":
        a = 0.55 + 0.45 * (np.sin(2 * np.pi * xx / (0.15 * s)) > 0)
    elif b == "checkerboard":
        a = 0.55 + 0.45 * (((xx // (0.125 * s)) + (yy // (0.125 * s))) % 2)
    elif b == "dots":
        p = 0.16 * s
        d = np.hypot((xx % p) - p / 2, (yy % p) - p / 2)
        a = np.where(d <= 0.25 * p, 0.5, 1.0)
    else:  # smooth periodic value noise, deterministic in the seed
        rng = np.random.default_rng(scene.seed + 7)
        coarse = rng.uniform(0.4, 1.0, size=(6, 6)).astype(np.float32)
        cell = s / 3.0
        u, v = (xx / cell) % 6, (yy / cell) % 6
        i0, j0 = np.floor(u).astype(int), np.floor(v).astype(int)
        fu, fv = u - i0, v - j0
        i1, j1 = (i0 + 1) % 6, (j0 + 1) % 6
        a = (coarse[j0, i0] * (1 - fu) * (1 - fv) + coarse[j0, i1] * fu * (1 - fv)
             + coarse[j1, i0] * (1 - fu) * fv + coarse[j1, i1] * fu * fv)
    return a[..., None] * c


def _shape_mask(kind: str, xx, yy, cx, cy, r, angle: float = 0.0) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if angle:
        ca, sa = math.cos(angle), math.sin(angle)
        dx, dy = ca * dx + sa * dy, -sa * dx + ca * dy
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
    if kind == "star":     # five points: radius between 0.45 r and r with the angle
        th = np.arctan2(dy, dx) + np.pi / 2
        k = np.abs(((th * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2        # 1 at a point, 0 between points
        return np.hypot(dx, dy) <= r * (0.45 + 0.55 * k)
    if kind == "heart":
        x, y = dx / r * 1.2, -(dy / r) * 1.2 + 0.15
        return (x ** 2 + y ** 2 - 1) ** 3 - x ** 2 * y ** 3 <= 0
    if kind == "hexagon":
        ax, ay = abs(dx), abs(dy)
        return (ay <= r * 0.866) & (0.866 * ax + 0.5 * ay <= r * 0.866)
    if kind == "crescent":
        return (dx ** 2 + dy ** 2 <= r ** 2) & ((dx - 0.45 * r) ** 2 + dy ** 2 > (0.8 * r) ** 2)
    raise ValueError(kind)


def kinematics(motion: str, direction: str, speed: str, x0: float, y0: float, r: float, phase: float, t,
               h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where a shape is at times ``t`` (seconds, any array shape): centre x, y and radius in pixels,
    rotation angle in radians (image axes, y down: a growing angle turns clockwise on screen).

    ``x0, y0`` is the start centre and ``r`` the start radius, in pixels, of a ``h x w`` frame;
    ``phase`` the start angle in turns (circles, spins, bounces). Moving shapes bounce off the
    frame edges. The renderer and the evaluator (``generation.evaluate``, which fits these
    trajectories to tracked shapes) share this one definition of the motions.
    """
    t = np.asarray(t, dtype=np.float64)
    s = min(h, w)
    x, y = np.full_like(t, x0), np.full_like(t, y0)
    rr, angle = np.full_like(t, r), np.zeros_like(t)
    if motion in ("moves", "zigzags"):
        dx, dy = DIRECTIONS[direction]
        dist = SPEEDS[speed] * s * t
        x, y = x0 + dx * dist, y0 + dy * dist
        if motion == "zigzags":   # triangle wave across the direction of travel, 2 swings per second
            amp = 0.12 * s
            tri = 2 * np.abs(((t * 2.0) % 1.0) - 0.5) * 2 - 1
            x, y = x - dy * amp * tri, y + dx * amp * tri
    elif motion == "circles":
        rad = 0.18 * s
        a = 2 * np.pi * (phase + ROTATIONS[direction] * TURN_RATE[speed] * t)
        cx, cy = min(max(x0, r + rad), w - r - rad), min(max(y0, r + rad), h - r - rad)
        x, y = cx + rad * np.cos(a), cy + rad * np.sin(a)
    elif motion == "spins":
        angle = 2 * np.pi * (phase + ROTATIONS[direction] * SPIN_RATE[speed] * t)
    elif motion == "bounces":   # a ball dropping on the floor: |sin| in time
        y = (h - r) - 0.35 * h * np.abs(np.sin(np.pi * TURN_RATE[speed] * 2 * t + np.pi * phase))
    elif motion in ("grows", "shrinks"):
        rr = r * np.clip(np.exp((GROW_RATE if motion == "grows" else -GROW_RATE) * t), 0.3, 2.5)
    return _bounce(x, rr, w - rr), _bounce(y, rr, h - rr), rr, angle


def _place(sh: Shape, t: float, h: int, w: int) -> tuple[float, float, float, float]:
    """Centre x, y, radius and rotation angle of shape ``sh`` at time ``t`` seconds."""
    r = SIZES[sh.size] * min(h, w) / 2
    x, y, rr, angle = kinematics(sh.motion, sh.direction, sh.speed, sh.x0 * w, sh.y0 * h, r, sh.phase, t, h, w)
    return float(x), float(y), float(rr), float(angle)


def render(scene: Scene, frames: int, size: tuple[int, int], fps: float) -> np.ndarray:
    """-> ``frames x H x W x 3`` uint8. Moving shapes bounce off the frame edges."""
    return _draw(scene, frames, size, fps, False)[0]


def render_masked(scene: Scene, frames: int, size: tuple[int, int], fps: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render` and, drawn in the same pass, where its shapes are: ``frames x H x W`` bool."""
    return _draw(scene, frames, size, fps, True)


def _draw(scene: Scene, frames: int, size: tuple[int, int], fps: float, with_masks: bool):
    h, w = size
    s = min(h, w)
    static_bg = _background(scene, h, w) if scene.scroll == "static" else None
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((frames, h, w, 3), np.uint8)
    masks = np.zeros((frames, h, w), bool) if with_masks else None
    for t in range(frames):
        sec = t / fps
        if static_bg is None:
            dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[scene.scroll]
            d = SCROLL_SPEED * s * sec
            img = _background(scene, h, w, dx * d, dy * d)
        else:
            img = static_bg.copy()
        for sh in scene.shapes:
            cx, cy, r, angle = _place(sh, sec, h, w)
            y0, y1 = max(0, int(cy - r) - 1), min(h, int(cy + r) + 2)
            x0, x1 = max(0, int(cx - r) - 1), min(w, int(cx + r) + 2)
            if y1 <= y0 or x1 <= x0:
                continue
            m = _shape_mask(sh.shape, xx[y0:y1, x0:x1], yy[y0:y1, x0:x1], cx, cy, r, angle)
            img[y0:y1, x0:x1][m] = COLOURS[sh.colour]
            if masks is not None:
                masks[t, y0:y1, x0:x1] |= m
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out, masks


def _bounce(v, lo, hi):
    """Reflect ``v`` into ``[lo, hi]`` (arrays broadcast): a point bouncing between two walls."""
    v, lo, hi = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (v, lo, hi)))
    span = hi - lo
    safe = np.where(span > 0, span, 1.0)
    m = np.mod(v - lo, 2 * safe)
    return np.where(span > 0, lo + np.where(m <= safe, m, 2 * safe - m), (lo + hi) / 2)


# ---------------------------------------------------------------------------------------- files
CAPTIONS_FILE = "captions.jsonl"


def clip_name(i: int) -> str:
    return f"clip_{i:06d}.mp4"


def clip_record(i: int, seed: int, frames: int, size: tuple[int, int], fps: float, max_shapes: int = 3) -> dict:
    """The ``captions.jsonl`` line of clip ``i`` (scene seed ``seed + i``)."""
    scene = random_scene(seed + i, max_shapes)
    return {"path": clip_name(i), "caption": caption(scene), "seed": seed + i, "frames": frames, "fps": fps,
            "height": size[0], "width": size[1], "scene": scene.to_dict()}


def _write_one(args) -> str:
    out_dir, rec = args
    from ..video import VideoWriter
    path = Path(out_dir) / rec["path"]
    if path.exists():
        return rec["path"]
    scene = Scene.from_dict(rec["scene"])
    video = render(scene, rec["frames"], (rec["height"], rec["width"]), rec["fps"])
    with VideoWriter(path, rec["fps"], (rec["height"], rec["width"])) as w:
        for f in video:
            w.write(f)
    return rec["path"]


def write_clips(n: int, out_dir, frames: int = 32, size: tuple[int, int] = (128, 192), fps: float = 8.0,
                seed: int = 0, max_shapes: int = 3, workers: int = 1, progress=None, split: str | None = None) -> Path:
    """Write ``n`` clips ``clip_000000.mp4`` ... and ``captions.jsonl`` into ``out_dir``.

    ``split`` None: clip ``i`` is :func:`random_scene` ``(seed + i)`` with its canonical caption.
    ``split`` ``train`` / ``val`` / ``test``: clip ``i`` is the world scene of the ``i``-th seed
    ``>= seed`` in that split, with a paraphrased caption (:mod:`semcodec.data.world`; its lines
    also carry ``split``, ``template`` and ``held_out``).

    Idempotent: clips already present are kept (every file is written atomically), and
    ``captions.jsonl`` (one line per clip, in order: path, caption, seed, frames, fps, height,
    width, scene) is rewritten whole. Returns the captions file.
    """
    from ..atomic import atomic_path
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if split is None:
        recs = [clip_record(i, seed, frames, size, fps, max_shapes) for i in range(n)]
    else:
        from .world import split_seeds, world_record
        recs = [world_record(i, s, frames, size, fps, max_shapes) for i, s in enumerate(split_seeds(split, n, seed))]
    cap = out / CAPTIONS_FILE
    with atomic_path(cap) as tmp:
        with open(tmp, "w") as f:
            for r in recs:
                f.write(json.dumps(r, sort_keys=True) + "\n")
    jobs = [(str(out), r) for r in recs]
    if workers > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, jobs, chunksize=4):
                if progress:
                    progress()
    else:
        for j in jobs:
            _write_one(j)
            if progress:
                progress()
    return cap
