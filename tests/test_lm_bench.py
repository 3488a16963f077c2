"""bench.lm and generation.lm.score: speed figures, held-out bits per code against the count baselines."""
import numpy as np
import pytest

from generation.lm import build_model, save_lm
from generation.lm.score import baselines
from lm_data import layout_dataset, one_torch_thread, tiny_dataset  # noqa: F401 (fixture)
from semcodec.data import TokenDataset


def copying_clips(n, seed):
    """Tiny-layout clips (8 + 3 x 4 codes of 64) whose P-frames 2 and 3 repeat P-frame 1."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        i, p = rng.integers(0, 64, 8), rng.integers(0, 64, 4)
        out.append([np.concatenate([i, p, p, p])])
    return out


def test_count_baselines(tmp_path):
    train = TokenDataset(layout_dataset(tmp_path / "train", copying_clips(300, 0)))
    test = TokenDataset(layout_dataset(tmp_path / "test", copying_clips(50, 1)))
    b = baselines(train, test)
    assert b["codes"] == 50 * 20
    assert b["unigram"] == pytest.approx(6.0, abs=0.1)             # uniform codes: log2 64
    # 12 of 20 codes cost the unigram's 6 bits, the 8 copies almost nothing
    assert b["prev_slot"] == pytest.approx(12 / 20 * 6.0, abs=0.4)


def test_bench_lm_runs(tmp_path_factory, tmp_path):
    import bench.lm
    ds = tiny_dataset(tmp_path_factory)
    ckpt = tmp_path / "lm.safetensors"
    save_lm(build_model("lm-tiny"), ckpt)
    rep = bench.lm.main(["--model", str(ckpt), "--frames", "2", "--repeats", "1", "--train", str(ds), "--test", str(ds),
                         "--json", str(tmp_path / "lm.json")])
    s = rep["speed"]
    assert s["same_tokens"] and s["rows"] == 2 and s["codes"] == 12
    assert s["kv_cache"]["codes_per_s"] > 0 and s["no_cache"]["codes_per_s"] > 0
    b = rep["bits_per_code"]
    assert 0 < b["baselines"]["prev_slot"] and 0 < b["baselines"]["unigram"] <= 6.1
    assert b["lm"]["codes"] == sum(len(t) for t in (TokenDataset(ds, unit="group")[i]["tokens"] for i in range(24)))
    assert b["lm"]["bits_code"] == pytest.approx(np.log2(71), abs=0.5)    # untrained: about uniform over 71 ids
    assert (tmp_path / "lm.json").stat().st_size > 100
