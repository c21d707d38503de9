"""XAIDIFF guidance, the adversarial baseline, the method registry and the taxonomy, on tiny models."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.counterfactual import CounterfactualBatch, generate, list_methods
from core.counterfactual.taxonomy import bpd_threshold, categorize, categorize_batch, shares
from core.counterfactual.xaidiff import PRESETS, finish, finish_timesteps, guided_diffusion, preset
from core.generative.ddpm import build_ddpm


class Brightness(torch.nn.Module):
    """A tiny classifier: class 1 ("bright") when the mean grey level is above 0.5, class 0 otherwise."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(12.0))

    def forward(self, x):
        m = x.flatten(1).mean(1) - 0.5
        return torch.stack([-self.w * m, self.w * m], 1)


def _tiny():
    torch.manual_seed(0)
    return build_ddpm(32, "tiny", num_train_timesteps=100)


def test_guidance_raises_the_target_probability_on_a_tiny_model():
    unet, sch = _tiny()
    clf = Brightness()
    x = torch.full((3, 1, 32, 32), 0.3)  # dark: class 0
    target = torch.ones(3, dtype=torch.long)
    base = dict(steps=10, t_start=60, early_stop=0, eta=4.0)
    guided = guided_diffusion(unet, sch, clf, x, target, preset("fast", **base), seeds=[1, 2, 3])
    unguided = guided_diffusion(unet, sch, clf, x, target, preset("fast", **base, s_cls=0.0, s_close=0.0),
                                seeds=[1, 2, 3])
    assert guided.images.shape == x.shape
    assert np.all(guided.probs[:, 1] > unguided.probs[:, 1] + 0.05), (guided.probs, unguided.probs)
    # the probability curve rises along the guided trajectory
    assert np.all(guided.prob_curve[:, -1] > guided.prob_curve[:, 0])
    assert guided.trajectory.shape[:2][0] == 3 and guided.trajectory.dtype == np.uint8
    assert list(guided.unet_passes) == [10, 10, 10]
    assert guided.trajectory_t[0] == 60 and guided.trajectory_t[-1] == 0


def test_early_stop_ends_a_sample_once_the_flip_held():
    unet, sch = _tiny()
    clf = Brightness()
    x = torch.cat([torch.full((1, 1, 32, 32), 0.49), torch.full((1, 1, 32, 32), 0.2)])
    cfg = preset("fast", steps=30, t_start=90, eta=4.0, early_stop=2, finish="ddim")
    out = guided_diffusion(unet, sch, clf, x, torch.ones(2, dtype=torch.long), cfg, seeds=0)
    # a sample whose guidance stopped early has NaN in its curve after the stop and fewer guided passes; it was
    # still finished to t = 0 by the unguided DDIM, whose passes count in unet_passes
    stopped = out.guided_passes < 30
    assert stopped.any()
    for b in np.flatnonzero(stopped):
        assert np.isnan(out.prob_curve[b, out.guided_passes[b]:]).all()
        assert out.stopped_t[b] > 0
        resume = out.curve_t[out.guided_passes[b]]  # the timestep the finishing DDIM started from
        assert out.unet_passes[b] == out.guided_passes[b] + len(finish_timesteps(resume, cfg.finish_steps))
    assert (out.t_final == 0).all()  # measured: the last timestep the UNet ran at, for each sample


def test_seeds_and_targets_in_one_batch_match_running_alone():
    unet, sch = _tiny()
    clf = Brightness()
    x = torch.rand(2, 1, 32, 32)
    cfg = preset("fast", steps=6, t_start=50, early_stop=0)
    both = guided_diffusion(unet, sch, clf, x, torch.tensor([0, 1]), cfg, seeds=[5, 9])
    alone = guided_diffusion(unet, sch, clf, x[1:], torch.tensor([1]), cfg, seeds=[9])
    torch.testing.assert_close(both.images[1:], alone.images, atol=2 / 255, rtol=0)


