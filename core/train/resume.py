"""Epoch checkpoints of a training run, so a job retried after its process died resumes from its last finished
epoch instead of epoch 1 (docs/architecture.md, Jobs). Written atomically; read with weights_only=True (tensors,
numbers, lists and dicts only: nothing is unpickled)."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from core.files import atomic_write

FILE = "epoch_state.pt"


def save_epoch_state(folder: str | Path, state: dict) -> None:
    """state: epoch, step, model, optimizer, scheduler, generator, best_state, best_acc, bad, best_epoch, history
    (tensors on any device: stored on the CPU)."""
    cpu = {k: _to_cpu(v) for k, v in state.items()}
    atomic_write(Path(folder) / FILE, lambda tmp: torch.save(cpu, tmp))


def load_epoch_state(folder: str | Path | None) -> dict | None:
    """The last saved epoch state, or None when there is none (or it cannot be read: start again cleanly)."""
    if folder is None:
        return None
    path = Path(folder) / FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:  # a torn or foreign file: train from epoch 1
        print(f"ignoring unreadable epoch state {path}: {exc}")
        return None


def _to_cpu(v):
    if isinstance(v, torch.Tensor):
        return v.detach().cpu()
    if isinstance(v, dict):
        return {k: _to_cpu(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_to_cpu(x) for x in v)
    return v
