"""The detail view's comparison store, one per server process and shared by every session
(services/explanations/compare.py computes; this keeps the store alive across reruns)."""
from __future__ import annotations

import streamlit as st

from services.explanations.compare import CompareStore


@st.cache_resource(show_spinner=False)
def store() -> CompareStore:
    return CompareStore()
