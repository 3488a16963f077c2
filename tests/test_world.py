"""The captioned world: splits, held-out combinations, legible scenes, paraphrases and their parser."""
import json

import numpy as np
import pytest

from generation.world import ShapeTarget, Target, parse_caption
from semcodec.data import synth, world


@pytest.fixture(scope="module")
def scenes():
    return {split: [world.world_scene(s) for s in world.split_seeds(split, 80)] for split in world.SPLITS}


def test_splits_by_seed_are_deterministic_disjoint_and_sized():
    splits = [world.split_of(s) for s in range(6000)]
    assert splits == [world.split_of(s) for s in range(6000)]
    share = {k: splits.count(k) / len(splits) for k in world.SPLITS}
    assert 0.77 < share["train"] < 0.83 and 0.08 < share["val"] < 0.12 and 0.08 < share["test"] < 0.12
    seeds = {k: world.split_seeds(k, 50, start=1000) for k in world.SPLITS}
    assert all(world.split_of(s) == k and s >= 1000 for k, v in seeds.items() for s in v)
    assert all(len(set(v)) == 50 for v in seeds.values())
    assert not set(seeds["train"]) & set(seeds["val"]) and not set(seeds["val"]) & set(seeds["test"])
    assert seeds["test"] == world.split_seeds("test", 50, start=1000)
    with pytest.raises(ValueError, match="unknown split"):
        world.split_seeds("dev", 1)


def test_held_out_combinations_never_in_train(scenes):
    assert len(world.HELD_OUT_COMBOS) == 10
    assert not any(world.has_held_out(s) for s in scenes["train"])
    for split in ("val", "test"):          # a quarter given one, plus chance
        share = np.mean([world.has_held_out(s) for s in scenes[split]])
        assert 0.12 < share < 0.55, (split, share)


def test_world_scenes_are_legible(scenes):
    for s in scenes["test"][:30] + scenes["train"][:30]:
        colours = [sh.colour for sh in s.shapes]
        assert 1 <= len(s.shapes) <= 3 and len(set(colours)) == len(colours)
        assert all(world.stands_out(c, s.bg_colour, s.background) for c in colours)
        assert s.bg_colour != "black" or s.background == "plain"
        for sh in s.shapes:
            if sh.motion == "spins":
                assert sh.shape in world.SPIN_SHAPES and sh.phase == 0.0
        assert all(v <= world.MAX_OVERLAP_FRAMES for v in world._overlap_frames(s))
        assert synth.Scene.from_dict(json.loads(json.dumps(s.to_dict()))) == s     # JSON round trip
    assert world.world_scene(12345) == world.world_scene(12345)


def _overlap_frames_drawn(scene):
    """The legibility measure by drawing every shape's whole mask in every frame of the check clip."""
    h, w = world.LEGIBLE_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    hits = np.zeros(len(scene.shapes))
    for f in range(world.LEGIBLE_FRAMES):
        masks = []
        for sh in scene.shapes:
            cx, cy, r, angle = synth._place(sh, f / world.LEGIBLE_FPS, h, w)
            masks.append(synth._shape_mask(sh.shape, xx, yy, cx, cy, r + 1.0, angle))
        for i, m in enumerate(masks):
            hits[i] += any((m & o).any() for j, o in enumerate(masks) if j != i)
    return list(hits / world.LEGIBLE_FRAMES)


def test_overlap_check_equals_drawing_every_mask():
    """The check draws masks only where two shapes' reaches meet: on crowded scenes (three large
    shapes, random places, every shape kind and motion) it measures what drawing them all does."""
    rng = np.random.default_rng(0)
    touching = 0
    for seed in range(60):
        scene = synth.random_scene(seed, max_shapes=3)
        for sh in scene.shapes:
            sh.size = str(rng.choice(["medium", "large"]))
            sh.x0, sh.y0 = (float(v) for v in rng.uniform(0.3, 0.7, 2))
        fast, drawn = world._overlap_frames(scene), _overlap_frames_drawn(scene)
        assert fast == drawn, (seed, fast, drawn)
        touching += any(0 < v < 1 for v in drawn)
    assert touching >= 10          # the scenes test the partial cases, not only all or nothing


