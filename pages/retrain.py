"""eXBL retraining page (placeholder until its issue lands)."""
import streamlit as st

from pages.common import not_built

st.title("eXBL retraining")
not_built("eXBL retraining")
