"""Data: training clip sources, procedural captioned clips, and token datasets.

``TokenDataset(DS_DIR)`` reads a dataset that ``semcodec dataset build`` wrote (see
``docs/datasets.md``). The language-model layout of its tokens (DESIGN.md §5) is
``generation.lm.layout``'s. Names are imported on first use, so the ``semcodec dataset`` command
group loads neither torch nor pyarrow until a command runs.
"""
from __future__ import annotations

import importlib

_LAZY = {"DatasetError": ".dataset", "TokenDataset": ".dataset", "read_failures": ".dataset",
         "read_meta": ".dataset"}

__all__ = ["DatasetError", "TokenDataset", "read_failures", "read_meta"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'semcodec.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
