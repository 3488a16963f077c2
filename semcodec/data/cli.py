"""``semcodec dataset``: build token datasets and write procedural captioned clips.

User mistakes raise :class:`~semcodec.data.dataset.DatasetError` (or ``VideoError`` /
``ModelError``), which the main CLI prints as one ``error: ...`` line with exit status 1.
"""
from __future__ import annotations

import click

EXAMPLES = """
\b
Examples:
  semcodec dataset synth -n 1000 -o clips/                 # moving shapes + clips/captions.jsonl
  semcodec dataset synth -n 200 -o test/ --split test      # the world's test split (held-out pairs, paraphrases)
  semcodec dataset build clips/ -o ds/ --captions clips/captions.jsonl --workers 2
  torchrun --nproc-per-node 4 -m semcodec.data.build videos/ -o ds/   # one shard of the files per rank
  semcodec dataset build videos/ -o ds/ --engine ray --workers 64      # a Ray cluster (RAY_ADDRESS)
  python -c "from semcodec.data import TokenDataset; print(TokenDataset('ds/'))"
"""


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
def dataset():
    """Token datasets: tokenize a video collection once, read it fast for language-model training."""


@click.command("build", epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("sources", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "out", required=True, help="dataset folder (created, or resumed)")
@click.option("--captions", default=None, type=click.Path(),
              help="JSONL: one {\"path\" (relative to the file) or \"id\", \"caption\", ...} per line")
@click.option("--model", default=None, help="shipped model name or checkpoint path [default: s128]")
@click.option("--workers", type=int, default=1, show_default=True,
              help="tokenizing processes per rank (one torch thread each); 0 = in this process; with "
                   "--engine ray: tokenizing Ray actors")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: processes of this machine (and torchrun ranks); ray: Ray Data actors on the Ray "
                   "cluster of RAY_ADDRESS (or a local one), shards written here (pip install 'semcodec[ray]')")
@click.option("--backbone", default=None, help="local folder of the pretrained backbone of a model whose "
              "features come from one (landiff)")
@click.option("--device", default=None, help="torch device [default: cuda:LOCAL_RANK if available, else cpu]")
@click.option("--shard-size", type=int, default=256, show_default=True, help="clips per Parquet shard")
@click.option("--retry-failed", is_flag=True, help="try again the sources an earlier run recorded as failed")
@click.option("--rank", type=int, default=None, help="this process's rank [default: $RANK or 0]")
@click.option("--world-size", type=int, default=None, help="number of ranks [default: $WORLD_SIZE or 1]")
@click.option("-q", "--quiet", is_flag=True, help="print nothing but errors")
def build_cmd(sources, out, captions, model, workers, engine, backbone, device, shard_size, retry_failed, rank,
              world_size, quiet):
    """Tokenize videos (files or folders, searched recursively) into a Parquet token dataset.

    Resumable and idempotent: run it again after a kill and every clip is present exactly once.
    Unreadable sources are listed with the reason in DS_DIR/failures-r*.jsonl.
    Under torchrun each rank takes the clips i % WORLD_SIZE == RANK. With --engine ray the
    clips are tokenized by Ray Data actors and this process writes the same shards, with the same
    exactly-once guarantee.
    """
    from .build import build
    log = None if quiet else (lambda m: click.echo(m, err=True))
    build(list(sources), out, model=model, captions=captions, workers=workers, rank=rank, world=world_size,
          device=device, shard_size=shard_size, retry_failed=retry_failed, log=log, progress=not quiet,
          engine=engine, backbone=backbone)


def _size(text: str) -> tuple[int, int]:
    from .dataset import DatasetError
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise DatasetError(f"--size must be HxW, e.g. 128x192, not {text!r}") from None
    if h < 8 or w < 8:
        raise DatasetError(f"--size {text} is too small (at least 8x8)")
    return h, w


@click.command("synth", epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-n", "count", type=int, required=True, help="number of clips")
@click.option("-o", "--output", "out", required=True, help="folder to write clip_NNNNNN.mp4 and captions.jsonl")
@click.option("--frames", type=int, default=32, show_default=True, help="frames per clip")
@click.option("--fps", type=float, default=8.0, show_default=True)
@click.option("--size", default="128x192", show_default=True, help="frame size HxW")
@click.option("--seed", type=int, default=0, show_default=True, help="clip i is scene seed + i")
@click.option("--max-shapes", type=int, default=3, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="the world's split: clip i is the i-th scene seed >= --seed in it, with a paraphrased "
                   "caption; held-out colour x shape pairs never appear in train [default: no split, "
                   "clip i is seed + i with its canonical caption]")
def synth_cmd(count, out, frames, fps, size, seed, max_shapes, workers, split):
    """Write procedural clips (moving shapes over backgrounds) with exact captions in captions.jsonl.

    Re-running keeps the clips already written. The captions file feeds `dataset build --captions`
    and `python -m generation.evaluate`. With --split, each line also has split, template and
    held_out, and the scene spec (JSON) as always.
    """
    from pathlib import Path
    from .dataset import DatasetError
    from .synth import write_clips
    hw = _size(size)
    if count < 1 or frames < 1 or fps <= 0 or max_shapes < 1:
        raise DatasetError("-n, --frames, --fps and --max-shapes must be positive")
    if Path(out).exists() and not Path(out).is_dir():
        raise DatasetError(f"output is a file, not a folder: {out}")
    cap = write_clips(count, out, frames=frames, size=hw, fps=fps, seed=seed, max_shapes=max_shapes,
                      workers=workers, split=split)
    click.echo(str(cap))


dataset.add_command(build_cmd)
dataset.add_command(synth_cmd)
