"""The before / after report page (placeholder until its issue lands)."""
import streamlit as st

from pages.common import not_built

st.title("The before / after report")
not_built("The before / after report")
