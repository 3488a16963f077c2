r"""(video, tokens) pairs for the renderer: each group of each clip, as the codec cuts and codes it.

    python -m generation.diffusion.data world/train -o pairs/train --model world --scale 2
    python -m generation.diffusion.data world:train --max-clips 2000 -o pairs/train --model world --scale 2
    python -m generation.diffusion.data clips/ --captions caps.jsonl -o pairs/ --model world

For every clip (a folder's video files; captions from its ``captions.jsonl`` or ``--captions``, as
``semcodec dataset build`` reads them): the semantic frames at the model's rate and geometry, cut
into the codec's groups, each coded by the frozen tokenizer. A group's frames are stored padded to
the group length (its last frame repeated, as the codec pads), at ``--scale`` times the size the
tokenizer codes (the renderer draws more pixels than the tokens carry: the world's tokenizer codes
64 x 96, its renderer draws 128 x 192), its tokens for its valid frames only.

The folder holds ``meta.json`` (codec name, content hash and checkpoint path, group, frame size,
groups per shard, captions per clip) and ``shard-NNNNN.safetensors``: ``frames`` uint8
``n x G x H x W x 3``, ``tokens`` int32 ``n x Lmax`` (-1 past a group's tokens), ``valid``,
``clip`` and ``start`` int32 ``n``. :class:`PairDataset` reads it (frames memory-mapped).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT = "generation-diffusion-pairs-1"


def clip_groups(codec, path, scale: int = 1) -> list[dict]:
    """Groups of one clip: ``start``, ``valid``, ``frames`` (uint8 ``G x H x W x 3``, padded, at
    ``scale`` x the model geometry) and ``tokens`` (int64, valid frames only), exactly as
    ``codec.encode_file`` codes them."""
    from semcodec.gop import pad_group, plan_groups
    from semcodec.video import Geometry, iter_semantic_frames, probe, semantic_frame_count, to_model
    info = probe(path)
    c = codec.config
    fps = codec.semantic_fps(None)
    geo = codec.geometry(info.height, info.width)
    big = Geometry(geo.src, tuple(scale * x for x in geo.scaled), tuple(scale * x for x in geo.padded))
    n_sem = semantic_frame_count(info.frames, info.fps, fps)
    src = list(iter_semantic_frames(path, info, fps))[:n_sem]
    frames = [to_model(f[None], geo)[0] for f in src]
    drawn = frames if scale == 1 else [to_model(f[None], big)[0] for f in src]
    out = []
    for g in plan_groups(len(frames), c.group, c.overlap):
        tokens = codec.encode_group(torch.stack(frames[g.start:g.stop]))
        clip = torch.stack(drawn[g.start:g.stop])
        u8 = torch.round((clip + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
        out.append({"start": g.start, "valid": g.valid, "frames": pad_group(u8, c.group), "tokens": tokens})
    return out


def render_record(rec: dict) -> np.ndarray:
    """A world clip's frames (``T x H x W x 3`` uint8) from its ``captions.jsonl`` record."""
    from semcodec.data import synth
    return synth.render(synth.Scene.from_dict(rec["scene"]), rec["frames"], (rec["height"], rec["width"]), rec["fps"])


