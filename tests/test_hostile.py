"""Hostile files and faults (issue 16): forged streams with valid CRCs, forged and broken model
files, CLI values that overflow, outputs that would destroy their input, planted links, killed
runs. Every case ends in one exact `error:` line, exit status 1, no traceback, no output file,
within seconds and well under 1 GB.

The CLI cases run together in one subprocess (one torch import) that times each case and
reports the peak RSS; ``docs/faults.md`` lists them with the behaviour they check.
"""
import json
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from bench.fuzz_streams import base_stream, build_stream, chunk, forge, split, tiny_model
from semcodec import VideoTokenizer, get_preset
from semcodec.bitstream import BitstreamError, StreamReader
from semcodec.codec import Codec

CASE_SECONDS = 10          # a hostile case is refused in seconds of CPU time (not wall: the machine is shared) ...
PEAK_RSS_MB = 1000         # ... and well under 1 GB for the whole batch

# A child's own peak resident size: VmHWM. Not ru_maxrss: Linux hands a spawned child the resident
# size of its parent (pytest, which grows with every test module) as its starting maximum.
PEAK = r"""
def peak_mb():
    try:
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

RUNNER = PEAK + r"""
import contextlib, io, json, resource, signal, sys, time, traceback
from semcodec.cli import main
class Hang(BaseException):
    pass
def alarm(*_):
    raise Hang()
signal.signal(signal.SIGALRM, alarm)
results = []
for args in json.load(sys.stdin):
    err, cpu = io.StringIO(), time.process_time()
    signal.setitimer(signal.ITIMER_REAL, 60)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
    except Hang:
        code = "hang"
    except BaseException:
        code = "traceback"
        err.write(traceback.format_exc())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    results.append({"code": code, "err": err.getvalue(), "cpu_s": time.process_time() - cpu,
                    "rss_mb": peak_mb()})
