"""Data & models page: datasets (synth, import, samples, import report) and classifiers (train, registry)."""
import streamlit as st

from pages.common import not_built

st.title("Data & models")
tab_data, tab_models = st.tabs(["Datasets", "Models"])
with tab_data:
    try:
        from pages.parts.datasets import render as render_datasets
    except ImportError:
        render_datasets = None
    render_datasets() if render_datasets else not_built("Dataset import and SynthCXR generation")
with tab_models:
    try:
        from pages.parts.models import render as render_models
    except ImportError:
        render_models = None
    render_models() if render_models else not_built("Classifier training")
