"""Video in and out with PyAV, and the geometry between a source and the model's frames.

Frames are ``H x W x 3`` uint8 RGB. Semantic frame j is the source frame nearest to time
``j / fps`` (frame-accurate, decoded in order, so memory stays bounded): by index for a constant
frame rate, by timestamp for a variable one (whose duration is kept: it is coded as
``duration * fps`` frames at its average rate). The model sees frames
scaled (keeping the aspect) so the short side is ``short_side`` and the long side at most
``max_long_side``, then edge-padded to a multiple of the patch; :class:`Geometry` records it and
undoes it on the way out.

A source is a path or a seekable binary file object (``open(path, "rb")``, ``io.BytesIO``);
outputs are written atomically to a path.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .errors import SemcodecError
from .limits import LimitError, check_source

# The one list of what semcodec takes as video: what `dataset build` and training search folders
# for, and (OUTPUT_CODECS) what `decode` writes, by extension.
VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv",
                              ".gif"})
OUTPUT_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}


def is_video_file(path) -> bool:
    """A file whose extension is one of ``VIDEO_EXTENSIONS`` (any case)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


class VideoError(SemcodecError):
    """A source that cannot be read as video (message is user-facing)."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int           # frames of the coded video: ``duration * fps`` when the rate varies
    duration: float
    variable: bool = False   # variable frame rate: frames are placed by their timestamps


def _is_file(src) -> bool:
    return hasattr(src, "read") and hasattr(src, "seek")


def source_name(src) -> str:
    """How messages name a source: its path, or a file object's name."""
    if _is_file(src):
        return str(getattr(src, "name", "<file object>"))
    return os.fspath(src)


def _open(path):
    import av
    name = source_name(path)
    if _is_file(path):
        path.seek(0)
        target = path
        if not path.read(1):
            raise VideoError(f"empty file: {name}")
        path.seek(0)
    else:
        p = Path(path)
        if not p.exists():
            raise VideoError(f"no such file: {path}")
        if p.is_dir():
            raise VideoError(f"is a directory, not a video: {path}")
        if p.stat().st_size == 0:
            raise VideoError(f"empty file: {path}")
        target = str(p)
    try:
        c = av.open(target)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(f"not a readable video: {name}") from e
    if not c.streams.video:
        c.close()
        raise VideoError(f"no video stream in {name}")
    return c


def iter_timed_frames(path) -> Iterator[tuple[float | None, np.ndarray]]:
    """Every decoded frame, ``H x W x 3`` uint8 RGB, with its time in seconds (None if unknown)."""
    import av
    c = _open(path)
    try:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in c.decode(stream):
            yield frame.time, frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise VideoError(f"corrupt video data in {source_name(path)}: {e}") from e
    finally:
        c.close()


def iter_frames(path) -> Iterator[np.ndarray]:
    """Every decoded frame, ``H x W x 3`` uint8 RGB."""
    for _, frame in iter_timed_frames(path):
        yield frame


def _packet_times(c, s) -> list[int]:
    """Presentation timestamps of the video packets, sorted (demuxed only: no decoding)."""
    import av
    try:
        return sorted(p.pts for p in c.demux(s) if p.pts is not None and p.size)
    except av.error.FFmpegError:
        return []


def probe(path) -> VideoInfo:
    """Size, rate and frame count of a video: its packets are counted (a container's own count
    may lie) and their timestamps tell a variable frame rate. Videos beyond ``limits`` are
    refused here, before a frame is decoded."""
    import av
    c = _open(path)
    try:
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate or Fraction(25)
        fps = float(rate)
        w, h = s.codec_context.width, s.codec_context.height
        try:
            check_source(w or 1, h or 1, fps)
        except LimitError as e:
            raise VideoError(f"{source_name(path)}: {e}") from None
        pts, tb = _packet_times(c, s), s.time_base
    except av.error.FFmpegError as e:
        raise VideoError(f"corrupt video data in {source_name(path)}: {e}") from e
    finally:
        c.close()
    n = len(pts) or sum(1 for _ in iter_frames(path))
    if n == 0 or not w or not h:
        raise VideoError(f"no decodable frames in {source_name(path)}")
    steps = np.diff(np.asarray(pts, dtype=np.float64)) * float(tb or 0)
    # variable: a frame more than a tick off the nominal rate's grid (a 29.97 fps mkv in
    # milliseconds steps 33 and 34 ms, and is constant)
    if len(steps) > 1 and steps.min() > 0 and np.abs(steps - 1 / fps).max() > 1.5 * float(tb):
        duration = (pts[-1] - pts[0]) * float(tb) + float(np.median(steps))
        return VideoInfo(w, h, fps, max(1, round(duration * fps)), duration, variable=True)
    return VideoInfo(w, h, fps, n, n / fps)


