"""A mini-VBench for the procedural world: score a video against what its caption says.

``python -m generation.evaluate VIDEOS... [--captions captions.jsonl | --caption TEXT] [--json OUT]``
(``--help`` documents the inputs). Python: :func:`analyse` a video once (caption-free: what it
shows), then :func:`score_clip` it against a :class:`~generation.world.Target` (from a scene spec
or a parsed caption); :func:`evaluate` does both for many clips and returns a :class:`Report`.

Dimensions (:data:`DIMENSIONS`), each a fraction in [0, 1]:

- per captioned shape: ``shape_colour``, ``shape_class``, ``size``, ``motion`` (the 8 motion
  types), ``direction`` (8 directions for moves / zigzags, the turning sense for circles / spins),
  ``speed``; per clip: ``count`` (objects seen == shapes said), ``bg_colour``, ``bg_pattern``;
- prompt-free video quality, per clip: ``flicker`` (1 = no frame-to-frame flicker of the
  background or the objects' colour) and ``consistency`` (subject consistency: each object keeps
  its colour and shape and does not vanish).

Method: deterministic image analysis, no learned weights.

1. Pixels go to CIELAB. The background colour is the palette colour whose shades
   ``alpha * colour`` (``alpha`` in the world's :data:`~semcodec.data.world.BG_ALPHA`) explain
   most pixels; those pixels are background. Every other pixel takes the nearest palette colour
   within :data:`TAU_OBJ` (a lossy codec's blur and colour drift stay inside it).
2. Per colour, the largest connected component of each frame (thin halos of mixed colours at
   other objects' edges dropped); a colour present in enough frames is an object. Its mask is
   re-cut where the pixel is more object than background (a per-pixel two-colour unmixing), which
   undoes blur.
3. Per object and frame: area, centroid, complex moments (the turn of a spinning shape, from the
   phase of its strongest rotational harmonic), and the shape class: the best IoU among the ten
   shapes rendered by the world's own renderer at the observed area, centroid and turn. A colour
   track that looks like no shape (:data:`OBJECT_IOU`, :data:`MAX_SPREAD`) or whose size jumps
   from frame to frame (:data:`MAX_AREA_JITTER`) is not an object (a blob of noise).
4. The track of centres and radii is fitted by every motion hypothesis of the world (moves /
   zigzags x 8 directions x 3 speeds, circles and bounces with their phase, grows, shrinks, still)
   with the renderer's own kinematics (``synth.kinematics``, walls included); the least error wins.
   Direction and speed are read in the caption's motion family (VBench-style: "moves right" is
   judged by the best straight or zigzag fit, whatever motion type wins).
5. The background pattern from its brightness map: a linear fit (gradient), a radial fit
   (radial), or the spectrum (stripes: energy along x only; dots: along both axes; checkerboard:
   on the diagonals; noise: low frequencies).

Caption shapes are matched to objects by colour (least total CIELAB distance); a shape without
an object scores 0 on every per-shape dimension. Arrays are ``T x H x W x 3`` uint8 RGB; times
are ``frame / fps`` seconds; lengths are in pixels unless said to be fractions of the short side.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semcodec.data import synth
from semcodec.data.world import BG_ALPHA, rgb_to_lab

from .world import Target, parse_caption

DIMENSIONS = ("shape_colour", "shape_class", "size", "count", "motion", "direction", "speed",
              "bg_colour", "bg_pattern", "flicker", "consistency")
PROMPT_FREE = ("flicker", "consistency")      # video quality: the same whatever the caption
PER_SHAPE = ("shape_colour", "shape_class", "size", "motion", "direction", "speed")

PALETTE = tuple(synth.COLOURS)
PALETTE_RGB = np.array([synth.COLOURS[c] for c in PALETTE], np.float32)
PALETTE_LAB = rgb_to_lab(PALETTE_RGB)

TAU_BG = 14.0           # CIELAB distance within which a pixel is a shade of the background colour
TAU_OBJ = 32.0          # ... within which a pixel takes its nearest palette colour (blur, drift)
MIX_SHARE, TAU_MIX = 0.3, 10.0   # a mix of an object colour (share >= 0.3) and the background, within 10
ALPHA_RANGE = (BG_ALPHA[0] - 0.05, BG_ALPHA[1] + 0.05)   # background shades, with some slack
MIN_AREA = 0.0004       # fraction of s^2: smaller components are noise (a shrunk small shape is ~0.0007)
MIN_PEAK_AREA = 0.0025  # fraction of s^2: an object is at least this big in some frame
# what makes a colour track an object (_is_object), measured on truth through H.264, blurred truth
# and blobs of smoothed colour noise: the median soft IoU with its best shape drawing (>= 0.67,
# >= 0.64; 0.24-0.79) and the median CIELAB distance of its pixels from its mean colour (small
# shapes up to 15, large ones <= 10; blurred <= 10; noise >= 12.2, >= 13 where the IoU >= 0.69)
OBJECT_IOU_ALONE = 0.8
OBJECT_IOU, MAX_SPREAD = 0.6, 12.0
# ... and the median |second difference of log area| between frames: truth <= 0.22 at 8 fps (<= 0.31
# on 8 frames at 4 fps), blurred <= 0.13; blobs of a tokenizer decoding random tokens >= 0.36
MAX_AREA_JITTER = 0.35
MIN_PRESENCE = 0.4      # an object is seen in at least this fraction of frames
THIN = 0.2              # a component keeping less than this after a 1-px erosion is an edge halo
TOUCH = 2               # pixels: an object this close to another is partly hidden (not measured)
TINY_AREA_PX = 60       # an object last seen smaller may fade out without counting as gone
MIN_CLASSIFY_R = 5.0    # pixels: smaller objects are not classified (a shrunk shape at the end)
CLASSIFY_SIGMA = 0.8    # pixels: both masks blurred so before matching (4:2:0 chroma is blocky at 2 px)
PLAIN_L = 8.0           # CIELAB L spread (5-95%) under which a background is plain
MIN_GROWTH = 0.1        # log radius per second: slower is not growing (the world's rate is 0.35)
SPIN_MIN = 0.04         # turns per second: a slower turn is "not turning"
SIZE_R = {k: v / 2 for k, v in synth.SIZES.items()}     # radius, fraction of the short side

_SHAPE_TEMPLATES = {}


def _templates():
    """Per shape: area / r^2 and the centroid's offset from the centre / r, at angle 0."""
    if not _SHAPE_TEMPLATES:
        n, r = 401, 100.0
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
        for k in synth.SHAPES:
            ys, xs = np.nonzero(synth._shape_mask(k, xx, yy, 200.0, 200.0, r, 0.0))
            _SHAPE_TEMPLATES[k] = (len(xs) / r ** 2, (xs.mean() - 200) / r, (ys.mean() - 200) / r)
    return _SHAPE_TEMPLATES


