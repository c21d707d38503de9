"""The independent classifier B of a dataset: another architecture trained by Exemplar on the same data.

It scores counterfactuals made against the explained model A (cross-model validity: does B flip too?) and
gives the feature space for realism (FD / KID). A classifier is B when its name ends with INDEPENDENT_SUFFIX;
the demo trains one (`demo-independent`: MobileNetV2 ×0.25 with the standard stride-2 stem, a few epochs; the
small-input stem would cost four times as much).
"""
from __future__ import annotations

from pathlib import Path

from db.models import Model
from services.models.registry import find_model, load_classifier, model_to_dict
from services.platform.database import read_session

INDEPENDENT_SUFFIX = "-independent"
# Measured on the demo (one busy CPU thread, 73 s per epoch): 6 epochs at lr 5e-3 give val 0.867, test 0.867,
# test_shifted 0.292 (B reads the marker too: it is trained on the same confounded data); 3 epochs at 3e-3 only 0.56.
DEMO_INDEPENDENT = {"arch": "mobilenet_v2", "epochs": 6, "seed": 1, "lr": 5e-3, "batch_size": 64, "patience": 3,
                    "arch_kwargs": {"width_mult": 0.25, "small_input": False}, "threads": 1, "name": "demo" + INDEPENDENT_SUFFIX}


def find_independent(dataset_id: int, exclude: int | None = None) -> dict | None:
    """The newest independent classifier of the dataset (not `exclude`), or None."""
    from sqlalchemy import select

    with read_session() as s:
        q = (select(Model).where(Model.kind == "classifier", Model.dataset_id == int(dataset_id),
                                 Model.name.like(f"%{INDEPENDENT_SUFFIX}")).order_by(Model.id.desc()))
        for m in s.scalars(q):
            if m.id != exclude and Path(model_to_dict(m)["checkpoint"]).is_file():  # stored relative to EXEMPLAR_HOME
                return model_to_dict(m)
    return None


def load_independent(dataset_id: int, device: str, exclude: int | None = None):
    """(classifier, row) of the dataset's independent classifier, or (None, None) when it has none."""
    row = find_independent(dataset_id, exclude)
    if row is None:
        return None, None
    return load_classifier(int(row["id"]), device)


def demo_params(state: dict) -> dict:
    return {**DEMO_INDEPENDENT, "dataset": state["dataset"]["dataset_id"]}


def demo_existing(state: dict) -> dict | None:
    m = find_model(DEMO_INDEPENDENT["name"], "classifier", state["dataset"]["dataset_id"])
    if m is None or not Path(m["checkpoint"]).is_file():
        return None
    return {"model_id": m["id"], "name": m["name"], "arch": m["arch"], "metrics": m["metrics"]}
