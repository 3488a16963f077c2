"""Training: exact resume after SIGKILL, 2-process DDP with identical replicas, checkpoints."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from semcodec import load_checkpoint
from torchrun import torchrun

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


def test_autoencoder_phase_then_codes_seeded_from_it_resumes_exactly(tmp_path):
    """--continuous-steps: no quantization (no commitment loss) for the first steps, then a codebook
    seeded from the encoder's outputs; a run stopped at the switch and resumed ends where an
    unbroken one does."""
    args = ["--preset", "tiny", "--data", "synth", "--ckpt-every", "3", "--log-every", "1", "--lr", "1e-3",
            "--threads", "1", "--continuous-steps", "6"]
    run = lambda out, steps: subprocess.run([sys.executable, "-m", "semcodec.train", "--out", str(out), *args,
                                             "--steps", str(steps)], env=_env(), capture_output=True, text=True,
                                            timeout=600)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    for out, steps in ((ref, 10), (cut, 6), (cut, 10)):
        r = run(out, steps)
        assert r.returncode == 0, r.stderr[-2000:]
    commit = [row["commit_loss"] for row in _log(ref)]
    assert commit[:6] == [0.0] * 6 and all(c > 0 for c in commit[6:])
    assert [row["loss"] for row in _log(cut)] == pytest.approx([row["loss"] for row in _log(ref)], rel=1e-6)
    a, b = load_file(str(cut / "ckpt" / "model.safetensors")), load_file(str(ref / "ckpt" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ddp_two_processes_keep_identical_replicas(tmp_path):
    out = tmp_path / "ddp"
    cmd = [*torchrun(), "-m", "semcodec.train", "--out", str(out), "--preset", "tiny", "--data", "synth",
           "--steps", "8", "--ckpt-every", "4", "--reseed-every", "3", "--threads", "1"]
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


def test_warm_start_into_deeper_model_keeps_its_output(tmp_path):
    """--init: a checkpoint loaded into a preset with more transformer and residual blocks computes
    exactly what the checkpoint computed (the new blocks start as the identity)."""
    import semcodec
    from semcodec.train import warm_start
    torch.manual_seed(0)
    cfg = semcodec.get_preset("tiny")
    small = semcodec.VideoTokenizer(cfg).eval()
    with torch.no_grad():     # non-zero residual convs, as after training
        for m in small.modules():
            if isinstance(m, torch.nn.Conv2d) and m.weight.abs().sum() == 0:
                m.weight.normal_(0, 0.05)
    path = tmp_path / "small.safetensors"
    semcodec.save_checkpoint(small, cfg, path)
    deep = semcodec.VideoTokenizer(cfg.replace(enc_layers=3, dec_layers=4, stem_blocks=2, head_blocks=3)).eval()
    new = warm_start(deep, path)
    assert any(".blocks.3." in k for k in new) and any("head.2.2." in k for k in new)
    x = torch.rand(1, 3, 32, 48, 3) * 2 - 1
    with torch.no_grad():
        assert torch.equal(small.encode(x), deep.encode(x))
        assert torch.allclose(small.decode(small.encode(x), (32, 48)), deep.decode(deep.encode(x), (32, 48)), atol=1e-6)


def test_refine_stage_grown_from_a_model_without_it_draws_the_same_picture(tmp_path):
    """refine_channels: a full-resolution residual stage after the head whose last conv starts at
    zero, so --init from a model without it keeps the pictures; once trained it changes them."""
    import semcodec
    from semcodec.train import warm_start
    torch.manual_seed(0)
    cfg = semcodec.get_preset("tiny")
    plain = semcodec.VideoTokenizer(cfg).eval()
    path = tmp_path / "plain.safetensors"
    semcodec.save_checkpoint(plain, cfg, path)
    grown = semcodec.VideoTokenizer(cfg.replace(refine_channels=8)).eval()
    new = warm_start(grown, path)
    assert new and all(k.startswith("features.refine.") for k in new)
    x = torch.rand(1, 3, 32, 48, 3) * 2 - 1
    with torch.no_grad():
        ids = plain.encode(x)
        assert torch.equal(ids, grown.encode(x))
        assert torch.equal(plain.decode(ids, (32, 48)), grown.decode(ids, (32, 48)))
        grown.features.refine[-1].weight.normal_(0, 0.1)
        assert not torch.allclose(plain.decode(ids, (32, 48)), grown.decode(ids, (32, 48)), atol=1e-3)
    with pytest.raises(semcodec.ConfigError, match="^refine_channels needs features='conv'$"):
        cfg.replace(features="pixels", refine_channels=8)


def test_shown_frames_in_training():
    """--shown-ratio r: clips drawn at r x the semantic rate, (T - 1) r + 1 frames, every r-th the
    model's; its output blended linearly to all of them, as the codec decodes."""
    import semcodec
    from semcodec.data.sources import make_sources
    from semcodec.train import Batches, shown_blend
    a = shown_blend(3, 3)
    assert a.shape == (7, 3) and torch.allclose(a.sum(1), torch.ones(7))
    assert torch.equal(a[::3], torch.eye(3))
    assert torch.allclose(a[1], torch.tensor([2 / 3, 1 / 3, 0])) and torch.allclose(a[5], torch.tensor([0, 1 / 3, 2 / 3]))
    cfg = semcodec.get_preset("tiny")
    b = Batches(make_sources(["synth"], cfg.fps), None, cfg, [48], 2, 0, ratio=3)
    x = b(0, 0)
    assert x.shape[1] == (cfg.group - 1) * 3 + 1 and x.dtype == torch.float32
    # a fresh run seeds its codebook from the semantic frames (the drawn clip is longer than a group)
    assert torch.equal(b.semantic(0, 0), x[:, ::3]) and b.semantic(0, 0).shape[1] == cfg.group
    from semcodec.model.video_tokenizer import VideoTokenizer
    from semcodec.train import seed_codebook
    model = VideoTokenizer(cfg)
    before = model.tokenizer.quantizer.codebook.clone()
    seed_codebook(model, b.semantic, 0, "cpu")
    assert not torch.equal(model.tokenizer.quantizer.codebook, before)


