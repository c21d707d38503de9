"""Realism of a set of generated images against real ones, in the feature space of an independent classifier.

- Fréchet distance (FD): ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½), covariances with ddof = 1 (as FID).
- KID: the unbiased MMD² with the polynomial kernel k(x, y) = (x·y / d + 1)³ (Bińkowski et al.).
- Sharpness: the share of spectral power (DC removed) above `cutoff` of the Nyquist radius; `sharpness_ratio`
  divides a set's mean share by the real set's (< 1: blurrier than real images). Bits/dim, by contrast, rewards
  smooth images, so the two are shown side by side.

Both distances are biased upwards for small sets (FD more than KID); compare sets of the same size only.
"""
from __future__ import annotations

import numpy as np
import torch

from core.models.target import target_forward


def _psd_sqrt_trace(a: np.ndarray, b: np.ndarray) -> float:
    """Tr((A B)^½) for symmetric PSD A, B, via the symmetric A^½ B A^½ (real, PSD)."""
    wa, va = np.linalg.eigh(a)
    ra = (va * np.sqrt(np.clip(wa, 0, None))) @ va.T
    w = np.linalg.eigvalsh(ra @ b @ ra)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(feat_a: np.ndarray, feat_b: np.ndarray) -> float:
    """FD between two feature sets (N, D) and (M, D), N, M ≥ 2."""
    a, b = np.asarray(feat_a, np.float64), np.asarray(feat_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"FD needs two (N ≥ 2, D) feature sets of the same D, got {a.shape} and {b.shape}")
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    return float(max(0.0, mu @ mu + np.trace(ca) + np.trace(cb) - 2.0 * _psd_sqrt_trace(ca, cb)))


def kernel_distance(feat_a: np.ndarray, feat_b: np.ndarray) -> float:
    """KID: unbiased MMD² with k(x, y) = (x·y/d + 1)³ over all pairs (N, M ≥ 2)."""
    a, b = np.asarray(feat_a, np.float64), np.asarray(feat_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"KID needs two (N ≥ 2, D) feature sets of the same D, got {a.shape} and {b.shape}")
    d = a.shape[1]
    kxx = (a @ a.T / d + 1) ** 3
    kyy = (b @ b.T / d + 1) ** 3
    kxy = (a @ b.T / d + 1) ** 3
    n, m = len(a), len(b)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2.0 * kxy.mean())


def high_frequency_share(images: np.ndarray, cutoff: float = 0.5) -> np.ndarray:
    """Per image (N, H, W): share of the power spectrum (DC removed) at radius > cutoff·Nyquist (NaN if flat)."""
    x = np.asarray(images, np.float64)
    if x.ndim == 2:
        x = x[None]
    x = x - x.mean(axis=(1, 2), keepdims=True)
    p = np.abs(np.fft.fft2(x)) ** 2
    fy = np.fft.fftfreq(x.shape[1])[:, None]
    fx = np.fft.fftfreq(x.shape[2])[None, :]
    hi = np.sqrt(fy ** 2 + fx ** 2) > cutoff * 0.5
    tot = p.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (p * hi).sum(axis=(1, 2)) / tot, np.nan)


def sharpness_ratio(images: np.ndarray, real: np.ndarray, cutoff: float = 0.5) -> float:
    """Mean high-frequency share of `images` over that of `real` (1: as sharp as real images)."""
    a = np.nanmean(high_frequency_share(images, cutoff))
    b = np.nanmean(high_frequency_share(real, cutoff))
    return float(a / b) if b > 0 else float("nan")


@torch.no_grad()
def classifier_features(classifier, images: np.ndarray, device="cpu", batch_size: int = 128) -> np.ndarray:
    """Global-average-pooled target-layer features (N, C) of uint8 images (N, H, W) under a Classifier."""
    was = classifier.training
    classifier.eval()
    out = []
    try:
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.asarray(images[s:s + batch_size])).float().div(255.0)[:, None].to(device)
            feats, _ = target_forward(classifier, x, read_only=True)
            out.append(feats.detach().mean(dim=(2, 3)).cpu().double().numpy())
    finally:
        classifier.train(was)
    return np.concatenate(out) if out else np.zeros((0, 0))


def realism(classifier, generated: np.ndarray, real: np.ndarray, device="cpu") -> dict[str, float]:
    """{fd, kid, sharpness, n, n_real}: generated vs real uint8 images in the classifier's feature space."""
    fa = classifier_features(classifier, generated, device)
    fb = classifier_features(classifier, real, device)
    ok = len(fa) >= 2 and len(fb) >= 2
    return {"fd": frechet_distance(fa, fb) if ok else float("nan"),
            "kid": kernel_distance(fa, fb) if ok else float("nan"),
            "sharpness": sharpness_ratio(generated, real), "n": int(len(generated)), "n_real": int(len(real))}
