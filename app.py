"""Streamlit entry: navigation over pages/ and the sidebar (user, dataset and model pickers, worker status)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages.common import sidebar

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="Exemplar", page_icon="🩻", layout="wide")

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
}

nav = st.navigation(PAGES)
with st.sidebar:
    sidebar()
nav.run()
