"""Agreement statistics (core.stats) against published worked examples and independent formulas."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from core.stats import bootstrap, cohen_kappa, disagreement, fleiss_kappa, krippendorff_alpha, spearman

NAN = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units, nominal,
# missing values; published α = 0.743.
K2011 = np.array([
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]).T  # units × observers

# Fleiss (1971): 30 patients, 6 psychiatrists, 5 diagnoses; published κ = 0.430 (0.4302445 in R irr).
FLEISS1971 = np.array([
    [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5], [2, 2, 2, 4, 4, 4],
    [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4], [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5],
    [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4], [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5],
    [3, 3, 3, 3, 3, 5], [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
    [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4], [1, 4, 4, 4, 4, 5],
    [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4], [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5],
]) - 1


def _alpha_exact(data: np.ndarray) -> Fraction:
    """Nominal α from the coincidence matrix in exact arithmetic (Krippendorff 2011, eq. for nominal data)."""
    o: dict = {}
    for row in data:
        v = [int(x) for x in row if np.isfinite(x)]
        m = len(v)
        if m < 2:
            continue
        for i in range(m):
            for j in range(m):
                if i != j:
                    o[(v[i], v[j])] = o.get((v[i], v[j]), 0) + Fraction(1, m - 1)
    cats = sorted({c for c, _ in o})
    nc = {c: sum(o.get((c, k), 0) for k in cats) for c in cats}
    n = sum(nc.values())
    do = sum(v for (c, k), v in o.items() if c != k)
    de = sum(nc[c] * nc[k] for c in cats for k in cats if c != k) / (n - 1)
    return 1 - do / de


def test_krippendorff_2011_nominal_example():
    codes = K2011 - 1  # categories 1..5 → 0..4
    a = krippendorff_alpha(codes, k=5)
    assert abs(a - float(_alpha_exact(codes))) < 1e-6
    assert abs(a - 0.743) < 5e-4  # the published figure, three decimals


def test_krippendorff_ordinal_differs_and_missing_units_ignored():
    codes = K2011 - 1
    ordinal = krippendorff_alpha(codes, k=5, ordinal=True)
    assert np.isfinite(ordinal) and abs(ordinal - krippendorff_alpha(codes, k=5)) > 1e-3
    extra = np.vstack([codes, [[2, NAN, NAN, NAN]]])  # a unit with one answer cannot be paired
    assert abs(krippendorff_alpha(extra, k=5) - krippendorff_alpha(codes, k=5)) < 1e-12


def test_fleiss_1971_example():
    assert abs(fleiss_kappa(FLEISS1971, k=5) - 0.4302445) < 1e-6


def test_fleiss_uses_complete_units_only():
    d = FLEISS1971.astype(float)
    d[0, 0] = NAN
    assert abs(fleiss_kappa(d, 5) - fleiss_kappa(FLEISS1971[1:], 5)) < 1e-12


def test_cohen_kappa_two_by_two_and_quadratic_weights():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 → po 0.7, pe 0.5, κ 0.4
    a = np.array([0] * 25 + [1] * 25, float)
    b = np.array([0] * 20 + [1] * 5 + [0] * 10 + [1] * 15, float)
    assert abs(cohen_kappa(a, b, 2) - 0.4) < 1e-12
    # quadratic weights against the textbook formula 1 − Σw·o / Σw·e, w = (i−j)²
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 60)
    y = np.clip(x + rng.integers(-1, 2, 60), 0, 4)
    o = np.zeros((5, 5))
    for i, j in zip(x, y):
        o[i, j] += 1
    e = np.outer(o.sum(1), o.sum(0)) / o.sum()
    w = (np.arange(5)[:, None] - np.arange(5)[None]) ** 2
    assert abs(cohen_kappa(x, y, 5, ordinal=True) - (1 - (w * o).sum() / (w * e).sum())) < 1e-12
    assert cohen_kappa(x, y, 5, ordinal=True) > cohen_kappa(x, y, 5)  # near misses count for ordinal scales


def test_cohen_kappa_skips_missing_and_undefined_is_nan():
    a = np.array([0, 1, 0, 1, NAN, 1])
    b = np.array([0, 1, 1, 1, 0, NAN])
    assert abs(cohen_kappa(a, b, 2) - cohen_kappa(a[:4], b[:4], 2)) < 1e-12
    assert np.isnan(cohen_kappa(np.zeros(5), np.zeros(5), 2))


def test_spearman_and_bootstrap_interval():
    rng = np.random.default_rng(1)
    x = rng.normal(size=80)
    y = x + rng.normal(scale=0.5, size=80)
    e = bootstrap(lambda i: spearman(x[i], y[i]), 80, reps=300, seed=0)
    assert e.low < e.value < e.high and 0.6 < e.value < 1
    assert e.high - e.low < 0.3
    again = bootstrap(lambda i: spearman(x[i], y[i]), 80, reps=300, seed=0)
    assert (again.low, again.high) == (e.low, e.high)  # fixed seed
    assert np.isnan(spearman(np.ones(5), np.arange(5)))


def test_disagreement_ranks_split_units_first():
    d = np.array([[0, 0, 0], [0, 1, 1], [0, 1, NAN], [1, NAN, NAN]], float)
    dis = disagreement(d)
    assert dis[0] == 0 and dis[2] == pytest.approx(0.5) and dis[1] == pytest.approx(1 / 3) and np.isnan(dis[3])
