"""Training the renderer: pairs made by the frozen tokenizer, stage 1 / stage 2, exact resume,
DDP, checkpoints."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("diffusers")

from test_diffusion import one_torch_thread, tiny_setup  # noqa: E402,F401 (fixture)

from generation.diffusion.checkpoint import load_renderer_checkpoint  # noqa: E402
from generation.diffusion.data import PairDataset  # noqa: E402
from generation.diffusion.train import main as train_main  # noqa: E402
from torchrun import torchrun  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup(tmp_path_factory)


def _log(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.path.join(os.getcwd(), "tests")]),
            "OMP_NUM_THREADS": "1"}


def test_pairs_are_the_codecs_groups(setup):
    from semcodec.codec import Codec
    ds = PairDataset(setup["pairs"])
    codec = Codec.load(str(setup["codec"]), "cpu")
    assert len(ds) == 12 and ds.codec_hash == codec.content_hash and ds.meta["frame_size"] == [32, 48]
    _, groups = codec.iter_encode(str(setup["clips"] / "clip_000000.mp4"), search=0)   # the encoder's ids, as datasets
    coded = list(groups)
    assert [(g.start, g.valid) for g in coded] == [(0, 4), (3, 4), (6, 3)]
    for k, g in enumerate(coded):
        it = ds[k]
        assert torch.equal(it["tokens"], torch.as_tensor(g.tokens)) and it["valid"] == g.valid
        assert it["frames"].shape == (4, 32, 48, 3) and it["frames"].dtype == torch.uint8
    assert torch.equal(ds[2]["frames"][2], ds[2]["frames"][3])        # the short group padded with its last frame
    assert ds[0]["caption"] == json.loads((setup["clips"] / "captions.jsonl").read_text().splitlines()[0])["caption"]


def test_stage2_freezes_the_stage1_backbone(setup):
    s1, s2 = load_renderer_checkpoint(setup["stage1"]), load_renderer_checkpoint(setup["stage2"])
    assert s1.stage == 1 and s2.stage == 2 and s2.extra["step"] == 4
    assert s2.config.codec == "tiny" and s2.config.codec_hash == PairDataset(setup["pairs"]).codec_hash
    a, b = s1.model.backbone.state_dict(), s2.model.backbone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)                    # frozen: not one bit moved
    assert any(lin.weight.abs().sum() > 0 for lin in s2.model.control.zero)     # the branch trained
    assert s2.model.upsampler.zero_conv.weight.abs().sum() > 0
    assert all(np.isfinite(r["loss"]) for r in _log(setup["root"] / "s2"))


@pytest.mark.parametrize("stage", [1, 2])
def test_resume_is_exact(setup, tmp_path, stage):
    common = ["--data", str(setup["pairs"]), "--preset", "tiny", "--batch", "2", "--log-every", "1", "--warmup", "2",
              "--ckpt-every", "2", "--stage", str(stage), "--bf16"]
    if stage == 2:
        common += ["--backbone", str(setup["stage1"])]
    ref, run = tmp_path / "ref", tmp_path / "run"
    train_main(common + ["--out", str(ref), "--steps", "5"])
    train_main(common + ["--out", str(run), "--steps", "3"])       # stops: step 3 checkpointed at the end
    assert json.loads((run / "ckpt" / "state.json").read_text())["step"] == 3
    train_main(common + ["--out", str(run), "--steps", "5"])
    assert [r["step"] for r in _log(run)] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in _log(run)] == [r["loss"] for r in _log(ref)]
    a, b = load_file(str(run / "final.safetensors")), load_file(str(ref / "final.safetensors"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert load_renderer_checkpoint(run / "final.safetensors").content_hash == \
        load_renderer_checkpoint(ref / "final.safetensors").content_hash


def test_checkpoint_is_verified(setup, tmp_path):
    bad = tmp_path / "bad.safetensors"
    data = bytearray(setup["stage2"].read_bytes())
    data[-5] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not match their content hash"):
        load_renderer_checkpoint(bad)
    with pytest.raises(ValueError, match="not a renderer checkpoint"):
        load_renderer_checkpoint(setup["codec"])


def test_int8_checkpoint_is_a_quarter_and_renders_alike(setup, tmp_path):
    """int8 shipping: matrices within half a step of their row's scale, a quarter of float32's
    bytes for the matrices, the same renderer output to a few levels."""
    from generation.diffusion.checkpoint import save_renderer
    from test_diffusion import inputs, randomised
    full = load_renderer_checkpoint(setup["stage2"]).model
    randomised(full, std=0.1)
    save_renderer(full, tmp_path / "f32.safetensors")
    save_renderer(full, tmp_path / "i8.safetensors", dtype=torch.int8)
    raw = load_file(str(tmp_path / "i8.safetensors"))
    assert torch.int8 in {v.dtype for v in raw.values()} and torch.float32 not in {v.dtype for v in raw.values()}
    small = load_renderer_checkpoint(tmp_path / "i8.safetensors").model
    ref = full.state_dict()
    for k, v in small.state_dict().items():
        w = ref[k].float()
        if w.ndim >= 2:
            step = w.reshape(w.shape[0], -1).abs().amax(1) / 127
            err = (v.reshape(v.shape[0], -1) - w.reshape(w.shape[0], -1)).abs().amax(1)
            assert (err <= step * 0.5 + 2e-3 * step + 1e-6).all(), k
    m8 = sum(v.numel() for v in raw.values() if v.dtype == torch.int8)
    assert m8 > 0.8 * sum(v.numel() for v in raw.values())
    lat, t, text, mask, feats = inputs(full.cfg)
    with torch.no_grad():
        a = full(lat, t, text, mask, full.semantic(feats))
        b = small(lat, t, text, mask, small.semantic(feats))
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_stage2_needs_a_backbone(setup, tmp_path):
    with pytest.raises(SystemExit, match="--stage 2 needs --backbone"):
        train_main(["--data", str(setup["pairs"]), "--out", str(tmp_path / "x"), "--stage", "2", "--steps", "1"])


def test_residual_stage2_starts_at_the_direct_decode_and_learns(setup, tmp_path):
    """--config '{"residual_scale": S}' on a backbone that drew frames: the backbone must train too
    (--unfreeze-backbone), its output head starts at zero, and the run's checkpoint renders residuals."""
    common = ["--data", str(setup["pairs"]), "--stage", "2", "--backbone", str(setup["stage1"]),
              "--config", '{"residual_scale": 2.0}', "--batch", "2", "--log-every", "1", "--warmup", "0"]
    with pytest.raises(SystemExit, match="needs --unfreeze-backbone"):
        train_main(common + ["--out", str(tmp_path / "x"), "--steps", "1"])
    with pytest.raises(SystemExit, match="residual_scale > 0 is for stage 2"):
        train_main(["--data", str(setup["pairs"]), "--preset", "tiny", "--config", '{"residual_scale": 2.0}',
                    "--out", str(tmp_path / "s1"), "--steps", "1"])
    out = tmp_path / "res"
    train_main(common + ["--out", str(out), "--steps", "3", "--unfreeze-backbone", "--lr", "3e-3"])
    ck = load_renderer_checkpoint(out / "final.safetensors")
    assert ck.stage == 2 and ck.config.residual_scale == 2.0
    assert ck.model.backbone.proj_out.weight.abs().sum() > 0                # it learned from the zero head
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(np.isfinite(r["loss"]) for r in rows)


