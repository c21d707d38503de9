"""AppTest: the Evaluate page shows a model card (metrics per split, confusion heatmap, per-class table), compares
two models, and the Models tab of Data & models lists the registry with lineage and submits a train job."""
from __future__ import annotations

import numpy as np
import torch

from core.metrics.classification import classification_report
from core.models import create_model
from services.jobs import lifecycle as jobs
from services.data.datasets import synth_dataset
from services.models.registry import register_model, save_checkpoint_dir
from services.team.users import get_or_create_user
from tests.helpers_app import app_test, open_page

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


def _metrics(acc_test: float, acc_shift: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for split, acc in (("val", acc_test), ("test", acc_test), ("test_shifted", acc_shift)):
        y = rng.integers(0, 4, 200)
        p = np.where(rng.random(200) < acc, y, (y + 1) % 4)
        out[split] = classification_report(y, p, CLASSES)
    return out


def _register(name: str, dataset_id: int | None, parent: int | None, acc: float, shift: float, seed: int) -> int:
    torch.manual_seed(seed)
    m = create_model("simple_cnn", width=4)
    cfg = {"arch": "simple_cnn", "num_classes": 4, "in_chans": 1, "arch_kwargs": {"width": 4}, "classes": CLASSES,
           "history": [{"epoch": 1, "train_loss": 1.2, "val_loss": 1.1, "val_acc": 0.5},
                       {"epoch": 2, "train_loss": 0.6, "val_loss": 0.5, "val_acc": acc}], "best_epoch": 2}
    return register_model(name=name, arch="simple_cnn", checkpoint=save_checkpoint_dir(m, cfg), dataset_id=dataset_id,
                          parent_id=parent, config=cfg, metrics=_metrics(acc, shift, seed))


def _setup():
    uid = get_or_create_user("tester")
    ds = synth_dataset("t", n=80, size=32, seed=0, user_id=None)["dataset_id"]
    a = _register("baseline", ds, None, 0.95, 0.55, 0)
    b = _register("retrained", ds, a, 0.94, 0.85, 1)
    return uid, ds, a, b


def test_evaluate_page_renders_a_model_card():
    uid, ds, a, b = _setup()
    at = open_page(app_test(user={"id": uid, "name": "tester"}), "evaluate")
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Evaluate"
    assert at.selectbox(key="eval_model").value["id"] == b  # the sidebar's newest model by default
    labels = {m.label: m.value for m in at.metric}
    assert labels["architecture"] == "simple_cnn" and labels["dataset"] == "t"
    assert labels["test accuracy"].startswith("0.9")
    frames = [df.value for df in at.dataframe]
    splits = next(v for v in frames if "macro F1" in v.columns)
    assert list(splits["split"]) == ["val", "test", "test_shifted"]
    per_class = next(v for v in frames if "precision" in v.columns)
    assert list(per_class["class"]) == CLASSES
    charts = at.get("plotly_chart")
    assert any('"heatmap"' in c.proto.spec for c in charts)  # the confusion matrix
    at.selectbox(key="eval_model").set_value(next(o for o in at.selectbox(key="eval_model").options
                                                  if o.startswith(f"#{a} "))).run()
    assert not at.exception
    assert at.selectbox(key="eval_model").value["id"] == a


def test_evaluate_compares_two_models_side_by_side():
    uid, ds, a, b = _setup()
    at = open_page(app_test(user={"id": uid, "name": "tester"}), "evaluate")
    assert at.selectbox(key="eval_cmp_a").value["id"] == b
    assert at.selectbox(key="eval_cmp_b").value["id"] == a  # the parent of A
    cmp = next(df.value for df in at.dataframe if "B − A" in df.value.columns)
    row = cmp[(cmp["split"] == "test_shifted") & (cmp["metric"] == "accuracy")].iloc[0]
    assert row["B − A"] < 0  # the parent is worse on the shifted split
    heatmaps = [c for c in at.get("plotly_chart") if '"heatmap"' in c.proto.spec]
    assert len(heatmaps) >= 3  # the card's and one per compared model
    methods = [i.value for i in at.info if "method comparison" in i.value.lower()]
    assert methods, "the Methods tab, with no evaluation stored, says what to do"


def test_evaluate_on_empty_registry_says_what_to_do():
    at = open_page(app_test(), "evaluate")
    assert not at.exception
    assert any("No classifier yet" in i.value for i in at.info)


def test_models_tab_lists_registry_with_lineage_and_submits_a_train_job():
    uid, ds, a, b = _setup()
    at = open_page(app_test(user={"id": uid, "name": "tester"}), "data_models")
    assert not at.exception, [e.value for e in at.exception]
    reg = next(df.value for df in at.dataframe if "lineage" in df.value.columns)
    assert reg.set_index("id").loc[b, "lineage"] == f"#{a} → #{b}"
    at.selectbox(key="models_train_arch").set_value("simple_cnn")
    at.number_input(key="models_train_epochs").set_value(2)
    at.button(key="models_train_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    rows = [j for j in jobs.list_jobs() if j["kind"] == "train"]
    assert len(rows) == 1 and rows[0]["params"]["epochs"] == 2 and rows[0]["params"]["dataset"] == "t"
    assert rows[0]["created_by"] == uid
    assert any(f"job {rows[0]['id']}" in (p.proto.text or "") for p in at.get("progress"))
