"""Shared classifier shell: input normalisation, features/head split and the GradCAM target layer."""
from __future__ import annotations

import torch
import torch.nn as nn


class Classifier(nn.Module):
    """Subclasses set self.stem_blocks (nn.ModuleList of feature blocks) and self.head (features → logits)."""

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
        x = (x - self.mean) / self.std
        for b in self.blocks:
            x = b(x)
        return x

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