# ------------------------------------------------------------------------------------- results
@dataclass
class ObjectTrack:
    """One object (a colour track) of a video. Per-frame arrays have one entry per frame (NaN or
    None where the object is not measured: absent, partly hidden, or too small)."""
    colour: str
    present: np.ndarray            # T bool
    valid: np.ndarray              # T bool: present, not touching another object
    area: np.ndarray               # T float, pixels
    cx: np.ndarray                 # T float, centroid, pixels
    cy: np.ndarray
    lab: np.ndarray                # T x 3 mean CIELAB colour
    frame_shape: list              # T shape class (or None)
    frame_iou: np.ndarray = None   # T soft IoU of that class's drawing with the object (NaN: not classified)
    spread: np.ndarray = None      # T median CIELAB distance of its pixels from its mean colour (flatness)
    masks: dict = field(default_factory=dict, repr=False)   # t -> (y0, x0, mask, soft mask in [0, 1]) crops
    angle: np.ndarray = None       # T turn since the start, radians (0 unless it spins)
    shape: str | None = None
    radius: float = float("nan")   # start radius, fraction of the short side
    size: str | None = None
    rotation_rate: float = 0.0     # turns per second, + clockwise on screen
    turn_signal: bool = False      # the shape has an orientation that a turn would show
    motion: str | None = None
    fits: dict = field(default_factory=dict)   # (motion, direction, speed) -> RMS error / short side
    consistency: float = 0.0

    def direction_for(self, motion: str | None, direction: str | None = None) -> str | None:
        """The direction read in the family of the caption's motion (see the module docstring)."""
        fam = _family(motion, direction)
        if fam == "spins":
            if not self.turn_signal or abs(self.rotation_rate) < SPIN_MIN:
                return None
            return "clockwise" if self.rotation_rate > 0 else "counterclockwise"
        if fam in ("translate", "circles"):
            return _best(self.fits, fam, 1)
        return None

    def speed_for(self, motion: str | None) -> str | None:
        fam = _family(motion, None)
        if fam == "spins":
            if not self.turn_signal:
                return None
            rate = abs(self.rotation_rate)
            return min(synth.SPIN_RATE, key=lambda k: abs(math.log(max(rate, 1e-3) / synth.SPIN_RATE[k])))
        if fam in ("translate", "circles", "bounces"):
            return _best(self.fits, fam, 2)
        return None

    def summary(self) -> dict:
        return {"colour": self.colour, "shape": self.shape, "size": self.size, "radius": round(self.radius, 4),
                "motion": self.motion, "rotation_rate": round(self.rotation_rate, 3),
                "presence": round(float(self.present.mean()), 3), "consistency": round(self.consistency, 3)}


def _family(motion, direction) -> str | None:
    if motion in ("moves", "zigzags") or (motion is None and direction in synth.DIRECTIONS):
        return "translate"
    if motion in ("circles", "spins", "bounces"):
        return motion
    if motion is None and direction in synth.ROTATIONS:
        return "circles"
    return None


_FAMILY_MOTIONS = {"translate": ("moves", "zigzags"), "circles": ("circles",), "bounces": ("bounces",)}


def _best(fits: dict, fam: str, index: int) -> str | None:
    """Among fits of ``fam``, the ``index``-th key part (1 direction, 2 speed) of least error."""
    best = {}
    for key, err in fits.items():
        if key[0] in _FAMILY_MOTIONS[fam]:
            v = key[index]
            best[v] = min(best.get(v, np.inf), err)
    return min(best, key=best.get) if best else None


@dataclass
class Analysis:
    """What a video shows, without its caption."""
    frames: int
    height: int
    width: int
    fps: float
    bg_colour: str | None
    bg_pattern: str | None
    objects: list[ObjectTrack]
    flicker: float                 # score in [0, 1], 1 = no flicker
    consistency: float             # score in [0, 1]
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"bg_colour": self.bg_colour, "bg_pattern": self.bg_pattern, "count": len(self.objects),
                "objects": [o.summary() for o in self.objects], "flicker": round(self.flicker, 4),
                "consistency": round(self.consistency, 4)}


# ------------------------------------------------------------------------------------- pixels
def _shade_lut(colour_rgb: np.ndarray, n: int = 91) -> tuple[np.ndarray, np.ndarray]:
    alphas = np.linspace(*ALPHA_RANGE, n).astype(np.float32)
    return alphas, rgb_to_lab(alphas[:, None] * colour_rgb[None])