def semantic_frame_count(n_source: int, src_fps: float, fps: float) -> int:
    """Semantic frames for a source of ``n_source`` frames: enough to span its duration."""
    return max(1, math.ceil(n_source * fps / src_fps - 1e-9))


def semantic_source_index(j: int, src_fps: float, fps: float, n_source: int) -> int:
    return min(n_source - 1, int(round(j * src_fps / fps)))


def semantic_uses(n_source: int, src_fps: float, fps: float) -> dict[int, int]:
    """Source frame number -> how many semantic frames it supplies (the nearest to times j / fps;
    frames absent supply none). Sized by the semantic frames, not the source's."""
    uses: dict[int, int] = {}
    for j in range(semantic_frame_count(n_source, src_fps, fps)):
        i = semantic_source_index(j, src_fps, fps, n_source)
        uses[i] = uses.get(i, 0) + 1
    return uses


def blend_at(u: float, semantic_frames: int) -> tuple[int, int, float]:
    """The decoder's in-between rule: a frame at semantic time ``u`` is ``(1 - w) a + w b`` of
    semantic frames ``a`` and ``b``; returns ``(a, b, w)``."""
    a = min(semantic_frames - 1, math.floor(u))
    b = min(semantic_frames - 1, a + 1)
    return a, b, (u - a if b != a else 0.0)


def iter_semantic_frames(path, info: VideoInfo, fps: float) -> Iterator[np.ndarray]:
    """The source frames nearest to times j / fps, j = 0 .. semantic_frame_count - 1."""
    n_sem, j = semantic_frame_count(info.frames, info.fps, fps), 0
    for frame, uses in iter_source_frames(path, info, fps):
        for _ in range(min(uses, n_sem - j)):
            yield frame
            j += 1
        if j == n_sem:
            return


def iter_source_frames(path, info: VideoInfo, fps: float) -> Iterator[tuple[np.ndarray, int]]:
    """Every source frame in order, with how many semantic frames (``iter_semantic_frames``) it
    supplies: the frames nearest to times j / fps. A container that over-reported its frame count
    has its last frame supply the rest."""
    n_sem = semantic_frame_count(info.frames, info.fps, fps)
    pending, j = None, 0                  # a frame's uses are known for sure once the next one came
    if info.variable:
        t0, t_prev = None, 0.0
        for t, frame in iter_timed_frames(path):
            t0 = t if t0 is None else t0
            if pending is not None:
                uses = 0
                if t is not None:
                    mid = (t_prev + t) / 2 - t0          # the previous frame is nearer before mid
                    while j < n_sem and j / fps < mid:
                        uses, j = uses + 1, j + 1
                yield pending, uses
            pending, t_prev = frame, (t if t is not None else t_prev)
    else:
        uses = semantic_uses(info.frames, info.fps, fps)
        for i, frame in enumerate(iter_frames(path)):
            if pending is not None:
                yield pending, uses.get(i - 1, 0)
                j += uses.get(i - 1, 0)
            pending = frame
    if pending is not None:
        yield pending, n_sem - j


@dataclass(frozen=True)
class Geometry:
    """Source size -> scaled size (aspect kept) -> padded size (multiple of the patch)."""
    src: tuple[int, int]       # H, W
    scaled: tuple[int, int]
    padded: tuple[int, int]

    @classmethod
    def fit(cls, src_hw: tuple[int, int], short_side: int, max_long_side: int, patch: int) -> "Geometry":
        h, w = src_hw
        s = min(short_side / min(h, w), max_long_side / max(h, w))
        sh, sw = max(1, round(h * s)), max(1, round(w * s))
        ph, pw = math.ceil(sh / patch) * patch, math.ceil(sw / patch) * patch
        return cls((h, w), (sh, sw), (ph, pw))

    def to_dict(self):
        return asdict(self)


