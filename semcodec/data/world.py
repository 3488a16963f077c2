"""The captioned world for text-to-video: procedural scenes split for honest evaluation.

Built on :mod:`semcodec.data.synth` (same shapes, colours, motions, backgrounds and renderer), with
what an evaluation needs on top:

- **Splits by scene seed.** :func:`split_of` hashes a seed to ``train`` (80%), ``val`` (10%) or
  ``test`` (10%); clip ``i`` of a split is the ``i``-th seed at or after the start seed that falls
  in it (:func:`split_seeds`), so the three splits never share a scene and every file is
  reproducible from its seed.
- **Held-out combinations.** The colour x shape pairs of :data:`HELD_OUT_COMBOS` never occur in
  ``train``; in ``val`` and ``test`` they occur as often as chance makes them, and a quarter of the
  scenes (:data:`HELD_OUT_FRACTION`) are given one, so that "unseen combination" can be scored.
- **Legible scenes** (:func:`world_scene`), so that a caption can be checked from the video alone:
  the shapes of a scene have distinct colours, each far (:data:`BG_CONTRAST`, CIELAB) from every
  shade of the background and apart from its brightness (:func:`stands_out`); a black background
  is plain (its shades are all black); spinning shapes are ones whose turn shows (not circle,
  ring, hexagon) and start upright; start positions are redrawn until no shape hides behind
  another for long.
- **Paraphrased captions** (:func:`paraphrase`): several templates (word orders, where the
  background goes, one sentence or several) and synonyms ("travels", "drifts", "to the left").
  :data:`TEST_TEMPLATES` and :data:`TEST_SYNONYMS` are used in the ``test`` split only. Template
  ``canonical`` with the first synonyms is exactly :func:`synth.caption`.

:func:`world_record` is one line of ``captions.jsonl`` (what ``semcodec dataset synth --split``
writes); ``generation.world`` parses any of these captions back into attributes and
``generation.evaluate`` scores videos against them.
"""
from __future__ import annotations

import numpy as np

from . import synth
from .synth import COLOURS, MOTIONS, MOTION_WEIGHTS, ROUND_SHAPES, SCROLLS, SHAPES, SIZES, TEXTURED, Scene, Shape

SPLITS = ("train", "val", "test")
SPLIT_PERMILLE = {"train": 800, "val": 100, "test": 100}

# colour x shape pairs never seen in training: one per shape, ten colours, none twice
HELD_OUT_COMBOS = frozenset({
    ("red", "star"), ("green", "heart"), ("blue", "triangle"), ("yellow", "square"), ("orange", "ring"),
    ("purple", "circle"), ("pink", "diamond"), ("cyan", "cross"), ("white", "hexagon"), ("brown", "crescent"),
})
HELD_OUT_FRACTION = 0.25          # of val / test scenes given one held-out pair (besides those chance gives)
BG_ALPHA = (0.35, 1.0)            # brightness range of every background pattern (x the background colour)
BG_CONTRAST = 25.0                # min CIELAB distance of a shape colour from every shade of the background
LUMA_CONTRAST = 20.0              # min luma (0-255) difference of a shape colour from the background colour
SPIN_SHAPES = tuple(s for s in SHAPES if s not in (*ROUND_SHAPES, "hexagon"))   # a 128 px hexagon's turn barely shows
WORLD_STREAM = 11                 # random stream of world scenes, apart from synth.random_scene's
LEGIBLE_SIZE, LEGIBLE_FPS, LEGIBLE_FRAMES = (64, 96), 8.0, 32   # the clip on which legibility is checked
MAX_OVERLAP_FRAMES = 0.15         # a shape may touch another in at most this fraction of frames


# ------------------------------------------------------------------------------------ splits
def _mix64(x: int) -> int:
    """splitmix64: a well-spread 64-bit hash of an integer (stable across platforms and runs)."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def split_of(seed: int) -> str:
    """The split of scene ``seed``: ``train`` (80%), ``val`` (10%) or ``test`` (10%)."""
    k = _mix64(int(seed)) % 1000
    return "train" if k < SPLIT_PERMILLE["train"] else "val" if k < 1000 - SPLIT_PERMILLE["test"] else "test"


def split_seeds(split: str, n: int, start: int = 0) -> list[int]:
    """The first ``n`` seeds ``>= start`` of ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    out, s = [], int(start)
    while len(out) < n:
        if split_of(s) == split:
            out.append(s)
        s += 1
    return out


