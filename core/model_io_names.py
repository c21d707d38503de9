"""The names of where a classifier comes from and what it exports to, torch-free so the CLI's help can list them
without importing torch (docs/architecture.md, "Bring your own model"): the builders and writers that use them
live in core.models.imported and core.models.export, keyed by these names (outside core.models, whose package imports torch)."""
from __future__ import annotations

SOURCE_NAMES = ("torchvision", "timm", "python")
FORMATS = ("safetensors", "pt2", "onnx")
