"""The JSON form of the frozen dataclass configs that checkpoints carry (``CodecConfig``,
``generation``'s ``LMConfig`` and ``RendererConfig``): one serialisation, written once.

JSON has no tuples, so lists read back as tuples. Unknown fields are refused (``strict``, a
misspelt ``--config`` key) or dropped (a field an older checkpoint saved and the class no longer has).
"""
from __future__ import annotations

import dataclasses
import json


class ConfigDict:
    """Mixin for a frozen dataclass: ``replace``, ``to_dict``, ``to_json``, ``from_dict``."""
    kind = "config"          # how errors name it
    strict = True            # False: unknown fields are dropped

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown and cls.strict:
            raise ValueError(f"unknown {cls.kind} fields: {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})
