"""The counterfactual studio page (placeholder until its issue lands)."""
import streamlit as st

from pages.common import not_built

st.title("The counterfactual studio")
not_built("The counterfactual studio")
