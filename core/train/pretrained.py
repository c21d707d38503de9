"""Load local pretrained weights into a classifier: torchvision key names mapped, a 3-channel first conv summed
over its input channels for grayscale, the classification head skipped when its class count differs."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from core.models.checkpoint import load_state_dict_file


def adapt_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """(model's state dict with every matching tensor replaced, report {loaded, adapted, skipped, missing})."""
    target = model.state_dict()
    rename = getattr(model, "torchvision_key", None)
    merged = dict(target)
    loaded, adapted, skipped = [], [], []
    for key, value in state.items():
        k = key if key in target else (rename(key) if rename else key)
        if k not in target:
            skipped.append(f"{key} (no such parameter)")
            continue
        want = target[k]
        if value.shape == want.shape:
            merged[k] = value.to(want.dtype)
            loaded.append(k)
        elif (value.ndim == 4 and want.ndim == 4 and value.shape[0] == want.shape[0]
              and value.shape[2:] == want.shape[2:] and want.shape[1] == 1 and value.shape[1] > 1):
            merged[k] = value.sum(dim=1, keepdim=True).to(want.dtype)  # RGB conv → grayscale: same response to gray
            loaded.append(k)
            adapted.append(k)
        else:
            skipped.append(f"{key} (shape {tuple(value.shape)} ≠ {tuple(want.shape)})")
    missing = [k for k in target if k not in set(loaded)]
    return merged, {"loaded": len(loaded), "adapted": adapted, "skipped": skipped, "missing": len(missing)}


def load_pretrained(model: nn.Module, file: str | Path) -> dict:
    """Load a local torchvision state dict (.pth/.pt, weights-only) or safetensors file into `model` in place.

    Nothing is downloaded. Raises ValueError when no tensor of the file fits the model.
    """
    state = load_state_dict_file(file)
    merged, report = adapt_state_dict(model, state)
    if report["loaded"] == 0:
        arch = getattr(model, "arch", type(model).__name__)
        raise ValueError(f"no tensor in {Path(file).name} fits {arch} (first keys: {', '.join(list(state)[:3])})")
    model.load_state_dict(merged)
    report["file"] = str(file)
    return report
