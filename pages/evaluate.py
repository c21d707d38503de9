"""The model card and method comparison page (placeholder until its issue lands)."""
import streamlit as st

from pages.common import not_built

st.title("The model card and method comparison")
not_built("The model card and method comparison")
