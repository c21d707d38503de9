"""Fidelity in bits per dimension under a DDPM's variational bound (improved-diffusion's calc_bpd_loop).

bpd(x0) = [ Σ_{t≥1} KL(q(x_{t−1}|x_t,x0) ‖ p(x_{t−1}|x_t)) − log p(x0|x1) + KL(q(x_T|x0) ‖ N(0, I)) ] / (D·ln 2)

with x_t ~ q(x_t|x0) drawn once per term (seeded), the model mean from ε-prediction with x0̂ clipped to [−1, 1]
and the fixed model variance of the scheduler (fixed_small: the clipped posterior variance; fixed_large: β).
Images are 8-bit: the t = 0 term is the discretised Gaussian likelihood over 256 bins in [−1, 1].

`terms=None` evaluates all T terms (the full bound). `terms=K` is a *strided estimate*: the KL terms t = 1…T−1
are split into K−1 contiguous strata, narrow near t = 1 where the terms are large and change fast (edges spaced
quadratically), and each stratum's sum is estimated by its midpoint term × its width; the decoder (t = 0) and
prior terms are always exact. Results say which estimator produced them (`estimator`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

LN2 = math.log(2.0)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log-probability (nats) of 8-bit data x ∈ [−1, 1] under a Gaussian discretised to 256 bins (edges open)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


class DiffusionTerms:
    """The schedule's float64 constants (improved-diffusion's GaussianDiffusion) for a DDPMScheduler."""

    def __init__(self, scheduler):
        cfg = scheduler.config
        if cfg.prediction_type != "epsilon":
            raise ValueError(f"bits/dim needs an ε-prediction DDPM, got prediction_type={cfg.prediction_type!r}")
        betas = scheduler.betas.double().cpu().numpy()
        self.T = len(betas)
        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        ac_prev = np.append(1.0, ac[:-1])
        self.betas = betas
        self.alphas_cumprod = ac
        self.sqrt_ac = np.sqrt(ac)
        self.sqrt_1mac = np.sqrt(1.0 - ac)
        self.log_1mac = np.log(1.0 - ac)
        self.sqrt_recip_ac = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_ac = np.sqrt(1.0 / ac - 1.0)
        self.post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        self.post_logvar_clipped = np.log(np.append(self.post_var[1], self.post_var[1:]))
        self.post_coef1 = betas * np.sqrt(ac_prev) / (1.0 - ac)
        self.post_coef2 = (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac)
        vt = cfg.variance_type
        if vt in ("fixed_small", "fixed_small_log"):
            self.model_logvar = self.post_logvar_clipped
        elif vt in ("fixed_large", "fixed_large_log"):
            self.model_logvar = np.log(np.append(self.post_var[1], betas[1:]))
        else:
            raise ValueError(f"bits/dim supports fixed variances only, got variance_type={vt!r}")
        self.clip = bool(cfg.clip_sample)

    def _x(self, arr: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(arr, dtype=torch.float64)[t.cpu()].to(like.device, like.dtype)
        return v.view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0, t, noise):
        return self._x(self.sqrt_ac, t, x0) * x0 + self._x(self.sqrt_1mac, t, x0) * noise

    def q_posterior(self, x0, xt, t):
        mean = self._x(self.post_coef1, t, xt) * x0 + self._x(self.post_coef2, t, xt) * xt
        return mean, self._x(self.post_logvar_clipped, t, xt)

    def p_mean_logvar(self, eps, xt, t):
        x0_hat = self._x(self.sqrt_recip_ac, t, xt) * xt - self._x(self.sqrt_recipm1_ac, t, xt) * eps
        if self.clip:
            x0_hat = x0_hat.clamp(-1, 1)
        mean, _ = self.q_posterior(x0_hat, xt, t)
        return mean, self._x(self.model_logvar, t, xt)

    def vb_term_bits(self, eps, x0, xt, t):
        """Per-image term in bits/dim: KL for t > 0, decoder NLL for t = 0 (improved-diffusion's _vb_terms_bpd)."""
        true_mean, true_logvar = self.q_posterior(x0, xt, t)
        mean, logvar = self.p_mean_logvar(eps, xt, t)
        kl = normal_kl(true_mean, true_logvar, mean, logvar).flatten(1).mean(1) / LN2
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar).flatten(1).mean(1) / LN2
        return torch.where(t.to(x0.device) == 0, nll, kl)

    def prior_bits(self, x0):
        t = torch.full((x0.shape[0],), self.T - 1, dtype=torch.long)
        mean = self._x(self.sqrt_ac, t, x0) * x0
        logvar = self._x(self.log_1mac, t, x0)
        return normal_kl(mean, logvar, torch.zeros_like(mean), torch.zeros_like(mean)).flatten(1).mean(1) / LN2