def test_a_refiner_added_to_a_trained_renderer_starts_as_it_and_learns(setup, tmp_path):
    """--init a stage-2 renderer with --config '{"refine_channels": C}': the new pixel refiner starts
    as the identity (the renderer's outputs unchanged), then trains with the rest."""
    from test_diffusion import inputs
    base = load_renderer_checkpoint(setup["stage2"]).model.eval()
    common = ["--data", str(setup["pairs"]), "--stage", "2", "--init", str(setup["stage2"]), "--batch", "2",
              "--log-every", "1", "--warmup", "0", "--lr", "3e-3", "--config", '{"refine_channels": 4}']
    train_main(common + ["--out", str(tmp_path / "r0"), "--steps", "0"])
    start = load_renderer_checkpoint(tmp_path / "r0" / "final.safetensors").model.eval()
    assert start.cfg.refine_channels == 4 and start.refiner is not None
    lat, t, text, mask, feats = inputs(base.cfg)
    with torch.no_grad():
        assert torch.equal(start(lat, t, text, mask, start.semantic(feats)), base(lat, t, text, mask, base.semantic(feats)))
    train_main(common + ["--out", str(tmp_path / "r"), "--steps", "2"])
    ck = load_renderer_checkpoint(tmp_path / "r" / "final.safetensors")
    assert ck.model.refiner.net[-1].weight.abs().sum() > 0                  # it left its zero start
    with pytest.raises(SystemExit, match="is a stage-1 backbone: give it as --backbone"):
        train_main(["--data", str(setup["pairs"]), "--stage", "2", "--init", str(setup["stage1"]),
                    "--out", str(tmp_path / "x"), "--steps", "1"])
    with pytest.raises(SystemExit, match="--init is for --stage 2"):
        train_main(["--data", str(setup["pairs"]), "--init", str(setup["stage2"]), "--out", str(tmp_path / "y"),
                    "--steps", "1"])


