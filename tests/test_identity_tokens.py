"""Identity (issue 23): the demo checks the caller's role and its rows are the caller's; local SQLite mode as
before; on PostgreSQL the CLI acts through personal tokens only (set-up mode until the first admin, bootstrap
once, EXEMPLAR_USER / EXEMPLAR_ADMINS ignored, bad and revoked tokens refused, tokens listed without values,
every token write audited); `emit --json` writes null for NaN."""
from __future__ import annotations

import json
import os
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import services.team.users as users
from services.cli import app
from tests.helpers_pg import fresh_database, postgres_url  # noqa: F401

ENV_OFF = {"EXEMPLAR_USER": None, "EXEMPLAR_ADMINS": None, "EXEMPLAR_TOKEN": None}


def cli(args: list[str], **env):
    """Run the CLI in-process with exactly these identity variables (others unset); notices start afresh."""
    users._said.clear()
    return CliRunner().invoke(app, args, env={**ENV_OFF, **env})


def ok(args: list[str], **env) -> dict:
    r = cli(args + ["--json"], **env)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return json.loads(r.stdout.strip().splitlines()[-1])


def refused(args: list[str], needle: str, **env):
    """The call fails with one error line containing `needle` (a role refusal reaches `services.cli.main` as
    PermissionRefused, which prints it as one line: its message is checked here)."""
    from services.team.roles import PermissionRefused

    r = cli(args + ["--json"], **env)
    assert r.exit_code != 0 and r.stdout == "", (r.stdout, r.stderr)
    if isinstance(r.exception, PermissionRefused):
        line = str(r.exception)
        assert "\n" not in line
    else:
        err = r.stderr.strip().splitlines()
        line = err[-1] if err and err[-1].startswith("error:") else repr(r.exception)
    assert needle in line, (line, r.stderr)
    return r


# ----------------------------------------------------------------------------------------------- emit

def test_emit_writes_null_for_nan_and_infinity(capsys):
    from services.cli.common import emit

    obj = {"auroc": math.nan, "ece": np.float32("nan"), "hi": math.inf, "lo": -math.inf, "acc": 0.5,
           "rows": [{"f1": np.float64("nan")}, (1, float("nan"))], "n": np.int64(3)}
    emit(obj, True)
    line = capsys.readouterr().out
    assert "NaN" not in line and "Infinity" not in line
    got = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON literal {c}"))
    assert got == {"auroc": None, "ece": None, "hi": None, "lo": None, "acc": 0.5, "rows": [{"f1": None}, [1, None]],
                   "n": "3"}
    emit(obj, False)
    human = capsys.readouterr().out
    assert "NaN" not in human and '"auroc": null' in human


# ----------------------------------------------------------------------------------------------- SQLite

def test_a_reader_cannot_build_the_demo(monkeypatch):
    import services.demo.steps as demo
    from services.jobs.lifecycle import list_jobs

    monkeypatch.setattr(demo, "DEMO_STEPS", [])  # refused before any step: the steps are tested elsewhere
    ok(["users", "add", "rdr", "--role", "reader"], EXEMPLAR_USER="boss")
    r = refused(["demo"], "build the demo", EXEMPLAR_USER="rdr")
    assert "role reader" in str(r.exception) and r.stderr == ""
    assert list_jobs() == []
    refused(["demo", "--queue"], "role reader", EXEMPLAR_USER="rdr")


def test_the_demo_is_built_as_the_caller(monkeypatch):
    import services.demo.steps as demo
    from services.jobs.lifecycle import list_jobs

    monkeypatch.setattr(demo, "DEMO_STEPS", [])
    ok(["demo"], EXEMPLAR_USER="ada")  # local mode: an unknown name is created as an admin, as before
    assert [(u["name"], u["role"]) for u in users.list_users()] == [("ada", "admin")]
    assert [j["created_by_name"] for j in list_jobs()] == ["ada"]


