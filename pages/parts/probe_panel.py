"""Shortcut probe rows for the before/after report: artefact injection per corner and counterfactual change mass."""
from __future__ import annotations

import streamlit as st

from pages.parts.plain import md_escape
from services.counterfactuals.probe import probe_rows
from services.platform.settings import get_settings
from services.presentation.report_view import probe_table


@st.cache_data(max_entries=8, show_spinner="Probing both models with the marker glyph…")
def _rows(parent_id: int, child_id: int, home: str) -> list[dict]:
    return probe_rows([parent_id, child_id])


def probe_or_reason(parent_id: int, child_id: int) -> list[dict] | str:
    """The probe's rows for [parent, child] (cached), or the one-line reason there are none."""
    try:
        return _rows(int(parent_id), int(child_id), str(get_settings().home_dir))
    except ValueError as exc:
        return str(exc)


def render_probe_panel(parent_id: int, child_id: int) -> None:
    """Rows for the parent and the child: share of held-out predictions changed with the marker glyph pasted at each
    corner (most toward which class), and the change-mass ratios of their stored counterfactuals."""
    st.subheader("Shortcut probe")
    rows = probe_or_reason(parent_id, child_id)
    if isinstance(rows, str):
        st.caption(f"Artefact probe not available: {md_escape(rows)}")
        return
    table, caption = probe_table(rows)
    st.dataframe(table, hide_index=True, key="rp_probe_table")
    st.caption(caption)
