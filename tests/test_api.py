"""The public Python API: the README example as written, in-memory encode / decode equal to the
CLI's files, token streams as bytes and file objects, model identity, one base error, and a
start-up that does not load torch."""
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import semcodec
from semcodec import SemcodecError, TokenStream, get_preset
from semcodec.bitstream import BitstreamError
from semcodec.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def readme_python() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model (random weights) with a token prior, saved as a checkpoint."""
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    p = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    semcodec.save_checkpoint(semcodec.VideoTokenizer(cfg), cfg, p,
                             token_counts=np.arange(1, cfg.codebook_size + 1)[::-1].copy())
    return str(p)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """2 s of moving shapes at 25 fps, 64 x 96."""
    from semcodec.data import synth
    p = tmp_path_factory.mktemp("clip") / "clip.mp4"
    semcodec.write_video(p, synth.render(synth.random_scene(3), 50, (64, 96), 25), 25)
    return str(p)


@pytest.mark.parametrize("encoder", [pytest.param("search-off", id="search-off"),
                                     pytest.param("default", id="default", marks=pytest.mark.slow)])
def test_readme_example_runs_as_written_and_matches_the_cli(capsys, tmp_path, monkeypatch, encoder):
    """The README's Python block, unchanged, next to the sample clip: frames in memory -> bytes ->
    back -> frames; its bytes are those `semcodec encode` writes for the same video.
    ``default`` runs it with the encoder's defaults (token search and decoder adaptation: two
    encodes of about four minutes each on 2 cores, so in the slow suite); ``search-off`` with the
    codec's default search rounds set to 0, in the API and the CLI alike (the search and the
    adaptation have their own tests, on a short clip)."""
    if encoder == "search-off":
        monkeypatch.setattr(semcodec.Codec, "search_steps", property(lambda self: 0))
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "sample", "-o", "sample.mp4")[0] == 0
    scope: dict = {}
    exec(compile(readme_python(), "README.md", "exec"), scope)
    capsys.readouterr()
    assert run(capsys, "encode", "sample.mp4", "-o", "cli.bin")[0] == 0
    cli = Path("cli.bin").read_bytes()
    assert scope["data"] == cli and Path("tokens.bin").read_bytes() == cli
    codec, stream, video, frames = scope["codec"], scope["stream"], scope["video"], scope["frames"]
    from_file = codec.read_stream("cli.bin")
    assert all(np.array_equal(a, b) for a, b in zip(stream.tokens, from_file.tokens))
    # 4 s at s128's 8 semantic fps: 32 frames in groups of 8 overlapping by 2 (starts 0, 6, ..., 24)
    assert len(stream.tokens) == stream.header.n_groups == 5 and stream.header.semantic_fps == 8.0
    assert video.shape == frames.shape == (100, 180, 320, 3) and video.dtype == np.uint8
    assert Path("recon.mp4").stat().st_size > 1000
    err = np.abs(video.astype(float) - frames).mean()
    assert err < 20, err                     # a picture of the clip, not noise (measured 9.6)
    # the README's first example, the same stream through the CLI: info, decode, a real picture back
    code, out, _ = run(capsys, "info", "cli.bin")
    assert code == 0 and "model s128" in out
    assert run(capsys, "decode", "cli.bin", "-o", "cli.mp4")[0] == 0
    from bench.metrics import compare
    dec = np.stack(list(semcodec.video.iter_frames("cli.mp4")))
    assert dec.shape == frames.shape
    q = compare(frames, dec, 128)
    assert q["psnr"] > 18 and q["ssim"] > 0.4, q          # a picture, not noise or a flat colour (measured: 21.9 dB, 0.54)


def test_memory_file_and_file_object_forms_agree(tmp_path, tiny, clip):
    codec = semcodec.Codec.from_pretrained(tiny, "cpu")
    frames, fps = semcodec.read_video(clip)
    stream = codec.encode(frames, fps)
    codec.encode_file(clip, tmp_path / "t.bin")
    data = (tmp_path / "t.bin").read_bytes()
    assert stream.to_bytes() == data
    with open(clip, "rb") as src:                       # a video from a file object, a stream into one
        buf = io.BytesIO()
        codec.encode_file(src, buf)
    assert buf.getvalue() == data
    # decoded frames: the same from the stream object, the bytes, the path, a file object and decode_file
    ref = codec.decode(stream)
    assert ref.shape == frames.shape
    assert np.array_equal(codec.decode(data), ref)
    assert np.array_equal(codec.decode(tmp_path / "t.bin"), ref)
    assert np.array_equal(codec.decode(io.BytesIO(data)), ref)
    assert np.array_equal(codec.decode(stream, start=0.5, end=1.5), ref[13:38])   # frames 12.5 .. 37.5: 13..37
    assert codec.decode_file(io.BytesIO(data), tmp_path / "r.mp4") == 50
    # a stream loaded without the model's prior keeps its groups coded until a codec decodes it
    pending = TokenStream.load(tmp_path / "t.bin")
    with pytest.raises(BitstreamError, match="entropy-coded with the token prior of model 'tiny'"):
        pending.tokens
    assert np.array_equal(codec.decode(pending), ref)
    assert [g.tolist() for g in pending.with_prior(codec.prior).tokens] == [g.tolist() for g in stream.tokens]
    fixed = TokenStream.from_bytes(codec.encode(frames, fps, entropy="fixed").to_bytes())   # needs no prior
    assert [g.tolist() for g in fixed.tokens] == [g.tolist() for g in stream.tokens]
    assert fixed.header.entropy_mode == "fixed" and stream.header.entropy_mode == "adaptive"
    assert stream.header.entropy_params["init"] == "prior"           # the header as written, complete


def test_stream_errors_name_what_is_wrong(tiny, clip):
    codec = semcodec.Codec.from_pretrained(tiny, "cpu")
    data = codec.encode(*semcodec.read_video(clip)).to_bytes()
    with pytest.raises(BitstreamError, match=r"^the token stream is truncated: "):
        TokenStream.from_bytes(data[:-30], codec.prior)
    with pytest.raises(BitstreamError, match=r"^tokens.bin is not a semcodec token stream \(wrong magic bytes\)$"):
        TokenStream.load(_named(b"x" * 64, "tokens.bin"))


def _named(data: bytes, name: str):
    f = io.BytesIO(data)
    f.name = name
    return f


@pytest.mark.parametrize("frames,fps,msg", [
    (np.zeros((2, 32, 32), np.uint8), 10.0,
     "frames must be T x H x W x 3 uint8 with T >= 1, got uint8 of shape (2, 32, 32)"),
    (np.zeros((2, 32, 32, 3), np.float32), 10.0, "frames must be T x H x W x 3 uint8 with T >= 1, got float32"),
    (np.zeros((2, 32, 32, 3), np.uint8), 0.0, "fps must be a positive number of frames per second, got 0.0"),
    (np.zeros((1, 32, 9000, 3), np.uint8), 10.0, "frames of 9000x32 at 10 fps: 9000x32 is larger than semcodec takes"),
])
def test_encode_refuses_bad_frames(tiny, frames, fps, msg):
    codec = semcodec.Codec.from_pretrained(tiny, "cpu")
    with pytest.raises(SemcodecError) as e:
        codec.encode(frames, fps)
    assert str(e.value).startswith(msg)


def test_every_error_class_has_one_base():
    from generation.lm.layout import LayoutError
    from semcodec.bitstream.entropy import PayloadError
    from semcodec.bitstream.header import HeaderError
    from semcodec.cli import UserError
    from semcodec.codec import CodecError
    from semcodec.data import DatasetError
    from semcodec.errors import ConfigError, ModelError, OutputError
    from semcodec.limits import LimitError
    from semcodec.video import VideoError
    from semcodec.zoo import ModelError as ZooModelError
    classes = [BitstreamError, PayloadError, HeaderError, UserError, CodecError, DatasetError, ConfigError, ModelError,
               OutputError, LimitError, VideoError, LayoutError]
    assert all(issubclass(c, SemcodecError) for c in classes)
    assert ZooModelError is ModelError
    with pytest.raises(SemcodecError, match=r"^unknown preset 'nope' \(known: "):
        get_preset("nope")


def test_export_names_the_model_after_its_file(capsys, tmp_path, clip):
    """A model exported without --name is not confused with the shipped model of its preset:
    streams carry its own name, and `decode` asks for its checkpoint instead of loading another."""
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", "--preset", "tiny", "--data", "synth", "--out", str(run_dir), "--steps", "2",
                       "--ckpt-every", "2", "--threads", "1")
    assert code == 0, err
    out = tmp_path / "my-model.safetensors"
    code, stdout, err = run(capsys, "export", str(run_dir), "-o", str(out), "--prior-batches", "1")
    assert code == 0, err
    assert stdout.startswith(f"wrote {out} (")
    ck = semcodec.load_checkpoint(out)
    assert (ck.name, ck.config.name) == ("my-model", "tiny")
    meta = semcodec.checkpoint.read_metadata(out)
    assert str(tmp_path) not in json.dumps(meta)               # no path of this machine in the file
    tok = tmp_path / "t.bin"
    assert run(capsys, "encode", clip, "-o", str(tok), "--model", str(out))[0] == 0
    code, _, err = run(capsys, "decode", str(tok), "-o", str(tmp_path / "r.mp4"))
    assert (code, err) == (1, "error: the stream was made by model 'my-model', which semcodec does not ship: "
                              "give its checkpoint with --model\n")
    assert run(capsys, "decode", str(tok), "-o", str(tmp_path / "r.mp4"), "--model", str(out))[0] == 0
    # the run's own checkpoints are named after the run folder
    assert semcodec.load_checkpoint(run_dir / "ckpt" / "model.safetensors").name == "run"


def test_checkpoints_load_on_the_meta_device_with_their_own_tensors(tiny):
    """The model is built on the meta device and takes the file's tensors (assign=True): nothing
    is left on meta, and the weights are those of the file."""
    from safetensors.torch import load_file
    ck = semcodec.load_checkpoint(tiny)
    params = dict(ck.model.named_parameters())
    assert not any(t.is_meta for t in [*params.values(), *ck.model.buffers()])
    state = load_file(tiny)
    assert all(torch.equal(params[k], state[k]) for k in params)
    # nothing is drawn on meta: a random op there would import torch._dynamo (over a second)
    assert "torch._dynamo" not in _subprocess_modules(f"import semcodec\nsemcodec.load_checkpoint({tiny!r})")


def test_caches_belong_to_the_model():
    """RoPE tables and masks live in each model's LayoutCache, not in module globals."""
    from semcodec.model import masks, tokenizer
    assert not hasattr(tokenizer, "_rope_tables") and not hasattr(masks.get_mask, "cache_info")
    cfg = get_preset("tiny")
    a, b = semcodec.VideoTokenizer(cfg).eval(), semcodec.VideoTokenizer(cfg).eval()
    with torch.inference_mode():
        a.encode(torch.zeros(1, 2, 32, 48, 3))
    enc_a, enc_b = a.tokenizer.encoder.layout_cache, b.tokenizer.encoder.layout_cache
    assert len(enc_a._rope) == len(enc_a._masks) == 1 and len(enc_b._rope) == 0
    cos, _ = next(iter(enc_a._rope.values()))
    assert not cos.is_inference()                          # built under inference_mode, usable in training
    assert not any("layout_cache" in k for k in a.state_dict())


