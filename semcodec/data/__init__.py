"""Data: training clip sources, procedural captioned clips, and token datasets.

``TokenDataset(DS_DIR)`` reads a dataset that ``semcodec dataset build`` wrote (see
``docs/datasets.md``). The language-model layout of its tokens (DESIGN.md §5) is
``generation.lm.layout``'s.
"""
from .dataset import DatasetError, TokenDataset, read_failures, read_meta

__all__ = ["DatasetError", "TokenDataset", "read_failures", "read_meta"]
