"""In Chromium with a real worker: the studio runs a tiny diffusion + adversarial job and shows the side-by-side row."""
import pytest
from playwright.sync_api import expect

from tests.browser.harness import exceptions_on, live_app, page, pick_user, wait_idle  # noqa: F401
from tests.test_counterfactual_service import make_world

pytestmark = pytest.mark.browser


def test_studio_runs_a_job_through_the_worker(page, live_app):
    make_world("browser")
    page.goto(live_app.url)
    wait_idle(page)
    pick_user(page, "researcher")
    page.get_by_test_id("stSidebarNav").get_by_text("Counterfactuals", exact=True).click()
    wait_idle(page)
    page.get_by_role("heading", name="Counterfactual studio").wait_for(timeout=90_000)
    assert exceptions_on(page) == []
    page.get_by_text("Advanced (override the preset)").click()
    for label, value in (("diffusion steps", "3"), ("start timestep t₀", "60"), ("adversarial max steps", "5")):
        box = page.get_by_role("spinbutton", name=label)
        box.fill(value)
        box.press("Enter")
        wait_idle(page)
    page.locator(".st-key-cf_gen_run button:visible").click()
    # the worker runs the job; the page polls it and then shows the row
    page.get_by_text("Original", exact=True).first.wait_for(timeout=120_000)
    wait_idle(page)
    assert exceptions_on(page) == []
    for head in ("Original", "Affirmative", "Adversarial (pixel space)"):
        expect(page.get_by_text(head, exact=True).first).to_be_visible()
    expect(page.get_by_text("Diffusion · Exemplar fast (noised start, early-stopped guidance, DDIM finish to t = 0)", exact=True).first).to_be_visible()
    expect(page.get_by_text("Trajectory", exact=False).first).to_be_visible()
    assert page.get_by_text("UNet passes").count() >= 2
    # the viewer opens in a large dialog, not inside the ~150 px result column: its controls and pictures fit
    page.locator("[class*='st-key-'][class*='_viewer'] button:visible").first.click()
    dialog = page.get_by_role("dialog")
    dialog.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    assert exceptions_on(page) == []
    assert dialog.locator(".js-plotly-plot").first.bounding_box()["width"] >= 600
    slider = dialog.get_by_text("Level (window centre)").first.bounding_box()
    assert slider["height"] < 40  # the label on one line, not a letter a line
