"""`exemplar demo`: the idempotent bootstrap of the built-in demo (docs/architecture.md, SynthCXR), as one `demo`
job that runs the steps of `steps.py` (or of `large.py`: the larger demo) not done yet."""
from __future__ import annotations

import importlib
import time

from services.demo import large, steps as demo_steps
from services.demo.steps import DemoStep
from services.jobs.kinds import HANDLERS


class _StepContext:
    """A job context for one step's handler inside the demo job: progress mapped into [lo, hi], same cancel flag."""

    def __init__(self, parent, params: dict, lo: float, hi: float, title: str):
        self.parent, self.params, self.lo, self.hi, self.title = parent, params, lo, hi, title
        self.job_id, self.user_id = parent.job_id, parent.user_id

    def progress(self, fraction: float, message: str = "", metrics: dict | None = None, force: bool = False) -> None:
        f = self.lo + (self.hi - self.lo) * max(0.0, min(1.0, float(fraction)))
        self.parent.progress(f, f"{self.title}: {message}" if message else "", force=force or metrics is not None)

    def check_cancel(self) -> None:
        self.parent.check_cancel()


def _handler(kind: str):
    mod, fn = HANDLERS[kind].split(":")
    return getattr(importlib.import_module(mod), fn)


def run_demo(ctx, steps: list[DemoStep] | None = None) -> dict:
    """Run every step not done yet; returns {steps: [{name, title, status, seconds}], <step name>: result, ...}."""
    steps = demo_steps.DEMO_STEPS if steps is None else steps
    total = sum(s.weight for s in steps) or 1.0
    state: dict = {}
    report = []
    done_w = 0.0
    for step in steps:
        lo, hi = done_w / total, (done_w + step.weight) / total
        t0 = time.monotonic()
        prior = step.existing(state)
        if prior is not None:
            state[step.name] = prior
            report.append({"name": step.name, "title": step.title, "status": "existing", "seconds": 0.0})
            ctx.progress(hi, f"{step.title}: already there", force=True)
        else:
            ctx.progress(lo, f"{step.title}: starting", force=True)
            state[step.name] = _handler(step.kind)(_StepContext(ctx, step.params(state), lo, hi, step.title)) or {}
            report.append({"name": step.name, "title": step.title, "status": "built",
                           "seconds": round(time.monotonic() - t0, 2)})
        done_w += step.weight
    return {"steps": report, **state, "summary": summary(state)}


def summary(state: dict) -> dict:
    """The headline figures: dataset and baseline ids, the baseline's iid and shifted test accuracy."""
    out: dict = {}
    if "dataset" in state:
        out["dataset_id"] = state["dataset"].get("dataset_id")
    base = state.get("baseline") or {}
    if base:
        m = base.get("metrics") or {}
        out["baseline_model_id"] = base.get("model_id")
        out["test_accuracy"] = (m.get("test") or {}).get("accuracy")
        out["test_shifted_accuracy"] = (m.get("test_shifted") or {}).get("accuracy")
    rank = state.get("ranking") or {}
    if rank:
        out["ranking_run_id"] = rank.get("run_id")
        out["ranking_images"] = (rank.get("summary") or {}).get("n")
    return out


def demo_job(ctx) -> dict:
    """`demo` job: build whatever of the demo is missing (params size / arch: the larger demo, issue 17), as the
    job's owner: each step's handler checks their role like any write (docs/architecture.md, Identity)."""
    return _demo_steps(ctx, ctx.params or {})


def _demo_steps(ctx, p: dict) -> dict:
    if int(p.get("size") or 64) != 64 or (p.get("arch") or "simple_cnn") != "simple_cnn":
        return run_demo(ctx, large.steps(int(p.get("size") or 64), p.get("arch") or "simple_cnn"))
    return run_demo(ctx)
