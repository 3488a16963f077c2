"""Text to video: a prompt -> the LM's tokens -> the tokenizer's decoder (or a renderer) -> frames.

    python -m generation.t2v --prompt "A large red star moves slowly right on a plain blue background." -o star.mp4
    python -m generation.t2v --prompts prompts.txt -o out_dir/ --seconds 6 --cfg 1 --seed 0

Python::

    from generation.t2v import TextToVideo
    t2v = TextToVideo.load()                      # the shipped lm-world + world tokenizer
    frames = t2v.generate("A small green heart bounces quickly on a yellow dots background.", seconds=4)
    frames.shape                                  # T x 128 x 192 x 3 uint8, T = seconds x 8

How a clip is made (the codec's own group plan, ``semcodec.gop``): the LM samples the first group
(2 s: an IFrame and 15 PFrames of tokens) from the prompt. Each further group is sampled with
the previous one teacher-forced as its prefix, the layout the LM was trained on (clips of two
consecutive, overlapping groups), so a long video continues its own past rather than restarting.
Each group is decoded by the tokenizer's decoder (``--renderer direct``) or by a renderer
registered under ``semcodec.renderers`` (``--renderer diffusion``: the shipped renderer of the
``world`` tokenizer; ``diffusion:WEIGHTS`` another), and consecutive groups are cross-faded over their shared frames exactly as
``semcodec decode`` does.

The shipped models know the procedural world only (coloured shapes that move on plain or
patterned backgrounds: ``semcodec.data.world``). Another prompt still gives a video, with a
notice.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_LM = "lm-world"
PLAUSIBILITY = 0.1               # guided sampling keeps to the prompt's plausible codes (docs/generation.md)
WORLD_NOTICE = ("notice: the shipped models know the procedural world only (coloured shapes moving on "
                "plain or patterned backgrounds); this prompt names nothing of it")


class T2VError(ValueError):
    """A user mistake (message is one line, user-facing)."""


@dataclass
class Clip:
    """One generated clip: ``frames`` ``T x H x W x 3`` uint8 at ``fps``; ``groups`` the LM's codes
    per group (what a token stream of the tokenizer would hold)."""
    prompt: str
    frames: np.ndarray
    fps: float
    groups: list


def in_world(prompt: str) -> bool:
    """Whether the prompt names anything of the procedural world (a shape, colour or background)."""
    from .world import parse_caption
    t = parse_caption(prompt)
    return bool(t.shapes or t.background or t.bg_colour)


class TextToVideo:
    """The pipeline over a loaded LM (``generation.lm``) and the codec whose tokens it models."""

    def __init__(self, lm, codec, renderer=None, guidance: float = 6.5, size: tuple[int, int] | None = None):
        self.lm, self.codec, self.renderer = lm, codec, renderer
        self.size = tuple(size) if size else tuple(codec.config.frame_size)   # output H x W
        self.guidance = guidance         # the default CFG scale: the LM's measured best, else the paper's
        self.plausibility = PLAUSIBILITY  # guided codes kept to those the prompt itself finds plausible
        c = codec.config
        v = lm.config
        if (v.iframe_tokens, v.pframe_tokens, v.group, v.codebook_size) != \
                (c.iframe_tokens, c.pframe_tokens, c.group, c.codebook_size):
            raise T2VError(f"the LM's token layout ({v.iframe_tokens} + {v.pframe_tokens} x {v.group - 1}, "
                           f"K={v.codebook_size}) is not the codec {c.name}'s")

    @classmethod
    def load(cls, lm: str = DEFAULT_LM, codec: str | None = None, renderer: str = "direct",
             device: str = "cpu") -> "TextToVideo":
        """``lm``: a shipped LM name or a checkpoint path; ``codec``: the tokenizer (default: the
        one the LM was trained on, by name); ``renderer``: ``direct`` (the tokenizer's decoder) or
        a registered renderer's name."""
        from semcodec.codec import Codec
        from semcodec.zoo import ModelError
        from .lm import load_lm
        from .lm.checkpoint import resolve_lm
        try:
            ck = load_lm(resolve_lm(lm), map_location=device)
        except ValueError as e:
            raise T2VError(str(e).splitlines()[0]) from None
        name = codec or ck.config.codec or "world"
        try:
            cod = Codec.load(name, device)
        except ModelError as e:
            raise T2VError(str(e)) from None
        if ck.config.codec_hash and codec is None and cod.content_hash != ck.config.codec_hash:
            raise T2VError(f"the LM was trained on the tokens of {name} {ck.config.codec_hash[:12]}, "
                           f"the installed {name} is {cod.content_hash[:12]}")
        # the LM's training videos' size (the world's 128 x 192, coded at 64 x 96): frames are
        # scaled back to it as `semcodec decode` scales to the source size
        return cls(ck.model, cod, _renderer(renderer, cod), float(ck.extra.get("guidance", 6.5)),
                   ck.extra.get("video_size"))

    @property
    def fps(self) -> float:
        return self.codec.config.fps

    def plan(self, seconds: float):
        """The codec's groups for ``seconds`` of video at the tokenizer's rate."""
        from semcodec.gop import plan_groups
        c = self.codec.config
        frames = max(1, int(round(seconds * c.fps)))
        return plan_groups(frames, c.group, c.overlap)

    def tokens(self, prompts: list[str], seconds: float = 4.0, cfg: float | None = None, motion: float | None = None,
               seed: int = 0, progress=None) -> list[list[np.ndarray]]:
        """Per prompt, the codes of each group of the plan (``len(plan)`` arrays)."""
        from .lm import sample
        cfg = self.guidance if cfg is None else cfg
        plan = self.plan(seconds)
        rows = [[] for _ in prompts]
        ov = self.codec.config.overlap
        for g in plan:
            prefix = [r[-1:] for r in rows] if g.index else None
            # the frames micro-condition of the training clips (two overlapping groups) this
            # sequence is the start of (group 0) or equal to (a group after its predecessor)
            frames = (plan[1].stop if len(plan) > 1 else g.valid) if g.index == 0 else \
                plan[g.index - 1].valid + g.valid - ov
            out = sample(self.lm, prompts, valids=[g.valid], cfg_scale=cfg, motion=motion, frames=frames,
                         cfg_plausibility=self.plausibility,
                         seed=[seed + 1009 * g.index + r for r in range(len(prompts))], prefix_groups=prefix)
            for r, groups in enumerate(out.groups):
                rows[r].append(groups[-1])
            if progress:
                progress()
        return rows

    def render(self, groups: list[np.ndarray], seconds: float, progress=None, prompt: str | None = None,
               seed: int = 0) -> np.ndarray:
        """One prompt's groups -> ``T x H x W x 3`` uint8 frames (overlaps cross-faded). A renderer
        draws the groups in order, each after the first keeping the previous one's last frames
        (its clean prefix), conditioned on ``prompt`` where it reads text, its noise from ``seed``."""
        from semcodec.gop import crossfade
        plan = self.plan(seconds)
        h, w = self.codec.config.frame_size
        if self.renderer is not None:
            if hasattr(self.renderer, "set_prompt"):
                self.renderer.set_prompt(prompt)
            if hasattr(self.renderer, "seed"):
                self.renderer.seed = int(seed)
            self.renderer.reset()
        outs = []
        for g, codes in zip(plan, groups):
            if self.renderer is None:
                f = self.codec.decode_group(np.asarray(codes), (h, w))
            else:
                f = self.renderer.decode_group(np.asarray(codes), (h, w))
            outs.append(((f[:g.valid].clamp(-1, 1) + 1) * 127.5).numpy())
            if progress:
                progress()
        video = crossfade(plan, outs, self.codec.config.overlap)
        if tuple(video.shape[1:3]) != self.size:
            import torch
            from semcodec.video import resize
            video = resize(torch.from_numpy(video).float(), self.size).numpy()
        return np.clip(np.rint(video), 0, 255).astype(np.uint8)

    def generate(self, prompt: str, seconds: float = 4.0, cfg: float | None = None, motion: float | None = None,
                 seed: int = 0) -> np.ndarray:
        """``T x H x W x 3`` uint8 frames (``T = round(seconds x fps)``) for ``prompt``."""
        return self.generate_many([prompt], seconds, cfg, motion, seed)[0].frames

    def generate_many(self, prompts: list[str], seconds: float = 4.0, cfg: float | None = None,
                      motion: float | None = None, seed: int = 0, bars: bool = False) -> list[Clip]:
        cfg = self.guidance if cfg is None else cfg
        _check(prompts, seconds, cfg)
        from tqdm import tqdm
        n = len(self.plan(seconds))
        with tqdm(total=n, desc="tokens", unit="group", disable=not bars, leave=False) as bar:
            toks = self.tokens(prompts, seconds, cfg, motion, seed, progress=bar.update)
        out = []
        with tqdm(total=n * len(prompts), desc="frames", unit="group", disable=not bars, leave=False) as bar:
            for r, (p, groups) in enumerate(zip(prompts, toks)):
                out.append(Clip(p, self.render(groups, seconds, progress=bar.update, prompt=p, seed=seed + r),
                                self.fps, groups))
        return out


def seam_continuity(frames: np.ndarray, plan, overlap: int) -> dict:
    """How smooth a multi-group video is where one group hands over to the next: the mean absolute
    difference (0-255) between consecutive frames inside each group's overlap with the one before
    (``seam``) against that of every other consecutive pair (``within``). A ratio near 1: the
    seams do not show."""
    f = frames.astype(np.float32)
    d = np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))           # d[i]: frame i -> i + 1
    seam = np.zeros(len(d), bool)
    for g in plan[1:]:
        seam[max(0, g.start - 1):min(len(d), g.start + overlap)] = True
    within = d[~seam]
    out = {"seam": float(d[seam].mean()) if seam.any() else None,
           "within": float(within.mean()) if len(within) else None}
    out["ratio"] = out["seam"] / out["within"] if out["seam"] is not None and out["within"] else None
    return out


