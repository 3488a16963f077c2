"""The ``semcodec`` command line.

Every user mistake ends with one line ``error: ...`` on stderr and exit status 1 (2 for a usage
error), never a traceback, never a partial output file.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

EXAMPLES = """
\b
Examples:
  semcodec sample -o video.mp4             # a 4 s clip to try things on
  semcodec encode video.mp4 -o tokens.bin
  semcodec decode tokens.bin -o recon.mp4
  semcodec decode tokens.bin -o clip.mp4 --start 2 --end 5
  semcodec decode tokens.bin -o sharp.mp4 --renderer diffusion --steps 20
  semcodec info tokens.bin --json
"""


class UserError(Exception):
    pass


def _user_errors():
    from .bitstream import BitstreamError
    from .codec import CodecError
    from .data.dataset import DatasetError
    from .renderers import RendererError
    from .video import VideoError
    from .zoo import ModelError
    return (BitstreamError, CodecError, DatasetError, VideoError, ModelError, RendererError, UserError)


def _progress(total: int, desc: str, unit: str = "group"):
    """A tqdm bar on a terminal, nothing otherwise; returns (callback, close)."""
    from tqdm import tqdm
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), leave=False)
    return (lambda *_: bar.update(1)), bar.close


def _check_output(path: str, src: str | None = None) -> None:
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise UserError(f"output folder does not exist: {parent}")
    if Path(path).is_dir():
        raise UserError(f"output is a directory: {path}")
    # samefile compares device and inode: links, hard links and other spellings all count
    if src is not None and os.path.exists(path) and os.path.exists(src) and os.path.samefile(src, path):
        raise UserError(f"output is the input file: {path} (writing it would destroy the input)")


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="semcodec")
def cli():
    """semcodec: a semantic video codec (LanDiff tokenizer): video <-> a few hundred tokens per second."""


@cli.command(epilog=EXAMPLES)
@click.argument("src", type=click.Path(dir_okay=True))
@click.option("-o", "--output", "dst", required=True, help="token stream to write (tokens.bin)")
@click.option("--model", default=None, help="shipped model name (s128, or an operating point: s128-2fps, "
              "s128-8fps) or checkpoint path [default: s128]")
@click.option("--entropy", type=click.Choice(["adaptive", "prior", "fixed"]), default="adaptive", show_default=True,
              help="entropy coding of token ids")
@click.option("--fps", type=float, default=None,
              help="semantic frames per second, the rate control: tokens/s scale with it [default: the model's]")
@click.option("--device", default=None, help="torch device [default: cuda if available, else cpu]")
def encode(src, dst, model, entropy, fps, device):
    """Encode a video (any container FFmpeg reads) into a token stream."""
    from .codec import Codec
    from .gop import plan_groups
    from .video import probe, semantic_frame_count
    _check_output(dst, src)
    info = probe(src)
    codec = Codec.load(model, device)
    n_sem = semantic_frame_count(info.frames, info.fps, codec.semantic_fps(fps))
    cb, close = _progress(len(plan_groups(n_sem, codec.config.group, codec.config.overlap)), "encode")
    try:
        codec.encode_file(src, dst, entropy=entropy, progress=cb, fps=fps)
    finally:
        close()


@cli.command(epilog=EXAMPLES)
@click.argument("src", type=click.Path(dir_okay=True))
@click.option("-o", "--output", "dst", required=True, help="video to write (.mp4, .mkv, .mov, .webm)")
@click.option("--start", type=float, default=None, help="first second to decode")
@click.option("--end", type=float, default=None, help="second to stop at (exclusive)")
@click.option("--model", default=None, help="model to decode with [default: the one named in the stream]")
@click.option("--device", default=None)
@click.option("--renderer", default=None, help="render with a plugin instead of the model's decoder: NAME or "
              "NAME:WEIGHTS (e.g. diffusion; semcodec.renderers) [default: the direct decoder]")
@click.option("--steps", type=int, default=None, help="with --renderer: sampling steps [default: the renderer's]")
@click.option("--seed", type=int, default=None, help="with --renderer: the seed (same seed, same video) [default: 0]")
def decode(src, dst, start, end, model, device, renderer, steps, seed):
    """Decode a token stream back to video at the source's size, frame rate and frame count."""
    from .bitstream import StreamReader
    from .codec import Codec
    from .zoo import shipped_models
    _check_output(dst, src)
    with StreamReader(src) as reader:      # the whole container checked before a model is loaded
        header = reader.header
    if model is None and header.model_name not in shipped_models():
        # a name from the file is never taken as a path: a stream must not pick files to load
        raise UserError(f"the stream was made by model '{header.model_name}', which semcodec does not "
                        f"ship: give its checkpoint with --model")
    codec = Codec.load(model or header.model_name, device)
    codec.check_stream(header)
    span = codec.span(header, start, end)
    if renderer is None and (steps is not None or seed is not None):
        raise click.UsageError("--steps and --seed go with --renderer")
    if renderer is not None:
        from .renderers import load_renderer
        codec.renderer = load_renderer(renderer, codec, steps=steps, seed=seed or 0)
        name = renderer.partition(":")[0]
        cb, close = _progress(len(span.groups) * codec.renderer.steps, f"render ({name})", "step")
        codec.renderer.on_step, cb = cb, None
    else:
        cb, close = _progress(len(span.groups), "decode")
    try:
        codec.decode_file(src, dst, start=start, end=end, progress=cb)
    finally:
        close()


