"""mobilenet_v2: torchvision's MobileNetV2 (weights=None) for grayscale input, the eXBL paper's architecture.

The first conv takes `in_chans` channels; `small_input` (default) sets its stride to 1 so a 64×64 image still
ends in a 4×4 map at the last block (output stride 16 instead of 32). blocks = torchvision's 19 `features`
modules (freeze_blocks counts these); feature_layer = the last one (1×1 conv to 1280 channels).
"""
from __future__ import annotations

import re

import torch.nn as nn
from torchvision.models import mobilenet_v2 as tv_mobilenet_v2

from core.models.base import Classifier


def torchvision_key(key: str) -> str:
    """torchvision mobilenet_v2 state-dict key → this model's (features.i → blocks.i, classifier.1 → head.3)."""
    key = re.sub(r"^features\.", "blocks.", key)
    return re.sub(r"^classifier\.1\.", "head.3.", key)


def mobilenet_v2(num_classes: int = 4, in_chans: int = 1, small_input: bool = True, width_mult: float = 1.0,
                 dropout: float = 0.2, **_) -> Classifier:
    net = tv_mobilenet_v2(weights=None, width_mult=width_mult)
    stem = net.features[0][0]
    net.features[0][0] = nn.Conv2d(in_chans, stem.out_channels, 3, stride=1 if small_input else 2, padding=1,
                                   bias=False)
    nn.init.kaiming_normal_(net.features[0][0].weight, mode="fan_out")
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(net.last_channel, num_classes))
    nn.init.normal_(head[3].weight, 0, 0.01)
    nn.init.zeros_(head[3].bias)
    model = Classifier(list(net.features), head)
    model.torchvision_key = torchvision_key
    return model
