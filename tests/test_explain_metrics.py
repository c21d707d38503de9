"""Localisation metrics on hand-made maps and masks, including the undefined (NaN) cases."""
from __future__ import annotations

import math

import pytest
import torch

from core.metrics import localisation as L


def nan(v) -> bool:
    return math.isnan(float(v))


@pytest.fixture
def case():
    """4×4: mask = left half (8 px); map is 1 on the top-left 2×2, 0.6 on the top-right 2×2, 0.2 elsewhere."""
    e = torch.full((4, 4), 0.2)
    e[:2, :2] = 1.0
    e[:2, 2:] = 0.6
    m = torch.zeros(4, 4, dtype=torch.bool)
    m[:, :2] = True
    return e, m


def test_ar_ap_f1(case):
    e, m = case
    # T(E) = top two rows (8 px), T ∩ M = 4 px.
    assert L.ar(e, m).item() == pytest.approx(4 / 8)
    assert L.ap(e, m).item() == pytest.approx(4 / 8)
    assert L.f1(e, m).item() == pytest.approx(0.5)
    assert L.ar(e, m, tau=0.9).item() == pytest.approx(4 / 8)
    assert L.ap(e, m, tau=0.9).item() == pytest.approx(1.0)
    assert L.f1(e, m, tau=0.9).item() == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_soft_metrics(case):
    e, m = case
    em = 4 * 1.0 + 4 * 0.2
    assert L.soft_ar(e, m).item() == pytest.approx(em / 8)
    assert L.relevance_mass(e, m).item() == pytest.approx(em / (4 + 4 * 0.6 + 8 * 0.2))


def test_rra_and_pointing(case):
    e, m = case
    # top-8 pixels of E: the 4 ones and the 4 of 0.6 → 4 inside M.
    assert L.rra(e, m).item() == pytest.approx(0.5)
    assert L.pointing(e, m).item() == 1.0
    e2 = e.clone()
    e2[0, 3] = 2.0
    e2 = e2 / 2.0
    assert L.pointing(e2, m).item() == 0.0


def test_wrong_reason(case):
    e, _ = case
    c = torch.zeros(4, 4, dtype=torch.bool)
    c[0, 2:] = True      # covered by T(E)
    c[3, 3] = True       # not covered
    assert L.wr(e, c).item() == pytest.approx(2 / 3)


def test_undefined_cases_are_nan(case):
    e, m = case
    empty = torch.zeros_like(m)
    zero = torch.zeros_like(e)
    for fn in (L.ar, L.ap, L.f1, L.soft_ar, L.relevance_mass, L.rra, L.pointing):
        assert nan(fn(e, empty)), fn.__name__
        assert nan(fn(zero, m)), fn.__name__
    assert nan(L.wr(e, empty)) and nan(L.wr(zero, m))
    out = L.localisation_metrics(e, m, None)
    assert nan(out["wr"])


def test_f1_is_zero_when_the_map_misses_the_mask():
    e = torch.zeros(4, 4)
    e[0, 3] = 1.0
    m = torch.zeros(4, 4, dtype=torch.bool)
    m[3, 0] = True
    assert L.ar(e, m).item() == 0.0 and L.ap(e, m).item() == 0.0 and L.f1(e, m).item() == 0.0


def test_batched_equals_per_metric_functions(case):
    e, m = case
    torch.manual_seed(0)
    maps = torch.rand(7, 4, 4)
    maps = maps / maps.amax((1, 2), keepdim=True)
    maps[2] = 0                                   # all-zero map
    maps[0] = e
    masks = torch.rand(7, 4, 4) > 0.5
    masks[3] = False                              # empty mask
    masks[0] = m
    conf = torch.rand(7, 4, 4) > 0.7
    conf[4] = False                               # no confounder mask
    out = L.localisation_metrics(maps, masks, conf, tau=0.5)
    assert set(out) == set(L.METRICS)
    ref = {"ar": L.ar(maps, masks), "ap": L.ap(maps, masks), "f1": L.f1(maps, masks), "soft_ar": L.soft_ar(maps, masks),
           "relevance_mass": L.relevance_mass(maps, masks), "rra": L.rra(maps, masks),
           "pointing": L.pointing(maps, masks), "wr": L.wr(maps, conf)}
    for k in L.METRICS:
        assert out[k].shape == (7,)
        assert torch.allclose(out[k], ref[k], equal_nan=True), k
    for k in L.METRICS:
        assert nan(out[k][2]), k
    for k in set(L.METRICS) - {"wr"}:
        assert nan(out[k][3]), k
    assert nan(out["wr"][4]) and not nan(out["ar"][4])
    assert out["ar"][0].item() == pytest.approx(0.5)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        L.ar(torch.rand(2, 4, 4), torch.ones(2, 5, 5))
