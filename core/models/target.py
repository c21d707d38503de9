"""The GradCAM target layer of any network, read through one forward hook (docs/architecture.md, "Target layers").

Every explanation and every explanation loss reads the network here: a forward hook at the named module turns its
output into a grid (N, C, h, w) and hands the rest of the network the same values rebuilt from that grid, so
∂logits/∂grid comes from torch.autograd.grad (with create_graph for training) and no architecture needs a
hand-written features / head split. Layouts, as pytorch-grad-cam's reshape transforms:
- "nchw": a convolutional output, used as it is;
- "nhwc": a channels-last output (torchvision / timm Swin stages), permuted;
- "tokens": (N, T, C) transformer tokens; the first `prefix` (class, distillation, register) tokens are dropped
  and the rest laid out on the h × w patch grid.

choose_target() is the one rule: trace a forward and a backward on two random images, keep the modules whose output
reads as a spatial grid (h, w > 1, the image's aspect), and take the last one (in the order outputs complete) whose
grid carries gradient to the logits and has the channels of the last such grid. For a CNN that is the last spatial
block before global pooling; for an average-pooled transformer (Swin, ViT with avg pool) the last block; for a
class-token ViT / DeiT, whose patch tokens stop reaching the logits after the last attention, the last block's
first norm (the input its attention reads), as pytorch-grad-cam advises.
"""
from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel

LAYOUTS = ("nchw", "nhwc", "tokens")
_SKIP = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout)


@dataclass(frozen=True)
class TargetSpec:
    """Where GradCAM reads a network: a module path (relative to the hooked root) and how its output is laid out."""
    name: str
    layout: str = "nchw"
    prefix: int = 0  # tokens dropped before the patch grid (layout "tokens")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LayerInfo:
    """One candidate layer: its name, the grid shape [C, h, w] GradCAM would see, and its layout."""
    name: str
    shape: tuple[int, int, int]
    layout: str
    prefix: int = 0
    carries_gradient: bool = True

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "layout": self.layout, "prefix": self.prefix,
                "carries_gradient": self.carries_gradient}


class TargetRefused(ValueError):
    """No usable target layer: the message names --target-layer."""


def _prefix_tokens(t: int, hint: int | None, aspect: float) -> int | None:
    """Tokens before the patch grid: the network's own count when it says (timm's num_prefix_tokens), else the
    fewest (0..8) that leave a grid of the image's aspect with h, w > 1."""
    options = [hint] if hint is not None else range(0, 9)
    for k in options:
        n = t - k
        if n < 4:
            continue
        h = math.isqrt(round(n / aspect)) if aspect != 1 else math.isqrt(n)
        if h > 1 and n % h == 0 and n // h > 1 and abs((n // h) / h - aspect) < 1e-6 * max(1.0, aspect) + 1e-9:
            return k
    return None


def read_layout(out, image_hw: tuple[int, int], prefix_hint: int | None = None) -> tuple[str, int] | None:
    """(layout, prefix) when `out` reads as a spatial grid of an image of size image_hw, else None."""
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        return None
    aspect = image_hw[1] / image_hw[0]

    def fits(h: int, w: int) -> bool:
        return h > 1 and w > 1 and abs(w / h - aspect) <= 0.15 * aspect

    if out.dim() == 4:
        _, a, b, c = out.shape
        if a == b and b != c and fits(a, b) and aspect == 1:
            return "nhwc", 0
        if fits(b, c):
            return "nchw", 0
        if fits(a, b):
            return "nhwc", 0
        return None
    if out.dim() == 3:
        k = _prefix_tokens(int(out.shape[1]), prefix_hint, aspect)
        return ("tokens", k) if k is not None else None
    return None


def _grid_hw(t: int, aspect: float) -> tuple[int, int]:
    h = math.isqrt(round(t / aspect)) if aspect != 1 else math.isqrt(t)
    return h, t // h


