"""XAIDIFF: diffusion counterfactuals by Adam-normalised classifier + L1 guidance on the one-step estimate (DESIGN §4).

Per denoising step t of an unconditional ε-prediction DDPM, classifier f (images in [0, 1]) and reference x_ref:

    x0̂  = pred_original_sample of scheduler.step(ε_θ(x_t, t), t, x_t)
    L   = s_cls · log softmax(f(x0̂))[target] − s_close · mean|x_ref − x0̂|
    g   = ∂L/∂x_t,  ĝ = Adam-normalised g across steps (β 0.9 / 0.999, bias-corrected)
    x_{t−1} = prev_sample + σ_t² · η · ĝ          (σ_t² = the step's posterior variance)

Presets: "xaidiff" (published defaults: from pure noise, many steps) and "fast" (start from x_ref noised to
t_start < T, strided steps, stop a sample once its flip held for a few steps). Samples, seeds and targets are
batched; a sample that stopped leaves the batch, so passes are counted per sample. `affirmative` runs the same
guidance from a counterfactual back to the original class.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from core.counterfactual import CounterfactualBatch, register
from core.generative.ddpm import from_model, quantize01, strided_timesteps, to_model, to_uint8


@dataclass(frozen=True)
class GuidanceConfig:
    s_cls: float = 0.2
    s_close: float = 1.0
    eta: float = 1.0
    steps: int = 500                 # denoising steps from t_start down to 0, strided over the T training steps
    t_start: int | None = None       # None: start from pure noise at T−1; else x_ref noised to this timestep
    sampler: str = "ddpm"            # "ddpm" (strided ancestral) or "ddim" (deterministic update, same guidance)
    early_stop: int = 0              # stop a sample once argmax f(x0̂) = target held this many steps (0: never)
    traj_frames: int = 12            # about this many one-step estimates kept for the trajectory
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, GuidanceConfig] = {
    # Vaeth et al.'s published defaults (400–1000 steps from pure noise; 500 here, override `steps`).
    "xaidiff": GuidanceConfig(s_cls=0.2, s_close=1.0, eta=1.0, steps=500, t_start=None, early_stop=0),
    # Exemplar's fast preset: the input noised to t_start, ≤ 60 strided steps, early stop once the flip holds.
    # t_start 250 of 1000 keeps the one-step estimate sharp enough to stay on the data distribution when a sample
    # stops early (bench/counterfactuals.py; from t_start 500 the early x0̂ is blurry and scores above ε).
    "fast": GuidanceConfig(s_cls=0.2, s_close=1.0, eta=1.0, steps=40, t_start=250, early_stop=5),
}


def preset(name: str, **overrides) -> GuidanceConfig:
    """A preset with fields overridden (None values are ignored, so CLI defaults can pass straight through)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class GuidanceOutput:
    images: torch.Tensor            # (B, 1, H, W) in [0, 1], 8-bit quantised
    probs: np.ndarray               # (B, C) classifier softmax of `images`
    prob_curve: np.ndarray          # (B, S) target probability of x0̂ at each step (NaN once a sample stopped)
    curve_t: np.ndarray             # (S,) timestep of each step
    trajectory: np.ndarray          # (B, F, H, W) uint8 one-step estimates (a stopped sample repeats its result)
    trajectory_t: np.ndarray        # (F,) timestep of each frame
    unet_passes: np.ndarray         # (B,) guided UNet passes (forward + backward) per sample
    stopped_t: np.ndarray           # (B,) timestep at which each sample stopped (0 = ran to the end)
    seconds: float = 0.0
    config: dict = field(default_factory=dict)


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module):
    """Eval mode and no parameter gradients for the duration (restored after)."""
    state = [(m, m.training, [p.requires_grad for p in m.parameters()]) for m in modules]
    try:
        for m in modules:
            m.eval()
            m.requires_grad_(False)
        yield
    finally:
        for m, training, flags in state:
            m.train(training)
            for p, f in zip(m.parameters(), flags):
                p.requires_grad_(f)


def _posterior_variance(alphas_cumprod: torch.Tensor, t: int, prev_t: int) -> float:
    a_t = float(alphas_cumprod[t])
    a_prev = float(alphas_cumprod[prev_t]) if prev_t >= 0 else 1.0
    return (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)