json.dump(results, sys.stdout)
"""


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """A folder with a tiny model (format 2, with a prior and a random context model beside it),
    a 0.8 s clip and its token stream (format 2, context-coded: the model's default)."""
    root = tmp_path_factory.mktemp("hostile")
    model = tiny_model(str(root))
    (root / "t.bin").write_bytes(base_stream(Codec.load(model, "cpu"), str(root)))
    (root / "base.bin").unlink()
    return root


def forged_model(d, name, config=None, drop_config=False, **changes):
    """The tiny model with its config edited (the stored content hash left as it was)."""
    from safetensors import safe_open
    src = d / "tiny.safetensors"
    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    cfg = json.loads(meta["config"])
    cfg.update(changes)
    meta["config"] = config if config is not None else json.dumps(cfg)
    if drop_config:
        del meta["config"]
    p = d / name
    save_file(load_file(str(src)), str(p), metadata=meta)
    return p


def write(d, name, data: bytes):
    (d / name).write_bytes(data)
    return str(d / name)


def make_cases(d) -> dict:
    """name -> (CLI args, the exact error line)."""
    t = (d / "t.bin").read_bytes()
    model = str(d / "tiny.safetensors")
    out = str(d / "out.mp4")
    dec = lambda src: ["decode", src, "-o", out, "--model", model]
    fit = "error: the stream's header does not fit model 'tiny': {} (a forged or damaged file)"
    h, chunks = split(t)
    h1 = {**h, "model_hash": Codec.load(model, "cpu").content_hash, "n_groups": 2, "entropy_mode": "adaptive"}
    size = (d / "tiny.safetensors").stat().st_size
    header = int.from_bytes((d / "tiny.safetensors").read_bytes()[:8], "little")
    cases = {
        # 1. decode work: more tokens declared than the model codes, a 64K alphabet with empty
        # payloads (the rANS state stays 0 and yields token 0 forever)
        "more_tokens": (dec(write(d, "more.bin", build_stream(        # empty rANS payloads: any count decodes
            {**h, "iframe_tokens": 9, "entropy_params": {**h["entropy_params"], "iframe_rows": 3}}, [(b"", False)] * 2))),
                        fit.format("field 'iframe_tokens' is 9, the model's is 8")),
        "huge_alphabet": (dec(write(d, "alpha.bin", build_stream(
            {**h, "codebook_size": 65536, "iframe_tokens": 1 << 20, "pframe_tokens": 1 << 20, "entropy_mode": "adaptive",
             "entropy_params": {"block": 1, "coder": "rans32", "increment": 16, "init": "uniform", "precision": 24}},
            [(b"", False)] * 2))),
            "error: {} is corrupt: its header declares more decoding work (6291456 tokens) than a stream of {size} bytes can hold"),
        "huge_alphabet_context": (dec(write(d, "alpha2.bin", build_stream(
            {**h, "codebook_size": 65536, "iframe_tokens": 1 << 20, "pframe_tokens": 1 << 20,
             "entropy_params": {**h["entropy_params"], "iframe_rows": 1024, "pframe_rows": 1024}},
            [(b"", False)] * 2))),
            "error: {} is corrupt: its header declares more decoding work (6291456 tokens) than a stream of {size} bytes can hold"),
        "format1_huge_alphabet": (dec(write(d, "alpha1.bin", build_stream(
            {**h1, "codebook_size": 65536, "iframe_tokens": 1 << 20, "pframe_tokens": 1 << 20,
             "entropy_params": {"block": 1, "coder": "rans32", "increment": 16, "init": "uniform", "precision": 24}},
            [chunk(i, *c, b"") for i, c in enumerate([(0, 4), (3, 2)])]))),
            "error: {} is corrupt: its header declares more decoding work (6291456 tokens) than a stream of {size} bytes can hold"),
        # 2. forged sizes
        "padded_20000": (dec(write(d, "pad.bin", forge(t, padded_height=20000, padded_width=20000))),
                         fit.format("its model geometry is not the one of a 96x64 source")),
        "dims_2_20": (dec(write(d, "dims.bin", forge(t, src_width=1 << 20, src_height=1 << 20))),
                      fit.format("the source it claims is not one semcodec codes: 1048576x1048576 is larger "
                                 "than semcodec takes (at most 8847360 pixels, e.g. 4096x2160, and 8192 per side)")),
        "src_frames_1e9": (dec(write(d, "frames.bin", forge(t, src_frames=10 ** 9))),
                           fit.format("1000000000 source frames make 240000000 semantic frames, not 5")),
        "src_frames_1e9_consistent": (dec(write(d, "frames2.bin", forge(t, src_frames=10 ** 9, semantic_frames=240000000,
                                                                        n_groups=80000000))),
                                      "error: {} is corrupt: the group index does not fit the file (80000000 groups declared)"),
        "iframe_tokens_1049472": (dec(write(d, "itok.bin", build_stream(
            {**h, "iframe_tokens": 1049472, "entropy_params": {**h["entropy_params"], "iframe_rows": 1}},
            [(b"", False)] * 2))),
                                  "error: {} is corrupt: its header declares more decoding work (2098960 tokens) than "
                                  "a stream of {size} bytes can hold"),
        "src_fps_tiny": (dec(write(d, "fps.bin", forge(t, src_fps=1e-6))),
                         fit.format("the source it claims is not one semcodec codes: a frame rate of 1e-06 fps "
                                    "is outside 0.1..240")),
        "src_fps_huge": (dec(write(d, "fps2.bin", forge(t, src_fps=1e9, src_frames=10 ** 9))),
                         fit.format("the source it claims is not one semcodec codes: a frame rate of 1e+09 fps "
                                    "is outside 0.1..240")),
        "src_8192": (dec(write(d, "big.bin", forge(t, src_width=8192, src_height=8192, scaled_width=32,
                                                   padded_width=32))),
                     fit.format("the source it claims is not one semcodec codes: 8192x8192 is larger than "
                                "semcodec takes (at most 8847360 pixels, e.g. 4096x2160, and 8192 per side)")),
        "output_budget": (dec(write(d, "4k.bin", forge(t, src_width=4096, src_height=2160, scaled_width=61,
                                                       padded_width=64, src_fps=240.0, src_frames=200))),
                          "error: the stream asks for 200 frames of 4096x2160 from {size} bytes, more than 1048576 "
                          "pixels per byte (a forged or damaged file; --start / --end decode a part)"),
        "semantic_fps_huge": (dec(write(d, "sfps.bin", forge(t, semantic_fps=1e9))),
                              fit.format("semantic_fps 1e+09 is outside 0.5..30")),
        # 3. CLI values
        "start_nan": (dec(str(d / "t.bin")) + ["--start", "nan"], "error: --start must be a finite number of seconds, got nan"),
        "end_inf": (dec(str(d / "t.bin")) + ["--end", "inf"], "error: --end must be a finite number of seconds, got inf"),
        "start_1e308": (dec(str(d / "t.bin")) + ["--start", "1e308"],
                        "error: empty span: --start 1e+308 --end None holds no frame of a 0.80 s video"),
        "device_bogus": (dec(str(d / "t.bin")) + ["--device", "bogus"],
                         "error: unknown device 'bogus' (use cpu, cuda, mps, xpu, e.g. cuda:0)"),
        "model_is_video": (["encode", str(d / "clip.mp4"), "-o", str(d / "o.bin"), "--model", str(d / "clip.mp4")],
                           f"error: cannot load model {d / 'clip.mp4'}: not a semcodec checkpoint (no safetensors header)"),
        "model_truncated": (["decode", str(d / "t.bin"), "-o", out, "--model",
                             write(d, "cut.safetensors", (d / "tiny.safetensors").read_bytes()[:60000])],
                            f"error: cannot load model {d / 'cut.safetensors'}: truncated or damaged: the tensor data "
                            f"takes {size - 8 - header} bytes, the file holds {60000 - 8 - header}"),
        "model_header_huge": (["decode", str(d / "t.bin"), "-o", out, "--model",
                               write(d, "hdr.safetensors", struct.pack("<Q", 1 << 40) + b"{}" * 100)],
                              f"error: cannot load model {d / 'hdr.safetensors'}: not a semcodec checkpoint (no safetensors header)"),
        "config_wrong_type": (["decode", str(d / "t.bin"), "-o", out, "--model", str(forged_model(d, "type.safetensors", width="64"))],
                              f"error: cannot load model {d / 'type.safetensors'}: invalid model config: config field "
                              f"'width' must be an integer in [8, 4096], got '64'"),
        "config_missing": (["decode", str(d / "t.bin"), "-o", out, "--model", str(forged_model(d, "nocfg.safetensors", drop_config=True))],
                           f"error: cannot load model {d / 'nocfg.safetensors'}: not a semcodec checkpoint (config or content hash missing)"),
        "config_not_json": (["decode", str(d / "t.bin"), "-o", out, "--model", str(forged_model(d, "njs.safetensors", config="[1,"))],
                            f"error: cannot load model {d / 'njs.safetensors'}: invalid model config: Expecting value: "
                            f"line 1 column 4 (char 3)"),
        # 4. forged models
        "codebook_1e9": (["decode", str(d / "t.bin"), "-o", out, "--model", str(forged_model(d, "cb.safetensors", codebook_size=10 ** 9))],
                         f"error: cannot load model {d / 'cb.safetensors'}: invalid model config: config field "
                         f"'codebook_size' must be an integer in [2, 65536], got 1000000000"),
        "layers_1e6": (["decode", str(d / "t.bin"), "-o", out, "--model", str(forged_model(d, "lay.safetensors", enc_layers=10 ** 6))],
                       f"error: cannot load model {d / 'lay.safetensors'}: invalid model config: config field "
                       f"'enc_layers' must be an integer in [0, 48], got 1000000"),
        "frame_size_2_20": (["decode", str(d / "t.bin"), "-o", out, "--model",
                             str(forged_model(d, "fs.safetensors", frame_size=[1 << 20, 1 << 20]))],
                            f"error: cannot load model {d / 'fs.safetensors'}: invalid model config: config field "
                            f"'frame_size' must be a list of 2 integers in [16, 8192], got [1048576, 1048576]"),
        "config_unbacked": (["decode", str(d / "t.bin"), "-o", out, "--model",
                             str(forged_model(d, "unb.safetensors", codebook_size=65536, codebook_dim=1024))],
                            f"error: cannot load model {d / 'unb.safetensors'}: invalid model config: it needs at least "
                            f"67271936 parameters, the file holds 351016"),
        "config_not_hashed": (["decode", str(d / "t.bin"), "-o", out, "--model", str(forged_model(d, "fps.safetensors", fps=5.0))],
                              f"error: cannot load model {d / 'fps.safetensors'}: {d / 'fps.safetensors'}: weights do "
                              f"not match their content hash (corrupt file)"),
        # a name in the file is never taken as a model path
        "model_name_path": (["decode", write(d, "name.bin", forge(t, model_name=str(d / "tiny.safetensors"))), "-o", out],
                            f"error: the stream was made by model '{d / 'tiny.safetensors'}', which semcodec does "
                            f"not ship: give its checkpoint with --model"),
        # 11. an unwritable output is named as the user wrote it
        "proc_output": (["encode", str(d / "clip.mp4"), "-o", "/proc/o.bin", "--model", model],
                        "error: no such file: /proc/o.bin"),
    }
    if not torch.cuda.is_available():
        cases["device_cuda"] = (dec(str(d / "t.bin")) + ["--device", "cuda"],
                                "error: device 'cuda' is not available on this machine")
    # 5. output equal to the input, by name, by another spelling, through a link
    os.symlink(d / "clip.mp4", d / "link.mp4")
    same = "error: output is the input file: {} (writing it would destroy the input)"
    cases["encode_same"] = (["encode", str(d / "clip.mp4"), "-o", str(d / "clip.mp4"), "--model", model],
                            same.format(d / "clip.mp4"))
    other = str(d / ".." / d.name / "clip.mp4")
    cases["encode_same_spelling"] = (["encode", str(d / "clip.mp4"), "-o", other, "--model", model], same.format(other))
    cases["encode_same_link"] = (["encode", str(d / "clip.mp4"), "-o", str(d / "link.mp4"), "--model", model],
                                 same.format(d / "link.mp4"))
    os.symlink(d / "t.bin", d / "tlink.mp4")
    cases["decode_same_link"] = (["decode", str(d / "t.bin"), "-o", str(d / "tlink.mp4"), "--model", model],
                                 same.format(d / "tlink.mp4"))
    return {k: (args, msg.replace("{}", args[1]).replace("{size}", str(os.path.getsize(args[1]))))
            for k, (args, msg) in cases.items()}


@pytest.fixture(scope="module")
def batch(d):
    """Runs every case in one subprocess; name -> (result, expected line)."""
    cases = make_cases(d)
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir() if not p.is_symlink()}
    r = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps([a for a, _ in cases.values()]),
                       capture_output=True, text=True, timeout=600, cwd=os.getcwd())
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout)
    after = {p.name: p.stat().st_mtime_ns for p in d.iterdir() if not p.is_symlink()}
    return {k: (res, msg) for (k, (_, msg)), res in zip(cases.items(), results)}, before, after


