"""The evaluate job's progress weights each method by its expected time (services/explanations/eval_progress.py)."""
from __future__ import annotations

import statistics

import pytest

from services.explanations.eval_progress import FAITH_COST, HI, EvalProgress, prior_cost
from services.jobs import eta


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def run_job(priors, true_secs, images, equal_bands=False):
    """Simulate an evaluate job on a fake clock: (timeline of (seconds, fraction), total seconds). equal_bands: the
    old ticker (every method and image an equal share of 0.02 … 0.95)."""
    clock, said = Clock(), []
    tick = EvalProgress(lambda p, msg, **k: said.append((clock.t, p)), priors, images, clock=clock)
    for i, s in enumerate(true_secs):
        tick.begin(i)
        for k in range(images):
            clock.t += s
            if equal_bands:
                said.append((clock.t, 0.02 + 0.93 * (i * images + k + 1) / (len(true_secs) * images)))
            else:
                tick(1, "batch")
    return said, clock.t


def test_prior_cost_reads_the_registry():
    assert prior_cost("gradcam", {}, 25) == FAITH_COST + 3.0
    assert prior_cost("ltx", {"explainer": object()}, 25) == FAITH_COST + 2.0 + 6.0 * 25  # default steps
    assert prior_cost("ltx_pretrained", {"finetune_steps": 0}, 25) == FAITH_COST + 2.0
    assert prior_cost("ltx", {"finetune_steps": 5}, 25) == FAITH_COST + 2.0 + 30.0
    assert prior_cost("integrated_gradients", {}, 25) > prior_cost("gradcam", {}, 25)
    assert prior_cost("no-such-method", {}, 25) == FAITH_COST + 3.0


def test_fraction_is_the_share_of_expected_time():
    clock = Clock()
    said = []
    tick = EvalProgress(lambda p, msg, **k: said.append(p), [1.0, 10.0], 4, clock=clock)
    assert tick.fraction() == 0.0
    tick.begin(0)
    for _ in range(4):
        clock.t += 1.0
        tick(1, "m0")
    # method 0 measured 1 s an image for a prior of 1: method 1 is expected at 10 s an image
    assert tick.seconds_per_image() == pytest.approx([1.0, 10.0])
    assert tick.fraction() == pytest.approx(4 / 44)
    tick.begin(1)
    clock.t += 2.0
    tick(1, "m1")  # method 1 measured: 2 s an image, not 10
    assert tick.seconds_per_image() == pytest.approx([1.0, 2.0])
    assert tick.fraction() == pytest.approx(6 / 12)
    assert said == sorted(said) and 0 < said[0] and said[-1] <= HI


def test_the_seconds_before_the_scoring_count_as_done():
    """Start-up and loading are spent: with 10 s of them, 4 s of scoring done and 40 s expected, 14 / 54 is done."""
    clock = Clock()
    tick = EvalProgress(lambda p, msg, **k: None, [1.0, 10.0], 4, pre_seconds=10.0, clock=clock)
    assert tick.fraction() == pytest.approx(10 / (10 + 44))
    tick.begin(0)
    for _ in range(4):
        clock.t += 1.0
        tick(1, "m0")
    assert tick.fraction() == pytest.approx(14 / 54)


def test_the_fraction_never_goes_back():
    clock, said = Clock(), []
    tick = EvalProgress(lambda p, msg, **k: said.append(p), [1.0, 1.0], 10, clock=clock)
    tick.begin(0)
    clock.t += 1.0
    tick(5, "fast half")
    tick.begin(1)
    clock.t += 100.0
    tick(1, "a slow method: its measurement lowers the share done")
    assert said[1] == said[0]
    assert said == sorted(said)


def test_weighted_bands_make_the_overall_rate_eta_honest():
    """A cheap method, then one 60× dearer (as gradcam, then LTX finetuning): after 20 % of the time the overall-rate
    ETA is within 25 % with cost bands, and far off with equal bands."""
    priors, true_secs = [43.0, 192.0], [0.1, 6.0]

    def errors(equal):
        said, total = run_job(priors, true_secs, 20, equal_bands=equal)
        out = []
        for k in range(1, len(said)):
            t = said[k][0]
            if t < 0.2 * total or t >= total:
                continue
            shown = eta.by_overall_rate([list(x) for x in said[: k + 1]], t)
            out.append(abs(shown - (total - t)) / (total - t))
        return statistics.median(out)

    assert errors(equal=False) < 0.25 < errors(equal=True)


def test_the_jobs_own_estimate_is_right_once_the_slow_method_ran_a_batch():
    """LTX finetuning cost ~10× its prior on the demo: the bar holds, but from the slow method's first batch on the
    estimate each tick gives (left_s) is its measured seconds per image × the images left."""
    clock, lefts = Clock(), []
    tick = EvalProgress(lambda p, msg, left_s=None, **k: lefts.append((clock.t, left_s)), [43.0, 192.0], 20,
                        clock=clock)
    for i, secs in enumerate([0.013, 0.62]):
        tick.begin(i)
        for _ in range(20):
            clock.t += secs
            tick(1, "batch")
    total = clock.t
    after_first_slow_batch = lefts[21:]
    assert [round(left, 6) for _, left in after_first_slow_batch] == [round(total - t, 6) for t, _ in
                                                                      after_first_slow_batch]
