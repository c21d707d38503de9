"""Checkpoints: safetensors weights + a JSON config beside them, written to temp names and renamed (atomic)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from core.files import atomic_write
from core.models import create_model


def save_checkpoint(model: nn.Module, config: dict, path: str | Path) -> Path:
    """Write PATH (.safetensors) and PATH.json; the JSON (written last) marks the checkpoint complete."""
    path = Path(path).with_suffix(".safetensors")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp))
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return path


def read_config(path: str | Path) -> dict:
    cfg = Path(path).with_suffix(".json")
    if not cfg.exists():
        raise FileNotFoundError(f"checkpoint config {cfg} is missing (incomplete checkpoint)")
    return json.loads(cfg.read_text())


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a classifier from its JSON config (arch, num_classes, in_chans) and load its weights."""
    path = Path(path).with_suffix(".safetensors")
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} is missing")
    cfg = read_config(path)
    model = create_model(cfg["arch"], num_classes=cfg.get("num_classes", 4), in_chans=cfg.get("in_chans", 1),
                         input_size=cfg.get("input_size"), **cfg.get("arch_kwargs", {}))
    model.load_state_dict(load_file(str(path), device="cpu"))
    return model.to(device).eval(), cfg


def load_state_dict_file(file: str | Path) -> dict[str, torch.Tensor]:
    """A local state dict: safetensors, or a torch file loaded weights-only (arbitrary pickles are refused)."""
    file = Path(file)
    if not file.exists():
        raise FileNotFoundError(f"weights file {file} does not exist")
    if file.suffix == ".safetensors":
        return load_file(str(file), device="cpu")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{file.name} is not a plain weights file (refused weights-only loading: "
                         f"{type(exc).__name__}); export it with safetensors or torch.save(state_dict)") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{file.name} does not hold a state dict of tensors")
    return obj
