"""AttGAN-like GAN for GCI: encoder–decoder generator G(I; A), discriminator with adversarial + attribute heads.

G(I; A) = decoder(encoder(I), A): the attribute vector A (class one-hot, plus known attributes such as the
marker corner and lesion flags) is tiled and injected at the bottleneck and the first decoder layer; one
encoder skip connection at the innermost level keeps detail (AttGAN's shortcut_layers=1). Trained with
reconstruction (L1 of G(I; A) vs I), adversarial (hinge, spectral-norm D) and attribute-classification losses
(D's attribute head on real images with their attributes; on edited images G(I; B) with the target B).
Images are in [0, 1], shape (N, C, H, W); H = W a power of two ≥ 16.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm

# ----------------------------------------------------------------------------------------------------------
# Attribute vectors


@dataclass
class AttrGroup:
    """One attribute: `onehot` (exactly one of `values`, e.g. class or marker corner) or `flag` (a scalar in [0, 1])."""

    name: str
    kind: str  # "onehot" | "flag"
    values: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in ("onehot", "flag"):
            raise ValueError(f"attribute {self.name!r}: kind must be 'onehot' or 'flag', got {self.kind!r}")
        if self.kind == "onehot" and len(self.values) < 2:
            raise ValueError(f"one-hot attribute {self.name!r} needs at least two values")

    @property
    def dim(self) -> int:
        return len(self.values) if self.kind == "onehot" else 1


class AttrSpec:
    """The layout of an attribute vector: groups concatenated in order (one-hot blocks and scalar flags)."""

    def __init__(self, groups: list[AttrGroup]):
        if not groups:
            raise ValueError("an attribute spec needs at least one group")
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise ValueError(f"attribute names must be unique: {names}")
        self.groups = list(groups)
        self.slices: dict[str, slice] = {}
        o = 0
        for g in self.groups:
            self.slices[g.name] = slice(o, o + g.dim)
            o += g.dim
        self.dim = o

    def __getitem__(self, name: str) -> AttrGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no attribute {name!r}; have {[g.name for g in self.groups]}")

    def to_json(self) -> list[dict]:
        return [{"name": g.name, "kind": g.kind, "values": list(g.values)} for g in self.groups]

    @classmethod
    def from_json(cls, obj: list[dict]) -> "AttrSpec":
        return cls([AttrGroup(d["name"], d["kind"], list(d.get("values", []))) for d in obj])

    def encode(self, rows: list[dict]) -> np.ndarray:
        """Rows of {group name: value name (one-hot) or number (flag)} → float32 (N, dim)."""
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        for i, r in enumerate(rows):
            for g in self.groups:
                v = r[g.name]
                sl = self.slices[g.name]
                if g.kind == "onehot":
                    if v not in g.values:
                        raise ValueError(f"attribute {g.name!r}: unknown value {v!r}; known {g.values}")
                    out[i, sl.start + g.values.index(v)] = 1.0
                else:
                    out[i, sl.start] = float(v)
        return out

    def decode(self, vec) -> dict:
        """One vector → {group: value name (argmax) for one-hot, float for flags}."""
        v = np.asarray(vec, dtype=np.float64).reshape(-1)
        out = {}
        for g in self.groups:
            sl = self.slices[g.name]
            out[g.name] = g.values[int(np.argmax(v[sl]))] if g.kind == "onehot" else float(v[sl.start])
        return out

    def set_value(self, vec: np.ndarray, name: str, value) -> np.ndarray:
        """A copy of vec(s) with one group set: a value name for one-hot, a number for flags."""
        g = self[name]
        out = np.array(vec, dtype=np.float32, copy=True)
        sl = self.slices[name]
        if g.kind == "onehot":
            out[..., sl] = 0.0
            out[..., sl.start + g.values.index(value)] = 1.0
        else:
            out[..., sl.start] = float(value)
        return out


def class_only_spec(classes: list[str]) -> AttrSpec:
    """The attribute spec for a dataset with no known attributes besides the label."""
    return AttrSpec([AttrGroup("class", "onehot", list(classes))])


# SynthCXR's known attributes (images.meta of a SynthCXR import): marker corner, lesion sides, lesion opacity.
SEVERITY_MAX = 1.25  # SynthCXR draws lesion severity in [0.6, 1.25]; opacity = severity / SEVERITY_MAX


def synthcxr_spec(classes: list[str]) -> AttrSpec:
    from core.data.synthcxr import CORNERS

    return AttrSpec([AttrGroup("class", "onehot", list(classes)), AttrGroup("marker", "onehot", list(CORNERS)),
                     AttrGroup("lesion_left", "flag"), AttrGroup("lesion_right", "flag"),
                     AttrGroup("opacity", "flag")])


def has_synthcxr_attributes(metas: list[dict]) -> bool:
    keys = ("marker_corner", "lesion_left", "lesion_right", "severity")
    return bool(metas) and all(all(k in (m or {}) for k in keys) for m in metas)


def synthcxr_rows(classes: list[str], labels, metas: list[dict]) -> list[dict]:
    """Per-image attribute rows for synthcxr_spec from labels and images.meta."""
    return [{"class": classes[int(y)], "marker": m["marker_corner"], "lesion_left": float(m["lesion_left"]),
             "lesion_right": float(m["lesion_right"]),
             "opacity": min(1.0, max(0.0, float(m["severity"]) / SEVERITY_MAX))}
            for y, m in zip(labels, metas)]


def random_targets(spec: AttrSpec, a: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Edit targets for a batch: each group shuffled independently across the batch (keeps each marginal)."""
    b = a.clone()
    n = a.shape[0]
    for g in spec.groups:
        sl = spec.slices[g.name]
        perm = torch.randperm(n, generator=generator)
        b[:, sl] = a[perm][:, sl]
    return b