def test_paraphrases_templates_and_test_only_words(scenes):
    for s in scenes["train"][:40]:
        assert world.paraphrase(s) == synth.caption(s)          # canonical, canonical words
    def templates(split):
        return {world.world_caption(s)[0] for s in scenes[split]}
    test_only = {t.name for t in world.TEST_TEMPLATES}
    assert not templates("train") & test_only and not templates("val") & test_only
    assert templates("test") & test_only and len(templates("train")) == len(world.TEMPLATES)
    train_text = " ".join(world.world_caption(s)[1] for s in scenes["train"])
    test_text = " ".join(world.world_caption(s)[1] for s in scenes["test"])
    test_words = {w for kind in world.TEST_SYNONYMS.values() for ws in kind.values() for w in ws}
    assert not [w for w in test_words if f" {w} " in f" {train_text} "]
    assert [w for w in test_words if w in test_text]
    # word orders and synonyms really vary
    s = next(x for x in scenes["test"] if x.shapes[0].motion == "moves")
    texts = {world.paraphrase(s, t, seed=k) for t in world.TEMPLATE_NAMES for k in range(3)}
    assert len(texts) >= 15


def test_parser_round_trip_every_template_and_synonym(scenes):
    n = 0
    for s in scenes["test"] + scenes["train"][:60]:
        want = Target.from_scene(s)
        for t in world.TEMPLATE_NAMES:
            for k in (None, s.seed, s.seed + 7):
                text = world.paraphrase(s, t, seed=k, test_words=k is not None)
                assert parse_caption(text) == want, text
                n += 1
        legacy = synth.random_scene(s.seed)        # the pre-world captions parse too
        assert parse_caption(synth.caption(legacy)) == Target.from_scene(legacy)
    assert n > 2500


def test_parser_on_hand_written_prompts():
    t = parse_caption("A big grey ball rotating anti-clockwise fast, on a blue striped background")
    assert t.shapes == [ShapeTarget("circle", "gray", "large", "spins", "counterclockwise", "quickly")]
    assert (t.bg_colour, t.background, t.scroll) == ("blue", "stripes", "static")
    t = parse_caption("a red star moves to the left. a small yellow heart bounces")
    assert [(x.colour, x.shape, x.direction) for x in t.shapes] == [("red", "star", "left"), ("yellow", "heart", None)]
    assert t.background is None and t.bg_colour is None and t.shapes[0].size is None


def test_cli_synth_split_is_deterministic(tmp_path):
    from click.testing import CliRunner
    from semcodec.data.cli import dataset
    args = ["synth", "-n", "3", "--frames", "2", "--size", "32x48", "--split", "test", "--seed", "40"]
    for d in ("a", "b"):
        r = CliRunner().invoke(dataset, args + ["-o", str(tmp_path / d)])
        assert r.exit_code == 0, r.output
    a, b = ((tmp_path / d / "captions.jsonl").read_text() for d in "ab")
    assert a == b
    recs = [json.loads(x) for x in a.splitlines()]
    assert [r["seed"] for r in recs] == world.split_seeds("test", 3, 40)
    for r in recs:
        assert r["split"] == "test" and r["template"] in world.TEMPLATE_NAMES
        scene = synth.Scene.from_dict(r["scene"])
        assert parse_caption(r["caption"]) == Target.from_scene(scene)
        assert (tmp_path / "a" / r["path"]).is_file()
    r = CliRunner().invoke(dataset, ["synth", "-n", "1", "-o", str(tmp_path / "c"), "--split", "dev"])
    assert r.exit_code != 0 and "dev" in r.output
