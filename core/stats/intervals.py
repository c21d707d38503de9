"""Bootstrap percentile intervals over units (items): resample units with replacement, a fixed seed."""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass
class Estimate:
    """A statistic with its 95 % bootstrap interval (NaN where undefined) and the number of units it used."""
    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}


def bootstrap(stat: Callable[[np.ndarray], float], n_units: int, reps: int = 1000, seed: int = 0,
              level: float = 0.95) -> Estimate:
    """stat(idx) on all units, and the percentile interval of stat over `reps` resamples of unit indices.

    Resamples where the statistic is undefined (NaN, e.g. a single category) are left out of the interval."""
    idx = np.arange(n_units)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = _safe(stat, idx)
        if n_units < 2 or not np.isfinite(value):
            return Estimate(value, float("nan"), float("nan"), n_units)
        rng = np.random.default_rng(seed)
        vals = np.array([_safe(stat, rng.integers(0, n_units, n_units)) for _ in range(reps)])
    vals = vals[np.isfinite(vals)]
    if len(vals) < max(10, reps // 10):
        return Estimate(value, float("nan"), float("nan"), n_units)
    a = (1 - level) / 2
    return Estimate(value, float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a)), n_units)


def _safe(stat: Callable[[np.ndarray], float], idx: np.ndarray) -> float:
    try:
        v = float(stat(idx))
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return float("nan")
    return v
