"""GCI search (Liu et al., arXiv 1907.03077): min over A' of λ·CE(f(G(I; A')), c') + ‖I − G(I; A')‖₁.

A' is either the known attributes in a continuous relaxation (softmax over each one-hot group's logits,
sigmoid for flags, started at the image's own attributes) or an unknown latent offset δ added to the
generator's bottleneck (mode "latent", attributes held fixed). Adam on those parameters; a sample stops
once its prediction has been the target for `patience` consecutive steps (a stable flip), and its result
is the image at that step. λ grows by `lam_growth` every `grow_every` steps without a flip, so a sample that
needs a larger edit still gets one (this only rescales the objective's trade-off). Output "residual" (an
Exemplar option, not in the paper) applies only the change the edit makes to the reconstruction,
I + G(I; A') − G(I; A), so detail the generator cannot reproduce is kept.
‖·‖₁ is the mean absolute difference per pixel (the closeness of docs/architecture.md, Definitions). Batched: samples
never interact.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.counterfactual import CounterfactualBatch
from core.registries import attribute_words
from core.generative.gan import AttrSpec, GANBundle, GANGenerator

MODES = ("attributes", "latent")
OUTPUTS = ("generator", "residual")


@dataclass
class GCIConfig:
    mode: str = "attributes"
    lam: float = 0.05  # weight of the classifier term against the mean per-pixel L1
    lr: float = 0.1
    max_steps: int = 200
    patience: int = 3
    lam_growth: float = 2.0
    grow_every: int = 25
    snapshot_every: int = 10
    init_logit: float = 4.0  # how sharply the relaxation starts at the image's own one-hot values
    frozen: tuple[str, ...] = ()  # attribute groups the search may not change
    relax: str = "softmax"  # "softmax" (stay on the simplex / in [0, 1]) or "box" (a0 + offset, may extrapolate)
    extrapolate: float = 0.5  # box only: how far past [0, 1] an attribute may go
    output: str = "generator"  # "generator": I(A') = G(I; A') as in GCI; "residual": I + G(I; A') − G(I; A)


@dataclass
class GCIResult:
    """Per sample (index b): the counterfactual, its attributes or latent offset, metrics and the trajectory."""

    images: np.ndarray  # float32 (B, C, H, W) in [0, 1], at each sample's stop step
    attrs0: np.ndarray  # (B, dim) the starting attributes
    attrs: np.ndarray  # (B, dim) the final attributes (== attrs0 in latent mode)
    latent_norm: np.ndarray  # (B,) ‖δ‖₂ / ‖z‖₂ (0 in attribute mode)
    flipped: np.ndarray  # (B,) bool
    target_prob: np.ndarray  # (B,)
    probs: np.ndarray  # (B, num_classes) classifier probabilities of the result
    l1: np.ndarray  # (B,) mean |I − G(I; A')|
    steps: np.ndarray  # (B,) steps until stop (max_steps when never stable)
    generator_passes: np.ndarray  # (B,) generator forwards (each also one classifier forward + backward)
    seconds: float
    trajectory: dict = field(default_factory=dict)  # per step arrays (T, B): objective, ce, l1, target_prob, lam
    snapshots: list = field(default_factory=list)  # [(step, float32 (B, H, W))] every snapshot_every steps
    attributes_changed: list = field(default_factory=list)  # per sample: list of strings


class _Relaxed(nn.Module):
    """Free parameters θ → attribute vector: softmax per one-hot group and sigmoid per flag ("softmax"), or the
    start plus a free offset, clamped to [−e, 1 + e] ("box"); frozen groups stay fixed."""

    def __init__(self, spec: AttrSpec, a0: torch.Tensor, init_logit: float, frozen: tuple[str, ...],
                 relax: str = "softmax", extrapolate: float = 0.5):
        super().__init__()
        self.spec, self.frozen, self.relax, self.ext = spec, set(frozen), relax, extrapolate
        self.register_buffer("a0", a0.clone())
        theta = torch.zeros_like(a0)
        for g in spec.groups if relax == "softmax" else []:
            sl = spec.slices[g.name]
            if g.kind == "onehot":
                theta[:, sl] = a0[:, sl] * init_logit
            else:
                p = a0[:, sl].clamp(0.02, 0.98)
                theta[:, sl] = torch.log(p / (1 - p))
        self.theta = nn.Parameter(theta)

    def forward(self) -> torch.Tensor:
        parts = []
        for g in self.spec.groups:
            sl = self.spec.slices[g.name]
            if g.name in self.frozen:
                parts.append(self.a0[:, sl])
            elif self.relax == "box":  # a0 + offset, allowed past [0, 1] by `extrapolate` (AttGAN's test intensity)
                parts.append((self.a0[:, sl] + self.theta[:, sl]).clamp(-self.ext, 1 + self.ext))
            elif g.kind == "onehot":
                parts.append(F.softmax(self.theta[:, sl], 1))
            else:
                parts.append(torch.sigmoid(self.theta[:, sl]))
        return torch.cat(parts, 1)


def describe_change(spec: AttrSpec, a0, a1, min_change: float = 0.1) -> list[str]:
    """The attribute change in words: "marker: left-upper → right-lower" when a one-hot group's argmax moves,
    "generator's class input: Normal 1.00 → 0.62" for a large change that keeps the argmax, "opacity: +0.80" for
    flags (group names through core.registries.attribute_words). These strings are stored with the result, so the UI,
    the CLI and exports read the same words."""
    a0 = np.asarray(a0, dtype=np.float64).reshape(-1)
    a1 = np.asarray(a1, dtype=np.float64).reshape(-1)
    out = []
    for g in spec.groups:
        sl = spec.slices[g.name]
        v0, v1 = a0[sl], a1[sl]
        if g.kind == "onehot":
            i0, i1 = int(np.argmax(v0)), int(np.argmax(v1))
            if i0 != i1:
                out.append(f"{attribute_words(g.name)}: {g.values[i0]} → {g.values[i1]}")
            elif np.abs(v1 - v0).max() >= min_change:
                out.append(f"{attribute_words(g.name)}: {g.values[i0]} {v0[i0]:.2f} → {v1[i0]:.2f}")
        else:
            d = float(v1[0] - v0[0])
            if abs(d) >= min_change:
                out.append(f"{attribute_words(g.name)}: {d:+.2f}")
    return out


def gci_search(G: GANGenerator, classifier: nn.Module, images: torch.Tensor, targets, attrs0,
               spec: AttrSpec | None = None, cfg: GCIConfig | None = None, progress=None) -> GCIResult:
    """Counterfactuals for a batch: images (B, C, H, W) in [0, 1], targets (B,) class indices, attrs0 (B, dim).

    G and the classifier are used in eval mode and not changed; only A' (or δ) is optimised.
    """
    cfg = _checked(cfg or GCIConfig(), spec)
    t_start = time.perf_counter()
    dev = next(G.parameters()).device
    G.eval()
    classifier.eval()
    x = images.to(dev).float()
    if x.ndim == 3:
        x = x[:, None]
    B = x.shape[0]
    tgt = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=dev).reshape(B)
    a0 = torch.as_tensor(np.asarray(attrs0, dtype=np.float32), device=dev).reshape(B, -1)
    req = [p.requires_grad for p in G.parameters()] + [p.requires_grad for p in classifier.parameters()]
    for p in list(G.parameters()) + list(classifier.parameters()):
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            feats = G.encode(x)
            z_norm = feats[-1].flatten(1).norm(dim=1).clamp_min(1e-8)
            rec0 = G.decode(feats, a0) if cfg.output == "residual" else None
        if cfg.mode == "attributes":
            relaxed = _Relaxed(spec, a0, cfg.init_logit, cfg.frozen, cfg.relax, cfg.extrapolate).to(dev)
            params = [relaxed.theta]
            dz = None
        else:
            relaxed = None
            dz = torch.zeros_like(feats[-1], requires_grad=True)
            params = [dz]
        opt = torch.optim.Adam(params, lr=cfg.lr, eps=1e-12)  # tiny eps: saturated softmax gradients are tiny
        st = _Search.start(cfg, x, a0, feats[-1])
        for step in range(1, cfg.max_steps + 1):
            a = relaxed() if relaxed is not None else a0
            f = feats if dz is None else feats[:-1] + [feats[-1] + dz]
            out = G.decode(f, a)
            if rec0 is not None:  # keep what G cannot reconstruct; only the attribute-driven change is applied
                out = (x + out - rec0).clamp(0, 1)
            logits = classifier(out)
            ce = F.cross_entropy(logits, tgt, reduction="none")
            l1 = (out - x).abs().flatten(1).mean(1)
            obj = st.lam * ce + l1
            opt.zero_grad(set_to_none=True)
            (obj * (~st.done).float()).sum().backward()
            st.passes += (~st.done).long()
            with torch.no_grad():
                st.record(cfg, step, out, a, dz, logits.softmax(1), tgt, obj, ce, l1)
            if progress is not None:
                progress(step, cfg.max_steps)
            if bool(st.done.all()):
                break
            opt.step()
    finally:
        for p, r in zip(list(G.parameters()) + list(classifier.parameters()), req):
            p.requires_grad_(r)
    latent = (st.res_dz.flatten(1).norm(dim=1) / z_norm).cpu().numpy() if cfg.mode == "latent" else np.zeros(B)
    return _result(cfg, spec, x, tgt, a0, st.res_img, st.res_attr, st.res_probs, latent, st.steps, st.passes,
                   st.traj, st.snaps, t_start)


@dataclass
class _Search:
    """Per-sample state of a GCI search: λ, flip streaks, which samples are done, and each sample's result (image,
    attributes, δ, probabilities) kept at the step it stopped; the trajectory and snapshots for the UI."""
    lam: torch.Tensor
    done: torch.Tensor
    streak: torch.Tensor
    since_flip: torch.Tensor
    steps: torch.Tensor
    passes: torch.Tensor
    res_img: torch.Tensor
    res_attr: torch.Tensor
    res_dz: torch.Tensor
    res_probs: torch.Tensor
    traj: dict = field(default_factory=lambda: {k: [] for k in ("objective", "ce", "l1", "target_prob", "lam")})
    snaps: list = field(default_factory=list)

    @classmethod
    def start(cls, cfg: GCIConfig, x: torch.Tensor, a0: torch.Tensor, z: torch.Tensor) -> "_Search":
        B, dev = x.shape[0], x.device
        zeros = lambda: torch.zeros(B, dtype=torch.long, device=dev)  # noqa: E731
        return cls(lam=torch.full((B,), float(cfg.lam), device=dev), done=torch.zeros(B, dtype=torch.bool, device=dev),
                   streak=zeros(), since_flip=zeros(), steps=torch.full((B,), cfg.max_steps, dtype=torch.long,
                                                                       device=dev),
                   passes=zeros(), res_img=torch.zeros_like(x), res_attr=a0.clone(), res_dz=torch.zeros_like(z),
                   res_probs=torch.zeros(B, 1, device=dev))

    def record(self, cfg: GCIConfig, step: int, out, a, dz, probs, tgt, obj, ce, l1) -> None:
        """After a step: log the trajectory, keep the result of each sample that has flipped for `patience` steps
        (or reached the last step), and grow λ for samples that have gone `grow_every` steps without a flip."""
        if self.res_probs.shape[1] != probs.shape[1]:
            self.res_probs = torch.zeros_like(probs)
        tp = probs.gather(1, tgt[:, None]).squeeze(1)
        flip = probs.argmax(1) == tgt
        for k, v in (("objective", obj), ("ce", ce), ("l1", l1), ("target_prob", tp), ("lam", self.lam)):
            self.traj[k].append(v.detach().cpu().numpy().copy())
        if cfg.snapshot_every and (step == 1 or step % cfg.snapshot_every == 0):
            self.snaps.append((step, out[:, 0].detach().cpu().numpy().copy()))
        self.streak = torch.where(flip, self.streak + 1, torch.zeros_like(self.streak))
        self.since_flip = torch.where(flip, torch.zeros_like(self.since_flip), self.since_flip + 1)
        stop = (~self.done) & ((self.streak >= cfg.patience) | (step == cfg.max_steps))
        if stop.any():
            self.res_img[stop] = out.detach()[stop]
            self.res_attr[stop] = a.detach()[stop]
            self.res_probs[stop] = probs[stop]
            if dz is not None:
                self.res_dz[stop] = dz.detach()[stop]
            self.steps[stop] = step
            self.done |= stop
        grow = (~self.done) & (self.since_flip > 0) & (self.since_flip % cfg.grow_every == 0)
        self.lam = torch.where(grow, self.lam * cfg.lam_growth, self.lam)


def _checked(cfg: GCIConfig, spec: AttrSpec | None) -> GCIConfig:
    """The config, refused with a one-line message when its mode / output is unknown or attributes lack a spec."""
    if cfg.mode not in MODES:
        raise ValueError(f"GCI mode must be one of {MODES}, got {cfg.mode!r}")
    if cfg.output not in OUTPUTS:
        raise ValueError(f"GCI output must be one of {OUTPUTS}, got {cfg.output!r}")
    if cfg.mode == "attributes" and spec is None:
        raise ValueError("attribute mode needs the attribute spec")
    return cfg


def _result(cfg, spec, x, tgt, a0, res_img, res_attr, res_probs, latent, steps, passes, traj, snaps,
            t_start: float) -> GCIResult:
    """The search's tensors as a GCIResult of numpy arrays, with the attribute changes in words."""
    B = x.shape[0]
    tgt_np, probs_np, img_np, x_np = tgt.cpu().numpy(), res_probs.cpu().numpy(), res_img.cpu().numpy(), x.cpu().numpy()
    a_np, a0_np = res_attr.cpu().numpy(), a0.cpu().numpy()
    if cfg.mode == "attributes":
        changed = [describe_change(spec, a0_np[i], a_np[i]) for i in range(B)]
    else:
        changed = [[f"latent offset: ‖δ‖/‖z‖ = {latent[i]:.2f}"] for i in range(B)]
    return GCIResult(
        images=img_np, attrs0=a0_np, attrs=a_np, latent_norm=latent,
        flipped=probs_np.argmax(1) == tgt_np, target_prob=probs_np[np.arange(B), tgt_np], probs=probs_np,
        l1=np.abs(img_np - x_np).reshape(B, -1).mean(1), steps=steps.cpu().numpy(),
        generator_passes=passes.cpu().numpy(), seconds=time.perf_counter() - t_start,
        trajectory={k: np.stack(v) for k, v in traj.items()}, snapshots=snaps, attributes_changed=changed)


