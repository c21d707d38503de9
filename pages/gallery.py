"""The explanation gallery page (placeholder until its issue lands)."""
import streamlit as st

from pages.common import not_built

st.title("The explanation gallery")
not_built("The explanation gallery")
