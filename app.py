"""Streamlit entry: navigation over pages/, sidebar (identity, dataset, model pickers, worker status).

Local mode (no [auth] in .streamlit/secrets.toml): the user picker, loopback only. Sign-in mode: nothing but a
sign-in screen until the OpenID Connect provider has identified the user."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages.common import current_user, refuse_open_bind, sidebar, signin_mode
from services.team.roles import PermissionRefused, allowed

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="Exemplar", page_icon="🩻", layout="wide")

refuse_open_bind()  # e.g. `streamlit run app.py --server.address 0.0.0.0` without sign-in: serve nothing

if signin_mode() and current_user() is None:
    st.title("Exemplar")
    st.write("Sign in with your organisation's account to continue.")
    st.button("Sign in", key="login_main", on_click=st.login, type="primary")
    st.stop()

WRITE_PAGES = {"retrain", "evaluate", "data"}  # hidden from readers (the services refuse these writes anyway)
PAGES = {
    "Explain": [
        st.Page(HERE / "pages/gallery.py", title="Gallery", icon="🖼️", url_path="gallery", default=True),
        st.Page(HERE / "pages/retrain.py", title="Retrain", icon="🔁", url_path="retrain"),
        st.Page(HERE / "pages/report.py", title="Before / after", icon="📈", url_path="report"),
        st.Page(HERE / "pages/counterfactuals.py", title="Counterfactuals", icon="🧪", url_path="counterfactuals"),
        st.Page(HERE / "pages/evaluate.py", title="Evaluate", icon="📊", url_path="evaluate"),
        st.Page(HERE / "pages/annotations.py", title="Annotations", icon="📝", url_path="annotations"),
    ],
    "Manage": [
        st.Page(HERE / "pages/data_models.py", title="Data & models", icon="🗂️", url_path="data"),
        st.Page(HERE / "pages/jobs.py", title="Jobs", icon="⚙️", url_path="jobs"),
    ],
    "Team": [st.Page(HERE / "pages/reading.py", title="Reading", icon="👁️", url_path="reading")],
}
# pages a role cannot use are hidden (the services refuse them anyway); the user is read once for the three checks
me = current_user()
if me is None or allowed(me["role"], "study.create"):
    PAGES["Team"].append(st.Page(HERE / "pages/studies.py", title="Studies", icon="🧑‍⚕️", url_path="studies"))
if me is None or allowed(me["role"], "audit.read"):
    PAGES["Team"].append(st.Page(HERE / "pages/audit.py", title="Audit log", icon="🧾", url_path="audit"))

if me is not None and not allowed(me["role"], "train"):
    PAGES = {k: [p for p in v if p.url_path not in WRITE_PAGES] for k, v in PAGES.items()}

nav = st.navigation(PAGES)
with st.sidebar:
    sidebar(pickers=nav.url_path != "reading")  # a reader's page names no dataset or model (blinded)
try:
    nav.run()
except PermissionRefused as exc:  # a write the role may not do: one clear line instead of a traceback
    st.error(str(exc))