def _quantize(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


def gan_method(classifier, x_ref, target, generator: GANBundle, device="cpu", progress=None, mode: str = "attributes",
               attributes=None, **overrides) -> CounterfactualBatch:
    """Registry entry: generator = a GANBundle; `attributes` (B, dim) are the images' known attributes (estimated
    by the discriminator's attribute head when None); overrides are GCIConfig fields (lam, lr, max_steps, …).

    Per-sample extras go into config["per_sample"]: attributes_changed (list of strings), attrs0 / attrs,
    latent_norm, generator_passes, steps, attributes_source.
    """
    fields = GCIConfig.__dataclass_fields__
    cfg = GCIConfig(mode=mode, **{k: v for k, v in overrides.items() if v is not None and k in fields and k != "mode"})
    G = generator.G.to(device)
    x = x_ref.to(device).float()
    x = x if x.ndim == 4 else x[:, None]
    source = "known"
    if attributes is None:
        attributes, source = generator.estimate_attributes(x), "estimated by the discriminator"
    res = gci_search(G, classifier, x, np.asarray(target.cpu() if torch.is_tensor(target) else target),
                     attributes, generator.spec, cfg, progress=progress)
    images = _quantize(torch.as_tensor(res.images))
    with torch.no_grad():
        probs = F.softmax(classifier(images.to(device)), dim=1).cpu().numpy()
    curve = res.trajectory["target_prob"].T.astype(np.float64)  # (B, S)
    steps_t = np.arange(1, curve.shape[1] + 1)
    curve[steps_t[None, :] > res.steps[:, None]] = np.nan  # a sample's curve ends at its stop step
    snaps_t = np.array([s for s, _ in res.snapshots])
    frames = np.stack([f for _, f in res.snapshots], 1) if res.snapshots else None  # (B, F, H, W)
    if frames is not None:  # a stopped sample's later frames show its result
        for b in range(frames.shape[0]):
            frames[b, snaps_t > res.steps[b]] = res.images[b, 0]
        frames = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    per_sample = {"attributes_changed": res.attributes_changed, "attrs0": res.attrs0.round(4).tolist(),
                  "attrs": res.attrs.round(4).tolist(), "latent_norm": res.latent_norm.round(4).tolist(),
                  "generator_passes": res.generator_passes.tolist(), "steps": res.steps.tolist(),
                  "attributes_source": source, "attribute_names": [g.name for g in generator.spec.groups]}
    conf = {k: getattr(cfg, k) for k in fields}
    conf["frozen"] = list(cfg.frozen)
    return CounterfactualBatch(images=images, probs=probs, prob_curve=curve, unet_passes=np.zeros(len(images), int),
                               seconds=res.seconds, trajectory=frames, trajectory_t=snaps_t, curve_t=steps_t,
                               config={"method": "gan", **conf, "per_sample": per_sample})
