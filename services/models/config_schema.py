"""The schema of the sub-objects a retrained classifier's `Model.config` carries (docs/architecture.md, Retraining and
its evidence): `xbl`, how it was fine-tuned, and its link in the retrain group (retrain id, seed, role, controls).

`check_config` runs in `register_model` (and when a retrain adds the control ids), so a malformed config is refused
in one line before it is written; readers take dataclasses (`xbl_config`, `retrain_link`) instead of digging in
JSON. The other keys of a classifier's config (architecture, classes, history, …) are the checkpoint's own.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

ROLES = ("child", "control", "random_control")  # the models of one seed of a retrain


@dataclass(frozen=True)
class XBLConfig:
    """How a retrained model was fine-tuned (a control's is the plain-CE or random-pair variant of the child's)."""
    method: str
    settings: dict
    finetune: dict
    seeds: int
    pair: dict | None
    pair_source: str
    epoch_seconds: Any = None
    parent_run_id: int | None = None
    order_digest: str | None = None


@dataclass(frozen=True)
class RetrainLink:
    """Where a model sits in its retrain group: a child carries its controls' ids, a control names its child."""
    retrain_id: int
    seed: int
    role: str
    control_of: int | None = None
    lineage: str | None = None
    control_id: int | None = None
    random_control_id: int | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"retrain role must be one of {', '.join(ROLES)}, not {self.role!r}")
        for name in ("retrain_id", "seed", "control_of", "control_id", "random_control_id"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"retrain link {name} must be an integer id, not {v!r}")


LINK_KEYS = tuple(f.name for f in fields(RetrainLink))


def _build(cls, data: Any, what: str):
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be an object, not {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    missing = sorted(f.name for f in fields(cls) if f.default is MISSING and f.name not in data)
    if unknown or missing:
        raise ValueError(f"{what} does not match its schema: unknown keys {unknown}, missing keys {missing}")
    return cls(**data)


def xbl_config(config: dict | None) -> XBLConfig | None:
    """The `xbl` sub-object of a model's config, or None for a model that was not retrained."""
    x = (config or {}).get("xbl")
    return None if x is None else _build(XBLConfig, x, "config.xbl")


def retrain_link(config: dict | None) -> RetrainLink | None:
    """The model's link in its retrain group, or None for a model that no retrain registered."""
    cfg = config or {}
    if cfg.get("retrain_id") is None:
        stray = [k for k in ("role", "control_of", "control_id", "random_control_id") if cfg.get(k) is not None]
        if stray:
            raise ValueError(f"config names {', '.join(stray)} without a retrain_id")
        return None
    return _build(RetrainLink, {k: cfg[k] for k in LINK_KEYS if k in cfg}, "the config's retrain link")


def check_config(kind: str, config: dict | None) -> None:
    """ValueError (one line) when a classifier's config carries an `xbl` or retrain link that does not match."""
    if kind == "classifier":
        xbl_config(config)
        retrain_link(config)