def _bg_fit(rgb: np.ndarray, lab: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: distance to the nearest shade of palette colour ``k`` and that shade's alpha.
    ``rgb``, ``lab``: ``... x 3`` float32."""
    c = PALETTE_RGB[k]
    alphas, lut = _shade_lut(c)
    a = (rgb @ c) / float(c @ c)
    idx = np.clip(np.rint((a - alphas[0]) / (alphas[1] - alphas[0])), 0, len(alphas) - 1).astype(np.int64)
    return np.linalg.norm(lab - lut[idx], axis=-1), a


def _background_colour(rgb: np.ndarray, lab: np.ndarray) -> int:
    """The palette colour whose shades explain most pixels (ties: the one seen at full brightness,
    so that a plain gray is gray, not white at half brightness)."""
    stats = []
    for k in range(len(PALETTE)):
        d, a = _bg_fit(rgb, lab, k)
        ok = d < TAU_BG
        stats.append((ok.mean(), np.percentile(a[ok], 90) if ok.any() else 0.0))
    top = max(s[0] for s in stats)
    cands = [k for k, s in enumerate(stats) if s[0] >= 0.9 * top]
    return max(cands, key=lambda k: (min(stats[k][1], 1.0), stats[k][0]))


# ------------------------------------------------------------------------------------- analysis
def analyse(video: np.ndarray, fps: float = 8.0) -> Analysis:
    """``video``: ``T x H x W x 3`` uint8 RGB at ``fps`` -> :class:`Analysis`."""
    from scipy import ndimage
    t0 = time.perf_counter()
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] < 1:
        raise ValueError(f"expected a T x H x W x 3 video, got shape {video.shape}")
    T, H, W, _ = video.shape
    s = min(H, W)
    rgb = video.astype(np.float32)
    lab = rgb_to_lab(rgb)
    sub = (slice(None, None, max(1, T // 8)), slice(None, None, 3), slice(None, None, 3))
    bg = _background_colour(rgb[sub].reshape(-1, 3), lab[sub].reshape(-1, 3))
    dist_bg, alpha = _bg_fit(rgb, lab, bg)
    bg_mask = dist_bg < TAU_BG
    # squared distances to the palette as |x|^2 - 2 x.p + |p|^2: one matrix product, T x H x W x 12
    d2 = (lab * lab).sum(-1, keepdims=True) - 2 * lab @ PALETTE_LAB.T + (PALETTE_LAB ** 2).sum(-1)
    d2[..., bg] = np.inf
    near = d2.argmin(-1)
    labels = np.where(~bg_mask & (np.take_along_axis(d2, near[..., None], -1)[..., 0] < TAU_OBJ ** 2),
                      near, -1).astype(np.int8)
    del d2
    _label_mixtures(labels, rgb, alpha, bg_mask, bg)

    # per frame and colour: the largest component, unless it is a thin halo at a bigger object
    min_area = max(3.0, MIN_AREA * s * s)
    eight = np.ones((3, 3), bool)
    comps = {}                                   # (t, k) -> (area, slices, mask crop)
    for t in range(T):
        present = np.bincount(labels[t].ravel() + 1, minlength=len(PALETTE) + 1)[1:]
        for k in np.nonzero(present >= min_area)[0]:
            lbl, n = ndimage.label(labels[t] == k, structure=eight)
            sizes = np.bincount(lbl.ravel())[1:]
            j = int(sizes.argmax())
            if sizes[j] < min_area:
                continue
            sl = ndimage.find_objects(lbl)[j]
            comps[t, int(k)] = (int(sizes[j]), sl, lbl[sl] == j + 1)
    # a halo: a component at the edge of a bigger one of another colour that is thin (H.264's
    # chroma fringe) or made of mixes of that colour with the background (a blurred edge, e.g. the
    # olive rim of a yellow shape on black); its pixels go to the bigger one
    by_frame = {}
    for (t, k), c in comps.items():
        by_frame.setdefault(t, []).append((k, c))
    halos, a_loc = [], {}
    for (t, k), (area, sl, m) in sorted(comps.items(), key=lambda kv: kv[1][0]):
        near = _paste(ndimage.binary_dilation(np.pad(m, TOUCH), eight, iterations=TOUCH), sl, H, W, TOUCH)
        thin = ndimage.binary_erosion(m, eight).sum() < THIN * area
        for o, (area2, sl2, m2) in by_frame[t]:
            if o == k or (t, o) in halos or not (near & _paste(m2, sl2, H, W)).any():
                continue
            if t not in a_loc:
                a_loc[t] = _local_alpha(alpha[t], bg_mask[t])
            # (mixes of the colours as seen: a codec's colour cast moves both)
            mixed = lambda c, sl_, m_: (_mix_residual(rgb[t][sl_][m_], seen[c],
                                                      a_loc[t][sl_][m_][:, None] * PALETTE_RGB[bg]) < TAU_MIX).mean()
            seen = {k: np.median(rgb[t][sl][m], axis=0), o: np.median(rgb[t][sl2][m2], axis=0)}
            # never when the neighbour is itself a mix of this colour with the background: then it
            # is this one's blurred rim (which can outgrow a small or thin core)
            if mixed(k, sl2, m2) < 0.3 and ((thin and area2 > area) or mixed(o, sl, m) >= 0.6):
                halos.append((t, k))
                labels[t][sl][m] = o
                break
    for key in halos:
        del comps[key]

    colours = sorted({k for (_, k) in comps})
    objects = []
    for k in colours:
        ts = [t for t in range(T) if (t, k) in comps]
        if len(ts) < MIN_PRESENCE * T or max(comps[t, k][0] for t in ts) < MIN_PEAK_AREA * s * s:
            continue
        objects.append(k)
    tracks = [_measure(k, comps, labels, rgb, lab, alpha, bg_mask, bg, T, H, W) for k in objects]
    _mark_touching(tracks, T, H, W)
    times = np.arange(T) / float(fps)
    for tr in tracks:
        _rotation(tr, times)
        _classify(tr)
    tracks = [tr for tr in tracks if _is_object(tr)]
    for tr in tracks:
        _fit_motion(tr, times, H, W)
        _consistency(tr)
    pattern = _bg_pattern(alpha, bg_mask, lab[..., 0], s)
    flicker = _flicker(lab, bg_mask, tracks)
    consistency = float(np.mean([tr.consistency for tr in tracks])) if tracks else 0.0
    return Analysis(T, H, W, float(fps), PALETTE[bg], pattern, tracks, flicker, consistency,
                    time.perf_counter() - t0)


def _paste(m: np.ndarray, sl, H: int, W: int, grow: int = 0) -> np.ndarray:
    """A crop mask ``m`` whose top-left is ``sl`` less ``grow`` pixels (a crop padded by ``grow``)
    -> H x W mask."""
    full = np.zeros((H + 2 * grow, W + 2 * grow), bool)
    full[sl[0].start:sl[0].start + m.shape[0], sl[1].start:sl[1].start + m.shape[1]] = m
    return full[grow:grow + H, grow:grow + W]


def _local_alpha(alpha: np.ndarray, bg_mask: np.ndarray, size: int = 9) -> np.ndarray:
    """Per pixel, the mean background brightness (alpha) of the background pixels around it."""
    from scipy import ndimage
    m = bg_mask.astype(np.float32)
    k = (1,) * (alpha.ndim - 2) + (size, size)
    num = ndimage.uniform_filter(alpha * m, k, mode="nearest")
    den = ndimage.uniform_filter(m, k, mode="nearest")
    return np.where(den > 0.05, num / np.maximum(den, 1e-6), 1.0)


def _mix_residual(p: np.ndarray, o: np.ndarray, q: np.ndarray, share: tuple = (0.15, 0.95)) -> np.ndarray:
    """CIELAB distance of pixels ``p`` (N x 3 RGB) from the nearest mix ``beta o + (1 - beta) q``
    (``q``: N x 3 local background colours), inf where the share ``beta`` is outside ``share``."""
    seg = o - q
    beta = ((p - q) * seg).sum(-1) / np.maximum((seg * seg).sum(-1), 1e-6)
    d = np.linalg.norm(rgb_to_lab(p) - rgb_to_lab(q + np.clip(beta, 0, 1)[:, None] * seg), axis=-1)
    return np.where((beta >= share[0]) & (beta <= share[1]), d, np.inf)


def _label_mixtures(labels, rgb, alpha, bg_mask, bg: int) -> None:
    """Pixels of no palette colour that are a mix of one (at least MIX_SHARE of it) and the local
    background take that colour: the soft edges and thin parts of a blurred shape (in place)."""
    todo = (labels == -1) & ~bg_mask
    if not todo.any():
        return
    p = rgb[todo]
    q = _local_alpha(alpha, bg_mask)[todo][:, None] * PALETTE_RGB[bg]
    best, best_d = np.full(len(p), -1, np.int8), np.full(len(p), np.inf, np.float32)
    for k in range(len(PALETTE)):
        if k == bg:
            continue
        d = _mix_residual(p, PALETTE_RGB[k], q, (MIX_SHARE, np.inf))
        ok = d < best_d
        best[ok], best_d[ok] = k, d[ok]
    labels[todo] = np.where(best_d < TAU_MIX, best, -1)


def _grow(sl, g, H, W):
    return (slice(max(0, sl[0].start - g), min(H, sl[0].stop + g)), slice(max(0, sl[1].start - g), min(W, sl[1].stop + g)))


def _measure(k, comps, labels, rgb, lab, alpha, bg_mask, bg, T, H, W) -> ObjectTrack:
    """Per-frame mask (unmixed from the background), area, centroid, colour of object ``k``."""
    from scipy import ndimage
    nan = np.full(T, np.nan)
    tr = ObjectTrack(PALETTE[k], np.zeros(T, bool), np.zeros(T, bool), nan.copy(), nan.copy(), nan.copy(),
                     np.full((T, 3), np.nan), [None] * T)
    tr.masks, tr.frame_iou, tr.spread = {}, nan.copy(), nan.copy()
    b = PALETTE_RGB[bg]
    for t in range(T):
        if (t, k) not in comps:
            continue
        area, sl, m = comps[t, k]
        sl2, sl3 = _grow(sl, 3, H, W), _grow(sl, 8, H, W)
        core = ndimage.binary_erosion(m, np.ones((3, 3), bool)) if area > 30 else m
        o = np.median(rgb[t][sl][core if core.any() else m], axis=0)
        # the background's brightness under the object: the mean alpha of background pixels nearby
        a_loc = _local_alpha(alpha[t][sl3], bg_mask[t][sl3])
        inner = (slice(sl2[0].start - sl3[0].start, sl2[0].stop - sl3[0].start),
                 slice(sl2[1].start - sl3[1].start, sl2[1].stop - sl3[1].start))
        shape2 = (sl2[0].stop - sl2[0].start, sl2[1].stop - sl2[1].start)
        beta = _unmix(rgb[t][sl2].reshape(-1, 3), o, a_loc[inner].reshape(-1, 1) * b).reshape(shape2)
        lab2 = labels[t][sl2]
        # a shade of the background is background whatever the unmixing says (the local mean
        # brightness is wrong on small dots and stripes)
        mask = (beta >= 0.5) & ((lab2 == k) | (lab2 == -1)) & ~bg_mask[t][sl2]
        # keep the parts that meet the colour component (not a neighbour's pixels of a similar mix)
        seed = np.zeros(shape2, bool)
        seed[sl[0].start - sl2[0].start:sl[0].stop - sl2[0].start, sl[1].start - sl2[1].start:sl[1].stop - sl2[1].start] = m
        lbl, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
        keep = np.unique(lbl[seed])
        mask = np.isin(lbl, keep[keep > 0])
        if not mask.any():
            mask = seed
        ys, xs = np.nonzero(mask)
        tr.present[t] = True
        tr.area[t] = len(xs)
        tr.cy[t], tr.cx[t] = ys.mean() + sl2[0].start, xs.mean() + sl2[1].start
        soft = np.clip(beta, 0, 1) * ndimage.binary_dilation(mask, np.ones((3, 3), bool))
        # its colour: the mean of the pixels that are mostly object (edges mix)
        pure = mask & (beta >= 0.8)
        px = lab[t][sl2][pure if pure.sum() >= 4 else mask]
        tr.lab[t] = px.mean(0)
        tr.spread[t] = np.median(np.linalg.norm(px - tr.lab[t], axis=-1))
        tr.masks[t] = (sl2[0].start, sl2[1].start, mask, soft)
    return tr


def _mark_touching(tracks: list[ObjectTrack], T: int, H: int, W: int) -> None:
    """``valid[t]``: present and at least TOUCH pixels from every other object's mask (a shape
    touching another may be partly hidden, or merged with its edge)."""
    from scipy import ndimage
    grow = np.ones((2 * TOUCH + 1, 2 * TOUCH + 1), bool)
    for t in range(T):
        full = {}
        for i, tr in enumerate(tracks):
            if t in tr.masks:
                y0, x0, m, _ = tr.masks[t]
                f = np.zeros((H, W), bool)
                f[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
                full[i] = f
        for i, f in full.items():
            near = ndimage.binary_dilation(f, grow)
            tracks[i].valid[t] = not any((near & g).any() for j, g in full.items() if j != i)


# YCbCr with luma weighted up: codecs keep luma edges sharp and blur chroma (4:2:0 halves it)
_UNMIX_SPACE = (np.array([[0.299, 0.587, 0.114], [-0.169, -0.331, 0.5], [0.5, -0.419, -0.081]], np.float32).T
                * np.array([3.0, 1.0, 1.0], np.float32))


def _unmix(p: np.ndarray, o: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per pixel ``p`` (N x 3 RGB), the share ``beta`` of object colour ``o`` in the mix
    ``p = beta o + (1 - beta) q`` with the local background colour ``q`` (N x 3): the projection
    on the segment ``q .. o``, in luma-weighted YCbCr."""
    p, o, q = p @ _UNMIX_SPACE, o @ _UNMIX_SPACE, q @ _UNMIX_SPACE
    seg = o[None] - q
    return ((p - q) * seg).sum(-1) / np.maximum((seg * seg).sum(-1), 1e-6)