def _ddim_prev(alphas_cumprod: torch.Tensor, t: int, prev_t: int, xt: torch.Tensor, x0_hat: torch.Tensor):
    """Deterministic DDIM update (η_DDIM = 0) from t to prev_t with the (clipped) one-step estimate."""
    a_t = float(alphas_cumprod[t])
    a_prev = float(alphas_cumprod[prev_t]) if prev_t >= 0 else 1.0
    eps_hat = (xt - a_t ** 0.5 * x0_hat) / (1.0 - a_t) ** 0.5
    return a_prev ** 0.5 * x0_hat + (1.0 - a_prev) ** 0.5 * eps_hat


def objective(classifier, x0_hat_model: torch.Tensor, x_ref01: torch.Tensor, target: torch.Tensor,
              s_cls: float, s_close: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample L = s_cls·log p_target − s_close·mean|x_ref − x0̂| (x0̂ in model space) and the softmax."""
    img = (x0_hat_model + 1.0) / 2.0
    logits = classifier(img)
    logp = F.log_softmax(logits, dim=1)
    l1 = (x_ref01 - img).abs().flatten(1).mean(1)
    loss = s_cls * logp.gather(1, target[:, None])[:, 0] - s_close * l1
    return loss, logp.exp()


def guided_diffusion(unet, scheduler: DDPMScheduler, classifier, x_ref: torch.Tensor, target: torch.Tensor,
                     cfg: GuidanceConfig, seeds: int | list[int] = 0, device: str | torch.device = "cpu",
                     progress: Callable[[int, int], None] | None = None) -> GuidanceOutput:
    """Run XAIDIFF guidance for a batch: x_ref (B, 1, H, W) in [0, 1], target (B,) class indices.

    Each sample has its own seed (its noise draws do not depend on the batch around it).
    """
    t0 = time.monotonic()
    device = torch.device(device)
    B = x_ref.shape[0]
    seeds = [seeds + i for i in range(B)] if isinstance(seeds, int) else list(seeds)
    if len(seeds) != B:
        raise ValueError(f"{len(seeds)} seeds for a batch of {B}")
    if cfg.sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {cfg.sampler!r}")
    T = scheduler.config.num_train_timesteps
    ts = strided_timesteps(T, cfg.steps, cfg.t_start)
    sch = DDPMScheduler.from_config(scheduler.config)
    sch.set_timesteps(timesteps=ts)
    acp = scheduler.alphas_cumprod
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    x_ref = x_ref.to(device).float()
    target = target.to(device).long()
    if cfg.t_start is None:
        x = torch.stack([torch.randn(x_ref.shape[1:], generator=g) for g in gens]).to(device)
    else:
        noise = torch.stack([torch.randn(x_ref.shape[1:], generator=g) for g in gens]).to(device)
        tt = torch.full((B,), ts[0], dtype=torch.long)
        x = sch.add_noise(to_model(x_ref), noise, tt.to(device))
    S = len(ts)
    every = max(1, S // max(1, cfg.traj_frames))
    frame_idx = sorted(set(list(range(0, S, every)) + [S - 1]))
    b1, b2 = cfg.adam_betas
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    curve = np.full((B, S), np.nan)
    frames = np.zeros((B, len(frame_idx), *x_ref.shape[2:]), dtype=np.uint8)
    passes = np.zeros(B, dtype=int)
    stopped_t = np.zeros(B, dtype=int)
    streak = torch.zeros(B, dtype=torch.long)
    result = torch.zeros_like(x_ref)
    active = torch.arange(B)
    fi = 0
    with frozen(unet, classifier):
        for i, t in enumerate(ts):
            idx = active.to(device)
            xt = x[idx].detach().requires_grad_(True)
            with torch.enable_grad():
                eps = unet(xt, torch.full((len(idx),), t, device=device, dtype=torch.long)).sample
                out = sch.step(eps, t, xt, generator=[gens[j] for j in active.tolist()])
                x0_hat = out.pred_original_sample
                loss, probs = objective(classifier, x0_hat, x_ref[idx], target[idx], cfg.s_cls, cfg.s_close)
                (g,) = torch.autograd.grad(loss.sum(), xt)
            passes[active.numpy()] += 1
            p_t = probs.detach().gather(1, target[idx][:, None])[:, 0].cpu().numpy()
            curve[active.numpy(), i] = p_t
            # Adam normalisation of the gradient, per element, bias-corrected with the step count.
            k = i + 1
            m[idx] = b1 * m[idx] + (1 - b1) * g
            v[idx] = b2 * v[idx] + (1 - b2) * g * g
            g_hat = (m[idx] / (1 - b1 ** k)) / ((v[idx] / (1 - b2 ** k)).sqrt() + cfg.adam_eps)
            prev_t = ts[i + 1] if i + 1 < S else -1
            sigma2 = _posterior_variance(acp, t, prev_t)
            prev = out.prev_sample.detach() if cfg.sampler == "ddpm" else \
                _ddim_prev(acp, t, prev_t, xt.detach(), x0_hat.detach())
            x_new = prev + sigma2 * cfg.eta * g_hat
            x[idx] = x_new
            x0_01 = from_model(x0_hat.detach())
            if i in frame_idx:
                frames[active.numpy(), fi] = to_uint8(x0_01)
            flip = probs.detach().argmax(1) == target[idx]
            streak[active] = torch.where(flip.cpu(), streak[active] + 1, torch.zeros_like(streak[active]))
            last = i == S - 1
            done = torch.ones(len(idx), dtype=torch.bool) if last else \
                (streak[active] >= cfg.early_stop) if cfg.early_stop > 0 else torch.zeros(len(idx), dtype=torch.bool)
            if done.any():
                fin = active[done]
                # The result: the final sample at t = 0, or the one-step estimate where the flip held.
                res = from_model(x_new[done.to(device)]) if last else x0_01[done.to(device)]
                result[fin.to(device)] = res
                stopped_t[fin.numpy()] = 0 if last else t
                if not last:
                    # a stopped sample's later frames show its result
                    frames[fin.numpy(), fi + (1 if i in frame_idx else 0):] = to_uint8(res)[:, None]
                active = active[~done]
            if i in frame_idx:
                fi += 1
            if progress:
                progress(i + 1, S)
            if len(active) == 0:
                break
        images = quantize01(result)
        with torch.no_grad():
            final_probs = F.softmax(classifier(images), dim=1).cpu().numpy()
    return GuidanceOutput(images=images.cpu(), probs=final_probs, prob_curve=curve, curve_t=np.array(ts),
                          trajectory=frames, trajectory_t=np.array([ts[j] for j in frame_idx]),
                          unet_passes=passes, stopped_t=stopped_t, seconds=time.monotonic() - t0,
                          config=cfg.as_dict())


def affirmative(unet, scheduler, classifier, counterfactual: torch.Tensor, original_class: torch.Tensor,
                cfg: GuidanceConfig, seeds: int | list[int] = 0, device: str | torch.device = "cpu",
                progress: Callable[[int, int], None] | None = None) -> GuidanceOutput:
    """The same guidance from the counterfactual back to the original class (reference = the counterfactual)."""
    return guided_diffusion(unet, scheduler, classifier, counterfactual, original_class, cfg, seeds, device, progress)


@register("diffusion", generator_kind="ddpm")
def diffusion_method(classifier, x_ref, target, generator, device="cpu", progress=None, preset: str = "fast",
                     seeds=0, **overrides) -> CounterfactualBatch:
    """Registry entry: generator = (unet, scheduler); overrides are GuidanceConfig fields (steps, t_start, eta, …)."""
    unet, scheduler = generator
    cfg = _preset(preset, **overrides)
    out = guided_diffusion(unet, scheduler, classifier, x_ref, target, cfg, seeds=seeds, device=device,
                           progress=progress)
    return CounterfactualBatch(images=out.images, probs=out.probs, prob_curve=out.prob_curve,
                               unet_passes=out.unet_passes, seconds=out.seconds, trajectory=out.trajectory,
                               trajectory_t=out.trajectory_t, curve_t=out.curve_t,
                               config={"preset": preset, **out.config})


_preset = preset  # the registry entry's `preset` argument shadows the function's name