# ----------------------------------------------------------------------------------------------------------
# Networks


def _n_down(size: int) -> int:
    n = int(round(math.log2(size / 4)))
    if size < 16 or 4 * 2 ** n != size:
        raise ValueError(f"GAN image size must be a power of two ≥ 16, got {size}")
    return n


def _up(cin: int, cout: int, up: str, bias: bool) -> nn.Module:
    """×2 upsampling: a 4×4 stride-2 transposed conv (AttGAN), or nearest upsampling + 3×3 conv (no checkerboard)."""
    if up == "convT":
        return nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=bias))


class GANGenerator(nn.Module):
    """Encoder (stride-2 convs down to 4×4) → decoder (transposed convs) with the attribute vector injected."""

    def __init__(self, attr_dim: int, size: int = 64, in_chans: int = 1, width: int = 32, max_width: int = 256,
                 skips: int = 1, up: str = "convT"):
        super().__init__()
        if up not in ("convT", "nearest"):
            raise ValueError(f"up must be 'convT' (transposed conv) or 'nearest' (upsample + conv), got {up!r}")
        self.attr_dim, self.size, self.in_chans, self.width, self.max_width = attr_dim, size, in_chans, width, max_width
        self.up = up
        n = _n_down(size)
        self.skips = max(0, min(skips, n - 1))
        chans = [min(width * 2 ** i, max_width) for i in range(n)]
        self.enc_chans = chans
        self.enc = nn.ModuleList()
        cin = in_chans
        for c in chans:
            self.enc.append(nn.Sequential(nn.Conv2d(cin, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c),
                                          nn.LeakyReLU(0.2, inplace=True)))
            cin = c
        self.dec = nn.ModuleList()
        cin = chans[-1] + attr_dim
        for i in range(n - 1):
            cout = chans[-2 - i]
            self.dec.append(nn.Sequential(_up(cin, cout, up, bias=False), nn.BatchNorm2d(cout),
                                          nn.ReLU(inplace=True)))
            cin = cout
            if i < self.skips:  # skip from the encoder level of the same resolution
                cin += chans[-2 - i]
            if i == 0:  # inject the attributes once more after the first decoder layer (AttGAN inject_layers=1)
                cin += attr_dim
        self.out = _up(cin, in_chans, up, bias=True)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, h = [], x * 2 - 1
        for layer in self.enc:
            h = layer(h)
            feats.append(h)
        return feats

    def decode(self, feats: list[torch.Tensor], a: torch.Tensor) -> torch.Tensor:
        a = a.to(feats[-1].dtype) * 2 - 1  # AttGAN feeds attributes as ±1
        h = feats[-1]
        h = torch.cat([h, a[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])], 1)
        for i, layer in enumerate(self.dec):
            h = layer(h)
            if i < self.skips:
                h = torch.cat([h, feats[-2 - i]], 1)
            if i == 0:
                h = torch.cat([h, a[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])], 1)
        return torch.sigmoid(self.out(h))

    def forward(self, x: torch.Tensor, a: torch.Tensor, dz: torch.Tensor | None = None) -> torch.Tensor:
        """G(x; a), optionally with a latent offset dz added to the bottleneck (GCI's unknown-attribute mode)."""
        feats = self.encode(x)
        if dz is not None:
            feats = feats[:-1] + [feats[-1] + dz]
        return self.decode(feats, a)


