"""What a caption of the procedural world says: attribute targets, from a scene spec or from text.

:class:`Target` is the list of shapes (shape, colour, size, motion, direction, speed) and the
background (colour, pattern, scroll) that a video should show. :meth:`Target.from_scene` reads
it from a scene spec (``semcodec.data.synth.Scene`` or its JSON dict); :func:`parse_caption` from
any caption :mod:`semcodec.data.world` writes (every template and synonym, test-only ones
included) and from plain hand-written prompts in the same vocabulary. An attribute the text does
not state is ``None`` and is not scored.

The parser reads words, not grammar: the text is cut into known words and phrases (longest match
first), the background phrase (its pattern, the colour next to it or to "background", the
direction after "scrolling") is taken out, and every shape noun takes the words from the start
of its noun phrase ("a small purple") up to the start of the next shape's.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from semcodec.data import synth
from semcodec.data.world import BACKGROUND_NOUNS, SCROLL_WORDS, SYNONYMS, TEST_SYNONYMS

# words a person may write that the captions never use
EXTRA_WORDS = {
    "colour": {"grey": "gray", "violet": "purple", "magenta": "pink", "turquoise": "cyan"},
    "size": {"medium size": "medium", "medium sized": "medium", "mid size": "medium", "giant": "large"},
    "shape": {"disk": "circle", "plus": "cross", "moon": "crescent", "hexagonal": "hexagon", "ball": "circle"},
    "motion": {"move": "moves", "moving": "moves", "travelling": "moves", "traveling": "moves",
               "drifting": "moves", "zigzag": "zigzags", "zigzagging": "zigzags", "circle around": "circles",
               "circling": "circles", "orbiting": "circles", "spinning": "spins", "rotating": "spins",
               "bouncing": "bounces", "growing": "grows", "shrinking": "shrinks", "still": "stays still",
               "stationary": "stays still", "motionless": "stays still"},
    "speed": {"slow": "slowly", "quick": "quickly", "steady": "steadily", "rapid": "quickly"},
    "rotation": {"counter clockwise": "counterclockwise", "counter-clockwise": "counterclockwise",
                 "anti-clockwise": "counterclockwise"},
    "background": {"striped": "stripes", "checker": "checkerboard", "checkered": "checkerboard",
                   "dotted": "dots", "spotted": "dots", "noisy": "noise", "gradient": "gradient"},
}


@dataclass
class ShapeTarget:
    """One shape of a caption; ``direction`` is a direction (moves, zigzags) or a rotation sense
    (circles, spins); ``None``: not stated."""
    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    motion: str | None = None
    direction: str | None = None
    speed: str | None = None


@dataclass
class Target:
    """What a video should show: shapes in caption order, and the background."""
    shapes: list[ShapeTarget] = field(default_factory=list)
    background: str | None = None
    bg_colour: str | None = None
    scroll: str | None = None            # "static" or a direction; None: not stated

    @classmethod
    def from_scene(cls, scene) -> "Target":
        """From a ``synth.Scene`` or its ``to_dict()`` (the ``scene`` of a ``captions.jsonl`` line)."""
        if isinstance(scene, dict):
            scene = synth.Scene.from_dict(scene)
        shapes = [ShapeTarget(s.shape, s.colour, s.size, s.motion, s.direction or None, s.speed or None)
                  for s in scene.shapes]
        return cls(shapes, scene.background, scene.bg_colour, scene.scroll)

    def to_dict(self) -> dict:
        return asdict(self)


def _lexicon() -> dict[tuple[str, ...], tuple[str, str]]:
    """word sequence -> (kind, value) for every word the world's captions and people use."""
    lex: dict[tuple[str, ...], tuple[str, str]] = {}

    def add(text: str, kind: str, value: str):
        lex.setdefault(tuple(_words(text)), (kind, value))

    for table in (SYNONYMS, TEST_SYNONYMS):
        for kind, values in table.items():
            for value, words in values.items():
                for w in words:
                    add(w, kind, value)
    for kind, words in EXTRA_WORDS.items():
        for w, value in words.items():
            add(w, kind, value)
    for w in BACKGROUND_NOUNS:
        add(w, "bgnoun", w)
    for w in SCROLL_WORDS + ("scrolls", "scroll"):
        add(w, "scroll", w)
    return lex


_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*|[.,;:!?()]")
_SEPARATORS = set(".,;:!?()")


def _words(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


LEXICON = _lexicon()
_LONGEST = max(len(k) for k in LEXICON)


def _items(text: str) -> list[tuple[str, str]]:
    """The text as (kind, value) items: known phrases (longest first), separators as ("sep", c),
    "sentence" ends; other words are dropped."""
    words, out, i = _words(text), [], 0
    while i < len(words):
        w = words[i]
        if w in _SEPARATORS:
            out.append(("sep", w))
            i += 1
            continue
        for n in range(min(_LONGEST, len(words) - i), 0, -1):
            hit = LEXICON.get(tuple(words[i:i + n]))
            if hit:
                out.append(hit)
                i += n
                break
        else:
            out.append(("word", w))
            i += 1
    return out


def parse_caption(text: str) -> Target:
    """A caption -> :class:`Target`. Words it does not know are ignored; attributes not stated are None."""
    items = _items(text)
    kinds = [k for k, _ in items]
    used = [False] * len(items)
    target = Target()

    def neighbours(i):  # the nearest non-filler items before and after item i
        prev = next((j for j in range(i - 1, -1, -1) if kinds[j] != "word"), None)
        nxt = next((j for j in range(i + 1, len(items)) if kinds[j] != "word"), None)
        return prev, nxt

    bg_anchor = {j for j, k in enumerate(kinds) if k in ("background", "bgnoun")}
    for j in bg_anchor:
        used[j] = True
        if kinds[j] == "background":
            target.background = items[j][1]
    # the background's colour: the colour next to its pattern or noun ("a brown dots background",
    # "the background is dotted brown", "on a brown background")
    for j, k in enumerate(kinds):
        if k == "colour" and target.bg_colour is None:
            prev, nxt = neighbours(j)
            near = {prev, nxt} & bg_anchor
            if near:
                target.bg_colour, used[j] = items[j][1], True
    for j, k in enumerate(kinds):
        if k == "scroll":
            used[j] = True
            nxt = neighbours(j)[1]
            if nxt is not None and kinds[nxt] == "direction":
                target.scroll, used[nxt] = items[nxt][1], True
    if target.background is not None and target.scroll is None:
        target.scroll = "static"

    # shapes: each shape noun owns the items from its noun phrase's start to the next one's
    anchors = [j for j, k in enumerate(kinds) if k == "shape" and not used[j]]
    starts = []
    for a in anchors:
        s = a
        while s > 0 and (kinds[s - 1] in ("size", "colour") and not used[s - 1] or kinds[s - 1] == "word"):
            s -= 1
        starts.append(s)
    for n, a in enumerate(anchors):
        end = starts[n + 1] if n + 1 < len(anchors) else len(items)
        st = ShapeTarget(shape=items[a][1])
        for j in range(starts[n], end):
            k, v = items[j]
            if used[j] or j == a:
                continue
            if k in ("colour", "size", "motion", "speed") and getattr(st, k) is None:
                setattr(st, k, v)
            elif k in ("direction", "rotation") and st.direction is None:
                st.direction = v
        target.shapes.append(st)
    return target
