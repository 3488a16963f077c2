"""Video file <-> token stream, group by group (the codec proper).

encode: source frames -> semantic frames (nearest in time, ``fps`` of the model) -> model geometry
(scaled, edge-padded) -> groups of G frames overlapping by O -> token ids -> ``tokens.bin``.
decode: token ids -> frames per group -> linear cross-fade of overlaps -> source size -> source
frame rate by linear blending of the two nearest semantic frames -> H.264 MP4 (or what the
extension asks for).

Both directions stream: at most one group of frames (plus one overlap) is held in memory, so peak
memory does not grow with the length of the video.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .bitstream import BitstreamError, GroupRecord, StreamHeader, StreamReader, StreamWriter, read_header
from .checkpoint import Checkpoint
from .gop import CrossFader, Group, plan_groups
from .video import (Geometry, VideoInfo, VideoWriter, from_model, iter_semantic_frames, probe,
                    semantic_frame_count, to_model)
from .limits import MAX_OUTPUT_PIXELS_PER_BYTE, MAX_SEMANTIC_FPS, MIN_SEMANTIC_FPS, LimitError, check_source
from .zoo import load_model, operating_point

DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


class CodecError(ValueError):
    """A request the codec cannot honour (message is user-facing)."""


@dataclass(frozen=True)
class Span:
    """Source frames [first, stop) and the semantic frames / groups needed to make them."""
    first: int
    stop: int
    groups: list[Group]


class Codec:
    """A loaded model ready to encode and decode.

    ``Codec.load(None)`` is the shipped default; ``Codec.load("s128")`` a shipped model by name;
    ``Codec.load("run/final.safetensors")`` any checkpoint.
    """

    def __init__(self, ckpt: Checkpoint, device="cpu"):
        self.ckpt, self.config, self.device = ckpt, ckpt.config, torch.device(device)
        self.model = ckpt.model.to(self.device).eval()
        self.default_fps: float | None = None      # a named operating point's semantic rate
        self.renderer = None        # a plugin that replaces the decoder (semcodec.renderers), or None

    @classmethod
    def load(cls, model: str | Path | None = None, device: str | None = None) -> "Codec":
        """A shipped model by name (or a named operating point, ``zoo.OPERATING_POINTS``) or a
        checkpoint path; None: the shipped default."""
        device = usable_device(device)
        model, fps = operating_point(model)
        codec = cls(load_model(model, device), device)
        codec.default_fps = fps
        return codec

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def content_hash(self) -> str:
        return self.ckpt.content_hash

    @property
    def prior(self) -> np.ndarray | None:
        """The token frequencies shipped with the model (None when it ships none)."""
        c = self.ckpt.token_counts
        return c if c is not None and c.sum() > 0 else None

    # ------------------------------------------------------------------ tokens <-> frames
    def geometry(self, height: int, width: int) -> Geometry:
        c = self.config
        return Geometry.fit((height, width), c.short_side, c.max_long_side, c.patch)

    @torch.inference_mode()
    def encode_group(self, frames: torch.Tensor) -> np.ndarray:
        """``T x h x w x 3`` float in [-1, 1] at the model geometry -> token ids (int64)."""
        return self.model.encode(frames[None].to(self.device))[0].cpu().numpy().astype(np.int64)

    @torch.inference_mode()
    def decode_group(self, tokens: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """token ids -> ``T x h x w x 3`` float in [-1, 1] at the padded model size."""
        if self.renderer is not None:
            return self.renderer.decode_group(tokens, size)
        idx = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=self.device)[None]
        return self.model.decode(idx, size)[0].float().cpu()

    def semantic_fps(self, fps: float | None) -> float:
        """The semantic frame rate to encode at: the model's, or ``fps`` (the rate control: tokens/s
        scale with it). Models trained with ``--fps-choices`` code any rate in that range well."""
        if fps is None:
            return self.default_fps or self.config.fps
        if not (math.isfinite(fps) and MIN_SEMANTIC_FPS <= fps <= MAX_SEMANTIC_FPS):
            raise CodecError(f"--fps must be between {MIN_SEMANTIC_FPS:g} and {MAX_SEMANTIC_FPS:g}, got {fps:g}")
        return float(fps)

    def iter_encode(self, src, info: VideoInfo | None = None, fps: float | None = None
                    ) -> tuple[StreamHeader, Iterator[GroupRecord]]:
        """The stream header (entropy mode still to be set) and a lazy iterator over coded groups,
        at semantic frame rate ``fps`` (default: the model's)."""
        info = info or probe(src)
        c = self.config
        sem_fps = self.semantic_fps(fps)
        geo = self.geometry(info.height, info.width)
        n_sem = semantic_frame_count(info.frames, info.fps, sem_fps)
        plan = plan_groups(n_sem, c.group, c.overlap)
        header = StreamHeader(
            model_name=c.name, model_hash=self.content_hash, src_fps=info.fps, src_width=info.width,
            src_height=info.height, src_frames=info.frames, semantic_fps=sem_fps, semantic_frames=n_sem,
            scaled_height=geo.scaled[0], scaled_width=geo.scaled[1], padded_height=geo.padded[0],
            padded_width=geo.padded[1], group=c.group, overlap=c.overlap, iframe_tokens=c.iframe_tokens,
            pframe_tokens=c.pframe_tokens, codebook_size=c.codebook_size, n_groups=len(plan),
            entropy_mode="fixed", entropy_params={})

        def groups():
            buf: dict[int, torch.Tensor] = {}
            frames = iter_semantic_frames(src, info, sem_fps)
            j = 0
            for g in plan:
                while j < g.stop:
                    buf[j] = to_model(next(frames)[None], geo)[0]
                    j += 1
                clip = torch.stack([buf[k] for k in range(g.start, g.stop)])
                yield GroupRecord(g.index, g.start, g.valid, self.encode_group(clip))
                for k in [k for k in buf if k < g.start + c.group - c.overlap]:
                    del buf[k]
        return header, groups()

    def encode_file(self, src, dst, entropy: str = "adaptive", progress: Callable | None = None,
                    fps: float | None = None) -> StreamHeader:
        """Encode video ``src`` to token stream ``dst`` (written atomically) at semantic rate ``fps``."""
        if entropy == "prior" and self.prior is None:
            raise CodecError(f"model '{self.name}' ships no token prior: use --entropy adaptive or fixed")
        header, groups = self.iter_encode(src, fps=fps)
        header = dataclasses.replace(header, entropy_mode=entropy)
        with StreamWriter(dst, header, prior_counts=self.prior) as w:
            for rec in groups:
                w.write_group(rec)
                if progress:
                    progress(rec)
        return w.header

    # ------------------------------------------------------------------ decoding
    def check_stream(self, header: StreamHeader) -> None:
        """The stream was made by this model, and its header is one this model's encoder writes:
        anything else is refused before any work (a forged header cannot ask for more)."""
        h, c = header, self.config
        if h.model_hash != self.content_hash:
            raise CodecError(f"the stream was made by model '{h.model_name}' ({h.model_hash[:12]}), "
                             f"not by the loaded model '{self.name}' ({self.content_hash[:12]})")
        bad = "the stream's header does not fit model '{}': {} (a forged or damaged file)".format
        for key in ("group", "overlap", "iframe_tokens", "pframe_tokens", "codebook_size"):
            if getattr(h, key) != getattr(c, key):
                raise CodecError(bad(self.name, f"field '{key}' is {getattr(h, key)}, the model's is {getattr(c, key)}"))
        try:
            check_source(h.src_width, h.src_height, h.src_fps)
        except LimitError as e:
            raise CodecError(bad(self.name, f"the source it claims is not one semcodec codes: {e}")) from None
        if not MIN_SEMANTIC_FPS <= h.semantic_fps <= MAX_SEMANTIC_FPS:
            raise CodecError(bad(self.name, f"semantic_fps {h.semantic_fps:g} is outside "
                                            f"{MIN_SEMANTIC_FPS:g}..{MAX_SEMANTIC_FPS:g}"))
        geo = self.geometry(h.src_height, h.src_width)
        if (geo.scaled, geo.padded) != ((h.scaled_height, h.scaled_width), (h.padded_height, h.padded_width)):
            raise CodecError(bad(self.name, f"its model geometry is not the one of a {h.src_width}x{h.src_height} source"))
        n_sem = semantic_frame_count(h.src_frames, h.src_fps, h.semantic_fps)
        if h.semantic_frames != n_sem:
            raise CodecError(bad(self.name, f"{h.src_frames} source frames make {n_sem} semantic frames, "
                                            f"not {h.semantic_frames}"))

    @staticmethod
    def check_output(header: StreamHeader, span: Span, size: int) -> None:
        """Decoding work is bounded by the file's size: the frames asked for may hold at most
        ``MAX_OUTPUT_PIXELS_PER_BYTE`` pixels per byte of the stream."""
        n = span.stop - span.first
        pixels = n * header.src_width * header.src_height
        if pixels > MAX_OUTPUT_PIXELS_PER_BYTE * size:
            raise CodecError(f"the stream asks for {n} frames of {header.src_width}x{header.src_height} from "
                             f"{size} bytes, more than {MAX_OUTPUT_PIXELS_PER_BYTE} pixels per byte (a forged or "
                             f"damaged file; --start / --end decode a part)")

    @staticmethod
    def span(header: StreamHeader, start: float | None, end: float | None) -> Span:
        """Source frames of [start, end) seconds and the groups that produce them."""
        fps, n = header.src_fps, header.src_frames
        for opt, t in (("--start", start), ("--end", end)):
            if t is not None and not math.isfinite(t):
                raise CodecError(f"{opt} must be a finite number of seconds, got {t}")

        def frame_at(t: float) -> int:      # clamped to the video first: no overflow for 1e308
            return math.ceil(min(max(t, 0.0), n / fps + 1) * fps - 1e-9)
        first = 0 if start is None else min(n, frame_at(start))
        stop = n if end is None else min(n, frame_at(end))
        if stop <= first:
            raise CodecError(f"empty span: --start {start} --end {end} holds no frame of a "
                             f"{n / fps:.2f} s video")
        k = header.semantic_fps / fps
        j0 = min(header.semantic_frames - 1, math.floor(first * k))
        j1 = min(header.semantic_frames - 1, math.floor((stop - 1) * k) + 1)
        plan = plan_groups(header.semantic_frames, header.group, header.overlap)
        return Span(first, stop, [g for g in plan if g.start <= j1 and g.stop > j0])

    def iter_decode(self, reader: StreamReader, start: float | None = None, end: float | None = None,
                    progress: Callable | None = None) -> Iterator[np.ndarray]:
        """Source-size uint8 frames of [start, end) seconds, in order. The stream is checked
        (``check_stream``, ``check_output``) on the call, the frames are decoded lazily."""
        h = reader.header
        self.check_stream(h)
        sp = self.span(h, start, end)
        self.check_output(h, sp, reader.size)
        return self._decoded(reader, sp, progress)

    def _decoded(self, reader: StreamReader, sp: Span, progress: Callable | None) -> Iterator[np.ndarray]:
        h = reader.header
        plan = plan_groups(h.semantic_frames, h.group, h.overlap)
        geo = Geometry((h.src_height, h.src_width), (h.scaled_height, h.scaled_width), (h.padded_height, h.padded_width))
        fader = CrossFader(plan, h.overlap)
        k = h.semantic_fps / h.src_fps

        def semantic_frames():
            for g in sp.groups:
                rec = reader.read_group(g.index)
                if (rec.start, rec.valid) != (g.start, g.valid):
                    raise BitstreamError(f"group {g.index} is at frames {rec.start}+{rec.valid}, "
                                         f"the header's layout says {g.start}+{g.valid}")
                frames = self.decode_group(rec.tokens, geo.padded).numpy()
                if progress:
                    progress(rec)
                yield from fader.push(g, frames)
            yield from fader.flush()

        cache: dict[int, np.ndarray] = {}
        sem = semantic_frames()
        for i in range(sp.first, sp.stop):
            u = i * k
            a = min(h.semantic_frames - 1, math.floor(u))
            b = min(h.semantic_frames - 1, a + 1)
            while b not in cache:
                j, f = next(sem)
                cache[j] = from_model(torch.from_numpy(f).float()[None], geo)[0].numpy()
            for j in [j for j in cache if j < a]:
                del cache[j]
            w = u - a if b != a else 0.0
            if w == 0:
                out = np.rint(cache[a])
            else:               # in place: a 4K frame is 100 MB of float32 per temporary
                out = cache[a] * (1 - w)
                out += cache[b] * w
                np.rint(out, out=out)
            yield np.clip(out, 0, 255, out=out).astype(np.uint8)

    def decode_file(self, src, dst, start: float | None = None, end: float | None = None,
                    progress: Callable | None = None, crf: int = 18) -> int:
        """Decode token stream ``src`` to video ``dst`` (atomically); returns frames written."""
        with StreamReader(src, prior_counts=self.prior) as reader:
            h = reader.header
            frames = self.iter_decode(reader, start, end, progress)       # checked before a file is made
            n = 0
            with VideoWriter(dst, h.src_fps, (h.src_height, h.src_width), crf=crf) as w:
                for frame in frames:
                    w.write(frame)
                    n += 1
        return n


def usable_device(device: str | None) -> str:
    """``device`` checked (a known type, present on this machine); None: cuda if there, else cpu."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise CodecError(f"unknown device '{device}' (use {', '.join(DEVICE_TYPES)}, e.g. cuda:0)")
    try:
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError, ValueError, NotImplementedError):
        raise CodecError(f"device '{device}' is not available on this machine") from None
    return device


def stream_stats(path) -> dict:
    """What ``semcodec info`` reports: model, duration, groups, tokens, rates (no model needed)."""
    h = read_header(path)
    with StreamReader(path) as r:
        payload = sum(r.group_sizes())
    tokens = h.total_tokens
    size = Path(path).stat().st_size
    duration = h.src_frames / h.src_fps
    return {
        "file": str(path), "model": h.model_name, "model_hash": h.model_hash,
        "source": {"width": h.src_width, "height": h.src_height, "fps": h.src_fps, "frames": h.src_frames},
        "duration_s": duration, "semantic_fps": h.semantic_fps, "semantic_frames": h.semantic_frames,
        "groups": h.n_groups, "group": h.group, "overlap": h.overlap,
        "iframe_tokens": h.iframe_tokens, "pframe_tokens": h.pframe_tokens, "codebook_size": h.codebook_size,
        "tokens": tokens, "tokens_per_s": tokens / duration,
        "entropy": h.entropy_mode, "bytes": size, "payload_bytes": payload,
        "bits_per_token": 8 * payload / tokens, "kbit_per_s": 8 * size / duration / 1000,
    }
