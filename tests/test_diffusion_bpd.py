"""Bits/dim under the DDPM bound: a hand computation on a tiny case, the strided estimate, real vs noised images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from core.generative.bpd import bits_per_dim, term_grid
from core.generative.ddpm import build_ddpm, train_ddpm


class _Out:
    def __init__(self, sample):
        self.sample = sample


class FixedEps(torch.nn.Module):
    """A stand-in ε-model: ε̂(x_t, t) = 0.3·x_t − 0.01·t (deterministic, so the bound can be computed by hand)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t):
        return _Out(0.3 * x - 0.01 * t.view(-1, 1, 1, 1).to(x.dtype))


def _cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _kl(m1, v1, m2, v2) -> float:
    return math.log(math.sqrt(v2) / math.sqrt(v1)) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5


def test_bpd_matches_hand_computation_on_a_tiny_case():
    T = 4
    sch = DDPMScheduler(num_train_timesteps=T, beta_start=0.1, beta_end=0.4, beta_schedule="linear",
                        variance_type="fixed_small", clip_sample=True)
    img = np.array([[[0, 128], [255, 37]]], dtype=np.uint8)  # one 2×2 image, both edge bins included
    model = FixedEps()
    res = bits_per_dim(model, sch, img, terms=None, seed=3)
    assert res.estimator == "full"
    # the same noise the function draws: one N(0, I) per timestep from a generator seeded with `seed`
    noise = torch.randn((T, 1, 2, 2), generator=torch.Generator().manual_seed(3)).double().numpy()[:, 0]
    x0 = img[0].astype(float) / 127.5 - 1.0
    betas = np.linspace(0.1, 0.4, T)
    ac = np.cumprod(1 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1 - ac_prev) / (1 - ac)
    model_var = np.append(post_var[1], post_var[1:])  # improved-diffusion's clipped log-variance at t = 0
    hand_terms = []
    for t in range(T):
        xt = math.sqrt(ac[t]) * x0 + math.sqrt(1 - ac[t]) * noise[t]
        eps = 0.3 * xt - 0.01 * t
        x0_hat = np.clip((xt - math.sqrt(1 - ac[t]) * eps) / math.sqrt(ac[t]), -1, 1)
        c1 = betas[t] * math.sqrt(ac_prev[t]) / (1 - ac[t])
        c2 = (1 - ac_prev[t]) * math.sqrt(1 - betas[t]) / (1 - ac[t])
        mu_model = c1 * x0_hat + c2 * xt
        if t == 0:
            sd = math.sqrt(model_var[0])
            nll = 0.0
            for x, mu in zip(x0.ravel(), mu_model.ravel()):
                hi = 1.0 if x > 0.999 else _cdf((x - mu + 1 / 255) / sd)
                lo = 0.0 if x < -0.999 else _cdf((x - mu - 1 / 255) / sd)
                nll -= math.log(hi - lo)
            hand_terms.append(nll / 4 / math.log(2))
        else:
            mu_true = c1 * x0 + c2 * xt
            kl = sum(_kl(a, model_var[t], b, model_var[t]) for a, b in zip(mu_true.ravel(), mu_model.ravel()))
            hand_terms.append(kl / 4 / math.log(2))
    m_T, v_T = math.sqrt(ac[-1]) * x0, 1 - ac[-1]
    prior = sum(_kl(m, v_T, 0.0, 1.0) for m in m_T.ravel()) / 4 / math.log(2)
    np.testing.assert_allclose(res.terms[0], hand_terms, rtol=2e-3, atol=1e-4)  # tanh-approximated CDF at t = 0
    np.testing.assert_allclose(res.prior[0], prior, rtol=1e-6)  # float32 betas
    np.testing.assert_allclose(res.bpd[0], sum(hand_terms) + prior, rtol=2e-3)


def test_term_grid_strided_covers_every_timestep_once():
    ts, ws, label = term_grid(1000, 20)
    assert ts[0] == 0 and ws[0] == 1
    assert ws.sum() == 1000 and len(ts) <= 20 and label.startswith("strided")
    assert np.all(np.diff(ts) > 0)
    full_ts, full_ws, full = term_grid(50, None)
    assert full == "full" and len(full_ts) == 50 and full_ws.sum() == 50
    with pytest.raises(ValueError):
        term_grid(1000, 1)


def _blobs(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth images: a bright disc on a dark background, random centre and radius."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        cy, cx, r = rng.uniform(10, size - 10, 2).tolist() + [rng.uniform(4, 8)]
        out[i] = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 200, 40)
    return out


@pytest.mark.slow
def test_bpd_of_real_images_is_lower_than_of_the_same_images_with_strong_noise():
    torch.manual_seed(0)
    unet, sch = build_ddpm(32, "tiny", num_train_timesteps=100)
    train = _blobs(256, 32, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is fastest, and fair to a shared machine
    try:
        ema, report = train_ddpm(unet, sch, train, steps=60, batch_size=16, lr=2e-3, warmup=10, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert np.isfinite(report.final_loss)
    held = _blobs(6, 32, seed=1)
    rng = np.random.default_rng(2)
    noisy = np.clip(held.astype(float) + rng.normal(0, 60, held.shape), 0, 255).astype(np.uint8)
    real_bpd = bits_per_dim(ema, sch, held, terms=None).bpd
    noisy_bpd = bits_per_dim(ema, sch, noisy, terms=None).bpd
    assert np.all(np.isfinite(real_bpd)) and real_bpd.mean() > 0
    assert real_bpd.max() < noisy_bpd.min(), (real_bpd, noisy_bpd)
    # the strided estimate is labelled and tracks the full bound's ordering
    strided = bits_per_dim(ema, sch, np.concatenate([held, noisy]), terms=12)
    assert strided.estimator.startswith("strided")
    assert strided.bpd[:6].max() < strided.bpd[6:].min()
