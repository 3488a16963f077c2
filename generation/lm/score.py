"""Held-out bits per token: the LM's, and two count baselines, on any token dataset.

All figures are bits per **code** (the specials are fixed by the layout; the LM's cost on them is
reported apart), in the dataset's stored order of groups:

- ``unigram``: ``-log2 p(code)`` with the code frequencies of the training dataset (add-1/2);
- ``prev_slot``: "copy the same slot of the previous frame" as a count model: a P-frame's code in
  slot ``j`` given the code in slot ``j`` of the P-frame before it, ``p(x | c) = (n(c, x) +
  beta p_uni(x)) / (n(c) + beta)`` with ``beta = 8`` (the unigram as prior); I-frame codes and
  the first P-frame of a group (whose previous frame is an I-frame of another width) fall back to
  the unigram.
- :func:`lm_bits` runs the LM teacher-forced with its conditions (captions through its frozen
  text encoder, frames, motion; nothing dropped).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from semcodec.data import TokenDataset

PRIOR_STRENGTH = 8.0


def _groups(ds: TokenDataset):
    """Every group of the dataset: (codes int64, valid frames)."""
    for c in range(ds.n_clips):
        valid, offs = ds.group_layout(c)
        toks = ds.clip_tokens(c).astype(np.int64)
        for g in range(len(valid)):
            yield toks[offs[g]:offs[g + 1]], int(valid[g])


def _pairs(codes: np.ndarray, valid: int, I: int, P: int):
    """(previous, current) code pairs of the same slot in consecutive P-frames of one group."""
    if valid < 3:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    p = codes[I:].reshape(valid - 1, P)
    return p[:-1].ravel(), p[1:].ravel()


class CountBaselines:
    """Unigram and previous-slot count models fitted on a training dataset."""

    def __init__(self, train: TokenDataset):
        t = train.meta["tokens"]
        self.K, self.I, self.P = int(t["codebook_size"]), int(t["iframe_tokens"]), int(t["pframe_tokens"])
        uni = np.zeros(self.K, np.float64)
        pair = np.zeros((self.K, self.K), np.float64)
        for codes, valid in _groups(train):
            uni += np.bincount(codes, minlength=self.K)
            a, b = _pairs(codes, valid, self.I, self.P)
            np.add.at(pair, (a, b), 1)
        self.unigram = (uni + 0.5) / (uni.sum() + 0.5 * self.K)
        self.pair = pair
        self.context = pair.sum(1)

    def bits(self, test: TokenDataset) -> dict:
        """``{"unigram", "prev_slot"}`` bits per code on ``test``, and ``codes`` counted."""
        lu = -np.log2(self.unigram)
        uni_bits = prev_bits = 0.0
        n = 0
        for codes, valid in _groups(test):
            uni_bits += lu[codes].sum()
            a, b = _pairs(codes, valid, self.I, self.P)
            pr = (self.pair[a, b] + PRIOR_STRENGTH * self.unigram[b]) / (self.context[a] + PRIOR_STRENGTH)
            prev_bits += -np.log2(pr).sum() + lu[codes].sum() - lu[b].sum()     # the rest: unigram
            n += len(codes)
        return {"unigram": uni_bits / max(n, 1), "prev_slot": prev_bits / max(n, 1), "codes": n}


def baselines(train: TokenDataset, test: TokenDataset) -> dict:
    """Bits per code of the unigram and previous-slot baselines fitted on ``train``, on ``test``."""
    return CountBaselines(train).bits(test)


@torch.no_grad()
def lm_bits(model, lmds, text_encoder, items=None, batch: int = 8, capacity: int | None = None) -> dict:
    """The LM's teacher-forced cost on ``lmds`` (an :class:`~generation.lm.layout.LMDataset`):
    ``{"bits_code", "bits_special", "bits_all", "codes", "specials"}`` (bits per target), over
    ``items`` (default: all)."""
    from .model import packed_inputs
    model.eval()
    items = list(range(len(lmds))) if items is None else list(items)
    K = model.vocab.codebook_size
    tot = {"code": 0.0, "special": 0.0}
    cnt = {"code": 0, "special": 0}
    dev = model.tok_emb.weight.device
    for s in range(0, len(items), batch):
        its = [lmds[i] for i in items[s:s + batch]]
        text = [t[:model.config.max_text_tokens] for t in text_encoder.encode([it["caption"] for it in its])]
        pre = model.prefix(text, torch.tensor([float(it["frames"]) for it in its], device=dev),
                           torch.tensor([it["motion"] for it in its], device=dev))
        x, pos, mask, targets, _ = packed_inputs(model, [it["ids"] for it in its], pre, capacity)
        logp = torch.log_softmax(model(x, pos, mask), -1)
        sel = targets >= 0
        t = targets[sel]
        nll = -logp[sel].gather(-1, t[:, None])[:, 0] / math.log(2)
        code = t < K
        tot["code"] += float(nll[code].sum())
        tot["special"] += float(nll[~code].sum())
        cnt["code"] += int(code.sum())
        cnt["special"] += int((~code).sum())
    n = cnt["code"] + cnt["special"]
    return {"bits_code": tot["code"] / max(cnt["code"], 1), "bits_special": tot["special"] / max(cnt["special"], 1),
            "bits_all": (tot["code"] + tot["special"]) / max(n, 1), "codes": cnt["code"], "specials": cnt["special"]}
