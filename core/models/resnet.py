"""resnet18: torchvision's ResNet-18 (weights=None) for grayscale input.

blocks = [stem (conv1, bn1, relu, maxpool), layer1, layer2, layer3, layer4]; feature_layer = layer4.
`small_input` (default) sets conv1's stride to 1 so a 64×64 image ends in a 4×4 map (output stride 16).
"""
from __future__ import annotations

import re

import torch.nn as nn
from torchvision.models import resnet18 as tv_resnet18

from core.models.base import Classifier


def torchvision_key(key: str) -> str:
    """torchvision resnet18 state-dict key → this model's (conv1 → blocks.0.0, layerK → blocks.K, fc → head.2)."""
    key = re.sub(r"^conv1\.", "blocks.0.0.", key)
    key = re.sub(r"^bn1\.", "blocks.0.1.", key)
    key = re.sub(r"^layer([1-4])\.", r"blocks.\1.", key)
    return re.sub(r"^fc\.", "head.2.", key)


def resnet18(num_classes: int = 4, in_chans: int = 1, small_input: bool = True, **_) -> Classifier:
    net = tv_resnet18(weights=None)
    conv1 = nn.Conv2d(in_chans, 64, 7, stride=1 if small_input else 2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
    stem = nn.Sequential(conv1, net.bn1, net.relu, net.maxpool)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))
    model = Classifier([stem, net.layer1, net.layer2, net.layer3, net.layer4], head)
    model.torchvision_key = torchvision_key
    return model
