"""Ties in a map (a ReLU plateau) are broken in a seeded random order for RRA and pointing, never by pixel
position: a flat map scores alike on a mask at the top and one at the bottom of the raster order."""
from __future__ import annotations

import pytest
import torch

from core.metrics import localisation as L


def _halves(n: int = 32):
    top = torch.zeros(n, n, dtype=torch.bool)
    top[: n // 2] = True
    return top, ~top


def test_rra_on_a_plateau_does_not_depend_on_raster_order():
    e = torch.ones(32, 32)
    top, bottom = _halves()
    a, b = L.rra(e, top).item(), L.rra(e, bottom).item()
    assert a == pytest.approx(0.5, abs=0.05) and b == pytest.approx(0.5, abs=0.05)  # pixel order gave 1.0 / 0.0
    assert L.rra(e, top).item() == a  # seeded: the same every call
    batch = L.localisation_metrics(torch.stack([e, e]), torch.stack([top, bottom]))
    assert batch["rra"].tolist() == pytest.approx([a, b])


def test_pointing_on_a_plateau_picks_a_seeded_random_maximum():
    e = torch.zeros(32, 32)
    e[4:28, 4:28] = 1.0  # a flat top
    top, bottom = _halves()
    p = L.pointing(e, top).item() + L.pointing(e, bottom).item()
    assert p == 1.0  # one maximum, in exactly one of the halves
    hits = {int(top.flatten()[L._argmax(e.flatten()[None], seed=s)].item()) for s in range(12)}
    assert hits == {0, 1}  # across seeds both halves are drawn: not the first pixel in raster order
    assert L.localisation_metrics(e[None], top[None])["pointing"].item() == L.pointing(e, top).item()
    # a strict maximum is found whatever the seed
    e[30, 30] = 2.0
    assert L.pointing(e, bottom).item() == 1.0
