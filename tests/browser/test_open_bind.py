"""`streamlit run app.py --server.address 0.0.0.0` without sign-in (the way an operator might start it by hand)
serves nothing but the refusal: local mode has no sign-in, so it is for loopback only (issue 23)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, ROOT, wait_http, free_port, wait_idle

pytestmark = pytest.mark.browser


def test_an_open_bind_without_sign_in_serves_only_the_refusal(exemplar_home):
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "EXEMPLAR_HOME": str(exemplar_home), "EXEMPLAR_DEVICE": "cpu"}
    env.pop("EXEMPLAR_INSECURE_NO_AUTH", None)
    log = open(exemplar_home / "streamlit.log", "w")
    app = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
                            "--server.address", "0.0.0.0", "--server.headless", "true"],
                           env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", app)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                pg = browser.new_page()
                pg.set_default_timeout(30_000)
                pg.goto(f"http://127.0.0.1:{port}/gallery")
                wait_idle(pg)
                pg.get_by_text("refusing to serve on 0.0.0.0 without sign-in").wait_for()
                body = pg.inner_text("body")
                # nothing of the app past the refusal: no user picker, no dataset, no worker banner, no cards
                for absent in ("local mode — no sign-in", "Dataset", "Worker", "Good", "Sign in"):
                    assert absent not in body, (absent, body[:500])
            finally:
                browser.close()
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(timeout=20)
        log.close()
