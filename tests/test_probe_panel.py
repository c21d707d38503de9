"""AppTest: the before/after report's shortcut-probe panel shows the artefact-probe rows for parent and child."""
from __future__ import annotations

import pytest

from tests.test_counterfactual_service import make_world


@pytest.mark.slow
def test_probe_panel_shows_rows_for_parent_and_child():
    from streamlit.testing.v1 import AppTest

    from services.models.training import train_classifier

    w = make_world("probepanel")
    child = train_classifier(w["dataset_id"], "simple_cnn", epochs=1, arch_kwargs={"width": 4}, batch_size=16,
                             parent_id=w["model_id"], name="probepanel-child", user_id=None)
    script = f"""
from pages.parts.probe_panel import render_probe_panel
render_probe_panel({w['model_id']}, {child['model_id']})
"""
    at = AppTest.from_string(script, default_timeout=120).run()
    assert not at.exception, at.exception
    assert any(s.value == "Shortcut probe" for s in at.subheader)
    table = at.dataframe[0].value
    assert list(table["model"]) == [f"before (parent) #{w['model_id']}", f"after (child) #{child['model_id']}"]
    for corner in ("top-left", "top-right", "bottom-left", "bottom-right"):
        col = table[f"changed · {corner}"]
        assert ((col >= 0) & (col <= 1)).all()
    assert list(table["CF change mass · marker box"]) == ["n/a", "n/a"]  # no stored counterfactuals yet
