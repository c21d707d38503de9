"""The evaluate job's progress as the share of its expected *time* done, not of its images (docs/architecture.md,
Jobs: Honest progress).

Equal bands per method and class made the first evaluate job's ETA 89 % wrong (bench/eta.py): the LTX methods
finetune every image and took ~80 % of the time on a small share of the bar. Here each method's work is weighted by
its measured seconds per image once it has run a batch, and before that by its registry prior
(`ExplanationMethod.cost`, in classifier passes) times the seconds per pass measured on the methods run so far.
The seconds before the scoring (the worker's start-up, loading the model and the data) count as work done: they
are spent, so a fixed band for them made the job's own rate too slow at first. Storing the results takes the last
1 %. The fraction never goes back: a method slower than its prior holds the bar until the work catches up. So each
tick also gives the job's own estimate of the seconds left (`left_s`), which the panel prefers: it is right from the
slow method's first batch on.
"""
from __future__ import annotations

import time
from typing import Callable

from core.registries import EXPLANATION_METHODS
from core.registry import UnknownName

FAITH_COST = 40.0    # POS, NEG, DEL, INS: 4 curves × 10 perturbed forward passes an image (core.metrics.faithfulness)
HI = 0.99            # the bar's end before storing the results


def prior_cost(name: str, kwargs: dict, default_steps: int) -> float:
    """Expected cost of one image (one explained class) in classifier passes: the method's prior plus the metrics."""
    try:
        spec = EXPLANATION_METHODS.get(name)
    except UnknownName:
        return FAITH_COST + 3.0
    steps = int(kwargs.get("finetune_steps", default_steps)) if spec.cost_per_step else 0
    return FAITH_COST + spec.cost + spec.cost_per_step * steps


class EvalProgress:
    """Ticker of the evaluate job: `begin(i)` when method i starts, then `(images, msg)` after each batch."""

    def __init__(self, say: Callable[..., None], priors: list[float], images_per_method: int,
                 pre_seconds: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.say, self.prior, self.total, self.clock = say, [float(p) for p in priors], int(images_per_method), clock
        self.pre = max(0.0, float(pre_seconds))
        self.done = [0] * len(self.prior)
        self.secs = [0.0] * len(self.prior)
        self.cur: int | None = None
        self.t = clock()
        self.p = 0.0

    def begin(self, i: int) -> None:
        self.cur, self.t = int(i), self.clock()

    def __call__(self, images: int, msg: str, force: bool = False) -> None:
        now = self.clock()
        if self.cur is not None and images:
            self.secs[self.cur] += now - self.t
            self.done[self.cur] += int(images)
        self.t = now
        self.p = max(self.p, HI * self.fraction())
        self.say(self.p, msg, left_s=self.seconds_left(), **({"force": True} if force else {}))

    def seconds_left(self) -> float:
        """The expected seconds of the work not done yet (the job's own ETA: services/jobs/eta.py, by_job)."""
        return sum(u * (self.total - d) for u, d in zip(self.seconds_per_image(), self.done))

    def seconds_per_image(self) -> list[float]:
        """Measured where a method has run a batch; else its prior × the measured seconds per prior unit."""
        ran = [i for i, d in enumerate(self.done) if d]
        units = sum(self.prior[i] * self.done[i] for i in ran)
        scale = sum(self.secs[i] for i in ran) / units if ran and units > 0 else 1.0
        return [self.secs[i] / d if d else self.prior[i] * scale for i, d in enumerate(self.done)]

    def fraction(self) -> float:
        """The share of the expected time done (0 … 1), the seconds before the scoring included."""
        per = self.seconds_per_image()
        total = self.pre + sum(u * self.total for u in per)
        return min(1.0, (self.pre + sum(u * d for u, d in zip(per, self.done))) / total) if total > 0 else 0.0
