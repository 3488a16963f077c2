"""The world evaluator (generation.evaluate): truth scores high, mismatched captions and noise low."""
import json

import numpy as np
import pytest

from generation import evaluate as ev
from semcodec.data import synth, world

FPS, SIZE, FRAMES = 8.0, (128, 192), 16          # 2 s clips at the world's working size


@pytest.fixture(scope="module")
def clips():
    """Six test-split scenes: video (in memory), paraphrased caption, analysis."""
    out = []
    for seed in world.split_seeds("test", 6):
        scene = world.world_scene(seed)
        video = synth.render(scene, FRAMES, SIZE, FPS)
        out.append((scene, video, world.world_caption(scene)[1], ev.analyse(video, FPS)))
    return out


def mean_scores(pairs):
    """pairs of (analysis, target) -> per-dimension score over them."""
    return ev.summarise([ev.score_clip(a, t) for a, t in pairs], [], 0.0).scores


def test_ground_truth_scores_high(clips):
    by_spec = mean_scores([(a, s) for s, _, _, a in clips])
    by_caption = mean_scores([(a, c) for _, _, c, a in clips])
    assert by_spec == by_caption               # the parsed paraphrase says what the spec says
    for d in ev.DIMENSIONS:
        assert by_spec[d] >= 0.9, (d, by_spec)
    for s, _, _, a in clips:                   # the objects found are the shapes drawn
        assert sorted(o.colour for o in a.objects) == sorted(x.colour for x in s.shapes)


def test_mismatched_captions_score_low(clips):
    shifted = [(a, clips[(i + 1) % len(clips)][0]) for i, (_, _, _, a) in enumerate(clips)]
    sc = mean_scores(shifted)
    for d in ("shape_colour", "shape_class", "motion", "bg_colour", "bg_pattern"):
        assert sc[d] <= 0.5, (d, sc)
    assert sc["flicker"] >= 0.9                # prompt-free: the video is still clean


def test_noise_videos_score_low(clips):
    rng = np.random.default_rng(0)
    from scipy import ndimage
    noise = np.stack([ndimage.gaussian_filter(rng.normal(size=(*SIZE, 3)), (4, 4, 0)) for _ in range(FRAMES)])
    noise = np.clip(128 + 80 * noise / noise.std(), 0, 255).astype(np.uint8)
    a = ev.analyse(noise, FPS)
    sc = mean_scores([(a, s) for s, _, _, _ in clips])
    assert sc["flicker"] < 0.3 and sc["consistency"] < 0.5, sc
    assert sc["count"] <= 0.5 and sc["shape_class"] <= 0.4 and sc["motion"] <= 0.4, sc


def test_direction_speed_and_motion_are_read_from_the_video():
    scene = synth.Scene("plain", "blue", [synth.Shape("star", "yellow", "large", "right", "steadily", 0.3, 0.5)], 0)
    a = ev.analyse(synth.render(scene, FRAMES, SIZE, FPS), FPS)
    sc = ev.score_clip(a, "A large yellow star moves steadily to the right on a plain blue background.")
    assert all(sc[d] == (1.0, 1) for d in ("shape_colour", "shape_class", "size", "motion", "direction", "speed"))
    wrong = ev.score_clip(a, "A small yellow star zigzags quickly to the left on a plain blue background.")
    assert all(wrong[d] == (0.0, 1) for d in ("size", "motion", "direction", "speed"))
    spin = synth.Scene("plain", "white", [synth.Shape("cross", "red", "large", "clockwise", "steadily", 0.5, 0.5,
                                                      "spins")], 0)
    a = ev.analyse(synth.render(spin, FRAMES, SIZE, FPS), FPS)
    assert a.objects[0].motion == "spins" and a.objects[0].rotation_rate == pytest.approx(0.2, abs=0.03)
    assert ev.score_clip(a, "a large red cross spins steadily counterclockwise")["direction"] == (0.0, 1)


def test_robust_to_a_blurry_drifting_codec(clips):
    """What a lossy tokenizer does at 128 px: soft edges, a colour cast, a fixed speckle."""
    from scipy import ndimage
    rng = np.random.default_rng(1)
    pairs = []
    for s, v, _, _ in clips[:3]:
        x = ndimage.gaussian_filter(v.astype(np.float32), (0, 1.0, 1.0, 0))
        x = x * np.array([0.95, 1.0, 0.93]) + 6 + rng.normal(0, 3, x.shape[1:])
        pairs.append((ev.analyse(np.clip(x, 0, 255).astype(np.uint8), FPS), s))
    sc = mean_scores(pairs)
    for d in ("shape_colour", "count", "motion", "direction", "bg_colour", "flicker"):
        assert sc[d] >= 0.9, (d, sc)


def test_cli_on_files(tmp_path, capsys):
    from semcodec.data.synth import write_clips
    write_clips(2, tmp_path, frames=FRAMES, size=SIZE, fps=FPS, split="test")
    out = tmp_path / "scores.json"
    assert ev.main([str(tmp_path), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "shape_class" in table and "2 clips" in table
    doc = json.loads(out.read_text())
    assert list(doc["dimensions"]) == list(ev.DIMENSIONS) and doc["n_clips"] == 2
    assert all(doc["dimensions"][d]["score"] >= 0.75 for d in ev.DIMENSIONS), doc["dimensions"]
    one = sorted(tmp_path.glob("*.mp4"))[0]
    assert ev.main([str(one), "--caption", "a red star", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dimensions"]["size"]["n"] == 0 and doc["dimensions"]["shape_class"]["n"] == 1
    assert ev.main([str(one)]) == 2 and "--caption" in capsys.readouterr().err
    assert ev.main([str(tmp_path / "nope.mp4"), "--caption", "x"]) == 1


def test_analyse_rejects_what_is_not_a_video():
    with pytest.raises(ValueError, match="T x H x W x 3"):
        ev.analyse(np.zeros((4, 8, 8), np.uint8))
