"""Streamlit entry: navigation over pages/ and the sidebar (user, dataset and model pickers, worker status)."""
from __future__ import annotations

import streamlit as st

from pages.common import sidebar

st.set_page_config(page_title="Exemplar", page_icon="🩻", layout="wide")

PAGES = {
    "Explain": [
        st.Page("pages/gallery.py", title="Gallery", icon="🖼️", url_path="gallery", default=True),
        st.Page("pages/retrain.py", title="Retrain", icon="🔁", url_path="retrain"),
        st.Page("pages/report.py", title="Before / after", icon="📈", url_path="report"),
        st.Page("pages/counterfactuals.py", title="Counterfactuals", icon="🧪", url_path="counterfactuals"),
        st.Page("pages/evaluate.py", title="Evaluate", icon="📊", url_path="evaluate"),
        st.Page("pages/annotations.py", title="Annotations", icon="📝", url_path="annotations"),
    ],
    "Manage": [
        st.Page("pages/data_models.py", title="Data & models", icon="🗂️", url_path="data"),
        st.Page("pages/jobs.py", title="Jobs", icon="⚙️", url_path="jobs"),
    ],
}

nav = st.navigation(PAGES)
sidebar()
nav.run()
