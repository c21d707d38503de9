"""A classifier from outside Exemplar (torchvision, timm or the user's own factory), wrapped so the rest of Exemplar
feeds it images in [0, 1] at their native size (docs/architecture.md, "Your own classifier").

ImportedClassifier keeps the network as `net` (so its state dict is the source's with a `net.` prefix), and does the
preprocessing the network was trained with inside forward: resize to the input size, repeat a grey channel for a
3-channel network, normalise with the stored mean / std, and read logits out of whatever the network returns
(a tensor, a tuple, a dict or an object with `.logits`). Its GradCAM layer is a TargetSpec under `net.`.

SOURCES maps each source of core.registries.CLASSIFIER_SOURCES (where a name is written once; the CLI, the Models
page and the tests read it) to its builder.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from core.models.base import resize_input
from core.registries import CLASSIFIER_SOURCES
from core.registry import load
from core.models.target import TargetSpec

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class ImportRefused(ValueError):
    """A network or weights file that cannot be imported; the message says what to change."""


@dataclass(frozen=True)
class Built:
    """A freshly built network and the keyword arguments it was built with (stored, so a reload rebuilds it)."""
    net: nn.Module
    kwargs: dict


def _try_sizes(build: Callable[..., nn.Module], size_kw: str, input_size: int | None, **kw) -> Built:
    """Build with size_kw=input_size when the builder takes it (ViTs trained at 64 px load at 64 px), else without."""
    if input_size:
        try:
            return Built(build(**kw, **{size_kw: int(input_size)}), {**kw, size_kw: int(input_size)})
        except TypeError:
            pass
    return Built(build(**kw), dict(kw))


def build_torchvision(name: str, num_classes: int, channels: int, input_size: int | None, **kw) -> Built:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = [n for n in names if name.split("_")[0] in n][:6]
        raise ImportRefused(f"torchvision has no classification network {name!r}"
                            + (f"; close: {', '.join(close)}" if close else ""))
    if channels != 3:
        raise ImportRefused(f"torchvision:{name} takes 3-channel images; use --channels 3")
    return _try_sizes(lambda **k: torchvision.models.get_model(name, weights=None, **k), "image_size", input_size,
                      num_classes=num_classes, **kw)


def build_timm(name: str, num_classes: int, channels: int, input_size: int | None, **kw) -> Built:
    import timm

    if not timm.is_model(name.split(".")[0]):  # a tagged name (vit_….augreg_in21k) names its architecture first
        raise ImportRefused(f"timm has no network {name!r}; `timm.list_models('*{name.split('_')[0]}*')` lists "
                            f"the close ones")
    return _try_sizes(lambda **k: timm.create_model(name, pretrained=False, **k), "img_size", input_size,
                      num_classes=num_classes, in_chans=channels, **kw)


def build_python(name: str, num_classes: int, channels: int, input_size: int | None, **kw) -> Built:
    """`package.module:factory`: a function of the user's code returning an nn.Module (given num_classes,
    in_chans and img_size when its signature takes them)."""
    mod_name, _, fn_name = name.partition(":")
    if not mod_name or not fn_name:
        raise ImportRefused(f"python:{name} must read python:package.module:factory")
    try:
        factory = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ImportRefused(f"cannot find {fn_name} in {mod_name}: {exc}") from None
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    offered = {"num_classes": num_classes, "in_chans": channels, "img_size": input_size}
    args = {k: v for k, v in offered.items() if k in params and v is not None}
    try:
        net = factory(**args, **kw)
    except BaseException as exc:  # noqa: BLE001  (a factory that exits or raises is refused, never kills the worker)
        raise ImportRefused(f"python:{name}({', '.join(sorted({**args, **kw}))}) failed: "
                            f"{type(exc).__name__}: {exc}; check the factory's arguments (--build-kwargs)") from None
    if not isinstance(net, nn.Module):
        raise ImportRefused(f"python:{name} returned {type(net).__name__}, not a torch nn.Module")
    return Built(net, {**args, **kw})


# each source's builder, by the entry point of its spec (core.registries.CLASSIFIER_SOURCES; the builders are above)
SOURCES: dict[str, Callable[..., Built]] = {s.name: load(s.entry) for s in CLASSIFIER_SOURCES}


def parse_arch(arch: str) -> tuple[str, str]:
    """'torchvision:resnet50' → ('torchvision', 'resnet50'); 'python:pkg.mod:fn' → ('python', 'pkg.mod:fn')."""
    source, sep, name = arch.partition(":")
    if not sep or source not in SOURCES or not name:
        raise ImportRefused(f"--arch {arch!r} must read SOURCE:NAME with SOURCE one of {', '.join(SOURCES)} "
                            f"(e.g. torchvision:resnet50, timm:vit_tiny_patch16_224, python:mypkg.nets:make)")
    return source, name


def is_imported(arch: str) -> bool:
    return arch.partition(":")[0] in SOURCES and ":" in arch


def parse_normalize(text: str | None, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """'imagenet' | 'none' | 'MEAN,STD' (one value each, or one a channel: 'm1,m2,m3,s1,s2,s3') → (mean, std)."""
    text = (text or "imagenet").strip().lower()
    if text == "imagenet":
        if channels == 3:
            return IMAGENET
        return (sum(IMAGENET[0]) / 3,) * channels, (sum(IMAGENET[1]) / 3,) * channels
    if text == "none":
        return (0.0,) * channels, (1.0,) * channels
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) == 2:
        return (vals[0],) * channels, (vals[1],) * channels
    if len(vals) == 2 * channels:
        return tuple(vals[:channels]), tuple(vals[channels:])
    raise ImportRefused(f"--normalize {text!r} must be imagenet, none, MEAN,STD or {channels} means then "
                        f"{channels} stds")


def as_logits(out) -> torch.Tensor:
    """The logits in whatever a network's forward returns."""
    if isinstance(out, torch.Tensor):
        return out.flatten(1) if out.dim() == 4 and out.shape[-2:] == (1, 1) else out
    if isinstance(out, dict):
        for k in ("logits", "out"):
            if isinstance(out.get(k), torch.Tensor):
                return out[k]
    if isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ImportRefused(f"the network returned {type(out).__name__}; Exemplar needs logits (a tensor, or a "
                        f"tuple / dict / object holding them)")


