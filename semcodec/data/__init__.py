"""Data: training clip sources, procedural captioned clips, and token datasets.

``TokenDataset(DS_DIR)`` reads a dataset that ``semcodec dataset build`` wrote (see
``docs/datasets.md``); ``to_lm_sequence`` / ``parse_lm_sequence`` / ``LMCollator`` give the
language-model layout of DESIGN.md §5.
"""
from .dataset import (DatasetError, LMCollator, LMVocab, TokenDataset, lm_ids, parse_lm_sequence, read_failures,
                      read_meta, to_lm_sequence)

__all__ = ["DatasetError", "LMCollator", "LMVocab", "TokenDataset", "lm_ids", "parse_lm_sequence", "read_failures",
           "read_meta", "to_lm_sequence"]
