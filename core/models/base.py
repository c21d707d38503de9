"""Shared classifier shell: input normalisation, resizing to the model's input size, features/head split and the
GradCAM target layer."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def resize_input(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """(N, C, H, W) → (N, C, size, size), bilinear (antialiased when shrinking); unchanged when size is None or met.

    Differentiable, so GradCAM, eXBL and counterfactual gradients reach the native-size input through it.
    """
    if not size or tuple(x.shape[-2:]) == (size, size):
        return x
    shrink = x.shape[-2] > size or x.shape[-1] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


class Classifier(nn.Module):
    """Subclasses set self.stem_blocks (nn.ModuleList of feature blocks) and self.head (features → logits)."""

    input_size: int | None = None  # side the network sees; images of another size are resized in forward_features

    def __init__(self, blocks: list[nn.Module], head: nn.Module, mean: float = 0.5, std: float = 0.25):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)

    @property
    def feature_layer(self) -> nn.Module:
        return self.blocks[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = (resize_input(x, self.input_size) - self.mean) / self.std
        for b in self.blocks:
            x = b(x)
        return x

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