def _check(prompts, seconds, cfg) -> None:
    if not prompts:
        raise T2VError("no prompt given")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise T2VError("empty prompt")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and 0 < seconds <= 600):
        raise T2VError(f"--seconds must be in (0, 600], got {seconds}")
    if cfg is not None and not (math.isfinite(cfg) and cfg > 0):
        raise T2VError(f"--cfg must be a positive number, got {cfg}")


def _renderer(name: str, codec):
    if name == "direct":
        return None
    try:
        from semcodec.renderers import load_renderer
    except ImportError:
        raise T2VError(f"unknown renderer '{name}' (this install has: direct)") from None
    try:
        return load_renderer(name, codec)
    except (ValueError, LookupError, OSError) as e:
        raise T2VError(str(e).splitlines()[0]) from None


# ------------------------------------------------------------------------------------------ CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message):           # one line, the house format, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m generation.t2v", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="The shipped models know the procedural world only: coloured shapes (circle, square, "
                       "triangle, star, heart, ...) that move, spin, bounce, grow or shrink on plain, gradient, "
                       "striped, checkered, dotted or noisy backgrounds.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="what the video shows")
    src.add_argument("--prompts", type=Path, help="a text file, one prompt per line (-o is then a folder)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output video (.mp4/.webm/...) or, with --prompts, folder")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each video [4]")
    p.add_argument("--cfg", type=float, default=None,
                   help="classifier-free guidance scale, 1: none [the LM's measured best: 1 for lm-world; "
                        "6.5, the paper's, for an LM that records none]")
    p.add_argument("--motion", type=float, default=None, help="motion score micro-condition [none: unconditional]")
    p.add_argument("--seed", type=int, default=0, help="same seed, same video [0]")
    p.add_argument("--renderer", default="direct",
                   help="direct (the tokenizer's decoder) [default], diffusion (the shipped renderer), or NAME:WEIGHTS")
    p.add_argument("--steps", type=int, default=None, help="renderer steps (diffusion renderers)")
    p.add_argument("--lm", default=DEFAULT_LM, help="shipped LM name or checkpoint path [lm-world]")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notices")
    return p


