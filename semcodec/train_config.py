"""The training configuration: one dataclass, :class:`TrainConfig`, behind ``semcodec train``,
``python -m semcodec.train`` (torchrun), ``semcodec export`` and a run folder's ``state.json``.

Each field carries its command-line help; :func:`click_options` turns the fields into the click
options of ``semcodec train`` (so the two cannot drift apart) and :meth:`TrainConfig.check`
refuses a bad value with one ``ConfigError`` line before any work. Options holding several values
take them the way they always have, ``--data a b c`` (and ``--data a --data b`` works too).

This module imports only click: building the CLI (``semcodec --help``) stays fast.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .errors import ConfigError


def _opt(default, help: str, type=None, many: bool = False, choices=None, required: bool = False):
    return field(default=default, metadata={"help": help, "type": type, "many": many, "choices": choices,
                                            "required": required})


@dataclass
class TrainConfig:
    data: tuple[str, ...] = _opt((), "video files, folders of videos/photos, 'synth' (procedural clips; "
                                 "'synth:train' the world's training split) or a pack (.npz)", str, many=True,
                                 required=True)
    out: str = _opt("", "run directory (resumed if it holds a checkpoint)", str, required=True)
    preset: str = _opt("s128", "model configuration to train (semcodec.list_presets())", str)
    config: str | None = _opt(None, "JSON of CodecConfig fields overriding the preset", str)
    name: str | None = _opt(None, "the model's name, recorded in the streams it makes [default: the run "
                            "directory's name]", str)
    backbone: str | None = _opt(None, "local folder of the pretrained backbone, for presets whose features "
                                "come from one (landiff): a Theia / DeiT / ViT folder in the Hugging Face layout", str)
    weights: tuple[float, ...] = _opt((), "sampling weight per --data source", float, many=True)
    steps: int = _opt(10000, "optimizer steps", int)
    batch: int = _opt(1, "groups per step and process (with full-length groups)", int)
    group_frames: tuple[int, ...] = _opt((), "train on groups of these lengths (drawn per step, batch scaled so "
                                         "each step sees batch x group frames)", int, many=True)
    lr: float = _opt(1e-4, "learning rate", float)
    schedule: str = _opt("constant", "learning rate after warm-up: constant (the paper) or cosine decay to "
                         "--min-lr at --steps", str, choices=("constant", "cosine"))
    min_lr: float = _opt(0.0, "final learning rate of the cosine schedule", float)
    bf16: bool = _opt(False, "bfloat16 autocast (2-3x faster matmuls on AVX512-BF16 CPUs)")
    fps_choices: tuple[float, ...] = _opt((), "semantic frame rates to draw clips at (one per step): a model "
                                          "that codes any of them, so the encoder's --fps is a rate control",
                                          float, many=True)
    init: str | None = _opt(None, "start from this checkpoint's weights (blocks it lacks start as the identity)", str)
    decoder_only: bool = _opt(False, "train the decoder side only (decoder transformer and conv head): the stem, "
                              "encoder and codebook stay as --init has them, so the token ids, and every stream "
                              "and entropy model made with them, stay valid (the run's final weights are float16: start from "
                              "float16 weights, an export, for them to stay bit for bit)")
    shown_ratio: int = _opt(0, "also score the frames between the semantic ones, as the decoder shows them: "
                            "clips drawn at this many times the semantic rate, the model fed every one of "
                            "that many, its output blended linearly to all of them (0: the semantic frames alone)", int)
    warmup: int = _opt(0, "linear warm-up steps", int)
    weight_decay: float = _opt(0.01, "AdamW weight decay", float)
    grad_weight: float = _opt(0.0, "weight of a loss on pixel differences (edges) besides the MSE (0: none)", float)
    shape_weight: float = _opt(0.0, "procedural scenes (synth): each pixel within 1 px of a shape counts 1 + "
                               "this in the reconstruction loss, so small shapes keep their form (0: every "
                               "pixel alike; other sources stay unweighted)", float)
    ema: float = _opt(0.8, "EMA decay of the weights (the paper: 0.8)", float)
    recon_weight: float = _opt(1.0, "weight of the reconstruction loss", float)
    commit_weight: float = _opt(1.0, "weight of the commitment loss", float)
    continuous_steps: int = _opt(0, "steps of an autoencoder phase first: the quantizer passes the encoder's output "
                                 "through, then its codebook is seeded from the encoder's outputs (0: quantize from "
                                 "the start)", int)
    widths: tuple[int, ...] = _opt((), "training frame widths [default: the preset's]", int, many=True)
    reseed_every: int = _opt(50, "dead-code re-seeding interval (0: never)", int)
    reseed_threshold: float = _opt(0.03, "a code is dead when its usage EMA is below this fraction of the mean "
                                   "usage", float)
    log_every: int = _opt(10, "steps between log lines", int)
    val: tuple[str, ...] = _opt((), "held-out videos (or a pack) for validation PSNR", str, many=True)
    val_every: int = _opt(250, "steps between validations", int)
    val_groups: int = _opt(2, "groups per validation clip", int)
    ckpt_every: int = _opt(100, "steps between checkpoints", int)
    max_minutes: float = _opt(0.0, "stop (with a checkpoint) after this long (0: no limit)", float)
    threads: int = _opt(0, "torch threads per process (0: leave)", int)
    seed: int = _opt(0, "seed of batches, initialisation and re-seeding", int)

    # -- conversion ---------------------------------------------------------------------------
    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From keyword values (the CLI's) or a run's ``state.json`` ``args`` (unknown keys dropped,
        ``None`` for a list meaning empty, lists made tuples)."""
        kw = {}
        for f in cls.fields():
            if f.name not in d:
                continue
            v = d[f.name]
            if f.metadata["many"]:
                v = tuple(v) if v is not None else ()
            kw[f.name] = v
        return cls(**kw).check()

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in self.fields()}

    def check(self) -> "TrainConfig":
        """Every value in range; ``ConfigError`` naming the option otherwise. Returns self."""
        def bad(name: str, what: str):
            raise ConfigError(f"--{name.replace('_', '-')} {what}")
        if not self.data:
            bad("data", "needs at least one source")
        if not self.out:
            bad("out", "is required")
        for name in ("steps", "batch", "log_every", "val_every", "val_groups", "ckpt_every"):
            if getattr(self, name) < 1:
                bad(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("warmup", "reseed_every", "threads", "seed", "continuous_steps"):
            if getattr(self, name) < 0:
                bad(name, f"must be 0 or more, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "grad_weight", "shape_weight", "recon_weight", "commit_weight",
                     "reseed_threshold", "max_minutes"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                bad(name, f"must be a finite number >= 0, got {v}")
        if not 0 <= self.ema < 1:
            bad("ema", f"must be in [0, 1), got {self.ema}")
        if self.weights and len(self.weights) != len(self.data):
            bad("weights", f"has {len(self.weights)} values for {len(self.data)} --data sources")
        if self.weights and (min(self.weights) < 0 or sum(self.weights) <= 0):
            bad("weights", "must be >= 0 with a positive sum")
        if any(w < 16 for w in self.widths):
            bad("widths", f"must be at least 16 pixels, got {min(self.widths)}")
        if not 0 <= self.shown_ratio <= 16:
            bad("shown_ratio", f"must be in 0..16, got {self.shown_ratio}")
        if any(t < 1 for t in self.group_frames):
            bad("group_frames", f"must be at least 1, got {min(self.group_frames)}")
        if self.schedule not in ("constant", "cosine"):
            bad("schedule", f"must be constant or cosine, got {self.schedule!r}")
        if self.decoder_only and not self.init:
            bad("decoder_only", "needs --init: the trained model whose encoder it keeps")
        if self.decoder_only and self.continuous_steps:
            bad("decoder_only", "cannot go with --continuous-steps (the codebook is kept as it is)")
        return self

    def codec_config(self):
        """The model's :class:`~semcodec.presets.CodecConfig`: the preset with ``--config`` applied."""
        import json
        from .presets import CodecConfig, get_preset
        cfg = get_preset(self.preset)
        if self.config:
            try:
                over = json.loads(self.config)
            except ValueError as e:
                raise ConfigError(f"--config is not JSON: {e}") from None
            known = {f.name for f in dataclasses.fields(CodecConfig)}
            if not isinstance(over, dict) or set(over) - known:
                what = sorted(set(over) - known) if isinstance(over, dict) else over
                raise ConfigError(f"--config must be a JSON object of CodecConfig fields; unknown: {what}")
            try:
                cfg = cfg.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in over.items()})
            except (TypeError, ValueError) as e:
                raise ConfigError(f"--config: {e}") from None
        for t in self.group_frames:
            if not 1 <= t <= cfg.group:
                raise ConfigError(f"--group-frames must be in 1..{cfg.group} (the preset's group), got {t}")
        return cfg