def _subprocess_modules(code: str) -> set:
    r = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.strip().splitlines()[-1]))


def test_help_and_info_do_not_import_torch(tmp_path, tiny, clip):
    mods = _subprocess_modules("from semcodec.cli import main\nmain(['--help'])")
    assert "torch" not in mods and "numpy" not in mods
    codec = semcodec.Codec.from_pretrained(tiny, "cpu")
    codec.encode_file(clip, tmp_path / "t.bin")
    stream = str(tmp_path / "t.bin")
    mods = _subprocess_modules(f"from semcodec.cli import main\nassert main(['info', {stream!r}]) == 0")
    assert "torch" not in mods
    assert "torch" not in _subprocess_modules("import semcodec")


def test_decoded_frames_are_upsampled_bicubically_and_keep_the_model_picture():
    """``from_model`` draws the model's picture at the source size bicubically: area-shrunk back
    to the model's size, it is nearer the picture than a bilinear upsampling, and in range."""
    import torch.nn.functional as F
    from semcodec.video import Geometry, from_model
    geo = Geometry((272, 640), (128, 301), (128, 304))
    g = torch.Generator().manual_seed(0)
    pic = F.interpolate(torch.rand(1, 3, 32, 76, generator=g) * 2 - 1, size=geo.padded, mode="bilinear")
    pic = pic.permute(0, 2, 3, 1)                                        # 1 x ph x pw x 3 in [-1, 1]
    out = from_model(pic, geo)
    assert out.shape == (1, 272, 640, 3) and out.min() >= 0 and out.max() <= 255
    ref = (pic[:, :128, :301] + 1) * 127.5

    def back(x):
        return F.interpolate(x.permute(0, 3, 1, 2), size=(128, 301), mode="area").permute(0, 2, 3, 1)

    bilinear = F.interpolate(ref.permute(0, 3, 1, 2), size=(272, 640), mode="bilinear").permute(0, 2, 3, 1)
    assert (back(out) - ref).pow(2).mean() < 0.8 * (back(bilinear) - ref).pow(2).mean()