# ------------------------------------------------------------------------------------ colour
_LAB_M = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                   [0.0193339, 0.1191920, 0.9503041]]) / np.array([[0.95047], [1.0], [1.08883]])


def rgb_to_lab(rgb) -> np.ndarray:
    """sRGB in [0, 255] (``... x 3``, any dtype) -> CIELAB (D65), ``... x 3`` float32: L in [0, 100]."""
    c = np.asarray(rgb, dtype=np.float32) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _LAB_M.T.astype(np.float32)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(np.maximum(xyz, 0)), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def shade_distance(colour: str, bg_colour: str) -> float:
    """Min CIELAB distance of ``colour`` from ``alpha * bg_colour`` over ``alpha`` in :data:`BG_ALPHA`."""
    alpha = np.linspace(*BG_ALPHA, 66)[:, None]
    shades = rgb_to_lab(alpha * np.array(COLOURS[bg_colour], np.float32))
    return float(np.linalg.norm(shades - rgb_to_lab(COLOURS[colour]), axis=-1).min())


def luma(colour: str) -> float:
    """BT.601 luma (0-255) of a palette colour."""
    r, g, b = COLOURS[colour]
    return 0.299 * r + 0.587 * g + 0.114 * b


def stands_out(colour: str, bg_colour: str, background: str = "plain") -> bool:
    """Whether a shape of ``colour`` can be seen on a ``bg_colour`` ``background``: far in colour
    from every shade of it, and apart in brightness from its full colour and, on the two-level
    patterns (stripes, checkerboard, dots), from its dark level too (video keeps luma sharp and
    halves colour resolution: the edges of a shape as bright as its background blur)."""
    if colour == bg_colour or shade_distance(colour, bg_colour) < BG_CONTRAST:
        return False
    levels = (1.0, 0.52) if background in ("stripes", "checkerboard", "dots") else (1.0,)
    return all(abs(luma(colour) - a * luma(bg_colour)) >= LUMA_CONTRAST for a in levels)


# shape colours per background colour and pattern
ALLOWED_ON = {(b, p): tuple(c for c in COLOURS if stands_out(c, b, p)) for b in COLOURS for p in synth.BACKGROUNDS}


# ------------------------------------------------------------------------------------ scenes
def has_held_out(scene: Scene) -> bool:
    """Whether a shape of ``scene`` is a held-out colour x shape pair."""
    return any((s.colour, s.shape) in HELD_OUT_COMBOS for s in scene.shapes)


# the farthest point of each drawing from its centre, in radii (any rotation): two shapes whose
# centres are farther apart than their reaches cannot touch, so their masks need not be drawn
REACH = {"square": 1.21, "triangle": 1.35, "cross": 1.05, "heart": 1.1}


def _overlap_frames(scene: Scene) -> list[float]:
    """Per shape, the fraction of frames of the check clip where it touches a shape drawn later or
    earlier (masks grown by 1 px at 64 x 96): there the evaluator cannot see it whole."""
    h, w = LEGIBLE_SIZE
    n = len(scene.shapes)
    t = np.arange(LEGIBLE_FRAMES) / LEGIBLE_FPS
    # every shape's path at once; only frames where two reaches meet get their masks drawn
    paths = []
    for sh in scene.shapes:
        r = SIZES[sh.size] * min(h, w) / 2
        paths.append(synth.kinematics(sh.motion, sh.direction, sh.speed, sh.x0 * w, sh.y0 * h, r, sh.phase, t, h, w))
    reach = [REACH.get(sh.shape, 1.0) * (p[2] + 1.0) for sh, p in zip(scene.shapes, paths)]
    pairs = []      # (frame, i, j) where the reaches of shapes i and j meet
    for i in range(n):
        for j in range(i + 1, n):
            (xi, yi, _, _), (xj, yj, _, _) = paths[i], paths[j]
            pairs += [(f, i, j) for f in np.nonzero(np.hypot(xi - xj, yi - yj) <= reach[i] + reach[j] + 1.0)[0]]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    touch = np.zeros((LEGIBLE_FRAMES, n), bool)
    for f, i, j in pairs:
        if touch[f, i] and touch[f, j]:
            continue
        (xi, yi, ri, ai), (xj, yj, rj, aj) = ([float(v[f]) for v in paths[k]] for k in (i, j))
        ei, ej = reach[i][f], reach[j][f]
        # the masks can only meet where both reaches' boxes do
        y0, y1 = max(0, int(max(yi - ei, yj - ej)) - 1), min(h, int(min(yi + ei, yj + ej)) + 2)
        x0, x1 = max(0, int(max(xi - ei, xj - ej)) - 1), min(w, int(min(xi + ei, xj + ej)) + 2)
        if y1 <= y0 or x1 <= x0:
            continue
        sy, sx = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
        mi = synth._shape_mask(scene.shapes[i].shape, sx, sy, xi, yi, ri + 1.0, ai)
        mj = synth._shape_mask(scene.shapes[j].shape, sx, sy, xj, yj, rj + 1.0, aj)
        if (mi & mj).any():
            touch[f, i] = touch[f, j] = True
    return list(touch.sum(0) / LEGIBLE_FRAMES)


