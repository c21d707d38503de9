"""Counterfactual methods behind one entry point: generate(method, classifier, x, target, generator=None, **options).

A method is one module with a function
    fn(classifier, x_ref (B,1,H,W) in [0,1], target (B,), generator, device, progress, **options) → CounterfactualBatch
and one spec in core.registries.COUNTERFACTUAL_METHODS (its entry point, imported when it runs, and the generator
kind it needs: "ddpm", "gan" or None; docs/architecture.md, Registries). Adding a method is its module plus that spec.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from core.registries import COUNTERFACTUAL_METHODS
from core.registry import load

# which generator kind a method needs ("ddpm", "gan" or None), by name
needs_generator: dict[str, str | None] = {s.name: s.generator for s in COUNTERFACTUAL_METHODS}


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


def list_methods() -> list[str]:
    return sorted(COUNTERFACTUAL_METHODS.names())


def generate(method: str, classifier, x_ref: torch.Tensor, target: torch.Tensor, generator=None,
             device: str | torch.device = "cpu", progress=None, **options) -> CounterfactualBatch:
    spec = COUNTERFACTUAL_METHODS.get(method)  # an unknown method: one line naming the methods
    if spec.generator and generator is None:
        raise ValueError(f"method {method!r} needs a {spec.generator} generator")
    return load(spec.entry)(classifier, x_ref, target, generator=generator, device=device, progress=progress,
                             **options)