def _moments(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised complex moments of orders 1..6 of a mask about its centroid: magnitude, phase."""
    ys, xs = np.nonzero(mask)
    z = (xs - xs.mean()) + 1j * (ys - ys.mean())
    a = np.abs(z)
    mags, phases = np.zeros(6), np.zeros(6)
    for n in range(1, 7):
        c = (z * a * a).sum() / max((a ** 3).sum(), 1e-9) if n == 1 else (z ** n).sum() / max((a ** n).sum(), 1e-9)
        mags[n - 1], phases[n - 1] = abs(c), np.angle(c)
    return mags, phases


def _rotation(tr: ObjectTrack, times: np.ndarray) -> None:
    """Turn rate of the object from the phase of its lowest strong rotational harmonic."""
    ts = [t for t in np.nonzero(tr.valid)[0] if tr.area[t] >= 20]
    tr.angle = np.zeros(len(times))
    if len(ts) < 2:
        return
    mom = {t: _moments(tr.masks[t][2]) for t in ts}
    mags = np.median([mom[t][0] for t in ts], axis=0)
    if mags.max() < 0.1:                      # round: a turn would not show
        return
    n = 1 + int(np.nonzero(mags >= 0.4 * mags.max())[0][0])
    theta = [0.0]
    for a, b in zip(ts[:-1], ts[1:]):
        d = (mom[b][1][n - 1] - mom[a][1][n - 1] + np.pi) % (2 * np.pi) - np.pi
        theta.append(theta[-1] + d / n)
    tt, th = times[ts], np.array(theta)
    slope = float(np.polyfit(tt, th, 1)[0]) if len(ts) >= 2 and tt[-1] > tt[0] else 0.0
    tr.turn_signal = True
    tr.rotation_rate = slope / (2 * np.pi)
    if abs(tr.rotation_rate) >= SPIN_MIN:   # world spins start upright: angle = turn since t = 0
        tr.angle = np.interp(times, tt, th - th[0] + slope * tt[0])


def _classify(tr: ObjectTrack) -> None:
    """Per-frame shape class and the object's majority class: the best match among the
    renderer's shapes drawn at the observed area, centroid and turn (soft IoU of both blurred by
    CLASSIFY_SIGMA, so that a codec's blocky or soft edges do not decide)."""
    from scipy import ndimage
    tpl = _templates()
    votes, ious = {}, {}
    def big(t):   # half the larger side of the mask's box: the radius, for most shapes
        m = tr.masks[t][2]
        return max(np.any(m, 0).sum(), np.any(m, 1).sum()) / 2 >= MIN_CLASSIFY_R

    frames = [t for t in tr.masks if tr.valid[t] and big(t)] or [t for t in tr.masks if tr.valid[t]] or list(tr.masks)
    for t in frames:
        y0, x0, mask, soft = tr.masks[t]
        cx, cy, ang = tr.cx[t] - x0, tr.cy[t] - y0, float(tr.angle[t])
        ca, sa = math.cos(ang), math.sin(ang)
        pad = int(math.ceil(math.sqrt(tr.area[t] / 1.4))) + 3
        ya, yb = int(min(0, cy - pad)), int(max(mask.shape[0], cy + pad + 1))
        xa, xb = int(min(0, cx - pad)), int(max(mask.shape[1], cx + pad + 1))
        yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float32)
        om = np.zeros(yy.shape, np.float32)
        om[-ya:-ya + mask.shape[0], -xa:-xa + mask.shape[1]] = soft if CLASSIFY_SIGMA else mask
        if CLASSIFY_SIGMA:
            om = ndimage.gaussian_filter(om, CLASSIFY_SIGMA)
        area = float(om.sum()) if CLASSIFY_SIGMA else tr.area[t]
        best, best_iou = None, -1.0
        for name, (af, ox, oy) in tpl.items():
            r = math.sqrt(area / af)
            ccx, ccy = cx - (ca * ox - sa * oy) * r, cy - (sa * ox + ca * oy) * r
            tm = synth._shape_mask(name, xx, yy, ccx, ccy, r, ang).astype(np.float32)
            if CLASSIFY_SIGMA:
                tm = ndimage.gaussian_filter(tm, CLASSIFY_SIGMA)
            iou = np.minimum(tm, om).sum() / max(np.maximum(tm, om).sum(), 1e-6)
            if iou > best_iou:
                best, best_iou = name, iou
        tr.frame_shape[t] = best
        tr.frame_iou[t] = best_iou
        votes[best] = votes.get(best, 0) + 1
        ious.setdefault(best, []).append(best_iou)
    tr.shape = max(votes, key=lambda n: (votes[n], np.mean(ious[n]))) if votes else None