def test_shape_masks_are_where_the_shapes_are_drawn_and_weight_the_loss():
    """--shape-weight: a synth batch comes with each pixel's shape coverage (the same clip as without
    it), and the loss counts the pixels near a shape 1 + w times."""
    import dataclasses

    import semcodec
    from semcodec.data import synth
    from semcodec.data.sources import SynthSource, make_sources
    from semcodec.train import Batches, shape_weighted_mse
    scene = synth.Scene("plain", "black", [synth.Shape("cross", "yellow", "large", "right", "quickly", 0.3, 0.5,
                                                        "moves"),
                                           synth.Shape("ring", "red", "small", "", "", 0.7, 0.4, "stays still")])
    video = synth.render(scene, 3, (64, 96), 8.0)
    bare = synth.render(dataclasses.replace(scene, shapes=[]), 3, (64, 96), 8.0)
    drawn, masks = synth.render_masked(scene, 3, (64, 96), 8.0)
    assert np.array_equal(drawn, video)
    assert masks.shape == (3, 64, 96) and masks.any(axis=(1, 2)).all()
    assert np.array_equal(masks, (video != bare).any(-1))      # every shape pixel, nothing else
    assert not np.array_equal(masks[0], masks[2])              # the cross moves

    src = SynthSource(8.0, "train")
    v, m = src.sample_masked(np.random.default_rng(3), 2, (32, 48))
    assert np.array_equal(v, src.sample(np.random.default_rng(3), 2, (32, 48)))
    assert m.shape == (2, 32, 48) and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1 and m.max() > 0
    assert np.allclose(m * 16, (m * 16).round())                # drawn at 128 x 192, shrunk by area (4 x 4)

    cfg = semcodec.get_preset("tiny")
    b = Batches(make_sources(["synth"], cfg.fps), None, cfg, [48], 2, 0)
    x, shapes = b.draw(5, 0, masks=True)
    assert torch.equal(x, b(5, 0)) and shapes.shape == x.shape[:4]

    out, target = torch.zeros(1, 1, 8, 8, 3), torch.zeros(1, 1, 8, 8, 3)
    cover = torch.zeros(1, 1, 8, 8)
    cover[0, 0, 4, 4] = 1.0                                     # one shape pixel; its 3 x 3 reach is weighted
    out[0, 0, 0, 0] = 1.0                                       # an error far from it
    assert float(shape_weighted_mse(out, target, cover, 0.0)) == pytest.approx(float(F.mse_loss(out, target)))
    far = float(shape_weighted_mse(out, target, cover, 9.0))
    out.zero_()
    out[0, 0, 3, 5] = 1.0                                       # the same error beside the shape
    near = float(shape_weighted_mse(out, target, cover, 9.0))
    total = (64 + 9 * 9) * 3
    assert far == pytest.approx(3 / total) and near == pytest.approx(10 * 3 / total)