def test_local_sqlite_mode_is_unchanged(monkeypatch):
    r = cli(["users", "add", "r1", "--role", "reader", "--json"], EXEMPLAR_USER="boss")
    assert r.exit_code == 0 and r.stderr == ""  # no notice in local mode
    assert {u["name"]: u["role"] for u in users.list_users()} == {"boss": "admin", "r1": "reader"}
    refused(["users", "add", "r2"], "role reader", EXEMPLAR_USER="r1")
    assert ok(["users", "add", "r2"], EXEMPLAR_USER="r1", EXEMPLAR_ADMINS="r1")["role"] == "reader"
    monkeypatch.setenv("EXEMPLAR_USER", "carol")
    assert users.process_user()["role"] == "admin" and users.find_user("carol")["role"] == "admin"
    refused(["users", "bootstrap-admin", "mallory"], "has an admin already", EXEMPLAR_USER="boss")


def test_a_token_wins_over_exemplar_user_on_sqlite():
    from services.team import access, audit_log, token_store, tokens

    boss = users.get_or_create_user("boss")
    access.set_role(boss, "r1", "reader")
    tok = tokens.create(boss, "r1", "laptop")["token"]
    r = refused(["users", "add", "x"], "role reader", EXEMPLAR_USER="boss", EXEMPLAR_TOKEN=tok)
    assert "EXEMPLAR_USER ignored" in r.stderr
    refused(["users", "add", "x"], "not a valid token", EXEMPLAR_TOKEN="exm_nope")


# ----------------------------------------------------------------------------------------------- PostgreSQL

@pytest.fixture
def shared_db(postgres_url, monkeypatch):  # noqa: F811
    monkeypatch.setenv("EXEMPLAR_DATABASE_URL", fresh_database(postgres_url))
    for k in ENV_OFF:
        monkeypatch.delenv(k, raising=False)
    users._said.clear()
    return users


def _set_up_mode_acts_unauthenticated():
    from services.jobs import lifecycle as jobs

    r = cli(["jobs", "cancel", "999"], EXEMPLAR_USER="mallory")  # resolves the identity, then finds no job
    lines = r.stderr.strip().splitlines()
    assert lines[:2] == ["EXEMPLAR_USER ignored: on a shared database the CLI acts only through EXEMPLAR_TOKEN",
                         users.SETUP_NOTICE] and lines[2].startswith("error: job 999")
    users._said.clear()
    assert users.process_user() == users.SETUP and users.list_users() == []
    jid = jobs.create_job("data.synth", {"name": "s", "n": 40, "size": 32, "seed": 1}, user_id=None)
    assert jobs.get_job(jid)["created_by"] is None and users.list_users() == []  # no user row
    r = refused(["users", "add", "eve", "--role", "admin"], "bootstrap-admin")
    assert "no admin yet: acting unauthenticated" in r.stderr
    refused(["users", "token", "eve"], "bootstrap-admin")
    return jid


def _after_bootstrap(setup_job: int):
    from services.jobs import lifecycle as jobs
    from services.team.roles import PermissionRefused
    from services.team.access import require

    with pytest.raises(PermissionRefused, match="EXEMPLAR_TOKEN"):
        require(None, "data.synth")
    row = jobs.execute_job(setup_job)  # admitted in set-up mode (checked when submitted): it runs, owned by no one
    assert row["status"] == "succeeded" and row["created_by"] is None, row["error"]
    r = refused(["users", "add", "eve", "--role", "admin"], "EXEMPLAR_TOKEN",
                EXEMPLAR_USER="mallory", EXEMPLAR_ADMINS="mallory")
    notes = [ln for ln in r.stderr.splitlines() if "ignored" in ln]
    assert len(notes) == 1 and "EXEMPLAR_USER and EXEMPLAR_ADMINS" in notes[0]
    refused(["demo"], "EXEMPLAR_TOKEN")
    refused(["users", "add", "eve"], "not a valid token", EXEMPLAR_TOKEN="not-a-token")
    assert users.find_user("eve") is None and users.find_user("mallory") is None
    from services.cli import check_identity

    with pytest.raises(PermissionRefused, match="EXEMPLAR_TOKEN"):
        check_identity(["jobs", "list", "--json"])  # reads too, once an admin exists
    for exempt in (["db", "upgrade"], ["worker"], ["serve"], ["jobs", "list", "--help"]):
        check_identity(exempt)


