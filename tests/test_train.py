"""Training: exact resume after SIGKILL, 2-process DDP with identical replicas, checkpoints."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from semcodec import load_checkpoint

ARGS = ["--preset", "tiny", "--data", "synth", "--steps", "40", "--ckpt-every", "5", "--log-every", "1",
        "--lr", "1e-3", "--reseed-every", "7", "--threads", "1"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _train(out, extra=()):
    return subprocess.run([sys.executable, "-m", "semcodec.train", "--out", str(out), *ARGS, *extra],
                          env=_env(), capture_output=True, text=True, timeout=600)


def _log(out):
    return [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if l.strip()]


def test_resume_after_sigkill_is_exact(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = _train(ref)
    assert r.returncode == 0, r.stderr[-2000:]

    proc = subprocess.Popen([sys.executable, "-m", "semcodec.train", "--out", str(run), *ARGS], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:       # kill once a checkpoint exists and training went past it
        state = run / "ckpt" / "state.json"
        if state.exists() and (run / "log.jsonl").exists() and len(_log(run)) > json.loads(state.read_text())["step"] + 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((run / "ckpt" / "state.json").read_text())["step"]
    assert 0 < killed_at < 40

    r = _train(run)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming {run} at step {killed_at}" in r.stderr
    steps = [row["step"] for row in _log(run)]
    assert steps == list(range(1, 41))                       # every step logged exactly once
    # the resumed curve continues the original one exactly, and ends at the same weights
    assert [row["loss"] for row in _log(run)] == pytest.approx([row["loss"] for row in _log(ref)], rel=1e-6)
    a, b = load_file(str(run / "ckpt" / "model.safetensors")), load_file(str(ref / "ckpt" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "ckpt" / "state.json").read_text())["step"] == 40
    ck = load_checkpoint(run / "final.safetensors")            # the shipped form loads and carries its config
    assert ck.config.name == "tiny" and len(ck.content_hash) == 64
    assert (run / "train.png").stat().st_size > 1000


def test_ddp_two_processes_keep_identical_replicas(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "semcodec.train", "--out", str(out), "--preset", "tiny", "--data", "synth", "--steps", "8",
           "--ckpt-every", "4", "--reseed-every", "3", "--threads", "1"]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((out / "replicas.json").read_text())
    assert rep["world"] == 2 and len(rep["hashes"]) == 2 and rep["hashes"][0] == rep["hashes"][1]
    assert json.loads((out / "ckpt" / "state.json").read_text())["step"] == 8


def test_checkpoint_detects_corruption(tmp_path):
    from semcodec import VideoTokenizer, get_preset, save_checkpoint
    m = VideoTokenizer(get_preset("tiny"))
    p = tmp_path / "m.safetensors"
    digest = save_checkpoint(m, m.config, p)
    assert load_checkpoint(p).content_hash == digest
    data = bytearray(p.read_bytes())
    data[-10] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="weights do not match their content hash"):
        load_checkpoint(p)
