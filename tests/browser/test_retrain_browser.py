"""In a real browser with a real worker: open Retrain with a pinned pair, start the default method with its
matched control, watch the per-epoch charts while the worker runs it, see the child, its control and the
verdict, and open the before / after report (parent | control | child per held-out split, the verdict)."""
from __future__ import annotations

import os

import pytest

from services.explanations import explaining

from services.explanations import feedback
from services.models.catalog import list_models
from services.data.datasets import synth_dataset
from services.models.registry import get_model
from services.models.training import train_classifier
from services.team.users import get_or_create_user
from tests.browser.harness import exceptions_on, live_app, page, pick_user, wait_idle  # noqa: F401

pytestmark = pytest.mark.browser


def _shot(page, name: str) -> None:
    if os.environ.get("EXEMPLAR_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["EXEMPLAR_SCREENSHOTS"], name), full_page=True)


def test_retrain_from_the_pinned_pair_then_open_the_report(page, live_app):
    synth_dataset("t", n=160, size=32, seed=0, user_id=None)
    mid = train_classifier("t", arch="simple_cnn", epochs=2, arch_kwargs={"width": 4}, batch_size=32, user_id=None)["model_id"]
    run = explaining.run_explain(mid, "gradcam", user_id=None)
    uid = get_or_create_user("radiologist")
    rows = sorted((r for r in explaining.run_rows(run["run_id"]) if r["split"] == "train"),
                  key=lambda r: (r["ar"] is None, r["ar"]))
    feedback.pick(uid, mid, rows[-1]["image_id"], "good", run["run_id"])
    feedback.pick(uid, mid, rows[0]["image_id"], "bad", run["run_id"])

    page.goto(live_app.url)
    wait_idle(page)
    pick_user(page, "radiologist")
    page.get_by_test_id("stSidebarNav").get_by_text("Retrain", exact=True).click()
    wait_idle(page)
    page.get_by_role("heading", name="eXBL retraining").wait_for()
    page.get_by_text(rows[-1]["path"]).first.wait_for()
    page.get_by_text(rows[0]["path"]).first.wait_for()
    page.get_by_role("spinbutton", name="Epochs").fill("2")
    page.get_by_role("button", name="Start retraining").click()
    wait_idle(page)
    try:
        page.locator('[data-testid="stPlotlyChart"]:visible').first.wait_for(timeout=240_000)  # live, per epoch
        page.get_by_text("New model #").first.wait_for(timeout=240_000)
    except Exception:
        _shot(page, "retrain_fail.png")
        raise
    assert exceptions_on(page) == []
    _shot(page, "retrain.png")
    made = [m for m in list_models() if m["parent_id"] == mid]
    children = [m for m in made if not (m["config"] or {}).get("control_of")]
    controls = [m for m in made if (m["config"] or {}).get("control_of")]
    # the page's default: 3 seeds, each a child, its plain control and its random-pair control
    assert len(children) == 3 and all(len(get_model(c["id"])["feedback_ids"]) == 2 for c in children)
    assert len(controls) == 6
    first = min(children, key=lambda m: m["id"])  # seed 0's child: the one the result names
    lineages = {c["config"]["lineage"] for c in controls if c["config"]["control_of"] == first["id"]}
    assert lineages == {f"control of #{first['id']}", f"random-pair control of #{first['id']}"}
    controls = [c for c in controls if c["config"]["lineage"] == f"control of #{first['id']}"]
    heading = page.get_by_role("heading", name="Before / after report")
    # one click, as soon as the button shows (the panel's last redraw never replaces it)
    page.get_by_role("button", name="Open the before / after report").first.click()
    try:
        heading.wait_for(timeout=60_000)
        page.get_by_role("heading", name="Verdict").wait_for(timeout=120_000)
        page.get_by_text(f"control #{controls[0]['id']}").first.wait_for(timeout=60_000)
        page.locator('[data-testid="stPlotlyChart"]:visible').first.wait_for(timeout=60_000)
        page.get_by_text("Download the report (HTML)").wait_for(timeout=120_000)
    except Exception:
        _shot(page, "report_fail.png")
        raise
    assert exceptions_on(page) == []
    _shot(page, "report.png")
