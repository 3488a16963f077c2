"""Smoke tests of the RD, speed and token-budget benchmarks (tiny model, tiny clips)."""
import json
import math
import sys

import numpy as np
import pytest
import torch

import semcodec
from bench import rd, speed, tokens
from bench.metrics import compare


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    import torch
    torch.manual_seed(0)
    cfg = semcodec.get_preset("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    semcodec.save_checkpoint(semcodec.VideoTokenizer(cfg), cfg, path, token_counts=np.arange(1, cfg.codebook_size + 1))
    return str(path)


@pytest.fixture(scope="module")
def clip5(tmp_path_factory):
    """5 frames, 64x96, 10 fps, procedural."""
    from semcodec.data.synth import random_scene, render
    from semcodec.video import VideoWriter
    path = tmp_path_factory.mktemp("clip") / "clip5.mp4"
    frames = render(random_scene(3), 5, (64, 96), 10.0)
    with VideoWriter(path, 10.0, (64, 96), crf=10) as w:
        for f in frames:
            w.write(f)
    return str(path)


def test_quality_measures_what_encode_writes_at_the_rate_asked(tiny_ckpt, clip5, tmp_path):
    """bench.quality: the real file's rate, the decoded clip's PSNR against a reference computed
    here, and --fps / --entropy as `semcodec encode` takes them."""
    from bench.quality import measure
    from semcodec.codec import Codec
    from semcodec.video import iter_frames
    codec = Codec.load(tiny_ckpt, "cpu")
    lo = measure(codec, clip5, entropy=None, fps=2.0)
    hi = measure(codec, clip5, entropy="adaptive", fps=10.0)
    assert (lo["semantic_fps"], hi["semantic_fps"], hi["entropy"]) == (2.0, 10.0, "adaptive")
    assert lo["entropy"] == codec.default_entropy and lo["frames"] == hi["frames"] == 5
    assert lo["tokens_per_s"] < hi["tokens_per_s"]
    tok, rec = tmp_path / "t.bin", tmp_path / "r.mp4"
    codec.encode_file(clip5, tok, entropy="adaptive", fps=10.0)
    codec.decode_file(tok, rec)
    src, dec = np.stack(list(iter_frames(clip5))), np.stack(list(iter_frames(rec)))
    # the same coding again (a random tiny model sits near VQ ties: threads can flip a token or two)
    assert hi["psnr_src"] == pytest.approx(compare(src, dec, None)["psnr"], abs=0.05)
    assert hi["kbit_per_s"] == pytest.approx(8 * tok.stat().st_size / (5 / 10.0) / 1000, rel=0.05)


def test_frames_pick_the_semcodec_point_and_the_best_anchor_within_its_rate():
    from bench.frames import pick_points
    sem = lambda fps, ent, kbps: {"family": "semcodec", "model": "s128", "semantic_fps": fps, "entropy": ent,  # noqa: E731
                                  "bitrate_kbps": kbps, "psnr_128": 21.0}
    anchor = lambda kbps, psnr: {"family": "x265", "anchor": True, "bitrate_kbps": kbps, "psnr_128": psnr}  # noqa: E731
    entry = {"results": [sem(8.0, "adaptive", 15.0), sem(8.0, "context", 8.5), sem(4.0, "context", 5.3),
                         anchor(8.0, 22.0), anchor(8.4, 22.5), anchor(9.0, 25.0), anchor(14.0, 26.0)]}
    s, a = pick_points(entry, "s128", 8.0)
    assert (s["entropy"], s["bitrate_kbps"], a["bitrate_kbps"]) == ("context", 8.5, 8.4)
    s, a = pick_points(entry, "s128", 8.0, "adaptive")
    assert (s["bitrate_kbps"], a["bitrate_kbps"]) == (15.0, 14.0)
    assert pick_points(entry, "s128", 4.0)[1] is None                     # no anchor that low
    with pytest.raises(SystemExit, match="^error: no context point of model 's128' at 2 fps in the results$"):
        pick_points(entry, "s128", 2.0)
    # curves per search setting (bench.rd --search 0 12): the one asked for
    for r, n in zip(entry["results"][:3], (0, 0, 0)):
        r["codec"] = f"semcodec-s128-search{n}@{r['semantic_fps']:g}fps-{r['entropy']}"
    entry["results"].append({**sem(8.0, "context", 8.8), "codec": "semcodec-s128-search12@8fps-context", "psnr_128": 21.9})
    assert pick_points(entry, "s128", 8.0, "context", 12)[0]["bitrate_kbps"] == 8.8
    assert pick_points(entry, "s128", 8.0, "context", 0)[0]["bitrate_kbps"] == 8.5
    with pytest.raises(SystemExit, match="^error: no context point of model 's128' at 4 fps searched 12 rounds in the results$"):
        pick_points(entry, "s128", 4.0, "context", 12)


def test_token_budget_landiff_and_others():
    rows = {(r["design"], r["fps"]): r for r in tokens.rows((480, 720))}
    paper = rows[("LanDiff (paper)", 8.0)]
    assert paper["tokens_per_s"] == 1218 / (49 / 8)            # 198.86, the paper's "~200 tokens/s"
    assert round(paper["tokens_per_s"], 2) == 198.86
    assert paper["bits_per_token"] == 11 and paper["raw_bits_per_s"] == pytest.approx(2187.4, abs=0.1)
    s128 = rows[("semcodec `s128`", 8.0)]
    assert s128["tokens_per_s"] == pytest.approx(semcodec.get_preset("s128").tokens_per_second)
    assert s128["tokens_per_s"] == pytest.approx((224 + 7 * 128) * 8 / 6)
    lan = rows[("semcodec `landiff`", 2.0)]
    assert lan["tokens_per_s_no_overlap"] == pytest.approx(1218 * 2 / 13) and lan["tokens_per_s"] == pytest.approx(1218 * 2 / 10)
    mag8 = rows[("MagViT2", 8.0)]
    assert mag8["clip_tokens"] == 13 * 60 * 90 and mag8["tokens_per_s"] == 2 * 5400 and mag8["bits_per_token"] == 18
    cosmos = rows[("Cosmos DV 8x16x16", 24.0)]
    assert cosmos["clip_tokens"] == 16 * 30 * 45 and cosmos["tokens_per_s"] == 3 * 1350
    assert cosmos["bits_per_token"] == 16
    assert mag8["vs_landiff"] == pytest.approx(10800 / paper["tokens_per_s"])
    assert "computed" in tokens.table(list(rows.values()), (480, 720)).lower()


def test_chunked_quality_equals_compare():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 40, 60, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    q = rd.quality(a, b, chunk=6, ssim_src=True)
    assert rd.quality(a, b, chunk=7)["psnr_src"] == pytest.approx(q["psnr_src"], rel=1e-5)
    ref = compare(a, b, None)
    assert q["psnr_src"] == pytest.approx(ref["psnr"], rel=1e-5) and q["ssim_src"] == pytest.approx(ref["ssim"], rel=1e-5)
    assert q["psnr_128"] == pytest.approx(ref["psnr"], rel=1e-5)    # short side 40 <= 128: no scaling


def test_rd_writes_well_formed_entries(tmp_path, tiny_ckpt, clip5):
    out = tmp_path / "rd.json"
    rd.main(["--clips", clip5, "--models", tiny_ckpt, "--semantic-fps", "6", "3", "--anchors", "libx265",
             "--anchor-fps", "5", "--codecs", "libx264", "--crf", "30", "--down-short", "0",
             "--no-floor", "--threads", "1", "--out", str(out)])
    doc = json.loads(out.read_text())
    entry = doc["clips"]["clip5"]
    assert entry["source"]["frames"] == 5 and entry["source"]["width"] == 96
    res = {r["codec"]: r for r in entry["results"]}
    modes = ("fixed", "prior", "adaptive")
    sem_names = {f"semcodec-tiny@{f}fps-{m}" for f in (6, 3) for m in modes}
    assert sem_names <= set(res) and "libx264" in res
    anchors = [r for r in entry["results"] if r.get("anchor")]
    assert len(anchors) == 5 and {r["codec"] for r in anchors} == {"libx265-128p"}     # 5 CRFs at 5 fps
    for r in res.values():
        assert r["bitrate_kbps"] == pytest.approx(8 * r["bytes"] / 0.5 / 1000)     # 5 frames at 10 fps
        assert 0 < r["payload_bytes"] <= r["bytes"]
        for k in ("psnr_128", "psnr_src"):
            assert math.isfinite(r[k]) and 5 < r[k] < 100
        assert -1 <= r["ssim_128"] <= 1
    for r in anchors:    # raw stream: no container; the MP4 of the same encode is larger
        assert r["payload_bytes"] == r["bytes"] < r["container_bytes"] and r["coded_frames"] == 3
    for f in (6, 3):
        sem = [res[f"semcodec-tiny@{f}fps-{m}"] for m in modes]
        assert len({r["psnr_128"] for r in sem}) == 1                   # decoded once, same pictures
        assert len({r["tokens"] for r in sem}) == 1 and sem[0]["tokens"] > 0
        assert sem[0]["bits_per_token"] == pytest.approx(6, abs=0.5)    # fixed: 6 bits for 64 codes
    # the rate control: half the semantic frame rate, fewer tokens
    assert res["semcodec-tiny@3fps-fixed"]["tokens"] < res["semcodec-tiny@6fps-fixed"]["tokens"]
    assert res["libx264"]["params"]["crf"] == 30 and res["libx264"]["psnr_128"] > 25
    bd = rd.bd_table("clip5", entry)
    assert "| semcodec-tiny-adaptive | libx265-128p |" in bd
    png = tmp_path / "rd-clip5.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bd_rate_of_known_curves():
    from bench.bjontegaard import bd_psnr, bd_rate
    rates, psnr = [1.0, 2.0, 4.0, 8.0], [30.0, 33.0, 36.0, 39.0]
    assert bd_rate(rates, psnr, [r / 2 for r in rates], psnr) == pytest.approx(-50)     # same quality, half the bits
    assert bd_rate(rates, psnr, [r * 1.1 for r in rates], psnr) == pytest.approx(10)
    assert bd_psnr(rates, psnr, rates, [p + 1.5 for p in psnr]) == pytest.approx(1.5)
    assert bd_rate(rates, psnr, [1.0, 2.0], [10.0, 11.0]) is None                      # no PSNR overlap
    assert bd_rate(rates, psnr, [1.0], [31.0]) is None


def test_anchor_restores_source_rate_and_envelope():
    from bench.anchors import envelope, kept_indices, restore
    assert list(kept_indices(25, 25.0, 8.0)) == [0, 3, 6, 9, 12, 16, 19, 22]
    assert list(kept_indices(5, 10.0, 30.0)) == [0, 1, 2, 3, 4]
    small = np.stack([np.full((4, 6, 3), v, np.uint8) for v in (0, 90, 200)])
    out = np.concatenate(list(restore(small, np.array([0, 3, 6]), 8, (8, 12), chunk=3)))
    assert out.shape == (8, 8, 12, 3)
    assert [int(f[0, 0, 0]) for f in out] == [0, 30, 60, 90, 127, 163, 200, 200]   # linear, held at the end
    rows = [{"bitrate_kbps": b, "psnr_128": p} for b, p in [(5, 20), (6, 19), (7, 23), (8, 22), (9, 24)]]
    assert [(r["bitrate_kbps"]) for r in envelope(rows)] == [5, 7, 9]


def test_peak_rss_is_the_childs_own():
    """The parent (with torch loaded) is large; a child's peak must not inherit it."""
    alloc = "b = bytearray({} * 2 ** 20); b[::4096] = b'x' * len(b[::4096])"
    small = speed.run_child([sys.executable, "-c", alloc.format(10)])
    big = speed.run_child([sys.executable, "-c", alloc.format(200) + "; raise SystemExit(3)"])
    assert small["rc"] == 0 and big["rc"] == 3
    assert small["peak_rss"] < 60 * 2 ** 20
    assert 175 * 2 ** 20 < big["peak_rss"] - small["peak_rss"] < 215 * 2 ** 20   # 200 - 10 MB


def test_speed_throughput_smoke(tmp_path, tiny_ckpt, clip5):
    r = speed.throughput(tiny_ckpt, clip5, "cpu", tmp_path)
    assert r["frames"] == 5 and r["tokens"] > 0
    assert r["encode_fps"] > 0 and r["decode_fps"] > 0
    assert r["encode_tokens_per_s"] == pytest.approx(r["tokens"] / r["encode_s"])
    assert 0 < r["encode_model_share"] < 1 and 0 < r["decode_model_share"] < 1
    assert r["first_group_s"] > 0 and r["first_frame_s"] > 0
    assert r["group_video_s"] == pytest.approx(4 / 6)
    assert "tiny" in speed.speed_table([r])


def test_world_codec_psnr_by_group_place():
    """bench.world_codec's profile: frame j counts at place j mod stride, each place its mean PSNR."""
    from bench.world_codec import by_group_place
    truth = np.zeros((5, 2, 2, 3), np.uint8)
    rec = truth.copy()
    rec[1] = 255 // 10          # places: 0 <- frames 0, 3 (exact: 100 dB cap), 1 <- 1, 4; 2 <- 2
    rec[4] = 255 // 100
    rec[2] = 255 // 100
    out = by_group_place([truth], [rec], 3)
    exact = 10 * np.log10(255 ** 2 / 1e-10)
    psnr = lambda v: 10 * np.log10(255 ** 2 / v ** 2)
    assert np.allclose(out, [exact, (psnr(25) + psnr(2)) / 2, psnr(2)])


def test_world_motion_reads_the_motion_back(tmp_path):
    """bench.world_motion on a small pframe_warp model: the encoder output carries the motion it is
    given straight into each PFrame code (a random network already), and a model without
    pframe_warp is refused in one line."""
    from bench import world_motion
    cfg = semcodec.get_preset("world").replace(
        name="world-warp", pframe_warp=True, iframe_tokens=24, width=64, heads=2, rope_split=(8, 12, 12),
        locality_slopes=(1.0, 0.0), stem_channels=(16,), feature_dim=32, codebook_size=64)
    torch.manual_seed(0)
    path = tmp_path / "w.safetensors"
    semcodec.save_checkpoint(semcodec.VideoTokenizer(cfg), cfg, path)
    doc = world_motion.main(["--model", str(path), "--clips", "6", "--threads", "1", "--out", str(tmp_path / "m.json")])
    assert doc["tokens"] == 6 * 15 * cfg.pframe_tokens and 0 < doc["moving_tokens"] < 1
    assert doc["r2_z"] > 0.5 and doc["r2_zq"] < doc["r2_z"]
    assert json.loads((tmp_path / "m.json").read_text())["r2_flow_head"] == doc["r2_flow_head"]
    plain = tmp_path / "p.safetensors"
    base = cfg.replace(name="world-plain", pframe_warp=False)
    semcodec.save_checkpoint(semcodec.VideoTokenizer(base), base, plain)
    with pytest.raises(SystemExit, match="^error: model 'world-plain' has no pframe_warp: its tokens carry no motion to measure$"):
        world_motion.main(["--model", str(plain), "--out", str(tmp_path / "n.json")])


def test_world_iframes_probe_chain(tmp_path):
    """bench.world_iframes: a continuous variant saved, then quantized from it; one JSON entry each."""
    from bench import world_iframes
    out, saved = tmp_path / "r.json", tmp_path / "c.safetensors"
    small = '{"iframe_tokens": 24, "width": 64, "heads": 2, "rope_split": [8, 12, 12], "locality_slopes": [1.0, 0.0]}'
    common = ["--minutes", "0.001", "--batch", "2", "--config", small, "--out", str(out)]
    c = world_iframes.main(["--name", "c", "--continuous", "--save", str(saved), *common])
    q = world_iframes.main(["--name", "q", "--start-from", str(saved), "--picture", str(tmp_path / "q.png"),
                            "--shape-weight", "20", "--clips", "2", *common])
    assert c["steps"] >= 1 and c["continuous"] and c["psnr_at_start"] is None and c["tokens_per_frame"] == 24
    assert q["psnr_at_start"] is not None and 5 < q["test_psnr"] < 60
    assert q["shape_weight"] == 20 and "evaluator" not in c
    assert set(q["evaluator"]) >= {"shape_colour", "shape_class", "bg_colour"}
    assert all(0 <= v <= 1 for v in q["evaluator"].values())
    assert set(json.loads(out.read_text())["variants"]) == {"c", "q"}
    assert (tmp_path / "q.png").stat().st_size > 1000


def test_summary_lists_every_semcodec_curve_at_its_cheapest_mode():
    """Two curves of one model (search 0 and 12) at the same rate are two lines, each in its
    cheaper entropy mode, against a classic series interpolated in log rate."""
    from bench import rd

    def sem(label, mode, kbps, psnr):
        return {"family": "semcodec", "codec": f"semcodec-s128-{label}@8fps-{mode}", "model_hash": "h",
                "semantic_fps": 8.0, "bitrate_kbps": kbps, "psnr_128": psnr, "ssim_128": 0.5}
    rows = [sem("search0", "adaptive", 12.0, 21.4), sem("search0", "context", 8.5, 21.4),
            sem("search12", "adaptive", 12.5, 21.9), sem("search12", "context", 8.8, 21.9),
            {"family": "classic", "codec": "libx265-128p", "bitrate_kbps": 4.0, "psnr_128": 20.0, "ssim_128": 0.6},
            {"family": "classic", "codec": "libx265-128p", "bitrate_kbps": 16.0, "psnr_128": 24.0, "ssim_128": 0.8}]
    lines = rd.summary("bikes", {"results": rows}).splitlines()[1:]
    assert [ln.split()[0] for ln in lines] == ["semcodec-s128-search0@8fps-context", "semcodec-s128-search12@8fps-context"]
    assert lines[0].endswith("libx265-128p: 22.17 dB / 0.7087")       # 20 + 4 log(8.5 / 4) / log(16 / 4)
