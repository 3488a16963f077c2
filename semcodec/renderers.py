"""Renderers: other ways to turn a group's tokens into frames than the model's own decoder.

semcodec does not know any renderer. Packages declare them as entry points of the group
``semcodec.renderers`` (this project's own ``generation`` package declares ``diffusion`` in
``pyproject.toml``); ``semcodec decode --renderer NAME[:WEIGHTS]`` finds them here.

An entry point is a factory ``factory(codec, weights=None, steps=None, seed=0) -> renderer``
(``weights``: a path, or None for the renderer's default for ``codec``). A renderer has

- ``steps``: work units per group (for the progress bar), and ``on_step``: None or a callable the
  renderer calls once per unit;
- ``scale`` (optional, default 1): output pixels per model pixel along each axis;
- ``decode_group(tokens, size)``: what :meth:`semcodec.codec.Codec.decode_group` returns (token ids
  of one group -> ``T x h x w x 3`` float in [-1, 1] at the padded model size ``size``, times
  ``scale``), called for the groups of a stream in order. The codec crops and resizes those frames
  to the source's size as it does its own.

Anything a user can get wrong (unknown name, missing package or weights, weights for another
model) is a :class:`RendererError` with a one-line message.
"""
from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from .errors import SemcodecError

GROUP = "semcodec.renderers"


class RendererError(SemcodecError, ValueError):
    """A renderer that cannot be found or loaded (message is user-facing)."""


def installed() -> dict[str, EntryPoint]:
    """The renderers the installed packages declare, by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_renderer(spec: str, codec, **options):
    """The renderer ``spec`` (``NAME`` or ``NAME:WEIGHTS``) made for ``codec``."""
    name, _, weights = spec.partition(":")
    found = installed()
    if name not in found:
        have = ", ".join(sorted(found)) or "none"
        raise RendererError(f"unknown renderer '{name}' (installed: {have})")
    try:
        factory = found[name].load()
    except Exception as e:          # a plugin whose own imports fail (a missing optional package, ...)
        raise RendererError(f"renderer '{name}' cannot be loaded: {type(e).__name__}: {e}") from None
    return factory(codec, weights=weights or None, **options)
