"""User names are plain text outside the sidebar: a Markdown image name is shown as its characters."""
from __future__ import annotations

from pages.parts.plain import md_escape
from services.jobs import lifecycle as jobs
from services.team.users import get_or_create_user
from tests.helpers_app import app_test, open_page

EVIL = "![t](http://127.0.0.1:9/t)"


def test_md_escape_leaves_no_markup():
    out = md_escape(EVIL + " :red[x] $x$ <b>y</b> **z**\nnext")
    for ch in "![]():$<>*":
        assert all(out[i - 1] == "\\" for i, c in enumerate(out) if c == ch), (ch, out)
    assert "\n" not in out


def test_jobs_page_shows_a_markdown_user_name_as_text():
    uid = get_or_create_user(EVIL)
    jid = jobs.create_job("data.synth", {"name": "x", "n": 10}, uid)
    at = open_page(app_test(), "jobs")
    assert not at.exception
    texts = [t.value for t in at.text]
    assert any(f"started by {EVIL}" in t for t in texts), texts
    rendered = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    assert not any("](http://127.0.0.1:9/t)" in v and "\\]" not in v for v in rendered), rendered
    assert jobs.get_job(jid)["status"] == "queued"