@pytest.mark.postgres
def test_tokens_on_a_shared_database(shared_db):
    from services.team import audit
    from services.team import access, audit_log, token_store, tokens

    setup_job = _set_up_mode_acts_unauthenticated()
    ba = ok(["users", "bootstrap-admin", "alice"])
    alice, tok = ba["id"], ba["token"]
    assert ba["role"] == "admin" and tok.startswith("exm_") and len(tok) > 40
    refused(["users", "bootstrap-admin", "mallory"], "has an admin already")
    _after_bootstrap(setup_job)
    os.environ["EXEMPLAR_TOKEN"] = ba["token"]
    try:
        from services.cli import check_identity

        check_identity(["jobs", "list"])  # a token lets every command through
    finally:
        del os.environ["EXEMPLAR_TOKEN"]
    assert ok(["users", "add", "bob", "--role", "reader"], EXEMPLAR_TOKEN=tok)["role"] == "reader"
    made = ok(["users", "token", "bob", "--label", "bob's laptop"], EXEMPLAR_TOKEN=tok, EXEMPLAR_USER="alice")
    btok = made["token"]
    refused(["demo"], "role reader", EXEMPLAR_TOKEN=btok)
    refused(["users", "tokens"], "role reader", EXEMPLAR_TOKEN=btok)
    r = cli(["users", "tokens", "--json"], EXEMPLAR_TOKEN=tok)
    listed = json.loads(r.stdout)["tokens"]
    assert [(t["user"], t["label"]) for t in listed] == [("alice", "bootstrap-admin"), ("bob", "bob's laptop")]
    assert tok not in r.stdout and btok not in r.stdout and "digest" not in r.stdout
    assert listed[0]["last_used_at"] and listed[1]["last_used_at"] and listed[1]["created_by"] == "alice"
    ok(["users", "revoke", str(made["token_id"])], EXEMPLAR_TOKEN=tok)
    refused(["demo"], "not a valid token", EXEMPLAR_TOKEN=btok)
    refused(["users", "revoke", str(made["token_id"])], "already revoked", EXEMPLAR_TOKEN=tok)
    assert token_store.authenticate(btok) is None and token_store.authenticate(tok) == alice
    alice_token = next(t["id"] for t in listed if t["user"] == "alice")
    refused(["users", "revoke", str(alice_token)], "last live token of any admin", EXEMPLAR_TOKEN=tok)
    assert token_store.authenticate(tok) == alice  # nobody was locked out
    rows = audit_log.list_rows(alice)
    acts = [(r["action"], r["user"]) for r in rows if r["action"].startswith(("token.", "user.bootstrap"))]
    assert acts == [("user.bootstrap_admin", "set-up"), ("token.create", "set-up"), ("token.create", "alice"),
                    ("token.revoke", "alice")]
    assert tok not in json.dumps(rows) and btok not in json.dumps(rows)
    assert users.get_user(users.get_or_create_user("newcomer"))["role"] == "reader"  # no self-made admins


# ----------------------------------------------------------------------------------------------- reads never wait

def test_identity_reads_do_not_wait_behind_a_writer():
    """A write transaction held open in another thread (the SQLite writers' lock): every identity read answers."""
    import threading
    import time

    from services.jobs import lifecycle as jobs

    from services.team import access, audit_log, token_store, tokens
    from services.platform.database import session
    from services.team.access import require, require_cancel

    boss = users.get_or_create_user("boss")
    tok = tokens.create(boss, "boss")["token"]
    assert token_store.authenticate(tok) == boss  # last_used_at written now: the next minute's lookups only read
    jid = jobs.create_job("data.synth", {"name": "x", "n": 10}, boss)
    holding, release = threading.Event(), threading.Event()

    def writer():
        with session():
            holding.set()
            release.wait(30)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert holding.wait(30)
        t0 = time.monotonic()
        assert users.get_user(boss)["name"] == "boss" and users.find_user("boss")["id"] == boss
        assert [u["name"] for u in users.list_users()] == ["boss"] and users.get_or_create_user("boss") == boss
        assert require(boss, "train")["id"] == boss and require_cancel(jid, boss)["id"] == boss
        assert token_store.authenticate(tok) == boss and users.has_admin()
        assert time.monotonic() - t0 < 5, "an identity read waited for the writer"
    finally:
        release.set()
        t.join()
