"""The language model over token streams (DESIGN.md §5).

- :mod:`~generation.lm.layout`: ids (codes, then EOS BOS SOI EOI SOP EOP PAD), sequences,
  :class:`LMDataset` over a token dataset, :class:`LMCollator`;
- :mod:`~generation.lm.model`: :class:`TokenLM` (LLaMA-style decoder with its KV cache), presets;
- :mod:`~generation.lm.text`: frozen text encoders (MiniLM by default, T5 from a folder, hashing);
- :mod:`~generation.lm.sample`: guided sampling with forced specials, streamed groups;
- :mod:`~generation.lm.train`: ``python -m generation.lm.train`` (DDP, packing, exact resume);
- :mod:`~generation.lm.convert`: the authors' released checkpoint layout <-> ours.
"""
from .checkpoint import LMCheckpoint, load_lm, save_lm
from .layout import (SPECIALS, LayoutError, LMCollator, LMDataset, LMVocab, group_ids, lm_ids, parse_lm_sequence,
                     to_lm_sequence)
from .model import PRESETS, LMConfig, TokenLM, build_model, get_preset
from .sample import Group, Samples, generate, sample
from .text import TextEncoder, get_text_encoder

__all__ = ["SPECIALS", "Group", "LMCheckpoint", "LMCollator", "LMConfig", "LMDataset", "LMVocab", "LayoutError",
           "PRESETS", "Samples", "TextEncoder", "TokenLM", "build_model", "generate", "get_preset",
           "get_text_encoder", "group_ids", "lm_ids", "load_lm", "parse_lm_sequence", "sample", "save_lm",
           "to_lm_sequence"]
