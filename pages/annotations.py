"""The annotation browser page (placeholder until its issue lands)."""
import streamlit as st

from pages.common import not_built

st.title("The annotation browser")
not_built("The annotation browser")
