"""Realism metrics (FD, KID, sharpness) against hand-computed values, the artefact probe on models built to read
or ignore a corner pixel, and the counterfactual change-mass ratio."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.models.target import TargetSpec

from core.metrics.realism import (frechet_distance, high_frequency_share, kernel_distance, realism,
                                  sharpness_ratio)
from core.probe.artefact import artefact_probe, corner_boxes, glyph_from_masks, paste
from core.probe.change_mass import change_mass_ratio, mean_ratio


def test_fd_by_hand_in_one_dimension():
    # a: mean 1, var 2 (ddof 1); b: mean 3, var 8 → (1−3)² + 2 + 8 − 2·√16 = 6
    assert frechet_distance(np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]])) == pytest.approx(6.0)


def test_fd_by_hand_with_diagonal_covariances():
    # per dimension: (μa−μb)² + (σa − σb)²; a: dims (0,2),(0,0)… built so covariances are diagonal
    a = np.array([[-1.0, -2.0], [1.0, 2.0], [-1.0, 2.0], [1.0, -2.0]])      # mean 0, var (4/3, 16/3), cov 0
    b = a * np.array([3.0, 0.5]) + np.array([1.0, -2.0])                      # var ×(9, 0.25), mean (1, −2)
    va, vb = np.array([4 / 3, 16 / 3]), np.array([4 / 3 * 9, 16 / 3 * 0.25])
    want = 1.0 + 4.0 + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(want)


def test_fd_on_gaussian_samples_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    b = rng.standard_normal((4000, 3)) * np.array([1.0, 2.0, 0.5]) + np.array([1.0, 0.0, 0.0])
    # closed form for N(0, I) vs N(μ, diag s²): |μ|² + Σ(1 − s)² = 1 + 1 + 0.25
    assert frechet_distance(a, b) == pytest.approx(2.25, abs=0.15)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_kid_by_hand_and_on_gaussian_samples():
    # k(x, y) = (xy + 1)³ in one dimension: within a 1, within b 27, across (1 + 1 + 8 + 27)/4 → 1 + 27 − 18.5
    assert kernel_distance(np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])) == pytest.approx(9.5)
    rng = np.random.default_rng(1)
    same = kernel_distance(rng.standard_normal((300, 4)), rng.standard_normal((300, 4)))
    shifted = kernel_distance(rng.standard_normal((300, 4)), rng.standard_normal((300, 4)) + 1.0)
    assert abs(same) < 0.05 and shifted > 0.5


def test_sharpness_ranks_blur_below_real_images():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (8, 32, 32)).astype(np.uint8)
    k = np.ones(5) / 5
    blur = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 2, real.astype(float))
    blur = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, blur)
    assert sharpness_ratio(real, real) == pytest.approx(1.0)
    assert sharpness_ratio(blur, real) < 0.3
    assert np.isnan(high_frequency_share(np.full((1, 8, 8), 7.0))[0])  # a flat image has no spectrum


class _Pixel(torch.nn.Module):
    """Class 1 when pixel (r, c) is bright, class 0 otherwise; features = the image pooled to 4×4."""

    def __init__(self, r: int, c: int):
        super().__init__()
        self.r, self.c = r, c
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.target = TargetSpec("pool")  # the layer realism reads, through core.models.target's hook

    def forward(self, x):
        self.pool(x)
        v = 20.0 * (x[:, 0, self.r, self.c] - 0.5)
        return torch.stack([-v, v], 1)


def _dark_images(n=10, size=32):
    rng = np.random.default_rng(0)
    return rng.integers(20, 60, (n, size, size)).astype(np.uint8)


def test_artefact_probe_on_a_model_that_reads_one_corner_pixel_and_one_that_ignores_it():
    imgs = _dark_images()
    patch, alpha = np.full((7, 7), 255.0), np.ones((7, 7))
    boxes = corner_boxes(32, 7, 7)
    assert boxes[0][:2] == (0, 0) and boxes[3][2:] == (32, 32)
    reads = artefact_probe(_Pixel(0, 0), imgs, patch, alpha, boxes)
    assert reads[0].changed == 1.0 and reads[0].shift[1] > 0.9          # the top-left corner flips every image
    assert reads[0].toward == 1 and reads[0].changed_other == 1.0
    assert [p.changed for p in reads[1:]] == [0.0, 0.0, 0.0]
    ignores = artefact_probe(_Pixel(16, 16), imgs, patch, alpha, boxes)
    assert [p.changed for p in ignores] == [0.0] * 4
    assert np.allclose([p.shift for p in ignores], 0.0, atol=1e-6)


def test_paste_composites_with_alpha_and_rejects_a_box_outside():
    imgs = np.zeros((1, 8, 8), np.uint8)
    out = paste(imgs, np.full((2, 2), 200.0), np.array([[1.0, 0.5], [0.0, 1.0]]), (1, 1, 3, 3))
    assert out[0, 1:3, 1:3].tolist() == [[200, 100], [0, 200]] and out.sum() == 500
    with pytest.raises(ValueError, match="does not fit"):
        paste(imgs, np.ones((2, 2)), np.ones((2, 2)), (7, 7, 9, 9))


def test_glyph_is_cut_from_the_median_mask():
    imgs = np.zeros((3, 10, 10), np.uint8)
    masks = np.zeros((3, 10, 10), np.uint8)
    masks[0, 0:2, 0:2] = 1
    masks[1, 4:7, 5:8] = 1
    imgs[1, 4:7, 5:8] = 9
    masks[2, 0:5, 0:5] = 1
    patch, alpha = glyph_from_masks(imgs, masks)
    assert patch.shape == (3, 3) and (patch == 9).all() and (alpha == 1).all()
    # a dilated mask around a bright stroke: alpha is the stroke's coverage over the background, not the halo
    imgs[1, 3:8, 4:9] = 40
    imgs[1, 5, 5:8] = 240
    masks[1] = 0
    masks[1, 3:8, 4:9] = 1
    patch, alpha = glyph_from_masks(imgs, masks)
    assert patch.shape == (5, 5) and np.allclose(patch, 240)
    assert alpha[2, 1:4].tolist() == [1.0, 1.0, 1.0] and alpha.sum() == pytest.approx(3.0)


def test_change_mass_ratio():
    o = np.zeros((10, 10))
    g = o.copy()
    g[0:2, 0:5] = 1.0                    # all the change in a region of 10 % of the area
    region = np.zeros((10, 10))
    region[0:2, 0:5] = 1
    assert change_mass_ratio(o, g, region) == pytest.approx(10.0)
    g2 = np.ones((10, 10))               # change spread evenly: ratio 1
    assert change_mass_ratio(o, g2, region) == pytest.approx(1.0)
    assert np.isnan(change_mass_ratio(o, o, region)) and np.isnan(change_mass_ratio(o, g, None))
    assert mean_ratio([(o, g, region), (o, o, region)]) == pytest.approx(10.0)


def test_realism_uses_the_feature_space_of_the_given_classifier():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (6, 16, 16)).astype(np.uint8)
    r = realism(_Pixel(0, 0), real, real)
    assert r["fd"] == pytest.approx(0.0, abs=1e-6) and r["sharpness"] == pytest.approx(1.0) and r["n"] == 6
    far = realism(_Pixel(0, 0), np.clip(real.astype(int) // 4, 0, 255).astype(np.uint8), real)
    assert far["fd"] > r["fd"] + 1e-3 and far["kid"] > 0
