"""ETAs from measured rates (services/jobs/eta.py): a job whose phases cost unlike their share of the progress bar
(a fast 0–50 %, a slow 50–100 %) is estimated within 25 % by the reference job's phase costs after 20 %, where the
old estimate (elapsed × (1 − p) / p) was off by 2× and more; the current phase's rate serves without a reference; a
real job records its curve and the next job of its kind reads it."""
from __future__ import annotations

import pytest

from services.jobs import eta
from services.jobs import lifecycle as jobs


def curve(total_fast: float, total_slow: float, step: float = 1.0) -> list[list[float]]:
    """0 → 0.5 in total_fast seconds, 0.5 → 1 in total_slow seconds, one point a `step` seconds."""
    pts, t = [], 0.0
    while t <= total_fast + total_slow + 1e-9:
        p = 0.5 * t / total_fast if t <= total_fast else 0.5 + 0.5 * (t - total_fast) / total_slow
        pts.append([t, min(1.0, p)])
        t += step
    return pts


def old_estimate(p: float, elapsed: float) -> float:
    return elapsed * (1 - p) / p


def test_the_reference_job_weights_each_phase_by_its_cost():
    ref = curve(10, 90)           # the last finished job: half the bar in 10 s, the other half in 90 s
    now = curve(12, 108)          # this one runs 1.2× slower everywhere
    for cut in (0.2, 0.4, 0.6, 0.8):
        k = next(i for i, (_, p) in enumerate(now) if p >= cut)
        tl, elapsed = now[: k + 1], now[k][0]
        real = now[-1][0] - elapsed
        got = eta.by_reference(tl, elapsed, ref)
        assert got == pytest.approx(real, rel=0.25), (cut, got, real)
        if cut <= 0.4:  # the old estimate, in the fast phase, is off by far more than 25 %
            assert abs(old_estimate(tl[-1][1], elapsed) - real) > 0.5 * real


def test_the_rates_without_a_reference_and_a_stall_slows_them():
    now = curve(40, 40)
    tl, elapsed = now[:61], now[60][0]           # 60 s in: in the second phase, 0.5 → 1 at 1/80 per second
    assert eta.by_recent_rate(tl, elapsed) == pytest.approx(20.0, rel=0.05)
    assert eta.by_recent_rate(tl, elapsed + 30) > 40  # no progress for 30 s: the estimate grows
    assert eta.seconds_left([], 5.0) is None and eta.seconds_left([[1.0, 0.0]], 5.0) is None
    assert eta.seconds_left(tl, elapsed, curve(10, 10)) == pytest.approx(eta.by_reference(tl, elapsed, curve(10, 10)))
    # without a reference the panel shows the job's own rate so far, which a stall slows too
    assert eta.seconds_left(tl, elapsed) == pytest.approx(elapsed * (1 - tl[-1][1]) / tl[-1][1])
    assert eta.seconds_left(tl, elapsed + 30) > eta.seconds_left(tl, elapsed)


def test_a_timeline_stays_small_and_monotone():
    t = eta.Timeline()
    for i in range(5000):
        t.add(i * 0.1, i / 5000)
    pts = t.points()
    assert len(pts) <= eta.MAX_POINTS and pts[0] == [0.0, 0.0]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(pts, pts[1:]))
    assert not t.add(1e6, 0.0)  # a fraction never goes back


def test_a_real_job_records_its_curve_and_the_next_reads_it(exemplar_home):
    from services.team.users import get_or_create_user

    uid = get_or_create_user("tester")
    done = jobs.run_inline("data.synth", {"name": "eta", "n": 64, "size": 32}, uid, echo=False)
    assert done["status"] == "succeeded"
    tl = done["timeline"]
    assert tl and tl[-1][1] == 1.0 and all(a[0] <= b[0] for a, b in zip(tl, tl[1:]))
    assert jobs.reference_timeline("data.synth", {"name": "eta", "n": 64, "size": 32}) == tl
    assert jobs.reference_timeline("train") is None


def test_the_jobs_own_estimate_is_kept_and_preferred():
    """A job that knows its remaining work (the evaluate job) gives seconds left with its progress: the curve keeps
    it as a third value, the panel counts it down from that point and prefers it to any rate; the other readers of
    the curve read its first two values as before."""
    tl = eta.Timeline()
    assert tl.add(0.0, 0.1, left=90.0)
    assert tl.add(10.0, 0.2, left=400.0)  # a slow method was just measured: far more left than the bar says
    pts = tl.points()
    assert pts == [[0.0, 0.1, 90.0], [10.0, 0.2, 400.0]]
    assert eta.by_job(pts, 10.0) == 400.0
    assert eta.by_job(pts, 25.0) == 385.0
    assert eta.seconds_left(pts, 25.0, reference=[[0.0, 0.0], [50.0, 1.0]]) == 385.0
    assert eta.by_job([[0.0, 0.1], [10.0, 0.2]], 10.0) is None  # a job without an estimate: the rates as before
    assert eta.seconds_left([[0.0, 0.1], [10.0, 0.2]], 10.0) == eta.by_overall_rate([[0.0, 0.1], [10.0, 0.2]], 10.0)
    assert eta.time_at(pts, 0.15) == pytest.approx(5.0)
    assert eta.by_recent_rate(pts, 12.0) is not None
    assert tl.add(20.0, 1.0, left=0.0) and tl.points()[-1] == [20.0, 1.0]  # a finished job needs no estimate
    assert eta.by_job(tl.points(), 20.0) is None


def test_a_spent_estimate_gives_way_to_the_rates():
    """The job said 10 s left at 20 s and is still running at 45 s (a stall): the panel shows the job's own rate
    (which a stall slows), not "0s left"."""
    pts = [[0.0, 0.1, 200.0], [20.0, 0.5, 10.0]]
    assert eta.by_job(pts, 45.0) == 0.0
    assert eta.seconds_left(pts, 45.0) == pytest.approx(eta.by_overall_rate(pts, 45.0)) and eta.seconds_left(pts, 45.0) > 0
