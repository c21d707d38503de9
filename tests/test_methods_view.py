"""AppTest: Evaluate → Methods shows stored method comparisons (table, bars, perturbation curves) per method and
per model version, says what to do when nothing is stored, and its Evaluate button queues `evaluate` jobs."""
from __future__ import annotations

import json

from services.presentation.palette import METHOD_COLOURS
from services.jobs import lifecycle as jobs
from services.explanations.evaluation import store_results
from services.models.registry import get_model, register_model
from services.team.users import get_or_create_user
from tests.helpers_app import app_test, open_page
from tests.helpers_explain import dataset_and_model

FR = [round(i / 10, 1) for i in range(10)]


def _result(label: str, base: float) -> dict:
    vals = {"ar": 0.5 + base / 200, "ap": 0.4, "pos": 20 + base, "neg": 60 - base, "del": 25 + base, "ins": 50 - base}
    curve = [round(1 - p * (0.5 + base / 100), 3) for p in FR]
    return {"label": label, **vals, "seconds_per_image": 0.01 + base / 1000, "n": 12, "split": "test", "tau": 0.5,
            "fractions": FR, "true": {k: v - 1 for k, v in vals.items()},
            "curves": {"predicted": {k: curve for k in ("pos", "neg", "del", "ins")}},
            "evaluated_at": "2025-01-01T00:00:00+00:00", "job_id": None}


def _two_versions(stored: bool) -> tuple[int, int, int]:
    uid = get_or_create_user("tester")
    ds, a = dataset_and_model(n=20, size=32)
    row = get_model(a)
    b = register_model(name="retrained", arch="simple_cnn", checkpoint=row["checkpoint"], dataset_id=ds, parent_id=a,
                       config=row["config"])
    if stored:
        store_results(a, {"gradcam": _result("GradCAM", 0.0), "ltx": _result("LTX (finetuned)", 5.0)})
        store_results(b, {"gradcam": _result("GradCAM", 2.0)})
    return uid, a, b


def test_methods_tab_shows_table_bars_and_curves_per_method_and_model_version():
    uid, a, b = _two_versions(stored=True)
    at = open_page(app_test(user={"id": uid, "name": "tester"}), "evaluate")
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="methods_models").value == [a, b]  # the sidebar's model and its parent
    table = next(df.value for df in at.dataframe if "method" in df.value.columns)
    assert len(table) == 3 and set(table["method"]) == {"GradCAM", "LTX (finetuned)"}
    assert {"AR", "AP", "POS", "NEG", "DEL", "INS", "s / image"} <= set(table.columns)
    ltx = table[table["method"] == "LTX (finetuned)"].iloc[0]
    assert ltx["model"].startswith(f"#{a} ") and ltx["DEL"] == 30.0 and ltx["INS"] == 45.0
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any('"bar"' in s and "DEL" in s and "s \\u002f image" in s for s in specs)
    assert any('"scatter"' in s and "share of pixels blanked" in s for s in specs)  # the perturbation curves
    # the page draws each method in its palette colour (the one the other pages use)
    curves = next(json.loads(s) for s in specs if "share of pixels blanked" in s)
    drawn = {(t["name"].split(",")[0], t["line"]["color"]) for t in curves["data"]}
    assert drawn == {("GradCAM", METHOD_COLOURS["gradcam"]), ("LTX (finetuned)", METHOD_COLOURS["ltx"])}
    # the true class: the stored `true` metrics, no curves stored for it here
    at.segmented_control(key="methods_target").set_value("true").run()
    assert not at.exception
    table = next(df.value for df in at.dataframe if "method" in df.value.columns)
    assert table[table["method"] == "LTX (finetuned)"].iloc[0]["DEL"] == 29.0
    # one model version only
    at.multiselect(key="methods_models").set_value([b]).run()
    table = next(df.value for df in at.dataframe if "method" in df.value.columns)
    assert len(table) == 1 and table.iloc[0]["model"].startswith(f"#{b} ")


def test_methods_tab_without_results_explains_what_to_do_and_queues_evaluate_jobs():
    uid, a, b = _two_versions(stored=False)
    at = open_page(app_test(user={"id": uid, "name": "tester"}), "evaluate")
    assert not at.exception, [e.value for e in at.exception]
    info = " ".join(i.value for i in at.info)
    assert "No method comparison is stored" in info and "exemplar evaluate" in info
    assert not any("method" in df.value.columns for df in at.dataframe)
    # LTX needs a pretrained explainer: the form says so and does not let Evaluate start with LTX picked
    assert any("No LTX explainer" in w.value for w in at.warning)
    assert at.button(key="methods_go").disabled
    at.multiselect(key="methods_pick").set_value(["gradcam", "integrated_gradients"]).run()
    assert not at.button(key="methods_go").disabled
    at.number_input(key="methods_limit").set_value(8).run()
    at.button(key="methods_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    rows = [j for j in jobs.list_jobs() if j["kind"] == "evaluate"]
    assert sorted(j["params"]["model_id"] for j in rows) == [a, b]
    assert all(j["params"]["methods"] == ["gradcam", "integrated_gradients"] and j["params"]["limit"] == 8
               and j["created_by"] == uid for j in rows)
    assert any(f"job {rows[0]['id']}" in (p.proto.text or "") for p in at.get("progress"))


def test_methods_tab_queues_ltx_pretraining_for_models_without_an_explainer():
    uid, a, b = _two_versions(stored=False)
    at = open_page(app_test(user={"id": uid, "name": "tester"}), "evaluate")
    at.button(key="methods_ltx_train").click().run()
    assert not at.exception, [e.value for e in at.exception]
    rows = [j for j in jobs.list_jobs() if j["kind"] == "ltx.train"]
    # the default methods name the paper's ltx (soft masks) and ltx_sampled: one explainer of each per model
    assert sorted((j["params"]["model_id"], j["params"]["masking"]) for j in rows) == \
        sorted((m, mk) for m in (a, b) for mk in ("soft", "sample"))


def test_methods_tab_on_an_empty_registry():
    at = open_page(app_test(), "evaluate")
    assert not at.exception
    assert any("No classifier yet" in i.value for i in at.info)