@pytest.mark.slow         # two processes importing torch and diffusers: minutes on a busy 2-core machine
def test_ddp_two_processes(setup, tmp_path):
    out = tmp_path / "ddp"
    cmd = [*torchrun(), "-m", "generation.diffusion.train", "--data", str(setup["pairs"]), "--out", str(out),
           "--stage", "2", "--backbone", str(setup["stage1"]), "--steps", "2", "--batch", "1", "--log-every", "1",
           "--threads", "1"]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((out / "replicas.json").read_text())
    assert rep["world"] == 2 and rep["hashes"][0] == rep["hashes"][1]
    assert load_renderer_checkpoint(out / "final.safetensors").stage == 2


def test_pairs_at_another_scale_are_refused(setup, tmp_path):
    with pytest.raises(SystemExit, match=r"holds frames at 1 x the coded size, the world preset draws at 2 x: "
                                         r"rebuild the pairs with --scale 2"):
        train_main(["--data", str(setup["pairs"]), "--out", str(tmp_path / "x"), "--preset", "world", "--steps", "1"])


def test_world_source_pairs_match_the_written_clips(setup, tmp_path):
    """world:train renders the split's clips directly: the same groups, captions and (up to the
    video file's lossy coding) frames as the clips `semcodec dataset synth --split train` writes;
    the same bytes from one or two rendering processes."""
    from semcodec.data import synth
    from semcodec.zoo import load_model
    from generation.diffusion.data import build_pairs
    fps = load_model(str(setup["codec"]), "cpu").config.fps
    synth.write_clips(2, tmp_path / "clips", frames=10, size=(128, 192), fps=fps, split="train")
    build_pairs([tmp_path / "clips"], tmp_path / "from-files", setup["codec"])
    build_pairs(["world:train"], tmp_path / "direct", setup["codec"], max_clips=2, world_frames=10)
    build_pairs(["world:train"], tmp_path / "two", setup["codec"], max_clips=2, world_frames=10, workers=2)
    a, b = PairDataset(tmp_path / "from-files"), PairDataset(tmp_path / "direct")
    assert len(a) == len(b) > 2 and a.captions == b.captions
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x["valid"] == y["valid"] and x["frames"].shape == y["frames"].shape
        assert (x["frames"].float() - y["frames"].float()).abs().mean() < 4
    one, two = (load_file(str(tmp_path / d / "shard-00000.safetensors")) for d in ("direct", "two"))
    assert all(torch.equal(one[k], two[k]) for k in one)
    with pytest.raises(ValueError, match="unknown world split 'nope'"):
        build_pairs(["world:nope"], tmp_path / "x", setup["codec"], max_clips=1)
    with pytest.raises(ValueError, match="needs --max-clips"):
        build_pairs(["world:train"], tmp_path / "y", setup["codec"])
