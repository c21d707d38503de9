"""`exemplar demo`: the idempotent bootstrap of the built-in demo (DESIGN.md §1), as one `demo` job.

DEMO_STEPS is the ordered list of steps. Each step names the job kind whose handler does the work, builds its
params from the results of earlier steps, and says how to find an existing result (so a second run skips it).
Later areas append one DemoStep each (explanation ranking, DDPM / GAN registration from assets).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from services.jobs.kinds import HANDLERS

DEMO_DATASET = "demo"
DEMO_SYNTH = {"name": DEMO_DATASET, "n": 2400, "size": 64, "confounder": 0.9, "seed": 0}
BASELINE_NAME = "demo-baseline"
# The fastest architecture that still learns the shortcut: simple_cnn, width 8, pooled stem (last block still at
# 1/8 resolution for GradCAM), 4 epochs: ~10 s of one CPU core; on seeds 0/1/2 iid test 0.96/0.96/0.95 against
# test_shifted 0.63/0.61/0.58. MobileNetV2 is the paper's choice but far slower on a CPU. One CPU thread: small
# convolutions gain little from a second one and lose a lot on a busy machine; the figures repeat everywhere.
BASELINE = {"arch": "simple_cnn", "epochs": 4, "seed": 0, "lr": 3e-3, "batch_size": 64, "patience": 3,
            "arch_kwargs": {"width": 8, "stem_pool": True}, "threads": 1, "name": BASELINE_NAME}


@dataclass
class DemoStep:
    """One bootstrap step: `kind`'s handler runs with params(state); existing(state) returns a prior result or None."""

    name: str
    title: str
    kind: str
    params: Callable[[dict], dict]
    existing: Callable[[dict], dict | None]
    weight: float = 1.0  # relative share of the demo's time, for the progress bar


def _existing_dataset(state: dict) -> dict | None:
    from services.data.datasets import get_dataset

    try:
        d = get_dataset(DEMO_DATASET)
    except ValueError:
        return None
    man = (d.get("meta") or {}).get("synthcxr") or {}
    want = {k: DEMO_SYNTH[k] for k in ("n", "size", "confounder", "seed")}
    if any(man.get(k) != v for k, v in want.items()):
        raise ValueError(f"a dataset named {DEMO_DATASET!r} exists but is not the demo's SynthCXR "
                         f"({want}); rename or remove it")
    return {"dataset_id": d["id"], "name": d["name"], "root": d["root"], "counts": d["counts"], "created": False}


def _existing_baseline(state: dict) -> dict | None:
    from services.models.registry import find_model

    m = find_model(BASELINE_NAME, "classifier", state["dataset"]["dataset_id"])
    if m is None or not Path(m["checkpoint"]).is_file():
        return None
    return {"model_id": m["id"], "name": m["name"], "arch": m["arch"], "metrics": m["metrics"]}


# The first screen's ranking: the baseline's GradCAM maps of every image (train and the held-out splits, labelled
# in the gallery), so `make run` opens on a ranked gallery without anyone starting a job (issue 16).
RANKING = {"method": "gradcam", "splits": [], "target": "predicted", "tau": 0.5, "batch_size": 256}


def _ranking_params(state: dict) -> dict:
    return {**RANKING, "model_id": state["baseline"]["model_id"]}


def _existing_ranking(state: dict) -> dict | None:
    from services.explanations.explaining import list_runs

    mid = state["baseline"]["model_id"]
    for r in list_runs(mid):
        if r["method"] == RANKING["method"] and r["target"] == RANKING["target"] and not r["splits"] \
                and Path(r["maps_path"] or "").is_file():
            return {"run_id": r["id"], "model_id": mid, "method": r["method"], "summary": r["summary"]}
    return None


DEMO_STEPS: list[DemoStep] = [
    DemoStep("dataset", "SynthCXR demo dataset", "data.synth", lambda st: dict(DEMO_SYNTH), _existing_dataset, 1.0),
    DemoStep("baseline", "baseline classifier", "train",
             lambda st: {**BASELINE, "dataset": st["dataset"]["dataset_id"]}, _existing_baseline, 4.0),
    DemoStep("ranking", "GradCAM ranking of the baseline (the gallery's first screen)", "explain",
             _ranking_params, _existing_ranking, 0.5),
]
from services.counterfactuals import generators as _gen  # noqa: E402  (issue 7: the shipped DDPM for counterfactuals)
DEMO_STEPS.append(DemoStep("ddpm", "shipped DDPM (counterfactuals)", "gen.train", _gen.demo_params,
                           _gen.demo_existing, 0.5))
from services.counterfactuals import gan as _gan  # noqa: E402  (issue 8: the shipped GAN for GCI counterfactuals)
DEMO_STEPS.append(DemoStep("gan", "shipped GAN (counterfactuals)", "gen.train", _gan.demo_params,
                           _gan.demo_existing, 0.1))
from services.models import independent as _ind  # noqa: E402  (issue 14: classifier B for cross-model validity and realism)
DEMO_STEPS.append(DemoStep("independent", "independent classifier (cross-model check)", "train", _ind.demo_params,
                           _ind.demo_existing, 1.0))


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
    steps = DEMO_STEPS if steps is None else steps
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
        from services.demo.large import steps
        return run_demo(ctx, steps(int(p.get("size") or 64), p.get("arch") or "simple_cnn"))
    return run_demo(ctx)
