"""The ``semcodec`` command line.

Every user mistake ends with one line ``error: ...`` on stderr and exit status 1 (2 for a usage
error), never a traceback, never a partial output file. The commands are thin: the checks live in
the library (``Codec.encode_file`` checks its output path, ``Codec.for_stream`` the stream and the
model it names, ``TrainConfig.check`` the training options), so the CLI and the Python API refuse
the same things with the same words.

Start-up: this module imports click and semcodec's torch-free modules only; every command imports
what it needs when it runs, so ``semcodec --help`` and ``semcodec info`` never load torch
(``python -m bench.startup`` measures it).
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager

import click

from .errors import SemcodecError
from .limits import MAX_ADAPT_STEPS, MAX_SEARCH_STEPS
from .train_config import click_options, expand_many, many_value_options

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

TRAIN_EXAMPLES = """
\b
Examples:
  semcodec train --preset s128 --data videos/ photos/ synth --out runs/my-model --bf16
  torchrun --nproc-per-node 2 -m semcodec.train --preset s128 --data synth --out runs/ddp
  semcodec export runs/my-model -o my-model.safetensors
  semcodec encode video.mp4 -o tokens.bin --model my-model.safetensors
"""


class UserError(SemcodecError):
    pass


@contextmanager
def _progress(desc: str, unit: str = "group"):
    """A tqdm bar on a terminal (nothing otherwise), as a ``progress(done, total)`` callback."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm
            bar = tqdm(total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), leave=False)
        bar.update(done - bar.n)
    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="semcodec")
def cli():
    """semcodec: a semantic video codec (LanDiff tokenizer): video <-> a few hundred tokens per second."""


BACKBONE_HELP = ("local folder of the pretrained backbone, for models whose features come from one (landiff): "
                 "a Theia / DeiT / ViT folder in the Hugging Face layout")


@cli.command(epilog=EXAMPLES)
@click.argument("src", type=click.Path(dir_okay=True))
@click.option("-o", "--output", "dst", required=True, help="token stream to write (tokens.bin)")
@click.option("--model", default=None, help="shipped model name (s128, or an operating point: s128-2fps, "
              "s128-4fps, s128-8fps), checkpoint file or model folder [default: s128]")
@click.option("--entropy", type=click.Choice(["context", "adaptive", "prior", "fixed"]), default=None,
              help="entropy coding of token ids [default: context when the model ships a context model, else adaptive]")
@click.option("--fps", type=float, default=None,
              help="semantic frames per second, the rate control: tokens/s scale with it [default: the model's]")
@click.option("--max-kbps", type=float, default=None,
              help="a bit budget: the highest semantic rate up to --fps (default: the model's) whose file fits "
                   "it, the video coded again at a lower rate until it does")
@click.option("--search", type=click.IntRange(0, MAX_SEARCH_STEPS), default=None,
              help="rounds of token search per group: ids chosen for what the decoder draws from them, at the "
                   "context model's cost in bits (0: the encoder's nearest codes, about 30x faster) "
                   "[default: 12 where the model ships a context model, as s128 does, else 0]")
@click.option("--adapt", type=click.IntRange(0, MAX_ADAPT_STEPS), default=None,
              help="steps of fitting the decoder's head biases to this video, sent in the stream where they pay "
                   "for their bits (0: none) [default: 24 where the token search runs, else 0]")
@click.option("--device", default=None, help="torch device [default: cuda if available, else cpu]")
@click.option("--backbone", default=None, help=BACKBONE_HELP)
def encode(src, dst, model, entropy, fps, max_kbps, search, adapt, device, backbone):
    """Encode a video (any container FFmpeg reads) into a token stream."""
    from .codec import Codec, check_target
    check_target(dst, src)              # before the model loads: a typo costs no wait
    codec = Codec.from_pretrained(model, device, backbone)
    with _progress("encode") as cb:
        codec.encode_file(src, dst, entropy=entropy, progress=cb, fps=fps, max_kbps=max_kbps, search=search,
                          adapt=adapt)


@cli.command(epilog=EXAMPLES)
@click.argument("src", type=click.Path(dir_okay=True))
@click.option("-o", "--output", "dst", required=True, help="video to write (.mp4, .mkv, .mov, .webm, .avi)")
@click.option("--start", type=float, default=None, help="first second to decode")
@click.option("--end", type=float, default=None, help="second to stop at (exclusive)")
@click.option("--model", default=None, help="model to decode with [default: the one named in the stream]")
@click.option("--device", default=None)
@click.option("--backbone", default=None, help=BACKBONE_HELP)
@click.option("--renderer", default=None, help="render with a plugin instead of the model's decoder: NAME or "
              "NAME:WEIGHTS (e.g. diffusion; semcodec.renderers) [default: the direct decoder]")
