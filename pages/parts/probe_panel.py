"""Shortcut probe rows for the before/after report: artefact injection per corner and counterfactual change mass."""
from __future__ import annotations

import streamlit as st

from services.counterfactuals.probe import probe_rows
from services.platform.settings import get_settings

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def _f(v, nd: int = 2) -> str:
    return "n/a" if v is None or v != v else f"{v:.{nd}f}"


@st.cache_data(max_entries=8, show_spinner="Probing both models with the marker glyph…")
def _rows(parent_id: int, child_id: int, home: str) -> list[dict]:
    return probe_rows([parent_id, child_id])


def render_probe_panel(parent_id: int, child_id: int) -> None:
    """Rows for the parent and the child: share of held-out predictions changed with the marker glyph pasted at each
    corner (most toward which class), and the change-mass ratios of their stored counterfactuals."""
    st.subheader("Shortcut probe")
    try:
        rows = _rows(int(parent_id), int(child_id), str(get_settings().home_dir))
    except ValueError as exc:
        st.caption(f"Artefact probe not available: {exc}")
        return
    table = []
    for label, r in zip(("before (parent)", "after (child)"), rows):
        row = {"model": f"{label} #{r['model_id']}"}
        for name, p in zip(CORNERS, r["positions"]):
            row[f"changed · {name}"] = round(p["changed"], 3)
            row[f"→ {p['toward']} · {name}"] = _f(p.get("changed_other"))
        row["CF change mass · marker box"] = _f(r["marker_ratio"])
        row["CF change mass · lungs"] = _f(r["lung_ratio"])
        row["stored CFs"] = r["cf_n"]
        table.append(row)
    st.dataframe(table, hide_index=True, key="rp_probe_table")
    st.caption(f"Artefact injection: the dataset's marker glyph pasted at each corner of {rows[0]['n']} held-out "
               "(test) images; 'changed' = share of predictions that change; '→ class' = share changed among the images not already predicted as the class the glyph there moves most. Change mass = share of |Δ| of the "
               "model's stored counterfactuals inside the marker box (or the lungs) over that region's share of the "
               "image (1 = spread evenly; n/a without stored counterfactuals).")
