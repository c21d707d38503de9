"""Audit log (admins): every write with who, role, when, action, object, before / after; filter, export as CSV
(cells escaped against formula injection) or JSON; and the users' roles."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.common import refuse_open_bind, require_user
from pages.parts.plain import md_escape
from services.team import audit, audit_log
from services.team.roles import ROLES, PermissionRefused
from services.team.users import list_users
from services.team.access import set_role

refuse_open_bind()  # no page on an open address without sign-in (pages/common.py)

st.title("Audit log")
me = require_user()


def _roles() -> None:
    st.subheader("Roles")
    users = list_users()
    st.dataframe(pd.DataFrame([{"user": u["name"], "role": u["role"]} for u in users]), hide_index=True,
                 key="au_users", width="stretch")
    with st.form("au_role_form", border=False, enter_to_submit=True):  # typed name + one click (or Enter) sets it
        c1, c2, c3 = st.columns([3, 2, 1], vertical_alignment="bottom")
        name = c1.text_input("User name (created when new)", key="au_role_user")
        role = c2.selectbox("Role", ROLES, key="au_role_role")
        go = c3.form_submit_button("Set role", key="au_role_set")
    if go:
        try:
            if not name.strip():
                raise ValueError("enter the user's name first")
            u = set_role(me["id"], name, role)
            st.success(md_escape(f"{u['name']}: role set to {u['role']}"))
        except (ValueError, PermissionRefused) as exc:
            st.error(md_escape(str(exc)))


def _log() -> None:
    st.subheader("Log")
    c1, c2, c3, c4 = st.columns(4)
    names = [""] + [u["name"] for u in list_users()]
    who = c1.selectbox("User", names, key="au_user", format_func=lambda n: n or "everyone")
    action = c2.text_input("Action starts with", key="au_action", placeholder="study. / job. / pick")
    since = c3.date_input("From", value=None, key="au_since")
    until = c4.date_input("To", value=None, key="au_until")
    rows = audit_log.list_rows(me["id"], user=who or None, action=action.strip() or None,
                           since=since.isoformat() if since else None,
                           until=f"{until.isoformat()}T23:59:59.999999" if until else None)
    st.caption(f"{len(rows)} rows")
    cols = ["at", "user", "role", "action", "object", "before", "after"]
    df = pd.DataFrame([{k: (str(r[k]) if k in ("before", "after") and r[k] is not None else r[k]) for k in cols}
                       for r in rows], columns=cols)
    st.dataframe(df, hide_index=True, key="au_table", width="stretch")
    d1, d2 = st.columns(2)
    d1.download_button("Export CSV", data=audit.to_csv(rows, ["id", "at", "user", "role", "action", "object",
                                                              "before", "after"]),
                       file_name="audit.csv", mime="text/csv", key="au_csv")
    d2.download_button("Export JSON", data=audit.to_json(rows), file_name="audit.json", mime="application/json",
                       key="au_json")


if me is not None:
    try:
        audit_log.list_rows(me["id"], limit=1)
    except PermissionRefused as exc:
        st.warning(str(exc))
    else:
        _log()
        _roles()
