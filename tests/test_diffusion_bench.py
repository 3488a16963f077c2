"""bench/renderer.py: its sharpness measure, and a whole run on the tiny setup."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("diffusers")

from test_diffusion import one_torch_thread, tiny_setup  # noqa: E402,F401 (fixture)

from bench.renderer import gradient_magnitude, main  # noqa: E402


def test_gradient_magnitude():
    f = np.zeros((2, 4, 5, 3), np.uint8)
    f[:, :, 2:] = 200                                   # one vertical edge of 200 levels
    # per row, of 4 forward differences in x one is 200; rows 0..2 are counted
    assert gradient_magnitude(f) == pytest.approx(200 / 4, rel=1e-6)
    blurred = f.astype(float)
    blurred[:, :, 2] = 100
    assert gradient_magnitude(blurred) == pytest.approx(200 / 4, rel=1e-6)      # two steps of 100: same mean
    assert gradient_magnitude(np.full((1, 3, 3, 3), 77)) == 0.0


def test_bench_runs_on_the_tiny_setup(tmp_path_factory, tmp_path):
    s = tiny_setup(tmp_path_factory)
    out = tmp_path / "r.json"
    doc = main(["--model", str(s["codec"]), "--renderer", str(s["stage2"]), "--clips", "1", "--seconds", "1.5",
                "--size", "32x48", "--steps", "2", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc))
    assert doc["steps"] == 2 and doc["seconds_per_clip"]["renderer"] > 0
    assert set(doc["sharpness_vs_source"]) == {"direct", "renderer"} and doc["sharpness_vs_source"]["direct"] > 0
    assert doc["dimensions"]["flicker"]["n"] == 1 and set(doc["continuity"]) == {"source", "direct", "renderer"}