def term_grid(T: int, terms: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Timesteps to evaluate and their weights; the full bound when terms is None or ≥ T."""
    if terms is None or terms >= T:
        return np.arange(T), np.ones(T), "full"
    if terms < 2:
        raise ValueError("a strided bits/dim estimate needs at least 2 terms (t = 0 and one KL stratum)")
    k = terms - 1  # t = 0 is always evaluated exactly
    edges = np.unique((1 + (T - 1) * np.linspace(0, 1, k + 1) ** 2).round().astype(int))
    ts, ws = [0], [1.0]
    for a, b in zip(edges[:-1], edges[1:]):
        if b > a:
            ts.append((a + b - 1) // 2)
            ws.append(float(b - a))
    return np.array(ts), np.array(ws), f"strided ({len(ts)} of {T} terms)"


@dataclass
class BpdResult:
    bpd: np.ndarray            # (N,) total bits/dim
    prior: np.ndarray          # (N,) prior term
    terms: np.ndarray          # (N, K) evaluated terms in bits/dim (unweighted)
    timesteps: np.ndarray      # (K,)
    weights: np.ndarray        # (K,)
    estimator: str             # "full" or "strided (K of T terms)"


def images_to_model(x) -> torch.Tensor:
    """uint8 (N,H,W)/(N,1,H,W) or float in [0,1] → 8-bit-quantised float (N,1,H,W) in [−1, 1]."""
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach()
    if t.ndim == 3:
        t = t[:, None]
    if t.dtype == torch.uint8:
        q = t.float()
    else:
        q = torch.round(t.float().clamp(0, 1) * 255.0)
    return q / 127.5 - 1.0


@torch.no_grad()
def bits_per_dim(unet, scheduler, images, terms: int | None = None, seed: int = 0, batch_size: int = 64,
                 device: str | torch.device = "cpu", progress=None) -> BpdResult:
    """Bits/dim of each image under the DDPM's variational bound (full, or the strided estimate with `terms`).

    The (image, timestep) pairs are packed into UNet batches of `batch_size`; the noise of each pair comes from
    one seeded generator, so the same inputs give the same numbers.
    """
    dt = DiffusionTerms(scheduler)
    x0 = images_to_model(images)
    n = x0.shape[0]
    ts, ws, label = term_grid(dt.T, terms)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(ts), *x0.shape[1:]), generator=g)  # one draw per timestep, shared by all images
    pairs = [(i, j) for i in range(n) for j in range(len(ts))]
    out = torch.zeros(n, len(ts), dtype=torch.float64)
    unet_dtype = next(unet.parameters()).dtype
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s:s + batch_size]
        ii = torch.tensor([p[0] for p in chunk])
        jj = torch.tensor([p[1] for p in chunk])
        t = torch.as_tensor(ts)[jj].long()
        xb = x0[ii].double()
        xt = dt.q_sample(xb, t, noise[jj].double())
        eps = unet(xt.to(device, unet_dtype), t.to(device)).sample.double().cpu()
        out[ii, jj] = dt.vb_term_bits(eps, xb, xt, t)
        if progress:
            progress(min(1.0, (s + len(chunk)) / len(pairs)))
    prior = dt.prior_bits(x0.double())
    total = (out * torch.as_tensor(ws)).sum(1) + prior
    return BpdResult(bpd=total.numpy(), prior=prior.numpy(), terms=out.numpy(), timesteps=ts, weights=ws,
                     estimator=label)