class GANDiscriminator(nn.Module):
    """Spectral-norm conv trunk → adversarial head (one logit) and attribute head (attr_dim logits)."""

    def __init__(self, attr_dim: int, size: int = 64, in_chans: int = 1, width: int = 32, max_width: int = 256,
                 fc: int = 64):
        super().__init__()
        self.width = width
        n = _n_down(size)
        layers, cin = [], in_chans
        for i in range(n):
            c = min(width * 2 ** i, max_width)
            layers += [spectral_norm(nn.Conv2d(cin, c, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            cin = c
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        flat = cin * 16
        self.adv = nn.Sequential(spectral_norm(nn.Linear(flat, fc)), nn.LeakyReLU(0.2, inplace=True),
                                 spectral_norm(nn.Linear(fc, 1)))
        self.cls = nn.Sequential(nn.Linear(flat, fc), nn.LeakyReLU(0.2, inplace=True), nn.Linear(fc, attr_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x * 2 - 1)
        return self.adv(h).squeeze(1), self.cls(h)


def build_gan(spec: AttrSpec, size: int = 64, in_chans: int = 1, width: int = 32, max_width: int = 256,
              skips: int = 1, d_width: int | None = None, up: str = "convT") -> tuple[GANGenerator, GANDiscriminator]:
    G = GANGenerator(spec.dim, size, in_chans, width, max_width, skips, up)
    D = GANDiscriminator(spec.dim, size, in_chans, d_width or width, max_width)
    return G, D


def gan_config(G: GANGenerator, spec: AttrSpec, D: GANDiscriminator | None = None) -> dict:
    """The JSON config that rebuilds G (and D) from a checkpoint."""
    return {"kind": "gan", "arch": "attgan", "size": G.size, "in_chans": G.in_chans, "width": G.width,
            "max_width": G.max_width, "skips": G.skips, "up": G.up, "d_width": D.width if D is not None else G.width,
            "attributes": spec.to_json()}


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@dataclass
class GANBundle:
    """A loaded GAN: generator, discriminator (None when the checkpoint has none), attribute spec, config."""

    G: GANGenerator
    D: GANDiscriminator | None
    spec: AttrSpec
    config: dict

    def modules(self) -> nn.ModuleDict:
        """What a checkpoint stores: keys G.* and D.*."""
        return nn.ModuleDict({"G": self.G, **({"D": self.D} if self.D is not None else {})})

    @torch.no_grad()
    def estimate_attributes(self, images: torch.Tensor) -> np.ndarray:
        """Attributes of images without known ones, read by D's attribute head (one-hot argmax, flags by sigmoid)."""
        if self.D is None:
            raise ValueError("this GAN checkpoint has no discriminator to estimate attributes with")
        self.D.eval()
        x = images.to(next(self.D.parameters()).device).float()
        logits = self.D(x if x.ndim == 4 else x[:, None])[1].cpu()
        out = torch.zeros_like(logits)
        for g in self.spec.groups:
            sl = self.spec.slices[g.name]
            if g.kind == "onehot":
                out[:, sl] = F.one_hot(logits[:, sl].argmax(1), g.dim).float()
            else:
                out[:, sl] = torch.sigmoid(logits[:, sl])
        return out.numpy()


def bundle_from_config(cfg: dict, with_d: bool = True) -> GANBundle:
    spec = AttrSpec.from_json(cfg["attributes"])
    G, D = build_gan(spec, size=cfg["size"], in_chans=cfg.get("in_chans", 1), width=cfg["width"],
                     max_width=cfg.get("max_width", 256), skips=cfg.get("skips", 1), d_width=cfg.get("d_width"),
                     up=cfg.get("up", "convT"))
    return GANBundle(G, D if with_d else None, spec, dict(cfg))


def load_gan(path, device: str | torch.device = "cpu") -> GANBundle:
    """Rebuild a GAN from PATH (.safetensors) and the JSON config beside it; D is loaded when stored."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    path = Path(path).with_suffix(".safetensors")
    cfg_path = path.with_suffix(".json")
    if not path.is_file() or not cfg_path.is_file():
        raise FileNotFoundError(f"GAN checkpoint {path} or its config {cfg_path.name} is missing")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("kind") != "gan":
        raise ValueError(f"{path} is not a GAN checkpoint (kind {cfg.get('kind')!r})")
    state = load_file(str(path), device="cpu")
    has_d = any(k.startswith("D.") for k in state)
    b = bundle_from_config(cfg, with_d=has_d)
    b.modules().load_state_dict(state)
    b.G.to(device).eval()
    if b.D is not None:
        b.D.to(device).eval()
    return b


# ----------------------------------------------------------------------------------------------------------
# Losses and training


def attribute_loss(spec: AttrSpec, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per group: cross-entropy for one-hot groups (soft targets allowed), BCE for flags; summed over groups."""
    loss = logits.new_zeros(())
    for g in spec.groups:
        sl = spec.slices[g.name]
        if g.kind == "onehot":
            loss = loss + F.cross_entropy(logits[:, sl], target[:, sl])
        else:
            loss = loss + F.binary_cross_entropy_with_logits(logits[:, sl], target[:, sl].clamp(0, 1))
    return loss


def attribute_accuracy(spec: AttrSpec, logits: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over groups of the share right (argmax for one-hot, > 0.5 for flags)."""
    accs = []
    for g in spec.groups:
        sl = spec.slices[g.name]
        if g.kind == "onehot":
            accs.append((logits[:, sl].argmax(1) == target[:, sl].argmax(1)).float().mean())
        else:
            accs.append(((logits[:, sl] > 0) == (target[:, sl] > 0.5)).float().mean())
    return float(torch.stack(accs).mean())


@dataclass
class GANTrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lambda_rec: float = 100.0  # AttGAN's weights: rec 100, G attribute 10, D attribute 1, adversarial 1
    lambda_cls_g: float = 10.0
    lambda_cls_d: float = 1.0
    lambda_adv: float = 1.0
    seed: int = 0
    log_every: int = 50


def _to_float_images(images) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(images))
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    t = t.float()
    if t.ndim == 3:
        t = t[:, None]
    return t


def train_gan(G: GANGenerator, D: GANDiscriminator, images, attrs, spec: AttrSpec, cfg: GANTrainConfig | None = None,
              device: str | torch.device = "cpu",
              progress: Callable[[int, int, dict | None], None] | None = None) -> list[dict]:
    """Train G and D in place on images (N, H, W) uint8 or (N, C, H, W) in [0, 1] with attrs (N, dim).

    progress(step, steps, metrics_or_None) is called every step (metrics every `log_every` steps and at the
    end); it may raise to stop (the job's cancel). Returns the logged metrics.
    """
    cfg = cfg or GANTrainConfig()
    device = torch.device(device)
    x_all = _to_float_images(images)
    a_all = torch.as_tensor(np.asarray(attrs, dtype=np.float32))
    if x_all.shape[0] != a_all.shape[0] or a_all.shape[1] != spec.dim:
        raise ValueError(f"images {tuple(x_all.shape)} and attributes {tuple(a_all.shape)} do not match "
                         f"(spec dim {spec.dim})")
    n = x_all.shape[0]
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    G.to(device).train()
    D.to(device).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    bs = min(cfg.batch_size, n)
    history: list[dict] = []
    run: dict[str, float] = {}
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, n, (bs,), generator=gen)
        x, a = x_all[idx].to(device), a_all[idx].to(device)
        b = random_targets(spec, a.cpu(), gen).to(device)
        # --- D: hinge adversarial on real vs edited fakes, attribute classification on real images
        with torch.no_grad():
            fake = G(x, b)
        d_real, c_real = D(x)
        d_fake, _ = D(fake)
        d_adv = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        d_cls = attribute_loss(spec, c_real, a)
        d_loss = cfg.lambda_adv * d_adv + cfg.lambda_cls_d * d_cls
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # --- G: fool D on the edit, make D read the target attributes from it, reconstruct with the own attributes
        feats = G.encode(x)
        fake = G.decode(feats, b)
        rec = G.decode(feats, a)
        g_fake, g_cls_logits = D(fake)
        g_adv = -g_fake.mean()
        g_cls = attribute_loss(spec, g_cls_logits, b)
        g_rec = (rec - x).abs().mean()
        g_loss = cfg.lambda_adv * g_adv + cfg.lambda_cls_g * g_cls + cfg.lambda_rec * g_rec
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        for k, v in (("d_adv", d_adv), ("d_cls", d_cls), ("g_adv", g_adv), ("g_cls", g_cls), ("rec_l1", g_rec)):
            run[k] = run.get(k, 0.0) + float(v.detach())
        run["d_attr_acc"] = run.get("d_attr_acc", 0.0) + attribute_accuracy(spec, c_real.detach(), a)
        run["g_attr_acc"] = run.get("g_attr_acc", 0.0) + attribute_accuracy(spec, g_cls_logits.detach(), b)
        run["_n"] = run.get("_n", 0) + 1
        metrics = None
        if step % cfg.log_every == 0 or step == cfg.steps:
            k = run.pop("_n")
            metrics = {"step": step, **{key: round(v / k, 5) for key, v in run.items()},
                       "seconds": round(time.perf_counter() - t0, 2)}
            history.append(metrics)
            run = {}
        if progress is not None:
            progress(step, cfg.steps, metrics)
    G.eval()
    D.eval()
    return history


# ----------------------------------------------------------------------------------------------------------
# Inspection


@torch.no_grad()
def reconstruct(G: GANGenerator, images, attrs, batch_size: int = 128) -> np.ndarray:
    """G(I; A) for every image with its own attributes, float32 (N, C, H, W) in [0, 1]."""
    G.eval()
    dev = next(G.parameters()).device
    x_all = _to_float_images(images)
    a_all = torch.as_tensor(np.asarray(attrs, dtype=np.float32))
    out = [G(x_all[i:i + batch_size].to(dev), a_all[i:i + batch_size].to(dev)).cpu()
           for i in range(0, x_all.shape[0], batch_size)]
    return torch.cat(out).numpy()


def flip_columns(spec: AttrSpec) -> list[tuple[str, str, object]]:
    """The sample grid's edit columns: (label, group, value) — each one-hot value set, each flag toggled."""
    cols: list[tuple[str, str, object]] = []
    for g in spec.groups:
        if g.kind == "onehot":
            cols += [(f"{g.name}={v}", g.name, v) for v in g.values]
        else:
            cols.append((f"{g.name} toggled", g.name, None))
    return cols


@torch.no_grad()
def sample_grid(G: GANGenerator, images, attrs, spec: AttrSpec) -> tuple[np.ndarray, list[str]]:
    """A uint8 grid (rows·H, cols·W): per row an image, then its reconstruction, then each attribute edit.

    Returns the grid and the column labels (original, reconstruction, edits as in flip_columns).
    """
    G.eval()
    dev = next(G.parameters()).device
    x = _to_float_images(images).to(dev)
    a = np.asarray(attrs, dtype=np.float32)
    columns = [x, G(x, torch.as_tensor(a, device=dev))]
    labels = ["original", "reconstruction"]
    for label, name, value in flip_columns(spec):
        if value is None:  # flag: toggle around 0.5
            sl = spec.slices[name]
            b = a.copy()
            b[:, sl] = 1.0 - (b[:, sl] > 0.5)
        else:
            b = spec.set_value(a, name, value)
        columns.append(G(x, torch.as_tensor(b, device=dev)))
        labels.append(label)
    stack = torch.stack(columns, 1)[:, :, 0].clamp(0, 1).cpu().numpy()  # (rows, cols, H, W)
    r, c, h, w = stack.shape
    grid = (stack.transpose(0, 2, 1, 3).reshape(r * h, c * w) * 255).round().astype(np.uint8)
    return grid, labels
