"""AppTest of the Datasets tab: empty state, counts chart, sample grid with overlay toggles, report, job forms."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from pages.parts.datasets import counts_frame, overlay
from services.data import datasets as D
from services.jobs.lifecycle import list_jobs

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "data_models.py")


def _app() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["user"] = {"id": 1, "name": "tester"}
    return at


def test_empty_state_and_synth_form_submits_a_job():
    from services.team.users import get_or_create_user

    get_or_create_user("tester")
    at = _app().run()
    assert not at.exception
    assert any("No dataset yet" in i.value for i in at.info)
    at.text_input(key="ds_synth_name").set_value("fromui")
    at.number_input(key="ds_synth_n").set_value(64)
    at.button(key="ds_synth_go").click().run()
    assert not at.exception
    rows = list_jobs()
    assert rows and rows[0]["kind"] == "data.synth" and rows[0]["params"]["name"] == "fromui"
    assert rows[0]["params"]["n"] == 64 and rows[0]["status"] == "queued"
    assert at.session_state["ds_job"] == rows[0]["id"]


def test_import_form_validates_name_and_path():
    from services.team.users import get_or_create_user

    get_or_create_user("tester")
    at = _app().run()
    at.text_input(key="ds_imp_name").set_value("bad name!")
    at.text_input(key="ds_imp_path").set_value("/tmp/somewhere")
    at.button(key="ds_imp_go").click().run()
    assert any("dataset name" in e.value for e in at.error)
    assert list_jobs() == []


def test_dataset_chart_grid_overlays_and_report():
    D.synth_dataset("demo", n=48, size=32, seed=0, user_id=None)
    at = _app().run()
    assert not at.exception
    assert at.selectbox(key="ds_pick").value == "demo"
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    imgs = at.get("image")
    assert len(imgs) == 12  # the default sample count
    at.toggle(key="ds_ov_marker").set_value(True)
    at.selectbox(key="ds_grid_split").set_value("test_shifted")
    at.slider(key="ds_grid_n").set_value(4)
    at.run()
    assert not at.exception and len(at.get("image")) == 4
    assert any("marker mask" in c.value for c in at.caption)
    assert any(m.label == "imported" and m.value == "48" for m in at.metric)


def test_overlay_and_counts_helpers():
    img = np.zeros((4, 4), np.uint8)
    m = np.zeros((4, 4), bool)
    m[0, 0] = True
    out = overlay(img, {"lesion": m}, scale=2)
    assert out.shape == (8, 8, 3) and out[0, 0, 0] > 100 and out[0, 0, 1] < 50 and out[-1, -1].sum() == 0
    df = counts_frame({"A": {"train": 3, "val": 1}})
    assert df["images"].sum() == 4 and set(df["split"]) == {"train", "val"}
