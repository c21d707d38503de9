"""In Chromium: open an explanation in the reader's viewer from the gallery's detail view and zoom it (the
figure's zoom-in control); the image is drawn at its native size and the axes' range shrinks."""
import pytest
from playwright.sync_api import expect

from services.explanations.explaining import query_explanations
from tests.browser.harness import card_option, exceptions_on, live_app, page, pick_user, wait_idle  # noqa: F401
from tests.helpers_explain import dataset_and_model, fake_run

pytestmark = pytest.mark.browser

RANGE_JS = """() => { const g = document.querySelector('.js-plotly-plot');
  return g && g._fullLayout ? [g._fullLayout.xaxis.range, g._fullLayout.yaxis.range] : null; }"""


def test_viewer_opens_at_native_size_and_zooms(page, live_app):
    ds_id, mid = dataset_and_model(n=20, size=48)
    rid = fake_run(ds_id, mid)
    rows, _ = query_explanations(rid, "ar", False, limit=12)
    page.goto(live_app.url)
    wait_idle(page)
    pick_user(page, "radiologist")
    page.get_by_role("heading", name="Explanation gallery").wait_for()
    btn = card_option(page, rows[0]["image_id"], "Detail")
    expect(btn).to_have_count(1)
    btn.click()
    wait_idle(page)
    page.locator(".st-key-g_det_viewer label").first.click()
    wait_idle(page)
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for(timeout=60_000)
    assert exceptions_on(page) == []
    page.get_by_text("48×48 px, native resolution").first.wait_for(timeout=120_000)
    page.wait_for_function("() => { const g = document.querySelector('.js-plotly-plot'); "
                           "return !!(g && g._fullLayout && g._fullLayout.xaxis); }", timeout=120_000)
    (x0, x1), _ = page.evaluate(RANGE_JS)
    drag = page.locator(".js-plotly-plot .nsewdrag").first
    box = drag.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.locator(".js-plotly-plot .modebar-btn[data-title='Zoom in']").first.click(force=True)
    page.wait_for_timeout(800)
    (z0, z1), _ = page.evaluate(RANGE_JS)
    assert abs(z1 - z0) < 0.8 * abs(x1 - x0), ((x0, x1), (z0, z1))
