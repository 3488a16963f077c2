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


@dataclass(frozen=True)
class GopPlan:
    """The groups covering semantic frames ``0 .. frames - 1``: the one home of the GOP arithmetic
    (the codec, the stream header and the CLI all ask it). A sequence of :class:`Group`, computed
    in closed form: group i starts at ``i * stride`` and holds ``min(group, frames - start)``
    frames, for the smallest count of groups that reaches the last frame.
    ``frames >= 1``, ``0 <= overlap < group``; ``ValueError`` otherwise."""
    frames: int
    group: int
    overlap: int

    def __post_init__(self):
        if self.frames < 1:
            raise ValueError(f"need at least one frame, got {self.frames}")
        if not 0 <= self.overlap < self.group:
            raise ValueError(f"overlap must be in [0, {self.group}), got {self.overlap}")

    @property
    def stride(self) -> int:
        return self.group - self.overlap

    def __len__(self) -> int:
        """The smallest ``m`` with ``(m - 1) * stride + group >= frames``."""
        return 1 if self.frames <= self.group else 1 + -(-(self.frames - self.group) // self.stride)

    def __getitem__(self, i: int) -> Group:
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(f"group {i} out of range: the plan has {n} groups")
        start = i * self.stride
        return Group(i, start, min(self.group, self.frames - start))

    def __iter__(self) -> Iterator[Group]:
        return (self[i] for i in range(len(self)))

    def covering(self, first: int, last: int) -> list[Group]:
        """The groups holding any of frames ``first .. last`` (inclusive), in order."""
        lo = max(0, (first - self.group) // self.stride + 1)      # first i with i * stride + group > first
        hi = min(len(self) - 1, last // self.stride)              # last i with i * stride <= last
        return [self[i] for i in range(lo, hi + 1)]


def plan_groups(n_frames: int, group: int, overlap: int) -> list[Group]:
    """Groups covering frames ``0..n_frames-1`` (:class:`GopPlan` as a list)."""
    return list(GopPlan(n_frames, group, overlap))


def count_groups(n_frames: int, group: int, overlap: int) -> int:
    """``len(plan_groups(...))`` without building the list."""
    return len(GopPlan(n_frames, group, overlap))


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
