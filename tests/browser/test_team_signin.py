"""Sign-in mode in a real browser: an OpenID Connect provider (oidc-provider-mock) on loopback, Streamlit's
st.login configured by a secrets file; two readers sign in in two browser contexts and answer a blinded study
(neither sees the other's answers nor method names); a researcher's Studies page shows the library's figures."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, ROOT, wait_http, free_port, wait_idle

pytestmark = pytest.mark.browser
oidc_mock = pytest.importorskip("oidc_provider_mock")


@pytest.fixture
def seeded(exemplar_home):
    from services.reading import studies
    from services.team.users import get_or_create_user
    from services.team.access import set_role
    from tests.helpers_explain import dataset_and_model, fake_run

    admin = get_or_create_user("tester")
    for name, role in (("res", "researcher"), ("r1", "reader"), ("r2", "reader")):
        set_role(admin, name, role)
    ds, mid = dataset_and_model(n=24, name="secret-model")
    res = studies.create_study(None, [("Does the map justify the label?", "nominal:good,bad")], ["r1", "r2"],
                               run_id=fake_run(ds, mid), n=3)
    return res


@pytest.fixture
def signin_app(exemplar_home, seeded):
    with oidc_mock.run_server_in_thread(user_claims=[oidc_mock.User(sub=s) for s in ("r1", "r2", "res", "newbie")]) as srv:
        port = free_port()
        secrets = exemplar_home / "secrets.toml"
        secrets.write_text(
            "[auth]\n"
            f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
            'cookie_secret = "test-cookie-secret-0123456789abcdef"\n'
            'client_id = "exemplar"\nclient_secret = "secret"\n'
            f'server_metadata_url = "http://127.0.0.1:{srv.server_port}/.well-known/openid-configuration"\n')
        env = {**os.environ, "EXEMPLAR_HOME": str(exemplar_home), "EXEMPLAR_DEVICE": "cpu"}
        log = open(exemplar_home / "streamlit.log", "w")
        app = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none", "--secrets.files", str(secrets)],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/_stcore/health", app)
            yield f"http://127.0.0.1:{port}"
        finally:
            os.killpg(app.pid, signal.SIGTERM)
            app.wait(timeout=20)
            log.close()


def _sign_in(ctx, url: str, sub: str):
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(url)
    wait_idle(pg)
    pg.get_by_role("button", name="Sign in").first.click()
    pg.wait_for_url("**/oauth2/authorize**")
    pg.get_by_role("button", name=sub, exact=True).click()
    pg.wait_for_url(url + "/**")
    wait_idle(pg)
    pg.get_by_text(f"Signed in as {sub}").wait_for()
    return pg


def _answer_all(pg, url: str, keys: list[str]) -> str:
    pg.goto(url + "/reading")
    wait_idle(pg)
    seen = []
    for i, k in enumerate(keys):
        pg.get_by_text(f"{i} of {len(keys)} answered").wait_for()
        pg.get_by_text("Does the map justify the label?").wait_for()
        seen.append(pg.inner_text("body"))
        pg.get_by_role("button", name=f"{k} · {'good' if k == '1' else 'bad'}").click()
        wait_idle(pg)
    pg.get_by_text(f"{len(keys)} of {len(keys)} answered").wait_for()
    return "\n".join(seen)


def test_two_readers_sign_in_answer_blinded_and_agreement_matches(signin_app, seeded):
    from playwright.sync_api import sync_playwright

    from services.reading import results as study_results
    from services.team.users import find_user

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            c1, c2, c3 = (browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(3))
            p1, p2 = _sign_in(c1, signin_app, "r1"), _sign_in(c2, signin_app, "r2")
            assert p1.get_by_text("local mode").count() == 0  # sign-in mode: no picker
            t1 = _answer_all(p1, signin_app, ["1", "1", "2"])
            t2 = _answer_all(p2, signin_app, ["1", "2", "2"])
            for text in (t1, t2):
                for leak in ("gradcam", "secret-model", "your answer"):
                    assert leak not in text
            res = find_user("res")
            want = study_results.agreement(res["id"], seeded["study_id"])
            assert want["n_answers"] == 6
            p3 = _sign_in(c3, signin_app, "res")
            p3.goto(signin_app + "/studies")
            wait_idle(p3)
            p3.get_by_role("tab", name="Agreement").click()
            a, k = want["krippendorff_alpha"], want["fleiss_kappa"]
            p3.get_by_text(f"Krippendorff's α = {a['value']:.3f} (95 % interval").wait_for(timeout=60_000)
            body = p3.inner_text("body")
            assert f"Fleiss' κ = {k['value']:.3f}" in body  # the figures the library computes for these answers
        finally:
            browser.close()


def test_a_new_identity_signed_in_through_secrets_files_is_a_reader(signin_app):
    """The app is started with --secrets.files (not .streamlit/secrets.toml): a brand-new identity signs in as a
    reader, never as an admin, and sees no admin page."""
    from playwright.sync_api import sync_playwright

    from services.team.users import find_user

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            pg = _sign_in(browser.new_context(viewport={"width": 1400, "height": 1000}), signin_app, "newbie")
            assert find_user("newbie")["role"] == "reader"
            assert pg.get_by_role("link", name="Audit log").count() == 0
            assert pg.get_by_role("link", name="Retrain").count() == 0
        finally:
            browser.close()
