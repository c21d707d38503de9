"""Counterexamples from the bad exemplar (core.xbl.paste): the patch is the bad map's hot region, pasted at random
places with the run's seed (the same seed → the same draws, another seed → others), at most max_area of the image."""
from __future__ import annotations

import torch
import torch.nn as nn

from core.models.base import Classifier
from core.xbl import Exemplar, TrainSet, get_method
from core.xbl.paste import paste_box


class Corner(nn.Module):
    """A 'network' whose evidence is the top-left corner: its GradCAM lights that corner."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()

    def forward(self, x):
        return self.conv(x)


def _model() -> Classifier:
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    return Classifier([Corner()], head)


def _prepared(seed: int):
    torch.manual_seed(0)
    m = _model().eval()
    x = torch.zeros(6, 1, 16, 16)
    bad = torch.zeros(1, 16, 16)
    bad[:, :4, :4] = 1.0  # the artefact the bad map lights
    meth = get_method("bad_paste", max_area=0.25)
    meth.run_seed = seed
    meth.prepare(m, Exemplar(x[0], 0), Exemplar(bad, 1), TrainSet((x * 255).byte(), torch.zeros(6).long()))
    return meth, x


def test_the_bad_region_is_pasted_at_random_places_by_the_runs_seed():
    meth, x = _prepared(3)
    assert meth.patch.shape[-2:] == meth.mask.shape and meth.patch.max() == 1.0
    a = meth.counterexamples(x)
    assert (a.flatten(1).sum(1) > 0).all()  # every image got the patch
    where = [tuple(torch.nonzero(a[i, 0] > 0.5).float().mean(0).tolist()) for i in range(6)]
    assert len(set(where)) > 1  # not always the same place
    again, _ = _prepared(3)
    assert torch.equal(again.counterexamples(x), a)
    other, _ = _prepared(4)
    assert not torch.equal(other.counterexamples(x), a)


def test_a_large_region_is_cut_to_max_area_around_the_peak():
    region = torch.ones(20, 20, dtype=torch.bool)
    y0, y1, x0, x1 = paste_box(region, (5, 5), 0.09)
    assert (y1 - y0) * (x1 - x0) <= 0.09 * 400 and y0 <= 5 < y1 and x0 <= 5 < x1
    small = torch.zeros(20, 20, dtype=torch.bool)
    small[2:4, 3:6] = True
    assert paste_box(small, (2, 3), 0.09) == (2, 4, 3, 6)
