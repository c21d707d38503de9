"""The one interval of a retrain's evidence (core.stats.two_level): a simulation of 400 synthetic retrains with a
known effect (per-image correctness, seed-to-seed variation) whose 95 % intervals must cover it ≥ 93 % of the time,
for 3 seeds and for 1 seed; the same image draw for both groups of a comparison; NaN where undefined."""
from __future__ import annotations

import numpy as np
import pytest

from core.stats.two_level import interval

DELTA = 0.05


def _draw(rng, seeds: int, n: int, sd_seed: float):
    """Child and control correctness (seeds × images): each image its own difficulty, each seed its own shift."""
    p = rng.uniform(0.3, 0.9, n)
    u, v = rng.normal(0, sd_seed, seeds), rng.normal(0, sd_seed, seeds)
    a = (rng.random((seeds, n)) < np.clip(p + DELTA + u[:, None], 0, 1)).astype(float)
    b = (rng.random((seeds, n)) < np.clip(p + v[:, None], 0, 1)).astype(float)
    return a, b


@pytest.mark.parametrize("seeds, sd_seed", [(3, 0.03), (1, 0.0)])
def test_intervals_cover_a_known_effect(seeds, sd_seed):
    rng = np.random.default_rng(7)
    hits = 0
    for r in range(400):
        a, b = _draw(rng, seeds, 200, sd_seed)
        iv = interval(a, b, n_boot=400, seed=r)
        hits += iv["low"] <= DELTA <= iv["high"]
    assert hits / 400 >= 0.93, hits / 400


def test_paired_draws_identical_groups_and_undefined_values():
    rng = np.random.default_rng(0)
    a = (rng.random((3, 150)) < 0.8).astype(float)
    same = interval(a, a.copy())
    assert same["mean"] == same["low"] == same["high"] == 0.0 and same["agree"]
    b = a.copy()
    b[:, :10] = 1 - b[:, :10]
    iv = interval(a, b)
    assert not iv["agree"] and iv["low"] < iv["mean"] < iv["high"]
    # a one-seed group (the parent) is compared with every seed of the other
    par = interval(a, a[:1])
    assert par["seeds"] == 3 and par["mean"] == pytest.approx(a.mean() - a[0].mean())
    assert interval(np.full((2, 5), np.nan))["mean"] is None
    with pytest.raises(ValueError, match="different images"):
        interval(a, a[:, :10])


def test_a_split_is_drawn_the_same_way_for_every_comparison():
    """The image draw depends on the seed of the bootstrap only, not on how many model seeds a group has."""
    rng = np.random.default_rng(1)
    a = rng.random((3, 80))
    one = interval(a[:1], n_boot=200, seed=5)
    again = interval(a[:1], a[:1] * 0, n_boot=200, seed=5)
    assert (one["low"], one["high"]) == pytest.approx((again["low"], again["high"]))


def test_intervals_stay_within_the_measure_range():
    """Three seeds near a ceiling: the widened seed level would pass 1.0; a share's interval stops there."""
    a = np.ones((3, 60))
    a[0, :12] = 0
    iv = interval(a, bounds=(0.0, 1.0))
    assert iv["high"] <= 1.0 and iv["low"] >= 0.0
    assert interval(a)["high"] > 1.0  # what an unbounded interval would say
