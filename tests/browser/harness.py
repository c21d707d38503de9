"""Browser-test harness: a real `streamlit run app.py` + a real worker on a free loopback port, and a Chromium page.

Use in a test module:  `from tests.browser.harness import live_app, page  # noqa: F401` (pytest fixtures).
Debian's chromium (/usr/bin/chromium) is driven by Playwright; nothing is downloaded.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from services.platform.streamlit_launch import streamlit_command

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


class LiveApp:
    """A running app: .url, .home (EXEMPLAR_HOME), .env; stop() ends both processes."""

    def __init__(self, home: Path):
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "EXEMPLAR_HOME": str(home), "EXEMPLAR_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
        bindir = Path(sys.executable).parent
        self.worker_log = open(home / "worker.log", "w")
        self.app_log = open(home / "streamlit.log", "w")
        subprocess.run([str(bindir / "exemplar"), "db", "upgrade"], env=self.env, check=True, capture_output=True)
        self.worker = subprocess.Popen([str(bindir / "exemplar"), "worker"], env=self.env, cwd=ROOT,
                                       stdout=self.worker_log, stderr=subprocess.STDOUT, start_new_session=True)
        self.app = subprocess.Popen(
            streamlit_command(self.port, "127.0.0.1", True, "--server.fileWatcherType", "none"),  # as exemplar serve
            env=self.env, cwd=ROOT, stdout=self.app_log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.url + "/_stcore/health", self.app)

    def stop(self) -> None:
        for p in (self.app, self.worker):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in (self.app, self.worker):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.worker_log.close()
        self.app_log.close()


@pytest.fixture
def live_app(exemplar_home):
    app = LiveApp(exemplar_home)
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture
def page(live_app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = ctx.new_page()
        pg.set_default_timeout(30_000)
        try:
            yield pg
        finally:
            ctx.close()
            browser.close()


def wait_idle(page, timeout: float = 30_000) -> None:
    """Wait until Streamlit has finished running the script (no 'running' status widget)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


ARM_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (window.__exRunObs) window.__exRunObs.disconnect();
  window.__exRuns = 0;
  window.__exRunObs = new MutationObserver(() => {
    if (app.getAttribute('data-test-script-state') === 'running') window.__exRuns++;
  });
  window.__exRunObs.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
SETTLED_JS = """() => window.__exRuns > 0
  && document.querySelector('[data-testid="stApp"]').getAttribute('data-test-script-state') !== 'running'"""


def act_and_settle(page, action, timeout: float = 30_000) -> None:
    """Do `action` (a click that makes Streamlit rerun), then wait until a run has started *and* ended.
    `wait_idle` alone cannot tell: the status widget shows only after a run has lasted 500 ms, and a click's run
    starts a round trip later, so right after a click it finds "idle" while the click's callback has not run yet
    (a test then read the database before the pick was stored). The app root's script-state attribute says when
    the server runs the script, fragment runs included."""
    page.evaluate(ARM_JS)
    action()
    page.wait_for_function(SETTLED_JS, timeout=timeout)
    wait_idle(page, timeout)


def exceptions_on(page) -> list[str]:
    return [e.inner_text() for e in page.query_selector_all('[data-testid="stException"]')]


def pick_user(page, name: str = "tester") -> None:
    """Create (or pick) a user through the sidebar."""
    page.get_by_label("…or create a user").fill(name)
    page.get_by_label("…or create a user").press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Create user").click()
    wait_idle(page)


def choose(page, label: str, option: str, tries: int = 4) -> None:
    """Pick `option` in the selectbox `label`; the dropdown is opened again when a rerun closed it first.
    Shared by the browser tests and bench/ui_latency.py."""
    for k in range(tries):
        page.get_by_label(label, exact=True).first.click()
        try:
            page.get_by_role("option", name=option, exact=True).first.click(timeout=5_000)
            return
        except Exception:
            if k == tries - 1:
                raise
            page.keyboard.press("Escape")


def card_option(page, image_id: int | str, action: str):
    """The Good / Bad / Detail button of a gallery card (aria-pressed when selected; pages/parts/card_grid.py)."""
    return card_control(page, image_id).get_by_role("button", name=action, exact=True)


def card_control(page, image_id: int | str, stale_too: bool = False):
    """A gallery card in the card grid (one component, key g_cards, the same element from run to run: wait for
    what a run draws with expect()); a card carries its image id; locators pierce the component's shadow root."""
    grid = ".st-key-g_cards" + ("" if stale_too else "[data-stale='false']")
    return page.locator(f"{grid} .card[data-image-id='{image_id}']")
