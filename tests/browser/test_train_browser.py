"""In a real browser with a real worker: train a classifier from the Models tab, watch it live, see it registered,
and open its model card on the Evaluate page."""
from __future__ import annotations

import os

import pytest

from services.models.catalog import list_models
from services.data.datasets import synth_dataset
from services.team.users import list_users
from tests.browser.harness import exceptions_on, live_app, page, pick_user, wait_idle  # noqa: F401

pytestmark = pytest.mark.browser


def test_train_from_the_page_then_open_the_model_card(page, live_app):
    synth_dataset("t", n=160, size=32, seed=0, user_id=None)
    page.goto(live_app.url)
    wait_idle(page)
    for _ in range(3):  # the sidebar's create-user round trip can miss a click on a busy machine
        pick_user(page, "researcher")
        if any(u["name"] == "researcher" for u in list_users()):
            break
    assert any(u["name"] == "researcher" for u in list_users())
    page.get_by_test_id("stSidebarNav").get_by_text("Data & models", exact=True).click()
    wait_idle(page)
    page.get_by_role("tab", name="Models").click()
    page.get_by_role("spinbutton", name="Max epochs").fill("2")
    page.get_by_role("button", name="Train", exact=True).click()
    wait_idle(page)
    try:
        page.get_by_text("succeeded").first.wait_for(timeout=240_000)  # the live panel follows the worker's job
    except Exception:
        if os.environ.get("EXEMPLAR_SCREENSHOTS"):
            page.screenshot(path=os.path.join(os.environ["EXEMPLAR_SCREENSHOTS"], "fail.png"), full_page=True)
        raise
    page.get_by_text("registered").first.wait_for(timeout=30_000)
    assert exceptions_on(page) == []
    models = list_models()
    assert len(models) == 1 and models[0]["config"]["history"]
    # the per-epoch loss / val accuracy chart of the live panel
    page.locator('[data-testid="stPlotlyChart"]:visible').first.wait_for(timeout=30_000)
    if os.environ.get("EXEMPLAR_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["EXEMPLAR_SCREENSHOTS"], "models_tab.png"), full_page=True)
    page.get_by_test_id("stSidebarNav").get_by_text("Evaluate", exact=True).click()
    wait_idle(page)
    page.get_by_text("Metrics per split").wait_for(timeout=30_000)
    page.locator('[data-testid="stPlotlyChart"]:visible').first.wait_for(timeout=30_000)  # confusion heatmap
    assert exceptions_on(page) == []
    if os.environ.get("EXEMPLAR_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["EXEMPLAR_SCREENSHOTS"], "evaluate.png"), full_page=True)
