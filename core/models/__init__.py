"""Classifier registry (timm-style): create_model(arch) → a classifier taking images in [0, 1].

Two kinds of arch name: Exemplar's own (core.registries.ARCHITECTURES) and an outside network
`SOURCE:NAME` (torchvision:…, timm:…, python:pkg.mod:factory; core.models.imported). Every explanation reads either
through one hook at its target layer (core.models.target), never through forward_features / forward_head.

Exemplar's own classifiers take images in [0, 1], shape (N, in_chans, H, W), normalise inside, and expose (the
head split is read only to replay the head without dropout for training CAMs, core.xbl.cam.cam_logits):
- forward_features(x) → the last convolutional block's activations (N, C, h, w);
- forward_head(f) → logits (N, num_classes);
- feature_layer: the module whose output forward_features returns (GradCAM's target layer);
- blocks: an ordered list of feature blocks, for freezing the first K (freeze_blocks);
- input_size: the side it was trained at (None: any); images of another size are resized on the fly inside
  forward_features, so callers feed images at their native size and maps come back at that size.
"""
from __future__ import annotations

import torch.nn as nn

from core.registries import ARCHITECTURES
from core.registry import load


def list_archs() -> list[str]:
    """Exemplar's own architectures (core.registries.ARCHITECTURES, each with its builder's entry point)."""
    return sorted(ARCHITECTURES.names())


def create_model(arch: str, num_classes: int = 4, in_chans: int = 1, input_size: int | None = None,
                 **kwargs) -> nn.Module:
    from core.models.imported import create_imported, is_imported

    if is_imported(arch):
        return create_imported(arch, num_classes=num_classes, input_size=input_size, **kwargs)
    spec = ARCHITECTURES.get(arch)  # an unknown name: one line naming the architectures
    if input_size is not None and not 16 <= int(input_size) <= 1024:
        raise ValueError(f"input size must be between 16 and 1024 px, got {input_size}")
    model = load(spec.entry)(num_classes=num_classes, in_chans=in_chans, **kwargs)
    model.arch = arch
    model.input_size = int(input_size) if input_size else None
    return model


def stages(model: nn.Module) -> list[nn.Module]:
    """The ordered stages of any classifier: Exemplar's blocks then its head, or an imported network's stages
    (core.models.imported.stage_list)."""
    if hasattr(model, "net"):
        from core.models.imported import stage_list

        return stage_list(model.net)
    return [*model.blocks, model.head]


def freeze_blocks(model: nn.Module, k: int) -> None:
    """Freeze the first k feature stages (the eXBL paper froze MobileNetV2's early layers); the last stage (the
    head) always trains."""
    units = stages(model)
    if k >= len(units) - 1:
        raise ValueError(f"--freeze-blocks {k} would freeze all {len(units) - 1} feature blocks")
    for block in units[:k]:
        for p in block.parameters():
            p.requires_grad_(False)


def train_last(model: nn.Module, k: int) -> None:
    """Train only the last k stages (the head is the last): every other weight is frozen."""
    units = stages(model)
    if not 1 <= k <= len(units):
        raise ValueError(f"--train-last must be between 1 and {len(units)} (this network's stages), got {k}")
    for p in model.parameters():
        p.requires_grad_(False)
    for block in units[-k:]:
        for p in block.parameters():
            p.requires_grad_(True)