@cli.command(epilog=EXAMPLES)
@click.argument("src", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def info(src, as_json):
    """Describe a token stream: model, duration, groups, tokens, rates."""
    from .codec import stream_stats
    s = stream_stats(src)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    src_ = s["source"]
    click.echo(f"{s['file']}: model {s['model']} ({s['model_hash'][:12]})\n"
               f"  source    {src_['width']}x{src_['height']} @ {src_['fps']:.3f} fps, {src_['frames']} frames, "
               f"{s['duration_s']:.2f} s\n"
               f"  groups    {s['groups']} x {s['group']} frames at {s['semantic_fps']:g} fps (overlap {s['overlap']}), "
               f"{s['iframe_tokens']} I + {s['pframe_tokens']} P tokens\n"
               f"  tokens    {s['tokens']} ({s['tokens_per_s']:.1f} tokens/s)\n"
               f"  entropy   {s['entropy']}: {s['bits_per_token']:.3f} bits/token, {s['kbit_per_s']:.2f} kbit/s, "
               f"{s['bytes']} bytes")


@cli.command()
@click.option("-o", "--output", "dst", default="sample.mp4", show_default=True, help="where to write the clip")
def sample(dst):
    """Write the shipped sample clip (4 s of Big Buck Bunny, 320x180, CC-BY Blender Foundation)."""
    import shutil
    from .atomic import atomic_path
    _check_output(dst)
    with atomic_path(dst, suffix=Path(dst).suffix) as tmp:
        shutil.copyfile(Path(__file__).parent / "data" / "samples" / "sample.mp4", tmp)
    click.echo(dst)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.pass_context
def train(ctx):
    """Train a codec (see `semcodec train --help`)."""
    from .train import main as train_main
    train_main(ctx.args)


def _os_message(e: OSError) -> str:
    kinds = {FileNotFoundError: "no such file", IsADirectoryError: "is a directory",
             PermissionError: "permission denied", NotADirectoryError: "not a directory"}
    what = kinds.get(type(e)) or (e.strerror or str(e)).lower()
    return f"{what}: {e.filename}" if e.filename else what


def main(argv=None) -> int:
    return run_click(cli, argv, "semcodec")


def run_click(command: click.Command, argv, prog_name: str) -> int:
    """Run a click command the house way: user mistakes -> one ``error:`` line and exit 1
    (2 for usage), never a traceback. Returns the exit status."""
    errors = _user_errors()
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 1
    except click.UsageError as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return 2
    except errors as e:
        click.echo(f"error: {e}", err=True)
        return 1
    except OSError as e:           # a file the user named cannot be opened, read or written
        click.echo(f"error: {_os_message(e)}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return 130
    return 0


from .data.cli import dataset  # noqa: E402  (a group of its own module, registered here)

cli.add_command(dataset)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