def _is_object(tr: ObjectTrack) -> bool:
    """A colour track is an object if it looks like one of the world's shapes, or fairly like one
    and flat in colour (a small shape's pixels are mostly edge pixels, so not very flat), and its
    size is steady; a blob of colour noise or of a random decoding is not."""
    iou, spread = np.nanmedian(tr.frame_iou), np.nanmedian(tr.spread)
    log_area = np.log(tr.area[tr.present])
    # and it keeps its size from frame to frame, or changes it smoothly (grows, shrinks)
    steady = len(log_area) < 4 or np.median(np.abs(np.diff(log_area, 2))) <= MAX_AREA_JITTER
    return bool(steady and (iou >= OBJECT_IOU_ALONE or (iou >= OBJECT_IOU and spread <= MAX_SPREAD)))


def _radii(tr: ObjectTrack) -> np.ndarray:
    af = _templates()[tr.shape][0] if tr.shape else 2.5
    return np.sqrt(tr.area / af)


def _centres(tr: ObjectTrack, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shape centres (the renderer's x, y) from centroids, undoing the class's centroid offset."""
    if not tr.shape:
        return tr.cx, tr.cy
    _, ox, oy = _templates()[tr.shape]
    ca, sa = np.cos(tr.angle), np.sin(tr.angle)
    return tr.cx - (ca * ox - sa * oy) * r, tr.cy - (sa * ox + ca * oy) * r


def _fit_motion(tr: ObjectTrack, times: np.ndarray, H: int, W: int) -> None:
    """Fits every motion hypothesis to the track; sets ``fits``, ``motion``, ``radius``, ``size``."""
    s = min(H, W)
    r_all = _radii(tr)
    x_all, y_all = _centres(tr, r_all)
    ok = tr.valid & np.isfinite(x_all)
    if ok.sum() < 2:
        ok = tr.present & np.isfinite(x_all)
    if ok.sum() < 1:
        return
    t, x, y, r = times[ok], x_all[ok], y_all[ok], r_all[ok]
    rmed = float(np.median(r))

    def err(px, py, pr):
        return float(np.sqrt(np.mean((px - x) ** 2 + (py - y) ** 2 + (pr - r) ** 2))) / s

    fits = {}
    fits["stays still", "", ""] = err(np.median(x), np.median(y), rmed)
    # grows / shrinks at the rate the track shows (a generated or decoded shape need not keep the
    # world's exact rate): log radius fitted on the first 2 s, before the renderer's size limits
    early = t <= t[0] + 2.0
    g, c = np.polyfit(t[early], np.log(r[early]), 1) if early.sum() >= 2 and np.ptp(t[early]) > 0 else (0.0, np.log(rmed))
    growth_r0 = float(np.exp(c))
    for m, sign in (("grows", 1), ("shrinks", -1)):
        if sign * g < MIN_GROWTH:
            fits[m, "", ""] = np.inf
            continue
        pr = np.clip(growth_r0 * np.exp(g * t), r.min(), r.max())     # up to the size where it stops
        fits[m, "", ""] = err(synth._bounce(x[0], pr, W - pr), synth._bounce(y[0], pr, H - pr), pr)
    for m, d, v in itertools.product(("moves", "zigzags"), synth.DIRECTIONS, synth.SPEEDS):
        dx, dy = synth.DIRECTIONS[d]
        dist = synth.SPEEDS[v] * s * t[0]
        x0, y0 = x[0] - dx * dist, y[0] - dy * dist
        if m == "zigzags":
            tri = 2 * abs(((t[0] * 2.0) % 1.0) - 0.5) * 2 - 1
            x0, y0 = x0 + dy * 0.12 * s * tri, y0 - dx * 0.12 * s * tri
        px, py, _, _ = synth.kinematics(m, d, v, x0, y0, rmed, 0.0, t, H, W)
        # refine the start on the first second (noisy first frame), by little: a larger shift
        # would let a mirrored direction fit a shape that meets a wall at once
        early, lim = t <= t[0] + 1.0, 0.03 * s
        x0 += float(np.clip(np.median((x - px)[early]), -lim, lim))
        y0 += float(np.clip(np.median((y - py)[early]), -lim, lim))
        px, py, _, _ = synth.kinematics(m, d, v, x0, y0, rmed, 0.0, t, H, W)
        fits[m, d, v] = err(px, py, rmed)
    phases = np.linspace(0, 1, 48, endpoint=False)
    rad = 0.18 * s
    for d, v in itertools.product(synth.ROTATIONS, synth.SPEEDS):
        a = 2 * np.pi * (phases[:, None] + synth.ROTATIONS[d] * synth.TURN_RATE[v] * t[None])
        cx = (x[None] - rad * np.cos(a)).mean(1)
        cy = (y[None] - rad * np.sin(a)).mean(1)
        e = np.mean((cx[:, None] + rad * np.cos(a) - x) ** 2 + (cy[:, None] + rad * np.sin(a) - y) ** 2, axis=1)
        j = int(e.argmin())
        px, py, _, _ = synth.kinematics("circles", d, v, cx[j], cy[j], rmed, phases[j], t, H, W)
        fits["circles", d, v] = err(px, py, rmed)
    xm = float(np.median(x))
    for v in synth.SPEEDS:
        errs = [err(*synth.kinematics("bounces", "", v, xm, 0.0, rmed, ph, t, H, W)[:2], rmed) for ph in phases]
        fits["bounces", "", v] = min(errs)
    tr.fits = fits
    best = min(fits, key=fits.get)
    tr.motion = best[0]
    if tr.motion == "stays still" and tr.turn_signal and abs(tr.rotation_rate) >= SPIN_MIN:
        tr.motion = "spins"
    start_r = growth_r0 if tr.motion in ("grows", "shrinks") else rmed   # the size said is the size at the start
    tr.radius = start_r / s
    tr.size = min(SIZE_R, key=lambda k: abs(math.log(max(tr.radius, 1e-6) / SIZE_R[k])))


def _consistency(tr: ObjectTrack) -> None:
    """Share of judged frames where the object is there with its colour and shape: a frame where
    it touches another object or is too small to classify is not judged; a frame where it is gone
    counts against it."""
    ok = judged = 0
    ref = np.nanmedian(tr.lab, axis=0) if tr.present.any() else None
    seen = np.nonzero(tr.present)[0]
    for t in range(len(tr.present)):
        if not tr.present[t]:
            # gone: against it, unless it was last (or first) seen tiny (a shrunk shape fades out)
            near = seen[np.argmin(np.abs(seen - t))] if len(seen) else None
            judged += near is None or tr.area[near] >= TINY_AREA_PX
            continue
        if not tr.valid[t] or tr.frame_shape[t] is None:
            continue
        judged += 1
        same_colour = np.linalg.norm(tr.lab[t] - ref) < TAU_OBJ / 2
        ok += bool(same_colour and tr.frame_shape[t] == tr.shape)
    tr.consistency = ok / judged if judged else 0.0


# ------------------------------------------------------------------------------------- background
def _bg_pattern(alpha: np.ndarray, bg_mask: np.ndarray, light: np.ndarray, s: int) -> str | None:
    """The pattern, voted over up to 4 frames: see the module docstring."""
    T, H, W = alpha.shape
    votes = []
    for t in sorted(set(np.linspace(0, T - 1, min(T, 4)).round().astype(int))):
        m = bg_mask[t]
        if m.mean() < 0.2:
            continue
        votes.append(_pattern_of(alpha[t], m, s, light[t]))
    if not votes:
        return None
    return max(set(votes), key=lambda v: (votes.count(v), -votes.index(v)))


def _pattern_of(a: np.ndarray, m: np.ndarray, s: int, light: np.ndarray) -> str:
    """The pattern of one frame: ``a`` its brightness map (alpha), ``m`` its background pixels,
    ``light`` its CIELAB L."""
    H, W = a.shape
    v = a[m]
    top = np.percentile(v, 98)
    a = a / max(top, 1e-3)
    v = a[m]
    spread_l = np.percentile(light[m], 95) - np.percentile(light[m], 5)
    # flat in brightness, relative or absolute (a dark background's alpha is mostly noise)
    if np.percentile(v, 95) - np.percentile(v, 5) < 0.12 or spread_l < PLAIN_L:
        return "plain"
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    rho = np.hypot(xx - (W - 1) / 2, yy - (H - 1) / 2) / (0.5 * math.hypot(H, W))
    var = v.var()

    def r2(*cols):
        X = np.stack([np.ones(m.sum())] + [c[m] for c in cols], 1)
        coef, *_ = np.linalg.lstsq(X, v, rcond=None)
        return 1 - np.mean((X @ coef - v) ** 2) / max(var, 1e-9), coef

    rg, cg = r2(xx / W, yy / H)
    if rg > 0.85 and cg[1] > 0.3 and abs(cg[2]) < 0.3 * cg[1]:
        return "gradient"
    rr, cr = r2(rho)
    if rr > 0.85 and cr[1] < -0.2:
        return "radial"
    # spectrum of the brightness map, the rest (objects) filled with its mean, Hann-windowed
    f = np.where(m, a, v.mean()) - v.mean()
    f = f * np.hanning(H)[:, None] * np.hanning(W)[None, :]
    p = np.abs(np.fft.fft2(f)) ** 2
    fy = np.fft.fftfreq(H)[:, None] * s        # cycles per short side
    fx = np.fft.fftfreq(W)[None, :] * s
    p[0, 0] = 0
    total = p.sum() + 1e-12
    band = lambda c: float(p[c].sum() / total)
    ax, ay = np.abs(fx), np.abs(fy)
    low = band(np.hypot(fx, fy) < 2.5)
    x_axis = band((ay < 1.5) & (ax >= 3.5) & (ax <= 10))
    y_axis = band((ax < 1.5) & (ay >= 3.5) & (ay <= 10))
    diag = band((ax >= 2.5) & (ax <= 5.5) & (ay >= 2.5) & (ay <= 5.5))
    scores = {"stripes": x_axis - 2 * y_axis, "dots": min(x_axis, y_axis) * 2, "checkerboard": diag,
              "noise": low * 0.8}
    return max(scores, key=scores.get)


# ------------------------------------------------------------------------------------- flicker
FLICKER_STEP = 6.0      # CIELAB change counted as a step (twice that for an object's mean colour:
                        # 4:2:0 chroma blocks move a small shape's mean by up to ~9 as it moves)
FLICKER_FULL = 0.1      # reversal rate at which the flicker score reaches 0


def _flicker(lab: np.ndarray, bg_mask: np.ndarray, tracks: list[ObjectTrack]) -> float:
    """1 - (rate of A -> B -> A reversals) / FLICKER_FULL, over background pixels (background in
    three consecutive frames) and the objects' mean colours; 1 for a clip under 3 frames."""
    from scipy import ndimage
    T = lab.shape[0]
    if T < 3:
        return 1.0
    rates, frac = [], []
    sub = (slice(None), slice(None, None, 2), slice(None, None, 2))     # every 4th pixel is plenty
    lab = lab[sub]
    core = ndimage.binary_erosion(bg_mask, np.ones((1, 5, 5), bool))[sub]
    for t in range(1, T - 1):
        keep = core[t - 1] & core[t] & core[t + 1]
        if keep.mean() < 0.02:
            keep = np.ones_like(keep)
        d1 = lab[t][keep] - lab[t - 1][keep]
        d2 = lab[t + 1][keep] - lab[t][keep]
        frac.append(float(_reversals(d1, d2).mean()))
    rates.append(np.mean(frac))
    for tr in tracks:
        c = tr.lab[tr.present & (tr.area >= TINY_AREA_PX)]      # a tiny object's colour is its edge's
        if len(c) >= 3:
            rates.append(float(_reversals(c[1:-1] - c[:-2], c[2:] - c[1:-1], 2 * FLICKER_STEP).mean()))
    return float(max(0.0, 1.0 - np.mean(rates) / FLICKER_FULL))


def _reversals(d1: np.ndarray, d2: np.ndarray, step: float = FLICKER_STEP) -> np.ndarray:
    """Where two consecutive colour changes (``N x 3``) both exceed ``step`` and go back."""
    n1, n2 = (d1 * d1).sum(-1), (d2 * d2).sum(-1)
    dot = (d1 * d2).sum(-1)
    return (n1 > step ** 2) & (n2 > step ** 2) & (dot < -0.5 * np.sqrt(n1 * n2))


# ------------------------------------------------------------------------------------- scoring
def _as_target(target) -> Target:
    if isinstance(target, Target):
        return target
    if isinstance(target, str):
        return parse_caption(target)
    return Target.from_scene(target)        # a synth.Scene or its dict


def match(target: Target, objects: list) -> list:
    """For each caption shape, its object (or None): least total CIELAB distance between the
    caption's colour and the object's colour; a shape of unstated colour takes any object."""
    n, m = len(target.shapes), len(objects)
    if not n or not m:
        return [None] * n
    from scipy.optimize import linear_sum_assignment
    cost = np.zeros((n, m))
    for i, sh in enumerate(target.shapes):
        for j, ob in enumerate(objects):
            if sh.colour is not None:
                cost[i, j] = np.linalg.norm(PALETTE_LAB[PALETTE.index(sh.colour)] - PALETTE_LAB[PALETTE.index(ob.colour)])
    rows, cols = linear_sum_assignment(cost)
    out = [None] * n
    for i, j in zip(rows, cols):
        out[i] = objects[j]
    return out


def score_clip(analysis: Analysis, target) -> dict:
    """Per dimension: ``(points, count)`` for this clip; a dimension the caption does not touch is
    ``(0, 0)``."""
    target = _as_target(target)
    sc = {d: [0.0, 0] for d in DIMENSIONS}

    def add(dim, ok):
        sc[dim][0] += float(ok)
        sc[dim][1] += 1

    matched = match(target, analysis.objects)
    for sh, ob in zip(target.shapes, matched):
        if sh.colour:
            add("shape_colour", ob is not None and ob.colour == sh.colour)
        if sh.shape:
            add("shape_class", ob is not None and ob.shape == sh.shape)
        if sh.size:
            add("size", ob is not None and ob.size == sh.size)
        if sh.motion:
            add("motion", ob is not None and ob.motion == sh.motion)
        if sh.direction and _family(sh.motion, sh.direction) in ("translate", "circles", "spins"):
            add("direction", ob is not None and ob.direction_for(sh.motion, sh.direction) == sh.direction)
        if sh.speed and _family(sh.motion, None) is not None:
            add("speed", ob is not None and ob.speed_for(sh.motion) == sh.speed)
    if target.shapes:
        add("count", len(analysis.objects) == len(target.shapes))
    if target.bg_colour:
        add("bg_colour", analysis.bg_colour == target.bg_colour)
    if target.background:
        add("bg_pattern", analysis.bg_pattern == target.background)
    add("flicker", analysis.flicker)
    add("consistency", analysis.consistency)
    return {d: tuple(v) for d, v in sc.items()}


@dataclass
class Report:
    """Scores over many clips: ``scores[dim]`` = mean over the dimension's items (shapes or
    clips), ``counts[dim]`` how many; ``clips`` the per-clip details."""
    scores: dict
    counts: dict
    clips: list
    seconds_per_clip: float

    def to_dict(self) -> dict:
        return {"dimensions": {d: {"score": None if self.scores[d] is None else round(self.scores[d], 4),
                                   "n": self.counts[d], "kind": "video quality" if d in PROMPT_FREE else "prompt"}
                               for d in DIMENSIONS},
                "clips": self.clips, "n_clips": len(self.clips), "seconds_per_clip": round(self.seconds_per_clip, 3)}

    def table(self, title: str = "") -> str:
        lines = [title] if title else []
        lines.append(f"{'dimension':<14} {'score':>7} {'n':>6}")
        for d in DIMENSIONS:
            v = self.scores[d]
            lines.append(f"{d:<14} {'-' if v is None else f'{100 * v:6.1f}%':>7} {self.counts[d]:>6}")
        lines.append(f"{len(self.clips)} clips, {self.seconds_per_clip:.2f} s per clip")
        return "\n".join(lines)


def summarise(per_clip: list[dict], clips: list[dict], seconds: float) -> Report:
    pts = {d: sum(c[d][0] for c in per_clip) for d in DIMENSIONS}
    cnt = {d: sum(c[d][1] for c in per_clip) for d in DIMENSIONS}
    scores = {d: (pts[d] / cnt[d] if cnt[d] else None) for d in DIMENSIONS}
    return Report(scores, cnt, clips, seconds / max(1, len(per_clip)))


def evaluate(videos, targets, fps=8.0, names=None, progress=None) -> Report:
    """Score each video (``T x H x W x 3`` uint8 array, or a path to a video file) against its
    target (a caption string, a scene spec dict / ``synth.Scene``, or a :class:`Target`).
    ``fps``: one rate for all array videos, or a list (files use their own)."""
    per_clip, clips, total = [], [], 0.0
    for i, (video, target) in enumerate(zip(videos, targets)):
        rate = fps[i] if isinstance(fps, (list, tuple)) else fps
        if isinstance(video, (str, Path)):
            video, rate = load_video(video)
        a = analyse(video, rate)
        total += a.seconds
        sc = score_clip(a, target)
        per_clip.append(sc)
        clips.append({"video": names[i] if names else i, "target": _as_target(target).to_dict(),
                      "scores": {d: (None if n == 0 else round(p / n, 4)) for d, (p, n) in sc.items()},
                      "detected": a.summary()})
        if progress:
            progress()
    return summarise(per_clip, clips, total)


def load_video(path) -> tuple[np.ndarray, float]:
    """A video file -> (``T x H x W x 3`` uint8, fps), through PyAV."""
    from semcodec.video import iter_frames, probe
    info = probe(path)
    return np.stack(list(iter_frames(path))), float(info.fps)


# ------------------------------------------------------------------------------------- command line
HELP = """Score videos of the procedural world against what their captions say (a mini-VBench).

\b
VIDEOS: video files (any container PyAV reads) and / or folders (their video files, sorted by
name; a folder holding a captions.jsonl uses it unless --captions, --caption or --prompts say
otherwise). Each video is read whole at its own frame rate.

\b
What each video should show, one of:
  --captions FILE.jsonl  one JSON object a line, as `semcodec dataset synth` writes: "path"
                         (relative to the file's folder, or absolute; matched by resolved path,
                         then by file name), "caption" and / or "scene" (the scene spec). The
                         scene spec is used when the line has one (--from-caption: the caption)
  --caption TEXT         one caption for every video
  --prompts FILE.txt     one caption a line, in the order of the videos
Captions are parsed by generation.world.parse_caption: every template and synonym of the world
(test-only ones included) and plain prompts in its vocabulary; what a caption leaves out is not
scored.

\b
Output: a table (score per dimension and how many shapes or clips it counts) and, with --json,
{"dimensions": {NAME: {"score", "n", "kind"}}, "n_clips", "seconds_per_clip", "clips": [...]}
with one entry per dimension: shape_colour, shape_class, size, count, motion, direction, speed,
bg_colour, bg_pattern (prompt), flicker, consistency (video quality, prompt-free).

\b
Examples:
  semcodec dataset synth -n 50 -o test/ --split test
  python -m generation.evaluate test/ --json scores.json
  python -m generation.evaluate out.mp4 --caption "A large red star moves slowly to the left on a plain blue background."
"""


def _videos(paths) -> list[Path]:
    from semcodec.video import is_video_file          # semcodec's one list of video extensions
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and is_video_file(f))
        elif p.exists():
            out.append(p)
        else:
            raise ValueError(f"no such video or folder: {p}")
    if not out:
        raise ValueError("no video files found in " + ", ".join(map(str, paths)))
    return out


def _targets_from_jsonl(path: Path, videos: list[Path], from_caption: bool) -> list:
    by_path, by_name = {}, {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
        if "path" not in rec or not ("caption" in rec or "scene" in rec):
            raise ValueError(f"{path}:{n}: a line needs \"path\" and \"caption\" or \"scene\"")
        p = Path(rec["path"])
        p = p if p.is_absolute() else path.parent / p
        by_path[str(p.resolve())] = rec
        by_name.setdefault(p.name, rec)
    out = []
    for v in videos:
        rec = by_path.get(str(v.resolve())) or by_name.get(v.name)
        if rec is None:
            raise ValueError(f"{v}: no line of {path} names it")
        if "scene" in rec and not (from_caption and "caption" in rec):
            out.append(rec["scene"])
        else:
            out.append(rec["caption"])
    return out


def main(argv=None) -> int:
    import click

    @click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.argument("videos", nargs=-1, required=True, type=click.Path())
    @click.option("--captions", type=click.Path(), help="JSONL of path + caption / scene (see above)")
    @click.option("--caption", help="one caption for every video")
    @click.option("--prompts", type=click.Path(), help="text file: one caption a line, in video order")
    @click.option("--from-caption", is_flag=True, help="with --captions: parse the caption even where a scene spec is given")
    @click.option("--json", "json_out", help="write the result JSON here ('-': standard output)")
    @click.option("--per-clip/--no-per-clip", default=True, show_default=True,
                  help="per-clip scores and what was detected, in the JSON")
    @click.option("-q", "--quiet", is_flag=True, help="no table")
    def cmd(videos, captions, caption, prompts, from_caption, json_out, per_clip, quiet):
        files = _videos(videos)
        given = [x is not None for x in (captions, caption, prompts)]
        if sum(given) > 1:
            raise click.UsageError("give one of --captions, --caption, --prompts")
        if caption is not None:
            targets = [caption] * len(files)
        elif prompts is not None:
            lines = [x.strip() for x in Path(prompts).read_text().splitlines() if x.strip()]
            if len(lines) != len(files):
                raise ValueError(f"{prompts} has {len(lines)} prompts for {len(files)} videos")
            targets = lines
        else:
            cap = Path(captions) if captions else None
            if cap is None:
                folders = {Path(v) for v in videos if Path(v).is_dir() and (Path(v) / "captions.jsonl").is_file()}
                if len(folders) != 1:
                    raise click.UsageError("say what the videos should show: --captions, --caption or --prompts")
                cap = folders.pop() / "captions.jsonl"
            targets = _targets_from_jsonl(cap, files, from_caption)
        report = evaluate([str(f) for f in files], targets, names=[str(f) for f in files])
        doc = report.to_dict()
        if not per_clip:
            doc.pop("clips")
        if json_out == "-":
            click.echo(json.dumps(doc, indent=1))
        elif json_out:
            Path(json_out).write_text(json.dumps(doc, indent=1))
        if not quiet and json_out != "-":
            click.echo(report.table())

    try:
        cmd.main(args=argv, prog_name="python -m generation.evaluate", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.UsageError as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return 2
    except (ValueError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        return 1
    except Exception as e:          # a video PyAV cannot read, ...
        from semcodec.video import VideoError
        if isinstance(e, VideoError):
            click.echo(f"error: {e}", err=True)
            return 1
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