def to_grid(out: torch.Tensor, layout: str, prefix: int = 0, aspect: float = 1.0) -> torch.Tensor:
    """A layer's output → (N, C, h, w)."""
    if layout == "nchw":
        return out
    if layout == "nhwc":
        return out.permute(0, 3, 1, 2)
    n, t, c = out.shape
    h, w = _grid_hw(t - prefix, aspect)
    return out[:, prefix:].reshape(n, h, w, c).permute(0, 3, 1, 2)


def from_grid(grid: torch.Tensor, out: torch.Tensor, layout: str, prefix: int = 0) -> torch.Tensor:
    """The inverse of to_grid: what the rest of the network reads (the prefix tokens taken from `out`)."""
    if layout == "nchw":
        return grid
    if layout == "nhwc":
        return grid.permute(0, 2, 3, 1)
    n, c = grid.shape[:2]
    patches = grid.permute(0, 2, 3, 1).reshape(n, -1, c)
    return torch.cat([out[:, :prefix], patches], 1) if prefix else patches


def target_spec(model: nn.Module) -> TargetSpec:
    """The model's target: its `target` attribute (imported networks), else its `feature_layer` (Exemplar's own
    classifiers: the last feature block, NCHW)."""
    spec = getattr(model, "target", None)
    if isinstance(spec, TargetSpec):
        return spec
    layer = getattr(model, "feature_layer", None)  # a module that names its own layer (a convolutional output)
    if isinstance(layer, nn.Module):
        for name, mod in model.named_modules():
            if mod is layer:
                return TargetSpec(name)
    raise TargetRefused(f"{type(model).__name__} has no target layer; name one with --target-layer")


def target_module(model: nn.Module) -> nn.Module:
    return model.get_submodule(target_spec(model).name)


