"""Team CLI: users, a study answered by two readers, agreement and audit JSON shapes, a reader's one-line refusal,
and `serve`: refused on an open address without sign-in, started on loopback with no configuration."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from typer.testing import CliRunner

from services.cli import app
from tests.helpers_explain import dataset_and_model, fake_run

EX = str(Path(sys.executable).with_name("exemplar"))


def _run(args: list[str], user: str = "tester") -> dict:
    r = CliRunner().invoke(app, args + ["--json"], env={"EXEMPLAR_USER": user})
    assert r.exit_code == 0, (r.output, r.exception)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_users_study_agreement_audit_json(exemplar_home):
    assert _run(["users", "add", "r1", "--role", "reader"])["role"] == "reader"
    _run(["users", "add", "r2", "--role", "reader"])
    roles = {u["name"]: u["role"] for u in _run(["users", "list"])["users"]}
    assert roles == {"tester": "admin", "r1": "reader", "r2": "reader"}
    ds, mid = dataset_and_model(n=24)
    run = fake_run(ds, mid)
    st = _run(["study", "create", "--run", str(run), "--n", "5", "--question", "Q?", "--scale", "ordinal:1-5",
               "--readers", "r1,r2"])
    assert len(st["items"]) == 5
    for it, a, b in zip(st["items"], "12345", "12355"):
        _run(["study", "answer", "--study", str(st["study_id"]), "--item", str(it), "--value", a], "r1")
        _run(["study", "answer", "--study", str(st["study_id"]), "--item", str(it), "--value", b], "r2")
    ag = _run(["study", "agreement", "--study", str(st["study_id"]), "--reps", "200"])
    assert set(ag["krippendorff_alpha"]) >= {"value", "low", "high"} and ag["cohen_kappa"][0]["readers"] == ["r1", "r2"]
    assert {"rho", "low", "high"} <= set(ag["spearman"]["ar"])
    rows = _run(["audit", "list"])["rows"]
    assert sum(r["action"] == "study.answer" for r in rows) == 10
    assert {"user", "role", "action", "object", "at"} <= set(rows[0])


def test_reader_refusal_is_one_line(exemplar_home):
    env = {**os.environ, "EXEMPLAR_HOME": str(exemplar_home), "EXEMPLAR_USER": "tester"}
    subprocess.run([EX, "users", "add", "r1", "--role", "reader", "--json"], env=env, check=True, capture_output=True)
    r = subprocess.run([EX, "audit", "list", "--json"], env={**env, "EXEMPLAR_USER": "r1"}, capture_output=True,
                       text=True)
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "role reader" in r.stderr and "audit log" in r.stderr


def test_serve_refuses_open_bind_and_starts_on_loopback(exemplar_home):
    env = {**os.environ, "EXEMPLAR_HOME": str(exemplar_home)}
    r = subprocess.run([EX, "serve", "--address", "0.0.0.0", "--port", "8799"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "sign-in" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    from tests.browser.harness import free_port

    port = free_port()
    p = subprocess.Popen([EX, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as h:
                    assert h.status == 200
                    break
            except OSError:
                assert p.poll() is None, "serve exited on loopback without configuration"
                time.sleep(0.5)
        else:
            raise AssertionError("the app did not answer on loopback")
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)