def _prompts(a) -> list[str]:
    if a.prompt is not None:
        return [a.prompt]
    try:
        text = a.prompts.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise T2VError(f"cannot read {a.prompts}: {e.strerror if isinstance(e, OSError) else 'not UTF-8 text'}") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise T2VError(f"{a.prompts} holds no prompt")
    return lines


def _outputs(a, n: int) -> list[Path]:
    from semcodec.video import VideoWriter
    if a.prompts is None:
        if a.output.suffix.lower() not in VideoWriter.CODECS:
            raise T2VError(f"unsupported output extension '{a.output.suffix}' (use {', '.join(sorted(VideoWriter.CODECS))})")
        if not a.output.parent.is_dir():
            raise T2VError(f"output folder does not exist: {a.output.parent}")
        return [a.output]
    if a.output.exists() and not a.output.is_dir():
        raise T2VError(f"with --prompts, -o must be a folder: {a.output}")
    a.output.mkdir(parents=True, exist_ok=True)
    return [a.output / f"{i:04d}.mp4" for i in range(n)]


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    try:
        prompts = _prompts(a)
        _check(prompts, a.seconds, a.cfg)
        if a.steps is not None and a.steps < 1:
            raise T2VError(f"--steps must be at least 1, got {a.steps}")
        outs = _outputs(a, len(prompts))
        import torch
        if a.threads:
            torch.set_num_threads(a.threads)
        t2v = TextToVideo.load(a.lm, renderer=a.renderer)
        if a.steps is not None and t2v.renderer is not None:
            t2v.renderer.steps = a.steps
        if not a.quiet:
            for p in prompts:
                if not in_world(p):
                    print(f"{WORLD_NOTICE}: {p!r}", file=sys.stderr)
        from semcodec.video import VideoWriter
        clips = t2v.generate_many(prompts, a.seconds, a.cfg, a.motion, a.seed, bars=not a.quiet)
        h, w = t2v.size
        for clip, path in zip(clips, outs):
            with VideoWriter(path, clip.fps, (h, w), crf=12) as vw:        # atomic: renamed on close
                for f in clip.frames:
                    vw.write(f)
            if not a.quiet:
                print(f"wrote {path}: {len(clip.frames)} frames, {len(clip.frames) / clip.fps:.2f} s", file=sys.stderr)
    except (T2VError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