CASES = ["more_tokens", "huge_alphabet", "huge_alphabet_context", "format1_huge_alphabet", "padded_20000", "dims_2_20", "src_frames_1e9", "src_frames_1e9_consistent",
         "iframe_tokens_1049472", "src_fps_tiny", "src_fps_huge", "src_8192", "output_budget", "semantic_fps_huge", "start_nan",
         "end_inf", "start_1e308", "device_bogus", "device_cuda", "model_is_video", "model_truncated",
         "model_header_huge", "config_wrong_type", "config_missing", "config_not_json", "codebook_1e9", "layers_1e6",
         "frame_size_2_20", "config_unbacked", "config_not_hashed", "model_name_path", "proc_output", "encode_same",
         "encode_same_spelling", "encode_same_link", "decode_same_link"]


@pytest.mark.parametrize("name", CASES)
def test_hostile_case_is_one_error_line(batch, name):
    results, _, _ = batch
    if name not in results:
        pytest.skip("CUDA is present")
    res, msg = results[name]
    assert res["code"] == 1, res["err"]
    assert res["err"].splitlines() == [msg]
    assert res["cpu_s"] < CASE_SECONDS


def test_hostile_batch_stays_small_and_writes_nothing(batch, d):
    results, before, after = batch
    assert max(r["rss_mb"] for r, _ in results.values()) < PEAK_RSS_MB
    assert set(after) == set(before), "an output or temporary file appeared"
    assert all(after[k] == before[k] for k in before), "an existing file was rewritten"