def world_groups(codec, rec: dict, scale: int = 1, video: np.ndarray | None = None) -> list[dict]:
    """:func:`clip_groups` of a world clip rendered straight from its ``captions.jsonl`` record
    (``semcodec.data.world.world_record``; ``video``: its :func:`render_record`, if already made):
    no video file, no PyAV, no lossy coding of the source."""
    from semcodec.gop import pad_group, plan_groups
    from semcodec.video import Geometry, to_model
    c = codec.config
    geo = codec.geometry(rec["height"], rec["width"])
    big = Geometry(geo.src, tuple(scale * x for x in geo.scaled), tuple(scale * x for x in geo.padded))
    video = render_record(rec) if video is None else video
    frames = to_model(video, geo)
    drawn = frames if scale == 1 else to_model(video, big)
    out = []
    for g in plan_groups(len(frames), c.group, c.overlap):
        tokens = codec.encode_group(frames[g.start:g.stop])
        u8 = torch.round((drawn[g.start:g.stop] + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
        out.append({"start": g.start, "valid": g.valid, "frames": pad_group(u8, c.group), "tokens": tokens})
    return out


@dataclass
class WorldClip:
    clip_id: str
    caption: str
    record: dict


def world_clips(spec: str, n: int, frames: int, fps: float, size=(128, 192)) -> list[WorldClip]:
    """``world:SPLIT`` -> the first ``n`` clips of that split of the captioned world, as
    ``semcodec dataset synth --split SPLIT`` would write them."""
    from semcodec.data.world import split_seeds, world_record
    split = spec.split(":", 1)[1]
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown world split {split!r} (train, val, test)")
    recs = [world_record(i, s, frames, size, fps) for i, s in enumerate(split_seeds(split, n))]
    return [WorldClip(f"{split}-{r['seed']}", r["caption"], r) for r in recs]


def build_pairs(sources, out, model, captions=None, shard_groups: int = 512, max_clips: int | None = None,
                log=None, scale: int = 1, device="cpu", world_frames: int = 29, workers: int = 1) -> dict:
    """Write the pairs folder ``out``; returns its meta. A source ``world:SPLIT`` renders
    ``max_clips`` clips of ``world_frames`` frames of that split of the world directly (in
    ``workers`` processes; the tokenizer codes them on ``device``)."""
    from semcodec.codec import Codec
    from semcodec.zoo import load_model
    srcs = [str(s) for s in sources]
    videos = pool = None
    if len(srcs) == 1 and srcs[0].startswith("world:"):       # (a folder may well be called world/...)
        if not max_clips:
            raise ValueError("a world:SPLIT source needs --max-clips (how many clips to render)")
        clips = world_clips(srcs[0], max_clips, world_frames, load_model(model, "cpu").config.fps)
        if workers > 1:           # before the tokenizer touches a GPU: the workers only render
            import multiprocessing as mp
            pool = mp.get_context("fork").Pool(workers)
            videos = pool.imap(render_record, [c.record for c in clips], chunksize=8)
    else:
        from semcodec.data.build import make_clips
        paths = [Path(s) for s in srcs]
        if captions is None:
            found = [s / "captions.jsonl" for s in paths if s.is_dir() and (s / "captions.jsonl").is_file()]
            captions = found[0] if len(found) == 1 else None
        clips, _ = make_clips(srcs, captions)
        clips = clips[:max_clips] if max_clips else clips
    try:
        return _write_pairs(clips, videos, out, Codec.load(model, device), model, shard_groups, log, scale)
    finally:
        if pool is not None:
            pool.terminate()


def _write_pairs(clips, videos, out, codec, model, shard_groups, log, scale) -> dict:
    from safetensors.numpy import save_file
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c = codec.config
    L = c.tokens_per_group
    buf: list[dict] = []
    shards, n_groups, H, W = [], 0, None, None

    def flush():
        nonlocal buf
        if not buf:
            return
        name = f"shard-{len(shards):05d}.safetensors"
        tok = np.full((len(buf), L), -1, np.int32)
        for i, g in enumerate(buf):
            tok[i, :len(g["tokens"])] = g["tokens"]
        save_file({"frames": np.stack([g["frames"] for g in buf]), "tokens": tok,
                   "valid": np.array([g["valid"] for g in buf], np.int32),
                   "clip": np.array([g["clip"] for g in buf], np.int32),
                   "start": np.array([g["start"] for g in buf], np.int32)}, str(out / name))
        shards.append({"file": name, "groups": len(buf)})
        buf = []

    for k, clip in enumerate(clips):
        groups = world_groups(codec, clip.record, scale, next(videos) if videos else None) \
            if isinstance(clip, WorldClip) else clip_groups(codec, clip.path, scale)
        for g in groups:
            H, W = g["frames"].shape[1:3]
            g["clip"] = k
            buf.append(g)
            n_groups += 1
            if len(buf) >= shard_groups:
                flush()
        if log and (k + 1) % 50 == 0:
            log(f"{k + 1}/{len(clips)} clips, {n_groups} groups")
    flush()
    meta = {"format": FORMAT, "codec": {"name": c.name, "hash": codec.content_hash, "path": str(model)},
            "group": c.group, "overlap": c.overlap, "frame_size": [H, W], "scale": scale,
            "fps": codec.semantic_fps(None),
            "groups": n_groups, "shards": shards,
            "clips": [{"id": cl.clip_id, "caption": cl.caption} for cl in clips]}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


class PairDataset:
    """Item ``i`` -> ``frames`` uint8 ``G x H x W x 3``, ``tokens`` int64 (valid frames),
    ``valid``, ``caption``."""

    def __init__(self, folder):
        from safetensors import safe_open
        self.folder = Path(folder)
        p = self.folder / "meta.json"
        if not p.is_file():
            raise ValueError(f"{folder}: not a pairs folder (no meta.json; make one with python -m "
                             f"generation.diffusion.data)")
        self.meta = json.loads(p.read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{folder}: not a pairs folder (format {self.meta.get('format')!r})")
        self._files = [safe_open(str(self.folder / s["file"]), "pt") for s in self.meta["shards"]]
        self._tokens = [f.get_tensor("tokens") for f in self._files]
        self._valid = [f.get_tensor("valid") for f in self._files]
        self._clip = [f.get_tensor("clip") for f in self._files]
        self._where = [(s, j) for s, sh in enumerate(self.meta["shards"]) for j in range(sh["groups"])]
        self.captions = [c["caption"] for c in self.meta["clips"]]

    def __len__(self) -> int:
        return len(self._where)

    @property
    def codec_hash(self) -> str:
        return self.meta["codec"]["hash"]

    def __getitem__(self, i: int) -> dict:
        s, j = self._where[i]
        t = self._tokens[s][j]
        return {"frames": self._files[s].get_slice("frames")[j], "tokens": t[t >= 0].long(),
                "valid": int(self._valid[s][j]), "caption": self.captions[int(self._clip[s][j])]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m generation.diffusion.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", help="video files and / or folders, or world:SPLIT (rendered directly, "
                                              "no video files: give --max-clips)")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--model", required=True, help="the frozen tokenizer: shipped name or checkpoint path")
    p.add_argument("--captions", help="captions JSONL (default: a source folder's captions.jsonl)")
    p.add_argument("--scale", type=int, default=1,
                   help="store frames at this many times the model's coding size (the renderer's scale; world: 2)")
    p.add_argument("--shard-groups", type=int, default=512)
    p.add_argument("--max-clips", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--frames", type=int, default=29, help="world:SPLIT: frames per clip (29: two groups of the world)")
    p.add_argument("--device", default="cpu", help="where the tokenizer runs")
    p.add_argument("--workers", type=int, default=1, help="world:SPLIT: processes that render the clips")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from semcodec.video import VideoError
    try:
        meta = build_pairs(a.sources, a.out, a.model, a.captions, a.shard_groups, a.max_clips or None,
                           log=lambda m: print(m, file=sys.stderr), scale=a.scale, device=a.device,
                           world_frames=a.frames, workers=a.workers)
    except (ValueError, OSError, VideoError) as e:       # DatasetError and ModelError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{a.out}: {meta['groups']} groups of {len(meta['clips'])} clips, model {meta['codec']['name']} "
          f"({meta['codec']['hash'][:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
