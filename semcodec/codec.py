"""Video <-> token stream, group by group (the codec proper).

encode: source frames -> semantic frames (nearest in time, ``fps`` of the model) -> model geometry
(scaled, edge-padded) -> groups of G frames overlapping by O -> token ids -> a token stream.
decode: token ids -> frames per group -> linear cross-fade of overlaps -> source size -> source
frame rate by linear blending of the two nearest semantic frames -> frames (or an H.264 MP4, or
what the extension asks for).

The API (README, "Python API")::

    codec = Codec.from_pretrained("s128")           # a shipped name, a checkpoint file or folder
    stream = codec.encode(frames, fps)              # T x H x W x 3 uint8 in memory -> TokenStream
    video = codec.decode(stream)                    # -> T x H x W x 3 uint8, the source's size and rate
    codec.encode_file("in.mp4", "tokens.bin")       # files (or binary file objects), streaming
    codec.decode_file("tokens.bin", "out.mp4", start=2, end=5)

The file forms stream: at most one group of frames (plus one overlap) is held in memory, so peak
memory does not grow with the length of the video.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from . import adaptation
from .bitstream import BitstreamError, GroupRecord, StreamHeader, StreamReader, StreamWriter
from .bitstream.container import links_to_previous
from .bitstream.entropy import DEFAULT_LINK, digest_matches
from .checkpoint import Checkpoint, ModelIdentity
from .errors import OutputError, SemcodecError
from .gop import CrossFader, GopPlan, Group
from .limits import (MAX_ADAPT_STEPS, MAX_OUTPUT_PIXELS_PER_BYTE, MAX_SEARCH_STEPS, MAX_SEMANTIC_FPS, MIN_SEMANTIC_FPS, LimitError,
                     check_semantic_fps, check_source)
from .stream import TokenStream, stream_stats  # noqa: F401  (stream_stats: where it used to live)
from .token_search import DEFAULT_RATE_SLOPE, DEFAULT_STEPS, SHOWN_PER_INTERVAL, GroupRate, ShownFrames, TokenSearch, searchable
from .video import (Geometry, VideoInfo, VideoWriter, blend_at, from_model, iter_source_frames, probe,
                    semantic_frame_count, semantic_uses, to_model)
from .zoo import load_model, model_file, operating_point, shipped_models

DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
ENTROPY = ("context", "adaptive", "prior", "fixed")

# progress callbacks are called as progress(groups done, groups in all)
Progress = Callable[[int, int], None]


class CodecError(SemcodecError, ValueError):
    """A request the codec cannot honour (message is user-facing)."""


@dataclass(frozen=True)
class Span:
    """Source frames [first, stop) and the semantic frames / groups needed to make them."""
    first: int
    stop: int
    groups: list[Group]


def check_target(dst, src=None) -> None:
    """An output path the codec may write: its folder exists, it is not a folder, and it is not
    the input (``src``) under another name (links included). ``OutputError`` otherwise."""
    if not isinstance(dst, (str, Path)):
        return
    parent = Path(dst).resolve().parent
    if not parent.is_dir():
        raise OutputError(f"output folder does not exist: {parent}")
    if Path(dst).is_dir():
        raise OutputError(f"output is a directory: {dst}")
    # samefile compares device and inode: links, hard links and other spellings all count
    if isinstance(src, (str, Path)) and Path(dst).exists() and Path(src).exists() and Path(src).samefile(dst):
        raise OutputError(f"output is the input file: {dst} (writing it would destroy the input)")


class Codec:
    """A loaded model ready to encode and decode.

    ``Codec.from_pretrained()`` is the shipped default, ``Codec.from_pretrained("s128")`` a
    shipped model (or a named operating point, ``zoo.OPERATING_POINTS``) by name,
    ``Codec.from_pretrained("run/final.safetensors")`` any checkpoint (or a folder holding one).
    """

    def __init__(self, ckpt: Checkpoint, device="cpu"):
        self.ckpt, self.config, self.device = ckpt, ckpt.config, torch.device(device)
        self.model = ckpt.model.to(self.device).eval()
        self.default_fps: float | None = None      # a named operating point's semantic rate
        self.renderer = None        # a plugin that replaces the decoder (semcodec.renderers), or None
        self.weights_path: Path | None = None      # where the weights came from (finds the context model)
        self._search_steps: int | None = None       # rounds of encoder-side token search (search_steps)
        self.search_options: dict = {}              # more TokenSearch arguments (rate_slope, relax_steps, ...)
        self._context = None
        self._contexts = None
        self._token_search = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, device: str | None = None,
                        backbone: str | Path | None = None) -> "Codec":
        """A shipped model by name (or a named operating point), a checkpoint file, or a folder
        holding one (``model.safetensors``); None: the shipped default. ``device``: a torch device
        (default: cuda if there, else cpu). ``backbone``: the local folder (or file) of the
        pretrained backbone of a model whose features come from one (``landiff``)."""
        device = usable_device(device)
        model, fps = operating_point(name_or_path)
        codec = cls(load_model(model, device, backbone=backbone), device)
        codec.default_fps = fps
        codec.weights_path = model_file(model)
        return codec

    @classmethod
    def load(cls, model: str | Path | None = None, device: str | None = None) -> "Codec":
        """:meth:`from_pretrained` (the older name)."""
        return cls.from_pretrained(model, device)

    @classmethod
    def for_stream(cls, src, model: str | Path | None = None, device: str | None = None,
                   backbone: str | Path | None = None) -> "Codec":
        """The codec to decode ``src`` (a path, a binary file object, bytes or a TokenStream):
        ``model`` if given, else the shipped model the stream names. The stream's container is
        checked whole first (a damaged file fails before a model is loaded); a name from the
        stream is never taken as a path (a stream must not pick files to load)."""
        header = _stream_header(src)
        if model is None and header.model_name not in shipped_models():
            raise CodecError(f"the stream was made by model '{header.model_name}', which semcodec does not "
                             f"ship: give its checkpoint with --model")
        codec = cls.from_pretrained(model or header.model_name, device, backbone)
        codec.check_stream(header)
        return codec

    @property
    def identity(self) -> ModelIdentity:
        """The model's name and content hash: what its streams and datasets record."""
        return self.ckpt.identity

    @property
    def name(self) -> str:
        return self.ckpt.name

    @property
    def content_hash(self) -> str:
        return self.ckpt.content_hash

    @property
    def prior(self) -> np.ndarray | None:
        """The token frequencies shipped with the model (None when it ships none)."""
        c = self.ckpt.token_counts
        return c if c is not None and c.sum() > 0 else None

    @property
    def context_model(self):
        """The ``context`` entropy model shipped beside the weights (``NAME.context.safetensors``,
        trained for these weights), or None."""
        if self._context is None and self.weights_path is not None:
            from .bitstream.context import find_context_model
            self._context = find_context_model(self.weights_path, self.content_hash) or False
        return self._context or None

    @property
    def context_models(self) -> tuple:
        """Every context model shipped beside the weights for this model: :attr:`context_model`
        (what new streams are coded with) first, then the earlier ones its older streams name
        (``NAME.context.HASH.safetensors``). Reading picks the one a stream names."""
        if self._contexts is None:
            from .bitstream.context import older_context_models
            self._contexts = ((self.context_model, *older_context_models(self.weights_path, self.content_hash))
                              if self.context_model is not None else ())
        return self._contexts

    @property
    def token_hashes(self) -> tuple[str, ...]:
        """The model hashes whose streams this model decodes: its own, then earlier shipped versions
        that make the same tokens (``zoo.SAME_TOKENS``)."""
        from .zoo import SAME_TOKENS
        return (self.content_hash, *SAME_TOKENS.get(self.content_hash[:32], ()))

    @property
    def search_steps(self) -> int:
        """Rounds of token search per group (:mod:`semcodec.token_search`) where an encode call
        gives none: ``token_search.DEFAULT_STEPS`` where the model ships a context model (the bits
        have a price), else 0 (a search on the error alone spends bits blindly). Settable."""
        if self._search_steps is not None:
            return self._search_steps
        return DEFAULT_STEPS if self.context_model is not None else 0

    @search_steps.setter
    def search_steps(self, steps: int) -> None:
        self._search_steps = steps

    def adapt_steps(self, search: int | None = None) -> int:
        """Steps of the decoder adaptation fit (:mod:`semcodec.adaptation`) for an encode with
        ``search`` rounds of token search: ``adaptation.DEFAULT_STEPS`` wherever the search runs on
        a model whose head can adapt (it is the slow, best mode; ``search`` 0 is the fast one), else 0."""
        if self._search(search) is None or not adaptation.count(self.model):
            return 0
        return adaptation.DEFAULT_STEPS

    def _adapted(self, header: StreamHeader, records: list[GroupRecord], keep: dict, steps: int) -> StreamHeader:
        """``header`` with the adaptation fitted to ``records`` against the source frames ``keep``
        where it pays for its bits at the search's price, else ``header`` as it is."""
        if not steps or not keep:
            return header
        bits = 8 * len(TokenStream(header, records, prior=self.prior, context=self.context_model).to_bytes())
        slope = self.search_options.get("rate_slope", DEFAULT_RATE_SLOPE)
        with torch.inference_mode(False):
            ad, _ = adaptation.fit(self.model, header, records, {i: f for i, f in keep.items() if f is not None},
                                   steps=steps, rate_slope=slope, stream_bits=bits)
        if ad is None:
            return header
        return dataclasses.replace(header, adaptation=tuple(int(x) for x in ad.ints), adaptation_step=ad.step)

    def _check_adapt(self, adapt: int | None, search: int | None) -> int:
        steps = self.adapt_steps(search) if adapt is None else adapt
        if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or not 0 <= steps <= MAX_ADAPT_STEPS:
            raise CodecError(f"adaptation steps must be a whole number in 0..{MAX_ADAPT_STEPS}, got {steps!r}")
        if steps and (self.renderer is not None or not adaptation.count(self.model)):
            raise CodecError(f"model '{self.name}' has no decoder head to adapt: use --adapt 0")
        return int(steps)

    @property
    def default_entropy(self) -> str:
        """``context`` when the model ships a context model, else ``adaptive``."""
        return "context" if self.context_model is not None else "adaptive"

    def __repr__(self) -> str:
        return f"Codec({self.identity}, preset {self.config.name!r}, {self.device})"

    # ------------------------------------------------------------------ tokens <-> frames
    def geometry(self, height: int, width: int) -> Geometry:
        c = self.config
        return Geometry.fit((height, width), c.short_side, c.max_long_side, c.patch)

    @torch.inference_mode()
    def encode_group(self, frames: torch.Tensor) -> np.ndarray:
        """``T x h x w x 3`` float in [-1, 1] at the model geometry -> token ids (int64)."""
        return self.model.encode(frames[None].to(self.device))[0].cpu().numpy().astype(np.int64)

    @torch.inference_mode()
    def decode_group(self, tokens: np.ndarray, size: tuple[int, int], features=None) -> torch.Tensor:
        """token ids -> ``T x h x w x 3`` float in [-1, 1] at the padded model size; ``features``:
        the feature space that draws them (a stream's adaptation of it; default the model's)."""
        if self.renderer is not None:
            return self.renderer.decode_group(tokens, size)
        idx = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=self.device)[None]
        if features is None:
            return self.model.decode(idx, size)[0].float().cpu()
        feats = self.model.tokenizer.decode(idx, self.model.grid_for(size))
        return features.render(feats).clamp(-1, 1)[0].float().cpu()      # adapted models have no flow (adaptation.count)

    def semantic_fps(self, fps: float | None) -> float:
        """The semantic frame rate to encode at: the model's, or ``fps`` (the rate control: tokens/s
        scale with it). Models trained with ``--fps-choices`` code any rate in that range well."""
        if fps is None:
            return self.default_fps or self.config.fps
        try:
            return check_semantic_fps(fps)
        except LimitError as e:
            raise CodecError(str(e)) from None

    # ------------------------------------------------------------------ encoding
    def _header(self, info: VideoInfo, sem_fps: float, entropy: str | None) -> StreamHeader:
        """The header of a stream of ``info``'s video (``entropy`` None: ``default_entropy``); its
        entropy parameters are completed by the writer (``StreamWriter.header``,
        ``TokenStream.header``)."""
        entropy = entropy or self.default_entropy
        if entropy not in ENTROPY:
            raise CodecError(f"entropy must be one of {', '.join(ENTROPY)}, got {entropy!r}")
        if entropy == "prior" and self.prior is None:
            raise CodecError(f"model '{self.name}' ships no token prior: use --entropy adaptive or fixed")
        if entropy == "context" and self.context_model is None:
            raise CodecError(f"model '{self.name}' ships no context model: use --entropy adaptive or fixed")
        c = self.config
        geo = self.geometry(info.height, info.width)
        n_sem = semantic_frame_count(info.frames, info.fps, sem_fps)
        header = StreamHeader(
            model_name=self.name, model_hash=self.content_hash, src_fps=info.fps, src_width=info.width,
            src_height=info.height, src_frames=info.frames, semantic_fps=sem_fps, semantic_frames=n_sem,
            scaled_height=geo.scaled[0], scaled_width=geo.scaled[1], padded_height=geo.padded[0],
            padded_width=geo.padded[1], group=c.group, overlap=c.overlap, iframe_tokens=c.iframe_tokens,
            pframe_tokens=c.pframe_tokens, codebook_size=c.codebook_size,
            n_groups=len(GopPlan(n_sem, c.group, c.overlap)), entropy_mode=entropy, entropy_params={})
        return dataclasses.replace(header, entropy_params=self.entropy_params(header, entropy))

    def entropy_params(self, header: StreamHeader, entropy: str) -> dict:
        """Entropy parameters the writer cannot know: the context mode's token lattices are this
        model's (``model.masks.lattice_shape`` of the padded grid)."""
        if entropy != "context":
            return {}
        from .model.masks import lattice_shape
        grid = (header.padded_height // self.config.patch, header.padded_width // self.config.patch)
        c = self.config
        return {"iframe_rows": lattice_shape(c.iframe_tokens, grid)[0],
                "pframe_rows": lattice_shape(c.pframe_tokens, grid)[0] if c.pframe_tokens else 0}

    def _search(self, steps: int | None):
        """The token search of ``steps`` rounds (None: ``search_steps``), or None for none."""
        steps = self.search_steps if steps is None else steps
        if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or not 0 <= steps <= MAX_SEARCH_STEPS:
            raise CodecError(f"search steps must be a whole number in 0..{MAX_SEARCH_STEPS}, got {steps!r}")
        steps = int(steps)
        if not steps or self.renderer is not None or not searchable(self.model):
            return None
        key = (steps, tuple(sorted(self.search_options.items())))
        if self._token_search is None or self._token_search[0] != key:
            self._token_search = key, TokenSearch(self.model, steps, **self.search_options)
        return self._token_search[1]

    def _coded_groups(self, header: StreamHeader, source: Iterator[tuple[np.ndarray, int]],
                      search: int | None = 0, in_step: bool = True,
                      keep: dict[int, torch.Tensor] | None = None) -> Iterator[GroupRecord]:
        """Source frames (``H x W x 3`` uint8, in order, each with the count of semantic frames it
        supplies: :func:`~semcodec.video.iter_source_frames`) -> one coded group at a time. Each
        group's ids are searched for ``search`` rounds (:mod:`semcodec.token_search`; None:
        ``search_steps``) against the source frames its decode is shown as, where the source's
        frames are ``in_step`` with the decoder's (a variable frame rate is not: the search then
        scores the semantic frames alone). ``keep``: a dict whose keys are source frame numbers,
        filled with those frames at the model's size (the adaptation's targets)."""
        h = header
        geo = Geometry((h.src_height, h.src_width), (h.scaled_height, h.scaled_width), (h.padded_height, h.padded_width))
        finder = self._search(search)
        layout = None
        if finder is not None and self.context_model is not None:
            # bits as the context model counts them, whatever the stream's entropy mode: the ids
            # are then the same in every mode
            layout = self.context_model.layout_for(h, self.entropy_params(h, "context"))
            link = h.entropy_params.get("link", DEFAULT_LINK)
        plan = GopPlan(h.semantic_frames, h.group, h.overlap)
        k = h.semantic_fps / h.src_fps
        per_interval = SHOWN_PER_INTERVAL * k           # at most that many source frames scored per semantic frame
        prev, before = None, {}
        buf: dict[int, torch.Tensor] = {}               # semantic frames by index
        shown: dict[int, torch.Tensor] = {}             # source frames by index, where the search scores them
        j = i = 0
        ended = False

        def read() -> None:
            nonlocal i, j, ended
            try:
                frame, uses = next(source)
            except StopIteration:
                ended = True
                return
            wanted = keep is not None and i in keep
            scored = finder is not None and in_step and \
                (uses or i == 0 or math.floor(i * per_interval) != math.floor((i - 1) * per_interval))
            if wanted or uses or scored:
                m = to_model(frame[None], geo)[0]
                if wanted:
                    keep[i] = m
                for _ in range(uses):
                    buf[j] = m
                    j += 1
                if scored:
                    shown[i] = m
            i += 1

        for g in plan:
            while j < g.stop and not ended:
                read()
            if j < g.stop:
                raise CodecError(f"the video ended at semantic frame {j}, the header needs {h.semantic_frames}")
            nxt = g.start + h.group - h.overlap                # the next group's first frame
            clip = torch.stack([buf[n] for n in range(g.start, g.stop)])
            ids = self.encode_group(clip)
            if finder is not None:
                last = g.index == len(plan) - 1
                while in_step and not ended and (last or (i - 1) * k <= g.stop - 1):   # every source frame it shows
                    read()
                rate = None if layout is None else \
                    GroupRate(self.context_model, layout, g.valid, prev if links_to_previous(link, g.index) else None)
                target = ShownFrames.for_group(g, len(plan), h.overlap, h.semantic_frames, k, shown, before) \
                    if in_step else None
                ids, _ = finder.refine(clip, ids, geo.scaled, rate, target)
                prev = layout.split(ids, g.valid) if layout is not None else None
                before = {} if last or not h.overlap or not in_step else \
                    {n: f for n, f in zip(range(g.start, g.stop), self.decode_group(ids, geo.padded)) if n >= nxt}
                for n in [n for n in shown if math.floor(n * k) < nxt]:
                    del shown[n]
            yield GroupRecord(g.index, g.start, g.valid, ids)
            for n in [n for n in buf if n < nxt]:
                del buf[n]

    def iter_encode(self, src, info: VideoInfo | None = None, fps: float | None = None,
                    entropy: str | None = None, search: int | None = None) -> tuple[StreamHeader, Iterator[GroupRecord]]:
        """The stream header and a lazy iterator over the coded groups of video ``src`` (a path or
        a seekable binary file object) at semantic frame rate ``fps`` (default: the model's).
        ``search``: rounds of encoder-side token search per group (:mod:`semcodec.token_search`;
        None: ``search_steps``; 0: the encoder's nearest codes, fastest)."""
        self._search(search)
        info = info or probe(src)
        header = self._header(info, self.semantic_fps(fps), entropy)
        return header, self._coded_groups(header, iter_source_frames(src, info, header.semantic_fps), search,
                                           in_step=not info.variable)

    def encode(self, frames, fps: float, semantic_fps: float | None = None,
               entropy: str | None = None, search: int | None = None, adapt: int | None = None) -> TokenStream:
        """Frames held in memory -> a :class:`~semcodec.stream.TokenStream`.

        ``frames``: ``T x H x W x 3`` uint8 RGB (a numpy array, a torch tensor, or a sequence of
        ``H x W x 3`` frames) at ``fps`` frames per second. ``semantic_fps`` is the rate control
        (default: the model's). The tokens are those ``encode_file`` makes of a video file
        holding these frames at this rate (``semcodec encode``); ``search`` and ``adapt`` as
        :meth:`encode_file`."""
        self._search(search)
        steps = self._check_adapt(adapt, search)
        frames = _frames_array(frames)
        T, H, W, _ = frames.shape
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise CodecError(f"fps must be a positive number of frames per second, got {fps!r}")
        try:
            check_source(W, H, float(fps))
        except LimitError as e:
            raise CodecError(f"frames of {W}x{H} at {fps:g} fps: {e}") from None
        info = VideoInfo(W, H, float(fps), T, T / float(fps))
        header = self._header(info, self.semantic_fps(semantic_fps), entropy)
        uses = semantic_uses(T, info.fps, header.semantic_fps)
        source = ((frames[n], uses.get(n, 0)) for n in range(T))
        keep = dict.fromkeys(adaptation.pick_frames(T)) if steps else None
        records = list(self._coded_groups(header, source, search, keep=keep))
        return TokenStream(self._adapted(header, records, keep or {}, steps), records, prior=self.prior,
                           context=self.context_model)

    def _encode_adapted(self, src, fps, entropy, search, steps, progress) -> TokenStream:
        """:meth:`iter_encode`'s groups, then the decoder adaptation fitted to them."""
        self._search(search)
        info = probe(src)
        header = self._header(info, self.semantic_fps(fps), entropy)
        keep = dict.fromkeys(adaptation.pick_frames(info.frames)) if steps else None
        groups = self._coded_groups(header, iter_source_frames(src, info, header.semantic_fps), search,
                                    in_step=not info.variable, keep=keep)
        records = list(_with_progress(groups, header.n_groups, progress))
        return TokenStream(self._adapted(header, records, keep or {}, steps), records, prior=self.prior,
                           context=self.context_model)

    def encode_file(self, src, dst, entropy: str | None = None, progress: Progress | None = None,
                    fps: float | None = None, max_kbps: float | None = None, search: int | None = None,
                    adapt: int | None = None) -> StreamHeader:
        """Encode video ``src`` (a path or a seekable binary file object) to the token stream ``dst``
        (a path, written atomically, or a binary file object) at semantic rate ``fps``; returns
        the header written. ``max_kbps``: a bit budget (:meth:`fit_rate`: the rate is lowered
        until the file fits); ``search`` as :meth:`iter_encode`; ``adapt``: steps of the decoder
        adaptation fit (:mod:`semcodec.adaptation`; None: :meth:`adapt_steps`, 0: none). Bad input
        fails before anything is written."""
        check_target(dst, src)
        if max_kbps is not None:
            stream = self.fit_rate(src, max_kbps, fps, entropy, progress, search=search, adapt=adapt)
            stream.save(dst)
            return stream.header
        steps = self._check_adapt(adapt, search)
        if steps:
            stream = self._encode_adapted(src, fps, entropy, search, steps, progress)
            stream.save(dst)
            return stream.header
        header, groups = self.iter_encode(src, fps=fps, entropy=entropy, search=search)
        if not isinstance(dst, (str, Path)):
            stream = TokenStream(header, list(_with_progress(groups, header.n_groups, progress)), prior=self.prior,
                                 context=self.context_model)
            stream.save(dst)
            return stream.header
        with StreamWriter(dst, header, prior_counts=self.prior, context=self.context_model) as w:
            for rec in _with_progress(groups, header.n_groups, progress):
                w.write_group(rec)
        return w.header

    def fit_rate(self, src, max_kbps: float, fps: float | None = None, entropy: str | None = None,
                 progress: Progress | None = None, tries: int = 6, search: int | None = None,
                 adapt: int | None = None) -> TokenStream:
        """The stream of ``src`` at the highest semantic rate, at most ``fps`` (default: the model's),
        whose file fits ``max_kbps`` kbit/s of the source's duration: coded at ``fps`` first, then
        again at the rate scaled by the budget over the rate reached (bits grow a little slower than
        the semantic rate, so this converges from above), at most ``tries`` times, never below the
        lowest semantic rate. ``CodecError`` when even that does not fit."""
        if not (isinstance(max_kbps, (int, float)) and math.isfinite(max_kbps) and max_kbps > 0):
            raise CodecError(f"--max-kbps must be a positive number of kbit/s, got {max_kbps!r}")
        rate = self.semantic_fps(fps)
        steps = self._check_adapt(adapt, search)
        for _ in range(tries):
            if not isinstance(src, (str, Path)):
                src.seek(0)
            stream = self._encode_adapted(src, rate, entropy, search, steps, progress)
            header = stream.header
            kbps = 8 * len(stream.to_bytes()) / (header.src_frames / header.src_fps) / 1000
            if kbps <= max_kbps:
                return stream
            tried = rate
            if rate <= MIN_SEMANTIC_FPS:
                break
            rate = max(MIN_SEMANTIC_FPS, math.floor(100 * rate * max_kbps / kbps * 0.98) / 100)
        raise CodecError(f"the video does not fit {max_kbps:g} kbit/s: {kbps:.2f} kbit/s at {tried:g} semantic fps "
                         f"(the lowest rate tried)")

    # ------------------------------------------------------------------ decoding
    def check_stream(self, header: StreamHeader) -> None:
        """The stream was made by this model, and its header is one this model's encoder writes:
        anything else is refused before any work (a forged header cannot ask for more)."""
        h, c = header, self.config
        if not any(digest_matches(d, h.model_hash) for d in self.token_hashes):
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
        if h.adaptation and len(h.adaptation) != adaptation.count(self.model):
            raise CodecError(bad(self.name, f"it adapts {len(h.adaptation)} decoder parameters, the model has "
                                            f"{adaptation.count(self.model)}"))

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
        return Span(first, stop, GopPlan(header.semantic_frames, header.group, header.overlap).covering(j0, j1))

    def read_stream(self, src) -> TokenStream:
        """A token stream (a path, a binary file object or bytes), its groups decoded with this
        model's token prior."""
        context = self.context_models or None
        if isinstance(src, TokenStream):
            return src.with_prior(self.prior, context)
        if isinstance(src, (bytes, bytearray, memoryview)):
            return TokenStream.from_bytes(src, self.prior, context=context)
        return TokenStream.load(src, self.prior, context=context)

    def _reader(self, src):
        """``(reader, owned)``: something with ``header``, ``size`` and ``read_group`` for ``src``."""
        if isinstance(src, (str, Path)):
            return StreamReader(src, prior_counts=self.prior, context=self.context_models or None), True
        if isinstance(src, StreamReader):
            return src, False
        return self.read_stream(src), False

    def iter_decode(self, src, start: float | None = None, end: float | None = None,
                    progress: Progress | None = None) -> Iterator[np.ndarray]:
        """Source-size ``H x W x 3`` uint8 frames of [start, end) seconds, in order, from ``src``: a
        :class:`~semcodec.stream.TokenStream`, bytes, a path, a binary file object or an open
        ``StreamReader``. The stream is checked (``check_stream``, ``check_output``) on the call,
        the frames are decoded lazily (from a path, one group at a time)."""
        reader, owned = self._reader(src)
        try:
            frames = self._checked(reader, start, end, progress)
        except BaseException:
            if owned:
                reader.close()
            raise
        return _closing(frames, reader) if owned else frames

    def decode(self, stream, start: float | None = None, end: float | None = None) -> np.ndarray:
        """A whole token stream (as :meth:`iter_decode` takes) -> ``T x H x W x 3`` uint8 RGB at the
        source's size and frame rate, the frames of [start, end) seconds."""
        return np.stack(list(self.iter_decode(stream, start, end)))

    def _checked(self, reader, start, end, progress) -> Iterator[np.ndarray]:
        h = reader.header
        self.check_stream(h)
        sp = self.span(h, start, end)
        self.check_output(h, sp, reader.size)
        return self._decoded(reader, sp, progress)

    def _decoded(self, reader, sp: Span, progress: Progress | None) -> Iterator[np.ndarray]:
        h = reader.header
        plan = GopPlan(h.semantic_frames, h.group, h.overlap)
        geo = Geometry((h.src_height, h.src_width), (h.scaled_height, h.scaled_width), (h.padded_height, h.padded_width))
        s = getattr(self.renderer, "scale", 1) if self.renderer is not None else 1
        drawn = geo if s == 1 else Geometry(geo.src, (geo.scaled[0] * s, geo.scaled[1] * s),     # a renderer drawing
                                            (geo.padded[0] * s, geo.padded[1] * s))            # s x the model's pixels
        fader = CrossFader(plan, h.overlap)
        k = h.semantic_fps / h.src_fps
        adapted = None
        if h.adaptation and self.renderer is None:
            adapted = adaptation.adapted_features(self.model, np.asarray(h.adaptation), h.adaptation_step)

        def semantic_frames():
            for done, g in enumerate(sp.groups, 1):
                rec = reader.read_group(g.index)
                if (rec.start, rec.valid) != (g.start, g.valid):
                    raise BitstreamError(f"group {g.index} is at frames {rec.start}+{rec.valid}, "
                                         f"the header's layout says {g.start}+{g.valid}")
                frames = self.decode_group(rec.tokens, geo.padded, adapted).numpy()
                if progress:
                    progress(done, len(sp.groups))
                yield from fader.push(g, frames)
            yield from fader.flush()

        cache: dict[int, np.ndarray] = {}
        sem = semantic_frames()
        for i in range(sp.first, sp.stop):
            a, b, w = blend_at(i * k, h.semantic_frames)
            while b not in cache:
                j, f = next(sem)
                cache[j] = from_model(torch.from_numpy(f).float()[None], drawn)[0].numpy()
            for j in [j for j in cache if j < a]:
                del cache[j]
            if w == 0:
                out = np.rint(cache[a])
            else:               # in place: a 4K frame is 100 MB of float32 per temporary
                out = cache[a] * (1 - w)
                out += cache[b] * w
                np.rint(out, out=out)
            yield np.clip(out, 0, 255, out=out).astype(np.uint8)

    def decode_file(self, src, dst, start: float | None = None, end: float | None = None,
                    progress: Progress | None = None, crf: int = 18) -> int:
        """Decode the token stream ``src`` (as :meth:`iter_decode` takes) to the video ``dst``
        (written atomically; the codec follows the extension); returns the frames written.
        Bad input fails before an output file is made."""
        check_target(dst, src)
        reader, owned = self._reader(src)
        try:
            frames = self._checked(reader, start, end, progress)      # checked before a file is made
            h, n = reader.header, 0
            with VideoWriter(dst, h.src_fps, (h.src_height, h.src_width), crf=crf) as w:
                for frame in frames:
                    w.write(frame)
                    n += 1
        finally:
            if owned:
                reader.close()
        return n


def _stream_header(src) -> StreamHeader:
    """The checked header of a stream given in any of the forms :meth:`Codec.iter_decode` takes."""
    if isinstance(src, (TokenStream, StreamReader)):
        return src.header
    if isinstance(src, (bytes, bytearray, memoryview)):
        return TokenStream.from_bytes(src).header
    if isinstance(src, (str, Path)):
        with StreamReader(src) as r:      # the whole container checked, no prior needed
            return r.header
    stream = TokenStream.load(src)
    src.seek(0)
    return stream.header


def _closing(frames: Iterator[np.ndarray], reader: StreamReader) -> Iterator[np.ndarray]:
    try:
        yield from frames
    finally:
        reader.close()


def _with_progress(groups: Iterator[GroupRecord], total: int, progress: Progress | None) -> Iterator[GroupRecord]:
    for done, rec in enumerate(groups, 1):
        yield rec
        if progress:
            progress(done, total)


def _frames_array(frames) -> np.ndarray:
    """``T x H x W x 3`` uint8 numpy from an array, a tensor or a sequence of frames; CodecError."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    elif not isinstance(frames, np.ndarray):
        try:
            frames = np.stack([np.asarray(f) for f in frames])
        except (TypeError, ValueError) as e:
            raise CodecError(f"frames must be T x H x W x 3 uint8 (an array or a sequence of frames): {e}") from None
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] < 1:
        raise CodecError(f"frames must be T x H x W x 3 uint8 with T >= 1, got {frames.dtype} of shape {frames.shape}")
    return frames


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