def test_ddim_sampler_and_xaidiff_preset_run():
    unet, sch = _tiny()
    out = guided_diffusion(unet, sch, Brightness(), torch.rand(1, 1, 32, 32), torch.tensor([1]),
                           preset("xaidiff", steps=5, sampler="ddim"), seeds=0)
    assert out.unet_passes[0] == 5 and out.curve_t[0] == 99
    assert PRESETS["xaidiff"].s_cls == 0.2 and PRESETS["xaidiff"].s_close == 1.0 and PRESETS["xaidiff"].eta == 1.0
    assert PRESETS["xaidiff"].t_start is None and 400 <= PRESETS["xaidiff"].steps <= 1000
    assert PRESETS["fast"].t_start is not None and PRESETS["fast"].steps <= 60
    with pytest.raises(ValueError):
        preset("nope")


def test_adversarial_baseline_flips_with_a_small_change():
    clf = Brightness()
    x = torch.full((2, 1, 16, 16), 0.45)
    out = generate("adversarial", clf, x, torch.ones(2, dtype=torch.long), lr=0.01, max_steps=100)
    assert isinstance(out, CounterfactualBatch)
    assert np.all(out.probs.argmax(1) == 1)
    assert (out.images - x).abs().mean() < 0.2
    assert list(out.unet_passes) == [0, 0]


def test_registry_lists_methods_and_refuses_missing_generator():
    assert {"diffusion", "adversarial"} <= set(list_methods())
    with pytest.raises(ValueError, match="needs a ddpm"):
        generate("diffusion", Brightness(), torch.rand(1, 1, 32, 32), torch.tensor([1]))
    with pytest.raises(ValueError, match="unknown counterfactual method"):
        generate("nope", Brightness(), torch.rand(1, 1, 32, 32), torch.tensor([1]))


def test_taxonomy_on_hand_made_values():
    eps = 3.0
    assert categorize(pred=2, original=0, target=2, bpd=2.5, eps=eps) == "counterfactual"
    assert categorize(pred=2, original=0, target=2, bpd=3.0, eps=eps) == "counterfactual"  # ≤ ε
    assert categorize(pred=2, original=0, target=2, bpd=3.01, eps=eps) == "adversarial"
    assert categorize(pred=0, original=0, target=2, bpd=2.0, eps=eps) == "affirmative"
    assert categorize(pred=0, original=0, target=0, bpd=2.0, eps=eps) == "affirmative"  # the affirmative example
    assert categorize(pred=0, original=0, target=2, bpd=4.0, eps=eps) == "none"
    assert categorize(pred=1, original=0, target=2, bpd=2.0, eps=eps) == "none"  # a third class
    # no density model: "unclassified", never "counterfactual" on the flip alone
    assert categorize(pred=2, original=0, target=2, bpd=None, eps=eps) == "unclassified"
    assert categorize(pred=2, original=0, target=2, bpd=float("nan"), eps=eps) == "unclassified"
    assert categorize(pred=2, original=0, target=2, bpd=1.0, eps=None) == "unclassified"
    cats = categorize_batch([2, 2, 0, 1], [0, 0, 0, 0], [2, 2, 2, 2], [1.0, 5.0, 1.0, 1.0], eps)
    assert cats == ["counterfactual", "adversarial", "affirmative", "none"]
    sh = shares(cats + [None])
    assert sh == {"counterfactual": 0.25, "adversarial": 0.25, "affirmative": 0.25, "none": 0.25}
    assert math.isnan(shares([None])["counterfactual"])
    vals = np.arange(1, 101, dtype=float)
    assert bpd_threshold(vals) == pytest.approx(np.percentile(vals, 95))
    assert bpd_threshold([1.0, np.nan, 2.0]) == pytest.approx(np.percentile([1.0, 2.0], 95))
    with pytest.raises(ValueError):
        bpd_threshold([np.nan])


