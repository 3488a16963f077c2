"""Group-of-pictures planning and cross-fading.

N frames at the semantic rate are cut into groups of G frames (frame 0 of each is the IFrame);
consecutive groups share ``overlap`` frames (EnCodec-style, default round(0.2 G)), so the stride
is ``G - overlap``. The last group is padded to G by repeating its last frame; its ``valid`` length
is recorded and only valid frames are coded. On the way back, overlapping frames are blended with
linear weights (overlap-add), which reproduces the input exactly when the codec is the identity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class Group:
    index: int
    start: int          # first frame (semantic-rate frame number)
    valid: int          # frames of the video inside this group (<= G)

    @property
    def stop(self) -> int:
        return self.start + self.valid


def plan_groups(n_frames: int, group: int, overlap: int) -> list[Group]:
    """Groups covering frames ``0..n_frames-1``; ``n_frames >= 1``, ``0 <= overlap < group``."""
    if n_frames < 1:
        raise ValueError(f"need at least one frame, got {n_frames}")
    if not 0 <= overlap < group:
        raise ValueError(f"overlap must be in [0, {group}), got {overlap}")
    stride, out, start = group - overlap, [], 0
    while True:
        out.append(Group(len(out), start, min(group, n_frames - start)))
        if start + group >= n_frames:
            return out
        start += stride


def pad_group(frames: np.ndarray, group: int) -> np.ndarray:
    """Pad ``T x ...`` to ``group`` frames by repeating the last one."""
    if len(frames) >= group:
        return frames[:group]
    return np.concatenate([frames, np.repeat(frames[-1:], group - len(frames), axis=0)])


def fade_weights(g: Group, plan_len: int, overlap: int) -> np.ndarray:
    """Per-frame blend weight of group ``g``'s valid frames (linear ramps over the overlaps)."""
    w = np.ones(g.valid, dtype=np.float64)
    ramp = np.arange(1, overlap + 1) / (overlap + 1)
    if g.index > 0 and overlap:
        w[:overlap] = ramp
    if g.index < plan_len - 1 and overlap:
        w[-overlap:] = np.minimum(w[-overlap:], 1.0 - ramp)
    return w


class CrossFader:
    """Streaming overlap-add: ``push(group, frames)`` with consecutive groups yields
    ``(frame_number, frame)`` pairs as soon as no later group can touch them; ``flush()`` ends.
    Weights always follow the whole ``plan``, so decoding a span of groups gives the same frames
    as a full decode wherever every group touching a frame was pushed. Memory holds at most one
    overlap's worth of frames."""

    def __init__(self, plan: list[Group], overlap: int):
        self.plan, self.overlap = plan, overlap
        self._acc: dict[int, tuple[np.ndarray, float]] = {}
        self._next: int | None = None

    def push(self, g: Group, frames: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        if self._next is not None and g.index != self._next:
            raise ValueError(f"groups must be pushed in order: expected {self._next}, got {g.index}")
        self._next = g.index + 1
        w = fade_weights(g, len(self.plan), self.overlap)
        for j in range(g.valid):
            n = g.start + j
            f = frames[j].astype(np.float64) * w[j]
            if n in self._acc:
                a, s = self._acc[n]
                self._acc[n] = (a + f, s + w[j])
            else:
                self._acc[n] = (f, w[j])
        done_before = self.plan[self._next].start if self._next < len(self.plan) else None
        yield from self._emit(done_before)

    def flush(self) -> Iterator[tuple[int, np.ndarray]]:
        yield from self._emit(None)

    def _emit(self, before):
        for n in sorted(self._acc):
            if before is not None and n >= before:
                break
            a, s = self._acc.pop(n)
            yield n, a / s


def crossfade(plan: list[Group], outputs: list[np.ndarray], overlap: int) -> np.ndarray:
    """Whole-video form of :class:`CrossFader`: ``outputs[i]`` holds group i's valid frames."""
    cf, frames = CrossFader(plan, overlap), []
    for g, out in zip(plan, outputs):
        frames += [f for _, f in cf.push(g, out)]
    frames += [f for _, f in cf.flush()]
    return np.stack(frames)
