"""GOP planner properties (hypothesis): coverage, overlap, padding, exact cross-fade."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semcodec.gop import CrossFader, crossfade, fade_weights, pad_group, plan_groups


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 400), group=st.integers(1, 16), data=st.data())
def test_every_frame_covered(n, group, data):
    overlap = data.draw(st.integers(0, group - 1))
    plan = plan_groups(n, group, overlap)
    covered = np.zeros(n, int)
    for g in plan:
        assert 1 <= g.valid <= group and g.start + g.valid <= n
        covered[g.start:g.stop] += 1
    assert covered.min() >= 1
    assert plan[0].start == 0 and plan[-1].stop == n
    for a, b in zip(plan, plan[1:]):
        assert b.start == a.start + group - overlap          # fixed stride
        assert a.valid == group                              # only the last group is short
        assert a.stop - b.start == overlap                   # consecutive groups share `overlap` frames
    if len(plan) > 1:
        assert plan[-1].valid > overlap                      # the last group reaches past the overlap


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 200), group=st.integers(1, 13), data=st.data())
def test_identity_codec_crossfade_is_exact(n, group, data):
    overlap = data.draw(st.integers(0, group - 1))
    video = np.random.default_rng(n).random((n, 2, 3))
    plan = plan_groups(n, group, overlap)
    outs = [pad_group(video[g.start:g.stop], group)[:g.valid] for g in plan]
    np.testing.assert_allclose(crossfade(plan, outs, overlap), video, atol=1e-12)


def test_crossfade_blends_linearly():
    plan = plan_groups(10, 6, 2)         # groups at 0 and 4, overlap frames 4 and 5
    a, b = np.zeros((6, 1)), np.ones((6, 1))
    out = crossfade(plan, [a, b], 2)
    np.testing.assert_allclose(out[:, 0], [0, 0, 0, 0, 1 / 3, 2 / 3, 1, 1, 1, 1])
    np.testing.assert_allclose(fade_weights(plan[0], 2, 2), [1, 1, 1, 1, 2 / 3, 1 / 3])


def test_pad_group_repeats_last_frame():
    x = np.arange(3)[:, None]
    np.testing.assert_array_equal(pad_group(x, 5)[:, 0], [0, 1, 2, 2, 2])


def test_streaming_emits_in_order_and_rejects_gaps():
    plan = plan_groups(20, 8, 2)
    cf = CrossFader(plan, 2)
    got = [n for g in plan for n, _ in cf.push(g, np.zeros((g.valid, 1)))] + [n for n, _ in cf.flush()]
    assert got == list(range(20))
    cf = CrossFader(plan, 2)
    list(cf.push(plan[0], np.zeros((8, 1))))
    with pytest.raises(ValueError, match="groups must be pushed in order: expected 1, got 2"):
        list(cf.push(plan[2], np.zeros((8, 1))))


@pytest.mark.parametrize("args,msg", [((0, 8, 2), "need at least one frame, got 0"),
                                      ((5, 8, 8), "overlap must be in \\[0, 8\\), got 8")])
def test_bad_plans(args, msg):
    with pytest.raises(ValueError, match=msg):
        plan_groups(*args)


def test_gop_plan_is_the_one_plan():
    """GopPlan in closed form against the plan written as a loop, and `covering` against a filter;
    the stream header and the codec ask the same plan."""
    from semcodec.bitstream.header import count_groups
    from semcodec.gop import GopPlan
    for n in range(1, 40):
        for group in range(1, 9):
            for overlap in range(group):
                ref, start = [], 0
                while True:
                    ref.append((start, min(group, n - start)))
                    if start + group >= n:
                        break
                    start += group - overlap
                plan = GopPlan(n, group, overlap)
                assert [(g.start, g.valid) for g in plan] == ref and len(plan) == count_groups(n, group, overlap)
                if n in (1, 7, 26):
                    groups = list(plan)
                    for first in range(n):
                        for last in range(first, n):
                            want = [g for g in groups if g.start <= last and g.stop > first]
                            assert plan.covering(first, last) == want
    with pytest.raises(IndexError, match="group 3 out of range: the plan has 3 groups"):
        GopPlan(20, 8, 2)[3]