def test_finishing_ddim_reaches_t0_and_counts_its_passes():
    """The finishing grid ends at t = 0 and the finished sample equals a plain DDIM run over the same grid."""
    unet, sch = _tiny()
    grid = finish_timesteps(37, 10)
    assert grid[0] == 37 and grid[-1] == 0 and len(grid) == 10 and grid == sorted(grid, reverse=True)
    torch.manual_seed(3)
    xt = torch.randn(2, 1, 32, 32)
    cfg = preset("fast", finish="ddim", finish_steps=10)
    x0, n_unet, n_guided = finish(unet, sch, Brightness(), xt.clone(), 37, cfg, torch.rand(2, 1, 32, 32),
                                  torch.ones(2, dtype=torch.long), None, torch.arange(2))
    assert (n_unet, n_guided) == (10, 0)
    # reference: deterministic DDIM written out over the same grid (ᾱ_prev = 1 at the last step, clipped x0̂)
    x = xt.clone()
    with torch.no_grad():
        for i, t in enumerate(grid):
            eps = unet(x, torch.full((2,), t)).sample
            a_t = float(sch.alphas_cumprod[t])
            a_prev = float(sch.alphas_cumprod[grid[i + 1]]) if i + 1 < len(grid) else 1.0
            x0h = ((x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5).clamp(-1, 1)
            x = a_prev ** 0.5 * x0h + (1 - a_prev) ** 0.5 * (x - a_t ** 0.5 * x0h) / (1 - a_t) ** 0.5
    torch.testing.assert_close(x0, x)


@pytest.mark.parametrize("mode", ["ddim", "ddim_guided"])
def test_fast_preset_returns_finished_samples_and_passes_add_up(mode):
    unet, sch = _tiny()
    x = torch.cat([torch.full((1, 1, 32, 32), 0.49), torch.full((1, 1, 32, 32), 0.2)])
    cfg = preset("fast", steps=30, t_start=90, eta=4.0, early_stop=2, finish=mode, finish_steps=6)
    out = guided_diffusion(unet, sch, Brightness(), x, torch.ones(2, dtype=torch.long), cfg, seeds=0)
    assert (out.t_final == 0).all()
    stopped = out.stopped_t > 0
    assert stopped.any()
    for b in range(2):
        n_loop = int(np.isfinite(out.prob_curve[b]).sum())  # steps of the guided loop
        if stopped[b]:  # finished: the DDIM grid from the loop's next timestep down to 0
            n_fin = len(finish_timesteps(out.curve_t[n_loop], 6))
            assert out.unet_passes[b] == n_loop + n_fin
            assert out.guided_passes[b] == (n_loop if mode == "ddim" else n_loop + n_fin)
        else:
            assert out.unet_passes[b] == out.guided_passes[b] == n_loop == len(out.curve_t)


def test_purification_drop_marks_a_flip_adversarial_and_auroc():
    from core.counterfactual.purify import auroc, low_t_bits, purification_drop

    # within ε on bits/dim, but its prediction falls back after purification: adversarial
    assert categorize(2, 0, 2, bpd=1.0, eps=2.0, drop=0.8, drop_eps=0.3) == "adversarial"
    assert categorize(2, 0, 2, bpd=1.0, eps=2.0, drop=0.1, drop_eps=0.3) == "counterfactual"
    assert categorize(2, 0, 2, bpd=1.0, eps=2.0, drop=0.8, drop_eps=None) == "counterfactual"
    assert auroc([0.1, 0.2], [0.3, 0.4]) == 1.0 and auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert auroc([0.1, 0.2], [0.2, 0.2]) == pytest.approx(0.75)
    # the drop is p(own class | x) − p(own class | purified x): bounded by [−1, 1], one value per image
    unet, sch = _tiny()
    d = purification_drop(unet, sch, Brightness(), torch.rand(3, 1, 32, 32), t_p=20, steps=3)
    assert d.shape == (3,) and np.all(np.abs(d) <= 1)

    class _R:
        timesteps, weights = np.array([0, 5, 50]), np.array([1.0, 2.0, 10.0])
        terms = np.array([[1.0, 1.0, 1.0]])
    assert low_t_bits(_R(), t_max=20)[0] == pytest.approx(3.0)
