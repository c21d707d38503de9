"""Counterfactual methods behind one entry point: generate(method, classifier, x, target, generator=None, **options).

A method is one module that registers a function
    fn(classifier, x_ref (B,1,H,W) in [0,1], target (B,), generator, device, progress, **options) → CounterfactualBatch
with @register("name"). Adding a method is its module plus one import line in _load_all (the GAN issue adds "gan").
`needs_generator[name]` says which generator kind a method needs ("ddpm", "gan" or None).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

_REGISTRY: dict[str, Callable] = {}
needs_generator: dict[str, str | None] = {}


@dataclass
class CounterfactualBatch:
    """What every method returns for a batch of B references."""

    images: torch.Tensor                    # (B, 1, H, W) in [0, 1], 8-bit quantised
    probs: np.ndarray                       # (B, C) classifier softmax of `images`
    prob_curve: np.ndarray                  # (B, S) target probability along the method's steps
    unet_passes: np.ndarray                 # (B,) all UNet passes, guided + finishing (0 without a diffusion model)
    seconds: float
    guided_passes: np.ndarray | None = None  # (B,) guided passes (forward + backward) of a diffusion method
    t_final: np.ndarray | None = None       # (B,) timestep of the returned sample (0: finished); None: no diffusion
    stopped_t: np.ndarray | None = None     # (B,) timestep where the guidance stopped (0: it ran to the end)
    trajectory: np.ndarray | None = None    # (B, F, H, W) uint8 intermediate images, when the method has them
    trajectory_t: np.ndarray | None = None  # (F,) timestep / step of each frame
    curve_t: np.ndarray | None = None       # (S,) timestep / step of each curve point
    config: dict = field(default_factory=dict)


def register(name: str, generator_kind: str | None = None):
    def deco(fn):
        _REGISTRY[name] = fn
        needs_generator[name] = generator_kind
        return fn
    return deco


def list_methods() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def generate(method: str, classifier, x_ref: torch.Tensor, target: torch.Tensor, generator=None,
             device: str | torch.device = "cpu", progress=None, **options) -> CounterfactualBatch:
    _load_all()
    if method not in _REGISTRY:
        raise ValueError(f"unknown counterfactual method {method!r}; choose one of {', '.join(sorted(_REGISTRY))}")
    if needs_generator[method] and generator is None:
        raise ValueError(f"method {method!r} needs a {needs_generator[method]} generator")
    return _REGISTRY[method](classifier, x_ref, target, generator=generator, device=device, progress=progress,
                             **options)


def _load_all() -> None:
    # One import line per method module; each calls @register.
    from core.counterfactual import adversarial, xaidiff  # noqa: F401
    from core.counterfactual import gci  # noqa: F401  (registers "gan")
