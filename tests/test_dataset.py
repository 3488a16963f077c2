"""Token datasets: build (resumable, exactly-once, failures), TokenDataset, synth clips.
(The LM layout of the tokens is tested in test_lm_layout.py.)"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import semcodec
from semcodec.checkpoint import save_checkpoint
from semcodec.data import DatasetError, TokenDataset, read_failures
from semcodec.data import synth
from semcodec.data.build import build, list_sources
from semcodec.data.dataset import shard_paths

ROOT = Path(__file__).resolve().parents[1]
N_CLIPS = 8


def tiny_checkpoint(path, seed=0):
    """The tiny preset with weights jittered so that tokens vary (a fresh model emits one code)."""
    cfg = semcodec.get_preset("tiny")
    torch.manual_seed(seed)
    m = semcodec.VideoTokenizer(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    save_checkpoint(m, cfg, path)
    return str(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    synth.write_clips(N_CLIPS, d, frames=12, size=(32, 48), fps=8)     # 1.5 s -> 9 semantic frames, 3 groups
    return d


@pytest.fixture(scope="module")
def built(tmp_path_factory, model, clips):
    out = tmp_path_factory.mktemp("ds") / "ds"
    rep = build([str(clips)], out, model=model, captions=clips / "captions.jsonl", workers=0)
    assert (rep.built, rep.failed, rep.uncaptioned) == (N_CLIPS, 0, 0)
    return out


def shard_ids(ds):
    return [cid for s in shard_paths(ds) for cid in pq.read_table(s, columns=["clip_id"]).column("clip_id").to_pylist()]


def groups_of(item):
    o = item["group_offsets"].tolist()
    t = item["tokens"].numpy()
    return [t[a:b] for a, b in zip(o[:-1], o[1:])]


# ----------------------------------------------------------------------------------- synth
def test_synth_captions_are_exact_and_rich(clips):
    lines = [json.loads(line) for line in (clips / "captions.jsonl").read_text().splitlines()]
    assert [r["path"] for r in lines] == [f"clip_{i:06d}.mp4" for i in range(N_CLIPS)]
    for r in lines:
        scene = synth.random_scene(r["seed"])
        assert r["caption"] == synth.caption(scene) == synth.caption(synth.Scene.from_dict(r["scene"]))
        assert (clips / r["path"]).is_file()
    text = " ".join(synth.caption(synth.random_scene(s)) for s in range(400))
    for kind in ("shape", "colour", "size", "motion", "background"):
        missing = [w for w in synth.VOCABULARY[kind] if w not in text]
        assert not missing, (kind, missing)
    assert "scrolling" in text and " while " in text and "clockwise" in text
    scene = synth.random_scene(3)
    a = synth.render(scene, 5, (40, 56), 8)
    assert a.shape == (5, 40, 56, 3) and a.dtype == np.uint8
    assert np.array_equal(a, synth.render(scene, 5, (40, 56), 8))


# ----------------------------------------------------------------------------------- build + read
def test_built_dataset_matches_codec_and_captions(built, clips, model):
    from semcodec.codec import Codec
    ds = TokenDataset(built)
    assert len(ds) == N_CLIPS and ds.clip_ids == sorted(ds.clip_ids) and ds.n_groups == 3 * N_CLIPS
    caps = {json.loads(line)["path"]: json.loads(line) for line in (clips / "captions.jsonl").read_text().splitlines()}
    codec = Codec.load(model, "cpu")
    assert ds.model["hash"] == codec.content_hash
    for c in range(N_CLIPS):
        item = ds[c]
        rec = caps[item["clip_id"]]
        assert item["caption"] == rec["caption"] and json.loads(item["meta"])["scene"] == rec["scene"]
        assert item["fps"] == 8 and item["duration"] == pytest.approx(1.5) and item["frames"] == 9
        assert item["motion"] >= 0 and item["model_hash"] == codec.content_hash
        assert item["tokens"].dtype == torch.int64 and item["group_valid"].tolist() == [4, 4, 3]
        for g in range(3):
            assert torch.equal(ds.group(c, g)["tokens"], item["tokens"][item["group_offsets"][g]:item["group_offsets"][g + 1]])
    assert max(ds[c]["motion"] for c in range(N_CLIPS)) > 1
    _, groups = codec.iter_encode(ds[2]["source"], search=0)       # datasets hold the encoder's own ids
    assert np.array_equal(np.concatenate([r.tokens for r in groups]), ds[2]["tokens"].numpy())
    assert len(np.unique(ds[2]["tokens"])) > 3
    assert ds.index_of(ds.clip_ids[5]) == 5


def test_item_layout_accessors(built):
    """locate / group_layout / clip_meta: what the LM reads (generation.lm.LMDataset) without tokens."""
    ds, clips = TokenDataset(built, unit="group"), TokenDataset(built)
    for i in range(len(ds)):
        c, g = ds.locate(i)
        item = ds[i]
        assert (c, g) == (item["index"], item["group"])
        valid, offs = ds.group_layout(c)
        assert valid[g] == item["group_valid"][0] and offs[g + 1] - offs[g] == len(item["tokens"])
    assert clips.locate(3) == (3, None)
    meta = clips.clip_meta(3)
    assert meta["frames"] == clips[3]["frames"] and meta["caption"] == clips[3]["caption"] and "tokens" not in meta


# ----------------------------------------------------------------------------------- robustness
def run_build(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "semcodec.data.build", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kw)


def test_killed_build_resumes_exactly_once(tmp_path, model, clips, built):
    out = tmp_path / "ds"
    args = [str(clips), "-o", str(out), "--model", model, "--captions", str(clips / "captions.jsonl"),
            "--shard-size", "1", "-q"]
    p = run_build([*args, "--workers", "0"])
    deadline = time.time() + 120
    while len(shard_paths(out)) < 2 and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)        # mid-way, possibly while a shard is being written
    p.wait()
    n_killed = len(set(shard_ids(out)))
    assert 2 <= n_killed < N_CLIPS, (n_killed, p.stderr.read().decode())
    p = run_build([*args, "--workers", "2"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    ids = shard_ids(out)
    assert sorted(ids) == sorted(set(ids)) == TokenDataset(built).clip_ids     # every clip exactly once
    assert not [f for f in (out / "shards").iterdir() if f.name.startswith(".")]
    a, b = TokenDataset(out), TokenDataset(built)
    for c in range(N_CLIPS):       # the same tokens as the one-process build
        assert torch.equal(a[c]["tokens"], b[c]["tokens"]) and a[c]["caption"] == b[c]["caption"]
    rep = build([str(clips)], out, model=model, workers=0)        # a third run has nothing to do
    assert (rep.present, rep.built, rep.shards) == (N_CLIPS, 0, 0)


def test_corrupt_sources_go_to_the_failures_file(tmp_path, model, clips):
    src = tmp_path / "src"
    src.mkdir()
    good = sorted(clips.glob("*.mp4"))[:2]
    for f in good:
        (src / f.name).write_bytes(f.read_bytes())
    data = good[0].read_bytes()
    (src / "truncated.mp4").write_bytes(data[:len(data) // 2])
    (src / "garbage.mkv").write_bytes(np.random.default_rng(0).bytes(5000))
    (src / "empty.mp4").write_bytes(b"")
    out = tmp_path / "ds"
    rep = build([str(src)], out, model=model, workers=0)
    assert (rep.built, rep.failed) == (2, 3)
    lines = [json.loads(x) for f in out.glob("failures-r*.jsonl") for x in f.read_text().splitlines()]
    reasons = {r["clip_id"]: r["reason"] for r in lines}
    assert set(reasons) == {"truncated.mp4", "garbage.mkv", "empty.mp4"}
    assert "empty file" in reasons["empty.mp4"] and "not a readable video" in reasons["garbage.mkv"]
    assert all(r["source"].startswith(str(src)) for r in lines)
    assert sorted(TokenDataset(out).clip_ids) == sorted(f.name for f in good)
    rep = build([str(src)], out, model=model, workers=0)           # re-run: known failures are skipped
    assert (rep.present, rep.known_failed, rep.built, rep.failed) == (2, 3, 0, 0)
    (src / "empty.mp4").write_bytes(good[1].read_bytes())         # fixed: --retry-failed picks it up
    rep = build([str(src)], out, model=model, workers=0, retry_failed=True)
    assert (rep.built, rep.failed) == (1, 2)
    assert sorted(r["clip_id"] for r in read_failures(out)) == ["garbage.mkv", "truncated.mp4"]
    assert sum(len(f.read_text().splitlines()) for f in out.glob("failures-r*.jsonl")) == 2
    assert len(TokenDataset(out)) == 3


def test_ranks_share_the_files(tmp_path, model, clips, built, monkeypatch):
    out = tmp_path / "ds"
    r0 = build([str(clips)], out, model=model, workers=0, rank=0, world=2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    r1 = build([str(clips)], out, model=model, workers=0)
    assert (r0.assigned, r1.assigned, r0.built + r1.built) == (4, 4, N_CLIPS)
    names = sorted(p.name[:6] for p in shard_paths(out))
    assert names == ["r00000", "r00001"]
    assert sorted(shard_ids(out)) == TokenDataset(built).clip_ids


def test_errors(tmp_path, model, built, clips, capsys):
    other = tiny_checkpoint(tmp_path / "other.safetensors", seed=1)
    with pytest.raises(DatasetError, match="holds tokens of model"):
        build([str(clips)], built, model=other, workers=0)
    with pytest.raises(DatasetError, match="no such source"):
        build([str(tmp_path / "nope")], tmp_path / "ds", model=model)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in "ab":
        (tmp_path / d / "x.mp4").write_bytes(b"")
    with pytest.raises(DatasetError, match="two sources have the clip id 'x.mp4'"):
        list_sources([tmp_path / "a", tmp_path / "b"])
    bad = tmp_path / "caps.jsonl"
    bad.write_text('{"path": "a.mp4", "caption": "ok"}\nnot json\n')
    with pytest.raises(DatasetError, match="line 2"):
        build([str(clips)], tmp_path / "ds2", model=model, captions=bad)
    with pytest.raises(DatasetError, match="not a token dataset"):
        TokenDataset(tmp_path)
    from semcodec.data.build import main
    assert main([str(tmp_path / "nope"), "-o", str(tmp_path / "ds3"), "--model", model]) == 1
    assert capsys.readouterr().err.strip().startswith("error: no such source")


def test_cli_synth(tmp_path):
    from click.testing import CliRunner
    from semcodec.data.cli import dataset
    r = CliRunner().invoke(dataset, ["synth", "-n", "2", "-o", str(tmp_path / "s"), "--frames", "3",
                                     "--size", "16x24", "--seed", "5"])
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in (tmp_path / "s" / "captions.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in recs] == [5, 6] and (tmp_path / "s" / "clip_000001.mp4").is_file()
    r = CliRunner().invoke(dataset, ["synth", "-n", "2", "-o", str(tmp_path / "s"), "--size", "big"])
    assert isinstance(r.exception, DatasetError)


CRASHY = '''
import os
from semcodec.data import build
_orig = build._worker_run


def crashy(clip):
    if "crash" in clip.clip_id:
        os._exit(3)          # a worker dying as on a segfault or the OOM killer
    return _orig(clip)
'''


def test_a_dying_worker_fails_only_its_clip(tmp_path, model, clips, monkeypatch):
    from semcodec.data import build as B
    (tmp_path / "crashy_mod.py").write_text(CRASHY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import crashy_mod
    monkeypatch.setattr(B, "_worker_run", crashy_mod.crashy)
    src = tmp_path / "src"
    src.mkdir()
    for f in sorted(clips.glob("*.mp4"))[:3]:
        (src / f.name).write_bytes(f.read_bytes())
    (src / "crash.mp4").write_bytes((src / f.name).read_bytes())
    rep = B.build([str(src)], tmp_path / "ds", model=model, workers=1)
    assert (rep.built, rep.failed) == (3, 1)
    assert [r["clip_id"] for r in read_failures(tmp_path / "ds")] == ["crash.mp4"]
    assert "died" in rep.failures[0]["reason"] and len(TokenDataset(tmp_path / "ds")) == 3


# ----------------------------------------------------------------------------------- other readers and engines
def _same_items(a: TokenDataset, b: TokenDataset) -> None:
    assert a.clip_ids == b.clip_ids
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x["tokens"], y["tokens"]) and torch.equal(x["group_offsets"], y["group_offsets"])
        assert (x["caption"], x["meta"], x["motion"], x["model_hash"]) == (y["caption"], y["meta"], y["motion"],
                                                                            y["model_hash"])


def test_hugging_face_datasets_reads_the_shards(built, tmp_path, monkeypatch):
    """The shards are plain Parquet: `datasets.load_dataset("parquet", ...)` reads them, no semcodec code."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")          # the optional extra semcodec[datasets]
    hf = datasets.load_dataset("parquet", data_files=str(built / "shards" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    ds = TokenDataset(built)
    assert len(hf) == N_CLIPS and sorted(hf["clip_id"]) == ds.clip_ids
    for row in hf:
        item = ds[ds.index_of(row["clip_id"])]
        assert row["tokens"] == item["tokens"].tolist() and row["group_offsets"] == item["group_offsets"].tolist()
        assert (row["caption"], row["model_hash"], row["n_groups"]) == (item["caption"], item["model_hash"],
                                                                         len(item["group_start"]))


def test_ray_engine_writes_the_same_shards_exactly_once(tmp_path, model, clips, built):
    """`--engine ray` on a local Ray (2 CPUs, 2 actors) completes a dataset a local build began: the
    same rows, every clip once, a bad source recorded as a failure, and a re-run does nothing."""
    ray = pytest.importorskip("ray")                    # the optional extra semcodec[ray]
    pytest.importorskip("ray.data")
    from semcodec.cli import main
    out, bad = tmp_path / "ds", tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"not a video" * 10)
    first = [str(clips / f"clip_{i:06d}.mp4") for i in range(3)]
    build(first, out, model=model, captions=clips / "captions.jsonl", workers=0)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rep = build([str(clips), str(bad)], out, model=model, captions=clips / "captions.jsonl", workers=2,
                    engine="ray")
        assert (rep.present, rep.built, rep.failed) == (3, N_CLIPS - 3, 1)
        failure = rep.failures[0]
        assert failure["clip_id"] == "broken.mp4" and failure["reason"].startswith("not a readable video")
        assert main(["dataset", "build", str(clips), str(bad), "-o", str(out), "--model", model, "--engine", "ray",
                     "--workers", "2", "--captions", str(clips / "captions.jsonl"), "-q"]) == 0
        # Ray reads the shards with no semcodec code (docs/datasets.md)
        ds = ray.data.read_parquet(str(out / "shards"))
        ds = ds.filter(lambda row: row["motion"] >= 0.0).select_columns(["clip_id", "caption", "tokens"])
        got = {cid: list(t) for b in ds.iter_batches(batch_size=64) for cid, t in zip(b["clip_id"], b["tokens"])}
        ref = TokenDataset(built)
        assert sorted(got) == ref.clip_ids and all(got[c] == ref[ref.index_of(c)]["tokens"].tolist() for c in got)
    finally:
        ray.shutdown()
    ids = shard_ids(out)
    assert sorted(ids) == sorted(set(ids)) == TokenDataset(built).clip_ids          # every clip exactly once
    _same_items(TokenDataset(out), TokenDataset(built))
    assert [f["clip_id"] for f in read_failures(out)] == ["broken.mp4"]