@contextmanager
def _hooked(model: nn.Module, detach: bool, grad_after: bool = True) -> Iterator[dict]:
    spec = target_spec(model)
    module = model.get_submodule(spec.name)
    box: dict = {}

    def hook(_mod, _inp, out):
        if not isinstance(out, torch.Tensor):
            raise TargetRefused(f"target layer {spec.name!r} returns {type(out).__name__}, not a tensor; "
                                f"choose another with --target-layer")
        aspect = box["aspect"]
        grid = to_grid(out, spec.layout, spec.prefix, aspect)
        if detach and grad_after:
            torch.set_grad_enabled(True)  # the layers after the target are recorded, those before were not
            grid = grid.detach().requires_grad_(True)
        elif not grid.requires_grad and torch.is_grad_enabled():
            grid = grid.detach().requires_grad_(True)
        box["grid"] = grid
        rest = from_grid(grid, out.detach() if detach else out, spec.layout, spec.prefix)
        # the layers after the target get their own copy: an in-place op there (DenseNet's F.relu(inplace=True))
        # must not change the grid GradCAM reads
        return rest if spec.layout == "tokens" and spec.prefix else rest.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def target_forward(model: nn.Module, x: torch.Tensor, detach: bool = False,
                   read_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(grid (N, C, h, w) at the target layer, logits) from one forward of the whole network.

    detach=True (display maps, reference anchors, evaluation): the layers before the target run without a graph,
    exactly the cost of inference, and the grid is a leaf that requires grad, so ∂logits/∂grid runs through the
    layers after the target alone. detach=False (training): the graph reaches the weights before the target too.
    read_only=True: no graph anywhere (features for a metric, e.g. realism's embedding).
    """
    detach = detach or read_only
    outer = torch.is_grad_enabled()
    # training maps are differentiated twice (create_graph): attention must use the math kernel, the fused CPU /
    # flash kernels have no double backward
    kernel = nullcontext() if detach else sdpa_kernel([SDPBackend.MATH])
    with kernel, _hooked(model, detach, grad_after=not read_only) as box:
        box["aspect"] = x.shape[-1] / x.shape[-2]
        try:
            if detach:
                torch.set_grad_enabled(False)
            logits = model(x)
        finally:
            torch.set_grad_enabled(outer)
    if "grid" not in box:
        raise TargetRefused(f"target layer {target_spec(model).name!r} did not run in the forward pass; "
                            f"choose another with --target-layer")
    return box["grid"], logits


def _probe_score(logits: torch.Tensor, head_in: list) -> torch.Tensor:
    """A scalar that depends on everything the logits can read: their sum plus a fixed random projection of the
    last linear layer's input (a freshly built head may be all zeros, as torchvision's ViT initialises it)."""
    score = logits.float().sum()
    if head_in and isinstance(head_in[-1], torch.Tensor) and head_in[-1].requires_grad:
        h = head_in[-1]
        r = torch.randn(h.shape, generator=torch.Generator().manual_seed(1)).to(h.device, h.dtype)
        score = score + (h * r).sum()
    return score


def _trace(root: nn.Module, model: nn.Module, x: torch.Tensor, prefix_hint: int | None) -> list[LayerInfo]:
    """Every module of `root` whose (last) output reads as a grid, in the order outputs complete, with whether its
    grid gets a non-zero gradient from the logits. Modules called more than once are left out (ambiguous)."""
    seen: dict[str, dict] = {}
    order: list[str] = []
    hw = tuple(x.shape[-2:])
    handles = []

    def make(name):
        def hook(_m, _i, out):
            rec = seen.setdefault(name, {"calls": 0})
            rec["calls"] += 1
            lay = read_layout(out, hw, prefix_hint)
            if name in order:
                order.remove(name)
            order.append(name)
            if lay is None:
                rec["grid"] = None
                return None
            grid = to_grid(out, lay[0], lay[1], hw[1] / hw[0])
            rec.update(grid=grid, layout=lay)
            rest = from_grid(grid, out, *lay)
            return rest if lay[0] == "tokens" and lay[1] else rest.clone()
        return hook

    head_in: list = []
    for name, mod in root.named_modules():
        if name and not isinstance(mod, _SKIP):
            handles.append(mod.register_forward_hook(make(name)))
        if isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_pre_hook(lambda _m, inp: head_in.append(inp[0])))
    try:
        with torch.enable_grad():
            logits = model(x.requires_grad_(True))
            if not isinstance(logits, torch.Tensor):
                raise TargetRefused("the network's output is not a tensor of logits")
            recs = [(n, seen[n]) for n in order if seen[n].get("grid") is not None and seen[n]["calls"] == 1]
            grads = torch.autograd.grad(_probe_score(logits, head_in), [r["grid"] for _, r in recs],
                                        allow_unused=True) if recs else []
    finally:
        for h in handles:
            h.remove()
    return [LayerInfo(n, tuple(int(s) for s in r["grid"].shape[1:]), r["layout"][0], r["layout"][1],
                      bool(g is not None and float(g.abs().sum()) > 0)) for (n, r), g in zip(recs, grads)]


def candidate_layers(root: nn.Module, model: nn.Module, size: int, channels: int,
                     prefix_hint: int | None = None) -> list[LayerInfo]:
    """Candidate target layers of `root` (a submodule of `model`, or model itself), traced on two random images
    of `size` px in [0, 1]; names are relative to `root`."""
    was = model.training
    model.eval()
    try:
        x = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0),
                       device=next(iter(model.parameters()), torch.empty(0)).device)
        return _trace(root, model, x, prefix_hint)
    finally:
        model.train(was)


def choose_target(layers: list[LayerInfo]) -> LayerInfo:
    """The rule (module docstring): the last grid that carries gradient, with the channels of the last grid."""
    live = [l for l in layers if l.carries_gradient]
    if not live:
        raise TargetRefused("no layer with a spatial output that reaches the logits was found; "
                            "name one with --target-layer (see `exemplar models layers`)")
    width = layers[-1].shape[0]
    for l in reversed(layers):
        if l.carries_gradient and l.shape[0] == width:
            return l
    return live[-1]


def pick_layer(layers: list[LayerInfo], name: str) -> LayerInfo:
    """The user's --target-layer among the candidates, or a one-line refusal naming some candidates."""
    for l in layers:
        if l.name == name:
            return l
    tail = ", ".join(l.name for l in layers[-5:]) or "none"
    raise TargetRefused(f"--target-layer {name!r} is not a layer with a spatial or token output of this network; "
                        f"candidates end with: {tail}")