def test_decoder_only_training_keeps_the_tokens_and_hands_on_the_context_model(tmp_path, capsys):
    """--decoder-only: the stem, encoder and codebook stay bit for bit, the decoder learns, so the
    new model makes the old one's tokens; `context_train rebind` then gives it the old model's
    context model, and refuses a model whose encoder changed."""
    import semcodec
    from semcodec.bitstream.context import ContextModel
    from semcodec.bitstream.context_train import main as ctx_main, random_model
    from semcodec.model.video_tokenizer import token_difference
    torch.manual_seed(0)
    cfg = semcodec.get_preset("tiny")
    old = tmp_path / "old.safetensors"     # float16, as exports and runs' final weights are
    semcodec.save_checkpoint(semcodec.VideoTokenizer(cfg), cfg, old, name="tiny", dtype=torch.float16)
    out = tmp_path / "dec"
    r = subprocess.run([sys.executable, "-m", "semcodec.train", "--out", str(out), "--preset", "tiny", "--data",
                        "synth", "--steps", "6", "--lr", "1e-3", "--reseed-every", "2", "--threads", "1",
                        "--init", str(old), "--decoder-only", "--config", '{"refine_channels": 8}', "--shown-ratio", "2"],
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_checkpoint(old), load_checkpoint(out / "final.safetensors")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    enc = [k for k in sa if k.startswith(("features.stem.", "tokenizer.encoder.", "tokenizer.quantizer.codebook"))]
    dec = [k for k in sa if k.startswith(("tokenizer.decoder.", "features.head."))]
    assert enc and all(torch.equal(sa[k].float(), sb[k].float()) for k in enc)
    assert any(not torch.equal(sa[k].float(), sb[k].float()) for k in dec)
    assert token_difference(a.model, b.model) is None
    x = torch.rand(1, 4, 32, 48, 3) * 2 - 1
    with torch.no_grad():
        assert torch.equal(a.model.encode(x), b.model.encode(x))
    ctx = tmp_path / "old.context.safetensors"
    random_model(cfg.codebook_size, cfg.codebook_dim, a.content_hash).save(ctx)
    new_ctx = tmp_path / "new.context.safetensors"
    assert ctx_main(["rebind", str(ctx), "--source", str(old), "--model", str(out / "final.safetensors"),
                     "-o", str(new_ctx)]) == 0
    moved, orig = ContextModel.load(new_ctx), ContextModel.load(ctx)
    assert moved.model_hash == b.content_hash and moved.hashes == (moved.hash, orig.hash)
    with pytest.raises(ValueError, match="^context model config: 'rebound_from' must be a list of at most 16 "
                                         r"hashes \(64 hex digits\)$"):
        ContextModel(orig.tensors, dict(orig.config, rebound_from=["not a hash"]))
    assert all(np.array_equal(moved.tensors[k], orig.tensors[k]) for k in orig.tensors)
    capsys.readouterr()
    other = semcodec.VideoTokenizer(cfg)          # another initialisation: other encoder weights
    other_path = tmp_path / "other.safetensors"
    semcodec.save_checkpoint(other, cfg, other_path, name="tiny")
    bad = tmp_path / "bad.context.safetensors"
    assert ctx_main(["rebind", str(ctx), "--source", str(old), "--model", str(other_path), "-o", str(bad)]) == 1
    assert capsys.readouterr().err == (f"error: {other_path} does not make the tokens of {old}: encoder weight "
                                       f"'features.stem.1.weight' differs\n")
    assert ctx_main(["rebind", str(ctx), "--source", str(other_path), "--model", str(old), "-o", str(bad)]) == 1
    assert capsys.readouterr().err == f"error: {ctx} was not trained on the tokens of {other_path}\n"
    assert not bad.exists()
    from semcodec.cli import main as cli_main
    x = tmp_path / "x.safetensors"
    assert cli_main(["export", str(out), "-o", str(x), "--prior-batches", "0", "--fps", "60"]) == 1
    assert capsys.readouterr().err == "error: --fps must be between 0.5 and 30, got 60\n" and not x.exists()
    assert cli_main(["export", str(out), "-o", str(x), "--prior-batches", "0", "--fps", "8"]) == 0
    assert load_checkpoint(x).config.fps == 8.0 and b.config.fps == cfg.fps != 8.0
    semcodec.save_checkpoint(a.model, cfg, old, name="tiny", dtype=torch.float16,      # the same, with a prior
                             token_counts=np.arange(1, cfg.codebook_size + 1))
    assert cli_main(["export", str(out), "-o", str(x), "--fps", "8", "--prior-from", str(old)]) == 0
    assert np.array_equal(load_checkpoint(x).token_counts, np.arange(1, cfg.codebook_size + 1))
    y = tmp_path / "y.safetensors"
    assert cli_main(["export", str(out), "-o", str(y), "--prior-from", str(other_path)]) == 1
    assert capsys.readouterr().err == (f"error: --prior-from {other_path} does not make the run's tokens: "
                                       f"encoder weight 'features.stem.1.weight' differs\n") and not y.exists()


def test_cosine_schedule_and_warmup():
    from types import SimpleNamespace
    from semcodec.train import learning_rate
    a = SimpleNamespace(lr=1e-3, min_lr=1e-5, warmup=10, steps=110, schedule="cosine")
    assert learning_rate(a, 0) == pytest.approx(1e-4) and learning_rate(a, 9) == pytest.approx(1e-3)
    assert learning_rate(a, 10) == pytest.approx(1e-3)
    assert learning_rate(a, 60) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(a, 110) == pytest.approx(1e-5)
    assert learning_rate(SimpleNamespace(**{**vars(a), "schedule": "constant"}), 60) == 1e-3


def test_pack_trains_without_video_files(tmp_path):
    """A numpy pack (for a GPU machine without PyAV) holds a video, photos, synth and validation
    clips; training and the GPU recipe's export run from it alone."""
    import numpy as np
    from semcodec.data.pack import load_pack
    from semcodec.data.synth import random_scene, render
    from semcodec.video import VideoWriter
    clip, photos = tmp_path / "clip.mp4", tmp_path / "photos"
    photos.mkdir()
    with VideoWriter(clip, 12.0, (64, 96), crf=10) as w:
        for f in render(random_scene(1), 24, (64, 96), 12.0):
            w.write(f)
    import matplotlib.pyplot as plt
    plt.imsave(photos / "p.png", render(random_scene(2), 1, (80, 120), 1.0)[0])
    pack = tmp_path / "pack.npz"
    r = subprocess.run([sys.executable, "-m", "semcodec.data.pack", "--preset", "tiny", "--data", str(clip),
                        str(photos), "synth", "--weights", "2", "1", "1", "--val", str(clip), "-o", str(pack)],
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    z = np.load(pack)
    assert z["src0.video.0"].shape[1:] == (128, 192, 3) and float(z["src0.video.0.fps"]) == 12.0
    assert "src2.synth" in z.files and z["val.clip"].dtype == np.uint8
    [src] = load_pack(pack, 6.0)
    assert len(src.parts) == 3 and np.allclose(src.p, [0.5, 0.25, 0.25])
    assert src.sample(np.random.default_rng(0), 3, (32, 48), 3.0).shape == (3, 32, 48, 3)
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "semcodec.gpu_recipe", "train", "--pack", str(pack), "--preset", "tiny",
                        "--name", "tiny-gpu", "--steps", "2", "--batch", "1", "--out", str(out), "--prior-batches", "1",
                        "--continuous", "0.5"], env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_checkpoint(out / "tiny-gpu.safetensors").name == "tiny-gpu"
    assert json.loads((out / "ckpt" / "state.json").read_text())["args"]["continuous_steps"] == 1
    assert [row["step"] for row in _log(out) if "loss" in row] == [2]


def test_train_and_export_commands_parse_and_refuse_in_the_cli_format(capsys, tmp_path):
    """`semcodec train` is a click command over TrainConfig: list options take several values as
    they always did, and every mistake is one `error:` line before any work (no run folder made)."""
    from semcodec.cli import cli, main
    from semcodec.train_config import TrainConfig
    ctx = cli.commands["train"].make_context("train", ["--data", "a", "b", "synth", "--val", "--out", "r",
                                                       "--widths", "160", "192", "--lr", "1e-3", "--bf16"])
    cfg = TrainConfig.from_dict(ctx.params)
    assert (cfg.data, cfg.val, cfg.widths, cfg.lr, cfg.bf16, cfg.preset) == (("a", "b", "synth"), (), (160, 192),
                                                                             1e-3, True, "s128")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg                    # what state.json keeps
    run = str(tmp_path / "run")
    base = ["train", "--preset", "tiny", "--out", run]
    cases = [
        (["train", "--preset", "nope", "--data", "synth", "--out", run], 1, "error: unknown preset 'nope' (known: "),
        (["train", "--data", "synth"], 2, "error: Missing option '--out'."),
        (base + ["--data", "a", "b", "--weights", "1"], 1, "error: --weights has 1 values for 2 --data sources"),
        (base + ["--data", "synth", "--group-frames", "9"], 1,
         "error: --group-frames must be in 1..4 (the preset's group), got 9"),
        (base + ["--data", "synth", "--config", '{"nope": 1}'], 1,
         "error: --config must be a JSON object of CodecConfig fields; unknown: ['nope']"),
        (base + ["--data", "synth", "--steps", "0"], 1, "error: --steps must be at least 1, got 0"),
        (base + ["--data", "synth", "--shown-ratio", "17"], 1, "error: --shown-ratio must be in 0..16, got 17"),
        (base + ["--data", "synth", "--shape-weight", "-1"], 1,
         "error: --shape-weight must be a finite number >= 0, got -1.0"),
        (base + ["--data", "synth", "--decoder-only"], 1,
         "error: --decoder-only needs --init: the trained model whose encoder it keeps"),
        (base + ["--data", "synth", "--decoder-only", "--init", "m.safetensors", "--continuous-steps", "5"], 1,
         "error: --decoder-only cannot go with --continuous-steps (the codebook is kept as it is)"),
        (base + ["--data", str(tmp_path / "none")], 1, f"error: no such data source: {tmp_path / 'none'}"),
        (["export", str(tmp_path / "none"), "-o", str(tmp_path / "x.safetensors")], 1,
         f"error: {tmp_path / 'none'} is not a training run with a checkpoint (no ckpt/state.json)"),
    ]
    for args, status, message in cases:
        code = main(args)
        err = capsys.readouterr().err
        assert code == status and err.startswith(message) and err.count("\n") == 1, (args, err)
    assert not (tmp_path / "run").exists() and not (tmp_path / "x.safetensors").exists()
    r = subprocess.run([sys.executable, "-m", "semcodec.train", "--preset", "nope", "--data", "synth", "--out", run],
                       env=_env(), capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("error: unknown preset 'nope'") and "Traceback" not in r.stderr
