"""The rate control: one model coded at several semantic frame rates (``--fps`` and the named
operating points of the zoo), each stream decoding to the source's size, rate and frame count."""
import subprocess
import sys

import numpy as np
import pytest

from semcodec.bitstream import StreamReader
from semcodec.codec import Codec
from semcodec.video import iter_frames, probe
from semcodec.zoo import OPERATING_POINTS


def test_semantic_rate_scales_tokens_and_round_trips(sample, tmp_path):
    codec = Codec.load(None, "cpu")
    info = probe(sample)
    tokens = {}
    for fps in (2.0, 4.0, 8.0):
        out = tmp_path / f"t{fps:g}.bin"
        codec.encode_file(sample, out, fps=fps, search=0)      # the encoder's ids: fast
        with StreamReader(out, prior_counts=codec.prior) as r:
            assert r.header.semantic_fps == fps
            tokens[fps] = r.header.total_tokens
        rec = tmp_path / f"r{fps:g}.mp4"
        codec.decode_file(out, rec)
        got = np.stack(list(iter_frames(rec)))
        assert got.shape == (info.frames, info.height, info.width, 3)
        src = np.stack(list(iter_frames(sample))).astype(float)
        assert 10 * np.log10(255 ** 2 / np.mean((got - src) ** 2)) > 14     # a picture, not noise
    assert tokens[2.0] < tokens[4.0] < tokens[8.0]


def test_named_operating_points(sample, tmp_path):
    assert [OPERATING_POINTS[f"s128-{f}fps"] for f in (2, 4, 8)] == [("s128", 2.0), ("s128", 4.0), ("s128", 8.0)]
    assert Codec.load("s128", "cpu").semantic_fps(None) == 8.0          # the default: its own rate
    assert Codec.load("s128-4fps", "cpu").semantic_fps(None) == 4.0
    low = Codec.load("s128-2fps", "cpu")
    assert low.name == "s128" and low.semantic_fps(None) == 2.0 and low.semantic_fps(6) == 6.0
    assert Codec.load("s128", "cpu").semantic_fps(None) == low.config.fps
    out = tmp_path / "low.bin"
    r = subprocess.run([sys.executable, "-m", "semcodec", "encode", str(sample), "-o", str(out), "--model", "s128-2fps",
                        "--search", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with StreamReader(out) as rd:
        assert rd.header.semantic_fps == 2.0 and rd.header.model_name == "s128"
    rec = tmp_path / "low.mp4"         # the stream names the weights, so a plain decode finds them
    r = subprocess.run([sys.executable, "-m", "semcodec", "decode", str(out), "-o", str(rec)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert probe(rec).frames == probe(sample).frames


@pytest.mark.parametrize("fps", ["0.1", "100", "nan"])
def test_bad_rate_is_one_line(sample, tmp_path, fps):
    out = tmp_path / "x.bin"
    r = subprocess.run([sys.executable, "-m", "semcodec", "encode", str(sample), "-o", str(out), "--fps", fps],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr == f"error: --fps must be between 0.5 and 30, got {float(fps):g}\n"
    assert not out.exists()


def test_a_bit_budget_lowers_the_rate_until_the_file_fits(sample, tmp_path, capsys):
    """--max-kbps: the stream at the model's rate when it fits, else at a lower rate whose file
    does (and it still decodes to the source's frame count); a budget nothing fits is one error
    line and no file."""
    from semcodec.cli import main
    from semcodec.stream import stream_stats
    codec = Codec.load(None, "cpu")
    full = tmp_path / "full.bin"
    codec.encode_file(sample, full, search=0)
    own = stream_stats(full)
    assert own["semantic_fps"] == 8.0
    same = tmp_path / "same.bin"
    codec.encode_file(sample, same, max_kbps=own["kbit_per_s"] + 0.01, search=0)
    assert same.read_bytes() == full.read_bytes()
    budget = own["kbit_per_s"] * 0.6
    assert main(["encode", str(sample), "-o", str(tmp_path / "fit.bin"), "--max-kbps", f"{budget:g}", "--search", "0"]) == 0
    fit = stream_stats(tmp_path / "fit.bin")
    assert fit["kbit_per_s"] <= float(f"{budget:g}") and 2.0 < fit["semantic_fps"] < 8.0
    assert len(codec.decode(tmp_path / "fit.bin")) == probe(sample).frames
    capsys.readouterr()
    bad = tmp_path / "bad.bin"
    assert main(["encode", str(sample), "-o", str(bad), "--max-kbps", "0.01", "--search", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the video does not fit 0.01 kbit/s: ") and err.endswith(
        " kbit/s at 0.5 semantic fps (the lowest rate tried)\n") and err.count("\n") == 1, err
    assert main(["encode", str(sample), "-o", str(bad), "--max-kbps", "-3"]) == 1
    assert capsys.readouterr().err == "error: --max-kbps must be a positive number of kbit/s, got -3.0\n"
    assert not bad.exists()
