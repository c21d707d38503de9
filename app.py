"""Streamlit entry: navigation over pages/, sidebar (identity, dataset, model pickers, worker status).

Local mode (no [auth] in .streamlit/secrets.toml): the user picker, loopback only. Sign-in mode: nothing but a
sign-in screen until the OpenID Connect provider has identified the user."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages.common import current_user, refuse_open_bind, sidebar, signin_mode
from pages.parts.navigation import build_pages
from services.team.roles import PermissionRefused

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="Exemplar", page_icon="🩻", layout="wide")

refuse_open_bind()  # e.g. `streamlit run app.py --server.address 0.0.0.0` without sign-in: serve nothing

if signin_mode() and current_user() is None:
    st.title("Exemplar")
    st.write("Sign in with your organisation's account to continue.")
    st.button("Sign in", key="login_main", on_click=st.login, type="primary")
    st.stop()

PAGES = build_pages(HERE, current_user())
nav = st.navigation(PAGES)
with st.sidebar:
    sidebar(pickers=nav.url_path != "reading")  # a reader's page names no dataset or model (blinded)
try:
    nav.run()
except PermissionRefused as exc:  # a write the role may not do: one clear line instead of a traceback
    st.error(str(exc))