class ImportedClassifier(nn.Module):
    """An outside network with its preprocessing inside; forward(x in [0, 1], any size, 1 or C channels) → logits."""

    def __init__(self, net: nn.Module, arch: str, channels: int, input_size: int | None,
                 mean: tuple[float, ...], std: tuple[float, ...], target: TargetSpec | None = None,
                 build_kwargs: dict | None = None, class_order: list[int] | None = None):
        super().__init__()
        self.net = net
        self.arch = arch
        self.channels = int(channels)
        self.input_size = int(input_size) if input_size else None
        self.build_kwargs = dict(build_kwargs or {})
        self.register_buffer("norm_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("norm_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.class_order = [int(i) for i in class_order] if class_order else None
        self.target_layer: str | None = None
        if target is not None:
            self.set_target(target)

    def set_target(self, spec: TargetSpec) -> None:
        """spec.name is relative to the network (what the user names); the hook path is under `net.`."""
        self.target_layer = spec.name
        self.target = TargetSpec(f"net.{spec.name}", spec.layout, spec.prefix)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = resize_input(x, self.input_size)
        if x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            elif self.channels == 1:
                x = x.mean(1, keepdim=True)
            else:
                raise ValueError(f"{x.shape[1]}-channel images for a {self.channels}-channel network")
        return (x - self.norm_mean) / self.norm_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits in the dataset's class order (class_order[i] = the network's output index of dataset class i)."""
        logits = as_logits(self.net(self.preprocess(x)))
        return logits[:, self.class_order] if self.class_order else logits

    def config(self) -> dict:
        """The arch_kwargs that rebuild this wrapper (core.models.create_model)."""
        spec = self.target
        return {"channels": self.channels, "mean": self.norm_mean.flatten().tolist(),
                "std": self.norm_std.flatten().tolist(), "build_kwargs": self.build_kwargs,
                "class_order": self.class_order,
                "target": {"name": self.target_layer, "layout": spec.layout, "prefix": spec.prefix}}


def build_network(arch: str, num_classes: int, channels: int, input_size: int | None,
                  build_kwargs: dict | None = None, rebuild: bool = False) -> Built:
    """A fresh network. On import input_size is offered to builders that take one, beside the user's own build
    kwargs (e.g. {"patch_size": 8}); on a reload (rebuild) the stored kwargs, img_size included, are passed back."""
    source, name = parse_arch(arch)
    kw = {k: v for k, v in (build_kwargs or {}).items() if k not in ("num_classes", "in_chans")}
    return SOURCES[source](name, num_classes, channels, None if rebuild else input_size, **kw)


def create_imported(arch: str, num_classes: int, input_size: int | None = None, channels: int = 3,
                    mean=None, std=None, target: dict | None = None, build_kwargs: dict | None = None,
                    class_order: list[int] | None = None, **_ignored) -> ImportedClassifier:
    """Rebuild an imported classifier from its stored config (weights are loaded by the caller)."""
    mean = tuple(mean) if mean is not None else IMAGENET[0][:channels]
    std = tuple(std) if std is not None else IMAGENET[1][:channels]
    built = build_network(arch, num_classes, channels, input_size, build_kwargs, rebuild=True)
    spec = TargetSpec(target["name"], target.get("layout", "nchw"), int(target.get("prefix", 0))) if target else None
    return ImportedClassifier(built.net, arch, channels, input_size, mean, std, spec, built.kwargs, class_order)


class LooseParams:
    """The weights a network holds directly (a ViT's class token and position embedding): the first stage."""

    def __init__(self, params: list[nn.Parameter]):
        self._params = params

    def parameters(self):
        return iter(self._params)

    def eval(self):
        return self


def stage_list(net: nn.Module, want: int = 6) -> list:
    """The network's stages in definition order, for "train only the last K": the weights it holds directly (if
    any), then its children with weights, the largest container split into its children until there are `want`
    of them (ViT: tokens, patch_embed, the 12 blocks, norm, head; ResNet: conv1, bn1, layer1..4, fc)."""
    def has_params(m):
        return any(True for _ in m.parameters())

    units = [m for m in net.children() if has_params(m)]
    own = list(net.parameters(recurse=False))
    while len(units) < want:
        splittable = [(sum(p.numel() for p in u.parameters()), i) for i, u in enumerate(units)
                      if isinstance(u, nn.Module) and sum(1 for c in u.children() if has_params(c)) >= 2]
        if not splittable:
            break
        _, i = max(splittable)
        inner = list(units[i].parameters(recurse=False))
        units[i:i + 1] = ([LooseParams(inner)] if inner else []) + [c for c in units[i].children() if has_params(c)]
    return ([LooseParams(own)] if own else []) + units