def _legible(scene: Scene) -> bool:
    return all(v <= MAX_OVERLAP_FRAMES for v in _overlap_frames(scene))


def world_scene(seed: int, max_shapes: int = 3) -> Scene:
    """The world's scene ``seed`` (its split is :func:`split_of` ``(seed)``): attributes drawn as in
    :func:`synth.random_scene` under the rules of the module docstring."""
    split = split_of(seed)
    rng = np.random.default_rng([WORLD_STREAM, int(seed)])
    pick = lambda seq: seq[int(rng.integers(len(seq)))]
    bg_colour = pick(list(COLOURS))
    background = pick(synth.BACKGROUNDS)
    if bg_colour == "black":     # shades of black are all black: no pattern would show
        background = "plain"
    scroll = pick(SCROLLS) if background in TEXTURED and rng.random() < 0.3 else "static"
    motions, weights = list(MOTION_WEIGHTS), np.array(list(MOTION_WEIGHTS.values()))
    force_held_out = split != "train" and rng.random() < HELD_OUT_FRACTION
    shapes, used = [], set()
    for i in range(int(rng.integers(1, max_shapes + 1))):
        motion = motions[int(rng.choice(len(motions), p=weights / weights.sum()))]
        kinds = SPIN_SHAPES if motion == "spins" else SHAPES
        free = [c for c in ALLOWED_ON[bg_colour, background] if c not in used]
        pairs = [(c, k) for c in free for k in kinds]
        held = [p for p in pairs if p in HELD_OUT_COMBOS]
        if i == 0 and force_held_out and held:
            colour, kind = pick(held)
        else:
            kind = pick(kinds)
            options = [c for c in free if split != "train" or (c, kind) not in HELD_OUT_COMBOS]
            colour = pick(options)
        used.add(colour)
        takes = MOTIONS[motion]
        direction = pick(list(synth.DIRECTIONS)) if "direction" in takes else \
            pick(list(synth.ROTATIONS)) if "rotation" in takes else ""
        speed = pick(list(synth.SPEEDS)) if "speed" in takes else ""
        shapes.append(Shape(kind, colour, pick(list(SIZES)), direction, speed, 0.5, 0.5, motion, 0.0))
    scene = Scene(background, bg_colour, shapes, int(seed), scroll)
    # positions (and phases) are redrawn until the scene is legible; a shape that never fits is dropped
    while True:
        for _ in range(40):
            for sh in scene.shapes:
                sh.x0, sh.y0 = float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8))
                sh.phase = 0.0 if sh.motion == "spins" else float(rng.uniform(0, 1))
            if _legible(scene):
                return scene
        scene.shapes.pop()


