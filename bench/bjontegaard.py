"""Bjontegaard delta rate (VCEG-M33): the average bitrate difference between two RD curves at equal
quality, over the quality range both cover.

Each curve is fitted as log(rate) against PSNR by a polynomial (cubic, as in VCEG-M33; lower
degree when a curve has fewer than 4 points) and the fits are integrated over the overlapping PSNR
interval. ``bd_rate`` is ``exp(mean difference) - 1`` in percent: negative means the test curve
needs fewer bits than the anchor for the same quality.
"""
from __future__ import annotations

import math

import numpy as np


def _mean_gap(ax, ay, tx, ty) -> float | None:
    """Mean of (test fit - anchor fit) of y over the x interval both curves cover; None where
    either has fewer than 2 distinct x or the intervals do not overlap."""
    if len(set(ax)) < 2 or len(set(tx)) < 2:
        return None
    ints = []
    for x, y in ((ax, ay), (tx, ty)):
        x, y = np.asarray(x, float), np.asarray(y, float)
        ints.append((np.polyint(np.polyfit(x, y, min(3, len(x) - 1))), x.min(), x.max()))
    (ia, alo, ahi), (it, tlo, thi) = ints
    lo, hi = max(alo, tlo), min(ahi, thi)
    if hi <= lo:
        return None
    area = lambda p: np.polyval(p, hi) - np.polyval(p, lo)
    return float((area(it) - area(ia)) / (hi - lo))


def bd_rate(anchor_rates, anchor_psnr, test_rates, test_psnr) -> float | None:
    """Percent rate change of test against anchor at equal PSNR (None: no PSNR overlap)."""
    gap = _mean_gap(anchor_psnr, np.log(anchor_rates), test_psnr, np.log(test_rates))
    return None if gap is None else float((math.exp(gap) - 1) * 100)


def bd_psnr(anchor_rates, anchor_psnr, test_rates, test_psnr) -> float | None:
    """Mean PSNR difference (dB) of test over anchor at equal log-rate (None: no rate overlap)."""
    return _mean_gap(np.log(anchor_rates), anchor_psnr, np.log(test_rates), test_psnr)