# --------------------------------------------------------------------------------------------
# the library below the CLI
# --------------------------------------------------------------------------------------------

def test_legit_stream_decodes_and_state_zero_tail_is_not_extended(d):
    """A stream whose groups are all token 0 has empty payloads (the rANS state never leaves 0):
    it is legitimate and decodes, but only to the token count its model codes."""
    codec = Codec.load(str(d / "tiny.safetensors"), "cpu")
    t = (d / "t.bin").read_bytes()
    h, _ = split(t)
    assert h["entropy_mode"] == "context"
    zeros = build_stream(h, [(b"", False), (b"", False)], context=codec.context_model)
    p = d / "zeros.bin"
    p.write_bytes(zeros)
    with StreamReader(p, prior_counts=codec.prior, context=codec.context_model) as r:
        groups = list(r)
        assert [len(g.tokens) for g in groups] == [20, 12] and not any(g.tokens.any() for g in groups)
        assert len(list(codec.iter_decode(r))) == 20


def test_format1_checkpoints_still_verify_and_keep_their_identity(tmp_path):
    """Format 1 (the first shipped s128: hash over the tensors only) still loads and keeps the hash
    its streams carry; the shipped model is format 2: its hash covers the config."""
    from safetensors.torch import save_file
    from semcodec.checkpoint import content_hash, load_checkpoint
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    state = {k: v.contiguous() for k, v in VideoTokenizer(cfg).state_dict().items()}
    old = tmp_path / "old.safetensors"
    save_file(state, str(old), metadata={"format": "semcodec-checkpoint-1", "config": cfg.to_json(),
                                         "content_hash": content_hash(state), "extra": "{}"})
    ck = load_checkpoint(old)
    assert ck.meta["format"] == "semcodec-checkpoint-1" and ck.content_hash == content_hash(state)
    shipped = Codec.load(None, "cpu")
    assert shipped.ckpt.meta["format"] == "semcodec-checkpoint-2"