# ------------------------------------------------------------------------------------ captions
# value -> words, per attribute; the first is the canonical word (synth.caption's)
SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "colour": {**{c: (c,) for c in COLOURS}, "gray": ("gray", "grey"), "purple": ("purple", "violet")},
    "size": {"small": ("small", "little", "tiny"), "medium": ("medium", "medium-sized", "mid-sized"),
             "large": ("large", "big")},
    "shape": {**{s: (s,) for s in SHAPES}, "circle": ("circle", "disc"), "ring": ("ring", "hoop"),
              "diamond": ("diamond", "rhombus"), "cross": ("cross", "plus sign"), "crescent": ("crescent", "crescent moon")},
    "motion": {"moves": ("moves", "travels", "drifts", "slides"), "zigzags": ("zigzags", "zig-zags", "weaves"),
               "circles": ("circles", "orbits", "loops around"), "spins": ("spins", "rotates", "turns"),
               "bounces": ("bounces", "hops"), "grows": ("grows", "expands", "gets bigger"),
               "shrinks": ("shrinks", "contracts", "gets smaller"),
               "stays still": ("stays still", "stays put", "does not move")},
    "direction": {"right": ("right", "to the right", "rightward"), "left": ("left", "to the left", "leftward"),
                  "up": ("up", "upward", "upwards"), "down": ("down", "downward", "downwards"),
                  "down and to the right": ("down and to the right", "diagonally down and right"),
                  "up and to the left": ("up and to the left", "diagonally up and left"),
                  "up and to the right": ("up and to the right", "diagonally up and right"),
                  "down and to the left": ("down and to the left", "diagonally down and left")},
    "rotation": {"clockwise": ("clockwise",), "counterclockwise": ("counterclockwise", "anticlockwise")},
    "speed": {"slowly": ("slowly", "gently", "at a slow pace"), "steadily": ("steadily", "at a steady pace"),
              "quickly": ("quickly", "fast", "rapidly")},
    "background": {"plain": ("plain", "solid"), "gradient": ("gradient", "graded"), "radial": ("radial",),
                   "stripes": ("stripes", "striped"), "checkerboard": ("checkerboard", "checkered"),
                   "dots": ("dots", "dotted"), "noise": ("noise", "noisy", "mottled")},
}
# words used in test captions only (a held-out vocabulary on top of the held-out templates)
TEST_SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "size": {"large": ("huge",)}, "motion": {"moves": ("glides",), "spins": ("twirls",)},
    "speed": {"quickly": ("swiftly",), "slowly": ("leisurely",)}, "colour": {"gray": ("silver",)},
    "background": {"dots": ("polka-dot",), "checkerboard": ("chequered",)},
    "direction": {"left": ("leftwards",), "right": ("rightwards",)},
}
BACKGROUND_NOUNS = ("background", "backdrop")
SCROLL_WORDS = ("scrolling", "that scrolls", "which scrolls")


class Template:
    """How a caption is put together.

    ``scene``: the sentence, with ``{shapes}`` and ``{bg}`` (a background noun phrase) or
    ``{bgdesc}`` (the background as a predicate: "dotted brown"); ``phrase``: one shape, with
    ``{size} {colour} {shape} {verb}``; ``verb``: the order of motion word (m), speed (s) and
    direction (d); ``join``: between shapes and before the last one; ``bg_order``: colour before
    pattern (``cp``) or after (``pc``); ``sentences``: each shape its own sentence.
    """

    def __init__(self, name, scene, phrase, verb="msd", join=(", ", " while "), bg_order="cp",
                 sentences=False, scroll=" scrolling {dir}"):
        self.name, self.scene, self.phrase, self.verb, self.join = name, scene, phrase, verb, join
        self.bg_order, self.sentences, self.scroll = bg_order, sentences, scroll


TEMPLATES = (
    Template("canonical", "{shapes} on {bg}.", "a {size} {colour} {shape} {verb}"),
    Template("bg-first", "On {bg}, {shapes}.", "a {size} {colour} {shape} {verb}", verb="mds",
             join=(", ", " and ")),
    Template("sentences", "{shapes} The background is {bgdesc}.", "a {size} {colour} {shape} that {verb}",
             verb="mds", sentences=True, scroll=", scrolling {dir}"),
    Template("in-colour", "{shapes} over {bg}.", "a {size} {shape} in {colour} {verb}", verb="smd",
             join=("; ", "; "), bg_order="pc"),
    Template("backdrop", "Against {bg}, {shapes}.", "a {size} {colour} {shape} {verb}", verb="smd",
             join=(", ", ", and "), bg_order="pc", scroll=" that scrolls {dir}"),
)
TEST_TEMPLATES = (
    Template("there-is", "There is {bg}, with {shapes}.", "a {colour} {shape} ({size}) that {verb}",
             verb="mds", join=(", ", " as well as ")),
    Template("bg-sentence-first", "The background is {bgdesc}. {shapes}", "there is a {size} {colour} {shape}, and it {verb}",
             verb="mds", sentences=True, scroll=", scrolling {dir}"),
    Template("scene-with", "A scene with {bg}, where {shapes}.", "a {size} {colour} {shape} {verb}", verb="smd",
             join=(", ", " while "), bg_order="pc", scroll=" which scrolls {dir}"),
)
TEMPLATE_NAMES = tuple(t.name for t in TEMPLATES + TEST_TEMPLATES)


