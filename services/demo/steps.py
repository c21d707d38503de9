"""The demo's steps (docs/architecture.md, Rooms): the SynthCXR dataset, the baseline, its GradCAM ranking, the shipped
DDPM and GAN and the independent classifier. Each step names the job kind whose handler does the work, builds its
params from the results of earlier steps, and says how to find an existing result (so a second run skips it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from services.counterfactuals import gan
from services.counterfactuals import generators as gen
from services.data.datasets import get_dataset
from services.explanations.explaining import list_runs
from services.models import independent
from services.models.registry import find_model

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


def existing_model(model_name: str):
    """A baseline step's resume check: the classifier `model_name` on the step's dataset, when its checkpoint is
    there (the 64 px demo's baseline and the larger demo's)."""
    def existing(state: dict) -> dict | None:
        m = find_model(model_name, "classifier", state["dataset"]["dataset_id"])
        if m is None or not Path(m["checkpoint"]).is_file():
            return None
        return {"model_id": m["id"], "name": m["name"], "arch": m["arch"], "metrics": m["metrics"]}
    return existing


_existing_baseline = existing_model(BASELINE_NAME)


# The first screen's ranking: the baseline's GradCAM maps of every image (train and the held-out splits, labelled
# in the gallery), so `make run` opens on a ranked gallery without anyone starting a job (issue 16).
RANKING = {"method": "gradcam", "splits": [], "target": "predicted", "tau": 0.5, "batch_size": 256}


def ranking_params(state: dict) -> dict:
    return {**RANKING, "model_id": state["baseline"]["model_id"]}


def existing_ranking(state: dict) -> dict | None:
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
             ranking_params, existing_ranking, 0.5),
    DemoStep("ddpm", "shipped DDPM (counterfactuals)", "gen.train", gen.demo_params, gen.demo_existing, 0.5),
    DemoStep("gan", "shipped GAN (counterfactuals)", "gen.train", gan.demo_params, gan.demo_existing, 0.1),
    DemoStep("independent", "independent classifier (cross-model check)", "train", independent.demo_params,
             independent.demo_existing, 1.0),
]