def resize(frames: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """``T x H x W x 3`` float -> ``T x h x w x 3`` (antialiased ``mode``: bilinear or bicubic)."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = frames.permute(0, 3, 1, 2)
    x = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)
    return x.permute(0, 2, 3, 1)


def to_model(frames: np.ndarray, geo: Geometry) -> torch.Tensor:
    """``T x H x W x 3`` uint8 -> ``T x ph x pw x 3`` float in [-1, 1] (scaled, edge-padded)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1
    x = resize(x, geo.scaled)
    dh, dw = geo.padded[0] - geo.scaled[0], geo.padded[1] - geo.scaled[1]
    if dh or dw:
        x = F.pad(x.permute(0, 3, 1, 2), (0, dw, 0, dh), mode="replicate").permute(0, 2, 3, 1)
    return x


def from_model(frames: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """``T x ph x pw x 3`` in [-1, 1] -> ``T x H x W x 3`` float in [0, 255] at the source size
    (bicubic, antialiased when shrinking: the classic anchors of ``bench.rd`` upsample alike, and
    it keeps more of the picture than bilinear when measured back at the model's size)."""
    x = frames[:, :geo.scaled[0], :geo.scaled[1]]
    return resize((x.float() + 1) * 127.5, geo.src, mode="bicubic").clamp_(0, 255)


class VideoWriter:
    """Writes frames to ``path`` atomically (:class:`~semcodec.atomic.AtomicFile`).

    The codec follows the extension (``OUTPUT_CODECS``): H.264 (yuv420p) for .mp4 / .mkv / .mov,
    VP9 for .webm, MPEG-4 for .avi. Odd sizes (which 4:2:0 cannot hold) are written 4:4:4, so the
    output keeps the source size.
    """

    CODECS = OUTPUT_CODECS

    def __init__(self, path, fps: float, size: tuple[int, int], crf: int = 18):
        import av
        from .atomic import AtomicFile
        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in OUTPUT_CODECS:
            raise VideoError(f"unsupported output extension '{ext}' (use {', '.join(sorted(OUTPUT_CODECS))})")
        if not self.path.parent.is_dir():
            raise VideoError(f"output folder does not exist: {self.path.parent}")
        self._out = AtomicFile(self.path, suffix=ext)
        self.size = size
        self._done = False
        try:
            self._c = av.open(str(self._out.tmp), mode="w")
            rate = Fraction(fps).limit_denominator(1001)
            self._s = self._c.add_stream(OUTPUT_CODECS[ext], rate=rate)
            self._s.height, self._s.width = size
            odd = size[0] % 2 or size[1] % 2
            self._s.pix_fmt = "yuv444p" if odd and OUTPUT_CODECS[ext] == "libx264" else "yuv420p"
            if OUTPUT_CODECS[ext] == "libx264":
                self._s.options = {"crf": str(crf), "preset": "medium"}
        except (av.error.FFmpegError, ValueError, ZeroDivisionError) as e:
            self.abort()
            raise VideoError(f"cannot write a {size[1]}x{size[0]} video at {fps:g} fps to {path}: {e}") from None

    def write(self, frame: np.ndarray) -> None:
        import av
        try:
            for pkt in self._s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                self._c.mux(pkt)
        except (av.error.FFmpegError, ValueError) as e:
            raise VideoError(f"cannot write video {self.path}: {e}") from None

    def close(self) -> None:
        import av
        if self._done:
            return
        try:
            for pkt in self._s.encode():
                self._c.mux(pkt)
            self._c.close()
        except (av.error.FFmpegError, ValueError) as e:
            self.abort()
            raise VideoError(f"cannot write video {self.path}: {e}") from None
        self._out.commit()
        self._done = True

    def abort(self) -> None:
        if not self._done:
            try:
                if hasattr(self, "_c"):
                    self._c.close()
            except Exception:
                pass
            self._out.abort()
            self._done = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *a):
        self.abort() if exc_type else self.close()


# ------------------------------------------------------------------------------- in memory
def read_video(src) -> tuple[np.ndarray, float]:
    """A whole video in memory: ``(frames, fps)`` with frames ``T x H x W x 3`` uint8 RGB, every
    decoded frame in order, and the average frame rate. ``src``: a path or a seekable binary file
    object. Videos beyond ``limits`` are refused before a frame is decoded (``VideoError``)."""
    info = probe(src)
    frames = list(iter_frames(src))
    if not frames:
        raise VideoError(f"no decodable frames in {source_name(src)}")
    return np.stack(frames), float(info.fps)


def write_video(path, frames, fps: float, crf: int = 18) -> None:
    """Write ``frames`` (``T x H x W x 3`` uint8, or any iterable of ``H x W x 3`` uint8 frames of one
    size) to ``path`` at ``fps``, atomically; the codec follows the extension (``OUTPUT_CODECS``)."""
    it = iter(frames)
    try:
        first = np.asarray(next(it))
    except StopIteration:
        raise VideoError(f"no frames to write to {path}") from None
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise VideoError(f"frames must be H x W x 3 uint8, got {first.dtype} of shape {first.shape}")
    with VideoWriter(path, fps, first.shape[:2], crf=crf) as w:
        w.write(first)
        for f in it:
            f = np.asarray(f)
            if f.shape != first.shape or f.dtype != np.uint8:
                raise VideoError(f"frames must all be {first.shape} uint8, got {f.dtype} of shape {f.shape}")
            w.write(f)