@click.option("--steps", type=int, default=None, help="with --renderer: sampling steps [default: the renderer's]")
@click.option("--seed", type=int, default=None, help="with --renderer: the seed (same seed, same video) [default: 0]")
def decode(src, dst, start, end, model, device, backbone, renderer, steps, seed):
    """Decode a token stream back to video at the source's size, frame rate and frame count."""
    from .codec import Codec, check_target
    check_target(dst, src)
    if renderer is None and (steps is not None or seed is not None):
        raise click.UsageError("--steps and --seed go with --renderer")
    codec = Codec.for_stream(src, model, device, backbone)     # the stream checked before a model loads
    if renderer is None:
        with _progress("decode") as cb:
            codec.decode_file(src, dst, start=start, end=end, progress=cb)
        return
    from .bitstream import StreamReader
    from .renderers import load_renderer
    codec.renderer = load_renderer(renderer, codec, steps=steps, seed=seed or 0)
    with StreamReader(src) as r:
        total = len(codec.span(r.header, start, end).groups) * codec.renderer.steps
    with _progress(f"render ({renderer.partition(':')[0]})", "step") as cb:
        done = iter(range(1, total + 1))
        codec.renderer.on_step = lambda: cb(next(done, total), total)      # one tick per sampler step
        codec.decode_file(src, dst, start=start, end=end)


@cli.command(epilog=EXAMPLES)
@click.argument("src", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--verify", is_flag=True, help="entropy-decode every group and check its CRC and the layout "
              "(no network needed; the prior and context modes read the model's prior / context model)")
@click.option("--model", default=None, help="with --verify: the model whose prior / context model the stream "
              "uses [default: the shipped one it names]")
def info(src, as_json, verify, model):
    """Describe a token stream: model, duration, groups, tokens, rates."""
    from .stream import stream_stats, verify_stream
    s = verify_stream(src, model) if verify else stream_stats(src)
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
               f"{s['bytes']} bytes ({s['overhead_bytes']} of container, format {s['format']})")
    a = s["adaptation"]
    if a:
        click.echo(f"  adapted   {a['changed']} of {a['parameters']} decoder biases, steps of {a['step']:g}, "
                   f"{a['bytes']} bytes (in the container's)")
    if verify:
        click.echo(f"  verified  {s['groups']} groups entropy-decoded ({s['tokens_decoded']} tokens), every CRC "
                   f"and the layout check; entropy model: {s['entropy_model']}")


@cli.command()
@click.option("-o", "--output", "dst", default="sample.mp4", show_default=True, help="where to write the clip")
def sample(dst):
    """Write the shipped sample clip (4 s of Big Buck Bunny, 320x180, CC-BY Blender Foundation)."""
    import shutil
    from pathlib import Path
    from .atomic import atomic_path
    from .codec import check_target
    check_target(dst)
    with atomic_path(dst, suffix=Path(dst).suffix) as tmp:
        shutil.copyfile(Path(__file__).parent / "data" / "samples" / "sample.mp4", tmp)
    click.echo(dst)


class _ManyValues(click.Command):
    """A command whose list options take their values argparse-style: ``--data a b c``."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, expand_many(args, many_value_options()))


@cli.command(cls=_ManyValues, epilog=TRAIN_EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click_options
def train(**options):
    """Train a codec (resumable: run the same command again after a kill)."""
    from .train import train as run_training
    from .train_config import TrainConfig
    run_training(TrainConfig.from_dict(options))


@cli.command(epilog=TRAIN_EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path())
@click.option("-o", "--output", "out", required=True, help="checkpoint to write (my-model.safetensors)")
@click.option("--name", default=None, help="the model's name, recorded in every stream it makes [default: the "
              "output file's name without .safetensors]")
@click.option("--prior-batches", type=int, default=100, show_default=True,
              help="batches to measure the token prior on (0: none)")
@click.option("--backbone", default=None, help=BACKBONE_HELP + " [default: the run's]")
@click.option("--fps", type=float, default=None, help="the model's own semantic frame rate, what `semcodec encode` "
              "codes at without --fps (a model trained with --fps-choices codes all of them) [default: the run's]")
@click.option("--prior-from", default=None, help="take the token prior of this model, which must make the same "
              "tokens (the --init of a --decoder-only run): streams coded with its prior stay decodable")
def export(run_dir, out, name, prior_batches, backbone, fps, prior_from):
    """Export a training run as a shippable model: EMA weights in float16 and the token prior."""
    from pathlib import Path
    from .codec import check_target
    from .export import export as run_export
    check_target(out)
    digest = run_export(run_dir, out, prior_batches, name, backbone, fps, prior_from)
    click.echo(f"wrote {out} ({Path(out).stat().st_size / 1e6:.2f} MB, hash {digest[:16]})")


@cli.command(epilog="""
\b
Examples:
  semcodec convert ckpts/LanDiff/tokenizer/model.safetensors -o landiff.safetensors
  semcodec encode video.mp4 -o tokens.bin --model landiff.safetensors --backbone theia-base/
""")
@click.argument("src", type=click.Path())
@click.option("-o", "--output", "out", required=True, help="semcodec checkpoint to write")
@click.option("--name", default="landiff", show_default=True, help="the model's name")
def convert(src, out, name):
    """Convert the authors' released LanDiff tokenizer checkpoint into a semcodec checkpoint."""
    from pathlib import Path
    from .codec import check_target
    from .convert import convert as run_convert
    check_target(out, src)
    digest = run_convert(src, out, name)
    click.echo(f"wrote {out} ({Path(out).stat().st_size / 1e6:.2f} MB, hash {digest[:16]})")


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
    except SemcodecError as e:
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
