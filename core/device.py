"""Device choice for core code: an explicit name, or 'auto' → cuda when available, else cpu."""
from __future__ import annotations

import torch


def pick_device(name: str | None = "auto") -> torch.device:
    if not name or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