def click_options(fn):
    """Decorate a click command with one option per :class:`TrainConfig` field."""
    import click
    for f in reversed(TrainConfig.fields()):
        m = f.metadata
        flag = "--" + f.name.replace("_", "-")
        if m["type"] is None:                       # a boolean switch
            fn = click.option(flag, is_flag=True, default=f.default, help=m["help"])(fn)
            continue
        typ = click.Choice(m["choices"]) if m["choices"] else m["type"]
        kw = {} if m["many"] or f.default in (None, "") else {"default": f.default, "show_default": True}
        fn = click.option(flag, type=typ, multiple=m["many"], required=m["required"],
                          metavar=("V..." if m["many"] else None), help=m["help"], **kw)(fn)
    return fn


def many_value_options() -> list[str]:
    return ["--" + f.name.replace("_", "-") for f in TrainConfig.fields() if f.metadata["many"]]


def expand_many(args: list[str], names) -> list[str]:
    """``--data a b c`` -> ``--data a --data b --data c`` for the options ``names`` (argparse's
    ``nargs='+'``, which click lacks): values run until the next argument starting with ``-``."""
    names, out, i = set(names), [], 0
    while i < len(args):
        a = args[i]
        if a in names:
            i += 1
            while i < len(args) and not (args[i].startswith("-") and not _is_number(args[i])):
                out += [a, args[i]]
                i += 1
            continue
        out.append(a)
        if a == "--":
            out += args[i + 1:]
            break
        i += 1
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
