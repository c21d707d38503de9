"""POS / NEG / DEL / INS (docs/architecture.md, Definitions) on a hand-made model whose answer is known: it reads one
pixel region R and says class 1 only while every pixel of R is intact."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from core.metrics.faithfulness import (FRACTIONS, background_value, blank_masks, faithfulness, perturbation_curves,
                                       perturbed_images, pixel_ranks)

H = W = 10
REGION = torch.zeros(H, W, dtype=torch.bool)
REGION[4:6, 2:7] = True  # 10 pixels = 10 % of the image


class RegionModel(nn.Module):
    """logit_1 = 1000 · (mean of x over R − 0.95), logit_0 = 0: class 1 iff R is (almost) fully intact."""

    def forward(self, x):
        r = x[:, 0][:, REGION].mean(1)
        return torch.stack([torch.zeros_like(r), 1000.0 * (r - 0.95)], 1)


def _images(n: int = 3) -> torch.Tensor:
    x = torch.ones(n, 1, H, W)
    x[..., 0, :] = x[..., -1, :] = x[..., :, 0] = x[..., :, -1] = 0.0  # a dark frame: background 0
    return x


def test_a_map_on_the_region_scores_best_and_its_inverse_worst():
    x = _images()
    good = REGION.float().expand(3, H, W)
    s = faithfulness(RegionModel(), x, good, target=1)
    # top 10 % = R: removing it flips at once → POS and DEL drop from 1 to 0 between x=0 and x=.1: AUC = .05
    assert torch.allclose(s["pos"], torch.full((3,), 5.0))
    assert torch.allclose(s["del"], torch.full((3,), 5.0), atol=1e-3)
    # the bottom 90 % never touches R → NEG and INS stay at 1: AUC = .9 (the maximum)
    assert torch.allclose(s["neg"], torch.full((3,), 90.0))
    assert torch.allclose(s["ins"], torch.full((3,), 90.0), atol=1e-3)
    bad = 1.0 - good
    t = faithfulness(RegionModel(), x, bad, target=1)
    assert torch.allclose(t["pos"], torch.full((3,), 90.0)) and torch.allclose(t["neg"], torch.full((3,), 5.0))
    assert torch.allclose(t["del"], torch.full((3,), 90.0), atol=1e-3)
    assert torch.allclose(t["ins"], torch.full((3,), 5.0), atol=1e-3)
    assert s["curve_pos"].shape == (3, len(FRACTIONS)) and s["curve_pos"][0, 0] == 1 and s["curve_pos"][0, 1] == 0


def test_a_half_right_map_sits_between_and_the_explained_class_matters():
    x = _images(1)
    half = REGION.float().clone()
    half[4, 2:7] = 0.5           # half of R ranked 10th–14th,
    half[1, 1:6] = 1.0           # five other pixels share the top 10 % with R's first half; the rest is 0
    s = faithfulness(RegionModel(), x, half[None], target=1)
    assert s["pos"].item() == pytest.approx(5.0)   # part of R in the top 10 % already flips it
    # the bottom p reaches rank 14 only at p = .9: NEG curve 1, …, 1, 0 → AUC .8 + .05
    assert s["neg"].item() == pytest.approx(85.0)
    # the probability of class 0 is the complement: DEL for class 0 = 90 − DEL for class 1
    s0 = faithfulness(RegionModel(), x, half[None], target=0)
    assert (s0["del"] + s["del"]).item() == pytest.approx(90.0, abs=1e-3)
    # POS/NEG read accuracy against the label: with label 1 and a class-0 map, accuracy is that of class 1
    s0l = faithfulness(RegionModel(), x, half[None], target=0, labels=torch.tensor([1]))
    assert s0l["pos"].item() == pytest.approx(s["pos"].item())


def test_blanking_uses_the_image_background_and_removes_exactly_p_of_the_pixels():
    x = _images(2) * 0.6 + 0.2   # frame 0.2, body 0.8
    x[1] += 0.1
    bg = background_value(x)
    assert torch.allclose(bg.flatten(), torch.tensor([0.2, 0.3]))
    maps = torch.rand(2, H, W)
    xp = perturbed_images(x, maps, top=True)
    for j, p in enumerate(FRACTIONS):
        changed = (xp[:, j] != x).flatten(1).sum(1)
        blanked_at_bg = (xp[:, j] == bg[:, :, :, :]).flatten(1).sum(1)
        inside = (x != bg).flatten(1).sum(1)  # pixels that change when blanked (not already at background)
        assert (changed <= round(p * H * W)).all()
        assert (blanked_at_bg >= round(p * H * W)).all()
        assert (changed <= inside).all()
    # top-p removes the highest-ranked pixels, bottom-p the lowest
    ranks = pixel_ranks(maps)
    top, bottom = blank_masks(ranks, (0.3,), True)[:, 0], blank_masks(ranks, (0.3,), False)[:, 0]
    flat = maps.flatten(1)
    assert (flat[top].view(2, -1).min(1).values >= flat[~top].view(2, -1).max(1).values).all()
    assert (flat[bottom].view(2, -1).max(1).values <= flat[~bottom].view(2, -1).min(1).values).all()
    assert top.sum() == bottom.sum() == 2 * 30


def test_results_do_not_depend_on_the_batch_size_and_ties_are_not_broken_by_position():
    torch.manual_seed(0)
    x = torch.rand(5, 1, H, W)
    maps = torch.rand(5, 4, 4)   # a coarse map: upsampled to the image size
    a = perturbation_curves(RegionModel(), x, maps, 1, batch_size=7)
    b = perturbation_curves(RegionModel(), x, maps, 1, batch_size=10_000)
    assert torch.equal(a.top_prob, b.top_prob) and torch.equal(a.bottom_correct, b.bottom_correct)
    flat = torch.zeros(1, H, W)  # all tied: the blanked pixels must not be the first rows
    m = blank_masks(pixel_ranks(flat), (0.2,), True)[0, 0].view(H, W)
    assert m[:2].sum() < 20


def test_scores_on_a_real_classifier_are_in_range():
    from core.models import create_model

    torch.manual_seed(0)
    model = create_model("simple_cnn", width=4).eval()
    x = torch.rand(4, 1, 32, 32)
    s = faithfulness(model, x, torch.rand(4, 32, 32), target=model(x).argmax(1))
    for k in ("pos", "neg", "del", "ins"):
        assert ((s[k] >= 0) & (s[k] <= 90 + 1e-4)).all(), k
    assert s["curve_neg"][:, 0].eq(1).all()  # nothing removed: the predicted class is correct by definition
