"""LM training (python -m generation.lm.train): exact resume after SIGKILL, 2-process DDP."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from generation.lm import load_lm
from lm_data import one_torch_thread, tiny_dataset  # noqa: F401 (fixture)
from torchrun import torchrun

STEPS = 10
ARGS = ["--preset", "lm-tiny", "--steps", str(STEPS), "--batch", "4", "--warmup", "2", "--ckpt-every", "3",
        "--log-every", "1", "--threads", "1", "--pack-len", "64"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_dataset(tmp_path_factory)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _cmd(data, out):
    return [sys.executable, "-m", "generation.lm.train", "--data", str(data), "--out", str(out), *ARGS]


def _log(out):
    return [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if l.strip()]


def test_help_documents_the_run():
    r = subprocess.run([sys.executable, "-m", "generation.lm.train", "--help"], env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "--data" in r.stdout and "torchrun" in r.stdout and "SIGKILL" in r.stdout


def test_resume_after_sigkill_is_exact(tmp_path, data):
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = subprocess.run(_cmd(data, ref), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]

    for _ in range(5):      # on an idle machine a run can finish between two polls: start it again
        shutil.rmtree(run, ignore_errors=True)
        proc = subprocess.Popen(_cmd(data, run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:   # kill once a checkpoint exists and training went past it
            state = run / "ckpt" / "state.json"
            if state.exists() and (run / "log.jsonl").exists() and len(_log(run)) > json.loads(state.read_text())["step"]:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = json.loads((run / "ckpt" / "state.json").read_text())["step"]
        if killed_at < STEPS:
            break
    assert 0 < killed_at < STEPS

    r = subprocess.run(_cmd(data, run), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming {run} at step {killed_at}" in r.stderr
    assert [row["step"] for row in _log(run)] == list(range(1, STEPS + 1))      # each step logged once
    assert [row["loss"] for row in _log(run)] == pytest.approx([row["loss"] for row in _log(ref)], rel=1e-6)
    a, b = load_file(str(run / "ckpt" / "model.safetensors")), load_file(str(ref / "ckpt" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ck = load_lm(run / "final.safetensors")
    assert ck.config.name == "lm-tiny" and ck.config.codebook_size == 64 and len(ck.content_hash) == 64
    assert ck.config.codec == "tiny" and ck.extra["step"] == STEPS
    assert _log(ref)[-1]["loss"] < _log(ref)[0]["loss"]


def _torchrun(data, out, *extra, steps=4):
    cmd = [*torchrun(), "-m", "generation.lm.train", "--data", str(data), "--out", str(out), "--preset", "lm-tiny",
           "--steps", str(steps), "--batch", "2", "--warmup", "1", "--ckpt-every", "2", "--log-every", "1",
           "--threads", "1", *extra]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("ddp") / "ddp"
    _torchrun(data, out)
    return out


def test_ddp_two_processes_keep_identical_replicas(ddp_run):
    rep = json.loads((ddp_run / "replicas.json").read_text())
    assert rep["world"] == 2 and rep["hashes"][0] == rep["hashes"][1]
    assert json.loads((ddp_run / "ckpt" / "state.json").read_text())["step"] == 4


def test_fsdp_matches_ddp_and_resumes(tmp_path, data, ddp_run):
    """--fsdp (sharded parameters, gradients and optimizer state) trains the same model as DDP, and
    resumes from its gathered checkpoint."""
    out = tmp_path / "fsdp"
    _torchrun(data, out, "--fsdp", steps=2)
    r = _torchrun(data, out, "--fsdp", steps=4)
    assert f"resuming {out} at step 2" in r.stderr
    assert [row["loss"] for row in _log(out)] == pytest.approx([row["loss"] for row in _log(ddp_run)], rel=1e-4)
    a, b = load_file(str(out / "final.safetensors")), load_file(str(ddp_run / "final.safetensors"))
    assert sorted(a) == sorted(b) and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