def templates_for(split: str) -> tuple[Template, ...]:
    """Templates a caption of ``split`` may use: the shared ones, plus the test-only ones in ``test``."""
    return TEMPLATES + TEST_TEMPLATES if split == "test" else TEMPLATES


def _template(name: str) -> Template:
    for t in TEMPLATES + TEST_TEMPLATES:
        if t.name == name:
            return t
    raise ValueError(f"unknown caption template {name!r} (one of {', '.join(TEMPLATE_NAMES)})")


def _verb(sh: Shape, order: str, word) -> str:
    """The motion part of a shape phrase, its parts in ``order`` (m: motion, s: speed, d: direction)."""
    parts = {"m": word("motion", sh.motion)}
    if sh.speed:
        parts["s"] = word("speed", sh.speed)
    if sh.direction:
        parts["d"] = word("rotation" if sh.direction in synth.ROTATIONS else "direction", sh.direction)
    return " ".join(parts[k] for k in order if k in parts)


def paraphrase(scene: Scene, template: str = "canonical", seed: int | None = None, test_words: bool = False) -> str:
    """``scene`` as an English caption in ``template`` (a name of :data:`TEMPLATE_NAMES`).

    Synonyms are drawn with ``seed`` (None: always the canonical word, so that template
    ``canonical`` gives :func:`synth.caption`); ``test_words`` adds :data:`TEST_SYNONYMS`.
    """
    t = _template(template)
    rng = None if seed is None else np.random.default_rng([WORLD_STREAM, 1, int(seed)])

    def word(kind: str, value: str) -> str:
        words = SYNONYMS[kind][value]
        if rng is None:
            return words[0]
        if test_words:
            words = words + TEST_SYNONYMS.get(kind, {}).get(value, ())
        return words[int(rng.integers(len(words)))]

    phrases = [t.phrase.format(size=word("size", s.size), colour=word("colour", s.colour),
                               shape=word("shape", s.shape), verb=_verb(s, t.verb, word)) for s in scene.shapes]
    if t.sentences:
        shapes = " ".join(p[0].upper() + p[1:] + "." for p in phrases)
    else:
        shapes = phrases[0] if len(phrases) == 1 else t.join[0].join(phrases[:-1]) + t.join[1] + phrases[-1]
    colour, pattern = word("colour", scene.bg_colour), word("background", scene.background)
    scroll = "" if scene.scroll == "static" else t.scroll.format(dir=word("direction", scene.scroll))
    noun = "background" if rng is None else BACKGROUND_NOUNS[int(rng.integers(len(BACKGROUND_NOUNS)))]
    if scene.background == "plain" and t.bg_order == "cp":
        bg = f"a {pattern} {colour} {noun}"        # "a plain brown background", as synth.caption has it
    else:
        bg = f"a {colour} {pattern} {noun}" if t.bg_order == "cp" else f"a {pattern} {colour} {noun}"
    text = t.scene.format(shapes=shapes, bg=bg + scroll, bgdesc=f"{pattern} {colour}{scroll}")
    return text[0].upper() + text[1:]


def world_caption(scene: Scene, split: str | None = None) -> tuple[str, str]:
    """(template name, caption) of a world scene, drawn from its seed among the split's templates."""
    split = split or split_of(scene.seed)
    pool = templates_for(split)
    rng = np.random.default_rng([WORLD_STREAM, 2, int(scene.seed)])
    t = pool[int(rng.integers(len(pool)))]
    return t.name, paraphrase(scene, t.name, seed=scene.seed, test_words=split == "test")


def world_record(i: int, seed: int, frames: int, size: tuple[int, int], fps: float, max_shapes: int = 3) -> dict:
    """The ``captions.jsonl`` line of a world clip ``i`` whose scene seed is ``seed``."""
    scene = world_scene(seed, max_shapes)
    template, text = world_caption(scene)
    return {"path": synth.clip_name(i), "caption": text, "template": template, "split": split_of(seed),
            "held_out": has_held_out(scene), "seed": int(seed), "frames": frames, "fps": fps,
            "height": size[0], "width": size[1], "scene": scene.to_dict()}
