"""Networks of "the user's own code" for the import tests (python:tests.byom_nets:FACTORY)."""
from __future__ import annotations

import torch
import torch.nn as nn


class DictNet(nn.Module):
    """A small CNN whose forward returns a dict, as many research codebases do."""

    def __init__(self, num_classes: int = 4, in_chans: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        f = self.body(self.stem(x))
        return {"logits": self.fc(f.mean((2, 3))), "features": f}


def dict_net(num_classes: int = 4, in_chans: int = 3) -> nn.Module:
    return DictNet(num_classes, in_chans)


def mlp(num_classes: int = 4) -> nn.Module:
    """No spatial layer at all: the target-layer rule cannot handle it and must say so."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 32), nn.ReLU(),
                         nn.Linear(32, num_classes))


def not_a_module(num_classes: int = 4):
    return torch.zeros(num_classes)