def test_new_checkpoints_hash_the_config(d):
    from semcodec.checkpoint import content_hash, read_metadata
    meta = read_metadata(d / "tiny.safetensors")
    state = load_file(str(d / "tiny.safetensors"))
    assert meta["format"] == "semcodec-checkpoint-2"
    assert meta["content_hash"] == content_hash(state, meta["config"]) != content_hash(state)


def test_reader_bounds_work_by_file_size(d):
    """Without a model, the reader refuses a 1 KB stream that declares hours of decoding."""
    h, _ = split((d / "t.bin").read_bytes())
    forged = build_stream({**h, "codebook_size": 65536, "group": 1, "overlap": 0, "iframe_tokens": 1 << 22,
                           "pframe_tokens": 0, "semantic_frames": 1, "src_frames": 4, "entropy_mode": "adaptive",
                           "entropy_params": {"block": 1, "coder": "rans32", "increment": 16, "init": "uniform",
                                              "precision": 24}}, [(b"", False)])
    p = d / "work.bin"
    p.write_bytes(forged)
    cpu = time.process_time()
    with pytest.raises(BitstreamError, match="declares more decoding work"):
        StreamReader(p)
    assert time.process_time() - cpu < CASE_SECONDS


def test_stale_temp_files_of_killed_runs_are_swept(d, tmp_path):
    """A SIGKILLed writer leaves `.NAME.<pid>-<hex>.tmp`; the next write to NAME removes it
    (and leaves the temporary files of live writers alone)."""
    from semcodec.atomic import atomic_path
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".x.bin.{dead.pid}-0123abcd.tmp"
    stale_video = tmp_path / f".x.mp4.{dead.pid}-0123abcd.mp4"
    live = tmp_path / f".x.bin.{os.getppid()}-0123abcd.tmp"
    for p in (stale, stale_video, live):
        p.write_bytes(b"partial")
    with atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"done")
    with atomic_path(tmp_path / "x.mp4", suffix=".mp4") as tmp:
        tmp.write_bytes(b"done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "x.bin", "x.mp4"])


def test_sigkilled_encode_leaves_nothing_a_later_run_keeps(d, tmp_path):
    """Kill encodes at once; then one more encode to the same name: only its output remains."""
    model, clip, out = str(d / "tiny.safetensors"), str(d / "clip.mp4"), tmp_path / "t.bin"
    # --adapt 0: the streaming writer, whose temporary file exists from the first group on
    cmd = [sys.executable, "-m", "semcodec", "encode", clip, "-o", str(out), "--model", model, "--adapt", "0"]
    p = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not any(n.startswith(".t.bin.") for n in os.listdir(tmp_path)) and time.time() < deadline \
            and p.poll() is None:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert [n for n in os.listdir(tmp_path) if n.startswith(".t.bin.")], "the kill came too late to leave a temp file"
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert os.listdir(tmp_path) == ["t.bin"]


def test_huge_resolution_tiny_file_is_refused_before_decoding(d, tmp_path):
    """A one-frame 4096x4096 H.264 file of a few KB: refused by its size, not decoded."""
    import av
    p = tmp_path / "big.mp4"
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = 4096
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "ultrafast"}
        for pkt in s.encode(av.VideoFrame.from_ndarray(np.zeros((4096, 4096, 3), np.uint8), format="rgb24")):
            c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    assert p.stat().st_size < 100_000
    cli = PEAK + ("import atexit, sys; atexit.register(lambda: print(peak_mb(), file=sys.__stdout__)); "
                  "from semcodec.cli import run; sys.argv[0] = 'semcodec'; run()")
    child = subprocess.Popen([sys.executable, "-c", cli, "encode", str(p), "-o", str(tmp_path / "t.bin"),
                              "--model", str(d / "tiny.safetensors")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    err, out = child.stderr.read(), child.stdout.read()      # a few bytes each: no pipe fills up
    _, status, usage = os.wait4(child.pid, 0)      # this child's own CPU time
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 1
    assert err == (f"error: {p}: 4096x4096 is larger than semcodec takes (at most 8847360 pixels, "
                   f"e.g. 4096x2160, and 8192 per side)\n")
    assert float(out) < PEAK_RSS_MB and usage.ru_utime + usage.ru_stime < CASE_SECONDS
    assert sorted(os.listdir(tmp_path)) == ["big.mp4"]


def test_variable_frame_rate_keeps_its_duration(d, tmp_path):
    """40 frames spread over 2.32 s with irregular timestamps: decoded at the average rate for
    the same 2.32 s, each semantic frame taken by timestamp."""
    import av
    from fractions import Fraction
    from semcodec.video import probe
    p, tok, rec = tmp_path / "vfr.mkv", tmp_path / "t.bin", tmp_path / "r.mkv"
    times = np.cumsum([0] + [40 if i % 2 else 76 for i in range(39)])    # ms, 2.32 s in all
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.time_base = s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 6 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = int(t), Fraction(1, 1000)
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    info = probe(p)
    assert info.variable and info.duration == pytest.approx(2.32, abs=0.05)
    codec = Codec.load(str(d / "tiny.safetensors"), "cpu")
    codec.encode_file(p, tok)
    codec.decode_file(tok, rec)
    out = probe(rec)
    assert out.frames / out.fps == pytest.approx(2.32, abs=0.1)


# --------------------------------------------------------------------------------------------
# dataset builds
# --------------------------------------------------------------------------------------------

@pytest.fixture()
def ds_sources(tmp_path, d):
    """Two readable clips and one that is not a video (it goes to the failures file)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        (src / f"c{i}.mp4").write_bytes((d / "clip.mp4").read_bytes())
    (src / "bad.mp4").write_text("not a video\n" * 10)
    return src


@pytest.mark.parametrize("planted", [".lock-r00000", "failures-r00000.jsonl"])
def test_dataset_build_writes_nothing_through_a_planted_link(capsys, tmp_path, d, ds_sources, planted):
    from semcodec.cli import main
    victim, ds = tmp_path / "victim", tmp_path / "ds"
    victim.write_text("precious\n")
    ds.mkdir()
    os.symlink("../victim", ds / planted)
    code = main(["dataset", "build", str(ds_sources), "-o", str(ds), "--model", str(d / "tiny.safetensors"),
                 "--workers", "0", "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"error: {ds / planted} is a symbolic link: a dataset build writes no file through a link\n"
    assert victim.read_text() == "precious\n"


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        try:
            with open(f"/proc/{p}/stat") as f:
                if p.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p))
        except (OSError, IndexError, ValueError):
            continue
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_workers_die_with_a_sigkilled_build(tmp_path, d, ds_sources):
    """SIGKILL the parent of `dataset build --workers 1`: its worker and the resource tracker
    are gone within seconds (before: alive 15 s later, semaphores left in /dev/shm)."""
    for i in range(2, 30):      # enough work that the worker is busy when the parent dies
        (ds_sources / f"c{i}.mp4").write_bytes((d / "clip.mp4").read_bytes())
    p = subprocess.Popen([sys.executable, "-m", "semcodec", "dataset", "build", str(ds_sources), "-o",
                          str(tmp_path / "ds"), "--model", str(d / "tiny.safetensors"), "--workers", "1", "-q"],
                         stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, kids = time.time() + 120, []
    while time.time() < deadline and p.poll() is None and len(kids) < 2:   # resource tracker + worker
        kids = _children(p.pid)
        time.sleep(0.05)
    assert len(kids) >= 2, "the build ended before its workers started"
    time.sleep(1.0)             # the worker is past its initializer
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_running(k) for k in kids):
        time.sleep(0.1)
    alive = [k for k in kids if _running(k)]
    for k in alive:
        os.kill(k, signal.SIGKILL)
    assert not alive


# --------------------------------------------------------------------------------------------
# the benches that carry the long runs stay runnable
# --------------------------------------------------------------------------------------------

def test_fuzz_campaign_smoke(d, tmp_path, capsys):
    from bench import fuzz_streams
    out = tmp_path / "fuzz.json"
    assert fuzz_streams.main(["--cases", "60", "--model", str(d / "tiny.safetensors"), "--out", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["cases"] == 60 and s["n_findings"] == 0 and sum(s["outcomes"].values()) == 60
    assert len(s["outcomes"]) > 5           # the mutations reach many different checks


def test_forge_recomputes_every_crc(d):
    """Format 2's group CRCs cover the tokens: the forger decodes them (with the stream's
    entropy model) and gets every CRC right."""
    codec = Codec.load(str(d / "tiny.safetensors"), "cpu")
    t = (d / "t.bin").read_bytes()
    models = {"prior": codec.prior, "context": codec.context_model}
    assert forge(t, **models) == t                   # a no-op forgery is byte-identical
    with StreamReader(write(d, "f.bin", forge(t, src_fps=30.0, **models)), context=codec.context_model) as r:
        assert r.header.src_fps == 30.0
        assert len(list(r)) == 2


def test_coding_bench_smoke(capsys):
    from bench import coding
    assert coding.main(["--repeat", "1", "--damaged", "5", "--max-ms", "1e9", "--max-context-ms", "1e9",
                        "--max-damaged-s", "1e9"]) == 0
    assert capsys.readouterr().out.count("\n") == 5


@pytest.mark.parametrize("name", __import__("semcodec").list_presets())
def test_every_preset_is_within_the_model_limits(name):
    """The limits refuse no real model: every preset passes them, and the parameter floor that
    a file's tensors must reach is below the parameters its model really has."""
    from semcodec.limits import check_config, min_parameters
    cfg = get_preset(name)
    check_config(json.loads(cfg.to_json()))
    if cfg.features == "backbone":     # its backbone is not in the state dict; 173 M parameters: no memory
        cfg = cfg.replace(features="pixels")
        with torch.device("meta"):
            model = VideoTokenizer(cfg)
    else:
        model = VideoTokenizer(cfg)
    assert min_parameters(cfg) <= sum(v.numel() for v in model.state_dict().values())
