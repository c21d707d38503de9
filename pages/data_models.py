"""Data & models page: datasets (synth, import, samples, import report) and classifiers (train, registry)."""
import streamlit as st

from pages.common import refuse_open_bind
from pages.parts.datasets import render as render_datasets
from pages.parts.models import render as render_models

refuse_open_bind()  # no page on an open address without sign-in (pages/common.py)

st.title("Data & models")
tab_data, tab_models = st.tabs(["Datasets", "Models"])
with tab_data:
    render_datasets()
with tab_models:
    render_models()
