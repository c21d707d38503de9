"""ETAs from measured rates (docs/architecture.md, Jobs): a job records its progress curve (`jobs.timeline`,
[[seconds since the attempt started, fraction], …]); the time left is read from it.

A job's fractions are set by its code in fixed bands (a retrain's fine-tuning 10–80 %, its evidence 80–100 %), not
by what each phase costs, so the old estimate (elapsed × (1 − p) / p) was off by 2–5× when an early phase was fast
and a late one slow. Two estimators, both measured:

- `by_reference`: the last finished job of the same kind (the same parameters first) gives each stretch of
  progress its measured cost; the time left is that job's time from p to the end, scaled by how fast this job went
  over the stretch it just did (the current phase, against the same stretch there).
- `by_job`: a job that knows its own remaining work better than any band (the evaluate job: each method's
  measured seconds per image, services/explanations/eval_progress.py) puts its estimate in the curve's points as a
  third value, [seconds, fraction, seconds left]; the panel counts it down from that point and prefers it.
- `by_overall_rate`: without such a job, the job's own rate so far (elapsed × (1 − p) / p, with elapsed counted to
  now, so a stall slows it). bench/eta.py compares it with `by_recent_rate` (the current phase's rate over the
  last RECENT_S or quarter of the time): on the demo's retrain and evaluate jobs the recent rate overreacts to
  short phases (median error 38–43 % against 21–38 %), so the panel uses the overall rate until a reference exists.

Pure functions over lists; `reference_for` is the one query (the jobs table, newest first).
"""
from __future__ import annotations

from bisect import bisect_left

MAX_POINTS = 400       # a timeline is thinned to at most this many points (every other one dropped)
MIN_STEP = 0.002       # a new point when the fraction moved by this much …
MIN_GAP_S = 5.0        # … or this many seconds passed
RECENT_S = 30.0        # the current phase's window, at least
STRETCH = 0.15         # the stretch of progress whose speed is compared with the reference job


class Timeline:
    """A job attempt's progress curve, kept small: add() says whether a point was added."""

    def __init__(self):
        self._pts: list[list[float]] = []

    def add(self, seconds: float, fraction: float, left: float | None = None) -> bool:
        """A point [seconds, fraction] (with the job's own seconds left as a third value when it gave one)."""
        if self._pts:
            t, p = self._pts[-1][0], self._pts[-1][1]
            if fraction < p or (fraction - p < MIN_STEP and seconds - t < MIN_GAP_S and fraction < 1.0):
                return False
        pt = [round(float(seconds), 2), round(float(fraction), 5)]
        self._pts.append(pt if left is None or fraction >= 1.0 else [*pt, round(max(0.0, float(left)), 1)])
        if len(self._pts) > MAX_POINTS:
            self._pts = self._pts[:1] + self._pts[1:-1:2] + self._pts[-1:]
        return True

    def points(self) -> list[list[float]]:
        return [list(p) for p in self._pts]


def time_at(timeline: list, fraction: float) -> float | None:
    """Seconds at which the curve reached `fraction` (linear between its points); None for an empty curve."""
    if not timeline:
        return None
    ps = [pt[1] for pt in timeline]
    k = bisect_left(ps, fraction)
    if k == 0:
        t0, p0 = timeline[0][0], timeline[0][1]
        return float(t0) * (fraction / p0) if p0 > 0 else float(t0)
    if k >= len(timeline):
        return float(timeline[-1][0])
    (ta, pa), (tb, pb) = timeline[k - 1][:2], timeline[k][:2]
    return float(ta) if pb <= pa else float(ta) + (float(tb) - float(ta)) * (fraction - pa) / (pb - pa)


def by_reference(timeline: list, elapsed: float, reference: list) -> float | None:
    """Seconds left: the reference's cost from p to the end × this job's speed over the last stretch."""
    if not timeline or not reference or reference[-1][1] < 1.0:
        return None
    p = float(timeline[-1][1])
    if not 0.0 < p < 1.0:
        return None
    total, tp = float(reference[-1][0]), time_at(reference, p)
    p0 = max(float(timeline[0][1]), p - STRETCH)
    d_ref = tp - time_at(reference, p0)
    d_now = elapsed - time_at(timeline, p0)
    if d_ref > 0.5 and d_now > 0:
        speed = d_now / d_ref
    elif tp > 0:
        speed = elapsed / tp
    else:
        return None
    return max(0.0, (total - tp) * speed)


def by_recent_rate(timeline: list, elapsed: float) -> float | None:
    """Seconds left at the current phase's rate (progress per second over the recent window, a stall included)."""
    if not timeline or elapsed <= 0:
        return None
    p = float(timeline[-1][1])
    if not 0.0 < p < 1.0:
        return None
    window = max(RECENT_S, elapsed / 4)
    start = max(0.0, elapsed - window)
    past = [pt[1] for pt in timeline if pt[0] <= start]
    p_start = float(past[-1]) if past else 0.0
    rate = (p - p_start) / (elapsed - start) if elapsed > start else 0.0
    if rate <= 0:  # no progress within the window (a stall): since the last point before the current fraction
        before = [(pt[0], pt[1]) for pt in timeline if pt[1] < p]
        if before:
            t_prev, q_prev = before[-1]
            rate = (p - float(q_prev)) / max(elapsed - float(t_prev), 1e-9)
    return (1.0 - p) / rate if rate > 0 else None


def by_overall_rate(timeline: list, elapsed: float) -> float | None:
    """Seconds left at the job's own rate so far (a stall included: elapsed runs on at the same p)."""
    if not timeline or elapsed <= 0:
        return None
    p = float(timeline[-1][1])
    return elapsed * (1.0 - p) / p if 0.0 < p < 1.0 else None


def by_job(timeline: list, elapsed: float) -> float | None:
    """The job's own estimate at its last point, counted down since (None when the job gives none)."""
    if not timeline or len(timeline[-1]) < 3 or not 0.0 < float(timeline[-1][1]) < 1.0:
        return None
    return max(0.0, float(timeline[-1][2]) - max(0.0, elapsed - float(timeline[-1][0])))


def seconds_left(timeline: list, elapsed: float | None, reference: list | None = None) -> float | None:
    """The ETA a page shows: the job's own estimate when it gives one (and has not run out), else by the reference
    job's phase costs when there is one, else by the job's own rate so far; None until measurable (no progress)."""
    if elapsed is None or not timeline:
        return None
    own = by_job(timeline, elapsed)
    if own:  # counted down to 0 with the job still running (a stall, or a slow last step): the rates take over
        return own
    return by_reference(timeline, elapsed, reference) if reference else by_overall_rate(timeline, elapsed)
