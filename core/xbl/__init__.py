"""Explanation-based learning (XBL) from two exemplars: one registry of fine-tuning losses.

XBL_METHODS maps a method name to 'module:class', read from core.registries.RETRAINING_METHODS (docs/architecture.md,
Registries). A method is one class (subclass of XBLMethod) with
prepare(model, good, bad, train) — called once, in eval mode, before fine-tuning (fixed exemplar targets) —
and loss(model, x, y, idx) → (total loss, stats); finetune.finetune() runs any of them. Adding a method is one
module and one spec in core.registries.

Every method reports the same diagnostics so runs compare: `ce`, `expl` (its own explanation term, 0 for ce),
and the reference triplet's `active`, `d_pos`, `d_neg` (docs/architecture.md, Definitions) measured on each batch — the
method's own when it is a triplet, a no-grad measurement otherwise.
"""
from __future__ import annotations

import importlib
from typing import Any

from core.registries import RETRAINING_METHODS

XBL_METHODS: dict[str, str] = {s.name: s.entry for s in RETRAINING_METHODS}
LABELS: dict[str, str] = RETRAINING_METHODS.labels()
# The method the Retrain page and `exemplar exbl` start by default: the winner of bench/exbl_effect.py's
# val-only rule (val accuracy, val AR / AP on lung masks, vs the control; its docstring has rule and numbers).
DEFAULT_METHOD = "exbl_cf"
CONTROL_METHOD = "ce"  # the matched control every retrain is compared with



_LAZY = ("REFERENCE_MARGIN", "Exemplar", "TrainSet", "as_float", "XBLMethod", "triplet", "triplet_stats",
         "reference_anchor", "anchors", "training_anchors", "exemplar_map", "dilate")


def __getattr__(name: str):
    """The method base and helpers live in core.xbl.method (torch); they load on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module("core.xbl.method"), name)
    raise AttributeError(f"module 'core.xbl' has no attribute {name!r}")


def list_methods() -> list[str]:
    """Every retraining method, the one list used by core, services, the CLI, the pages and the benches."""
    return list(XBL_METHODS)


def is_triplet(name: str) -> bool:
    """Whether the method has a triplet margin setting (the settings form shows it only then)."""
    return "margin" in method_defaults(name)


def get_method(name: str, **settings: Any) -> XBLMethod:
    """An instance of the named method with its settings (None values keep the defaults)."""
    if name not in XBL_METHODS:
        raise ValueError(f"unknown XBL method {name!r}; choose one of {', '.join(XBL_METHODS)}")
    mod, cls = XBL_METHODS[name].split(":")
    return getattr(importlib.import_module(mod), cls)(**settings)


def method_defaults(name: str) -> dict[str, Any]:
    if name not in XBL_METHODS:
        raise ValueError(f"unknown XBL method {name!r}; choose one of {', '.join(XBL_METHODS)}")
    mod, cls = XBL_METHODS[name].split(":")
    return dict(getattr(importlib.import_module(mod), cls).defaults)
