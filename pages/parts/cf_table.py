"""The studio's "Stored results" table: one row per distinct result (identical re-runs folded into one, counted),
"n/a" for a value a result does not have, and a tooltip per column that says why it can be missing."""
from __future__ import annotations

import math

NA = "n/a"
# Why a column can be n/a: shown as the column's tooltip.
NA_WHY = {
    "bpd": "n/a: no DDPM for this dataset, so bits/dim was not scored",
    "guided": "n/a: only diffusion counts guided UNet passes",
    "t final": "n/a: only diffusion finishes a sample at a timestep (or an older result)",
    "B flipped": "n/a: no independent classifier for this dataset (cross-model validity not checked)",
    "category": "n/a: not categorised (older result)",
    "UNet passes": "n/a: the method runs no UNet",
}
# What makes two stored results the same result (the id, time and seconds of a re-run do not).
SAME = ("model", "image", "method", "preset", "target", "flipped", "p(target)", "L1", "bpd", "category",
        "UNet passes", "guided", "t final", "B flipped")


def na(v, nd: int | None = None):
    """v (rounded to nd decimals when given), or "n/a" when missing or NaN; booleans as yes / no."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NA
    if isinstance(v, bool):
        return "yes" if v else "no"
    return round(float(v), nd) if nd is not None else v


def _target(r: dict):
    classes = r["metrics"].get("classes") or []
    return classes[r["target"]] if 0 <= r["target"] < len(classes) else r["target"]


def table_row(r: dict) -> dict:
    m = r.get("metrics") or {}
    return {"id": r["id"], "model": f"#{r['model_id']} {r['model_name']}", "image": r["image_path"],
            "method": r["method"], "preset": na(r.get("preset")), "target": _target(r),
            "flipped": na(bool(r["flipped"])), "p(target)": na(r["target_prob"], 3), "L1": na(r["l1"], 4),
            "bpd": na(r.get("bpd"), 3), "category": na(r.get("category")), "UNet passes": na(r.get("unet_passes")),
            "guided": na(m.get("guided_passes")), "t final": na(m.get("t_final")),
            "B flipped": na((m.get("cross_model") or {}).get("flipped")), "s": na(r.get("seconds"), 1),
            "created": na(r.get("created_at"))}


def uniform(table: list[dict]):
    """The table as a pandas Styler for st.dataframe: a column of numbers with "n/a" gaps stays numeric (it sorts by
    value, not as text) and shows its gaps as "n/a"; other columns keep their values (one type per column, so Arrow
    gets a single type and the grid never shows a raw None / nan)."""
    import pandas as pd

    df = pd.DataFrame(table)
    numeric = []
    for c in df.columns:
        vals = [v for v in df[c] if v != NA]
        if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            df[c] = pd.to_numeric(df[c].replace(NA, None), errors="coerce")
            numeric.append(c)
        elif any(v == NA for v in df[c]) and vals:
            df[c] = df[c].astype(str)
    return df.style.format(_number, subset=numeric)


def _number(v) -> str:
    """A table number as text: "n/a" for a gap, whole numbers without decimals, others to 6 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NA
    return str(int(v)) if float(v).is_integer() else f"{float(v):.6g}"


def stored_table(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(table, kept): one table row per distinct result, newest first, with "runs" = how many stored results it
    stands for; kept = the stored rows behind the table rows (the newest of each group)."""
    table, kept, seen = [], [], {}
    for r in rows:
        t = table_row(r)
        k = tuple(str(t[c]) for c in SAME)
        if k in seen:
            table[seen[k]]["runs"] += 1
            continue
        seen[k] = len(table)
        table.append({**t, "runs": 1})
        kept.append(r)
    return uniform(table), kept


def column_help() -> dict:
    """st.dataframe column_config: each column that can be n/a says why in its tooltip."""
    import streamlit as st

    cfg = {c: st.column_config.Column(c, help=why) for c, why in NA_WHY.items()}
    cfg["runs"] = st.column_config.NumberColumn("runs", help="identical stored results folded into this row")
    return cfg


def render_stored_table(rows: list[dict], key: str = "cf_stored_table") -> list[dict]:
    """Draw the stored-results table (stored_table, column tooltips); returns the stored rows it shows."""
    import streamlit as st

    table, kept = stored_table(rows)
    st.dataframe(table, key=key, hide_index=True, column_config=column_help())
    if len(kept) < len(rows):
        st.caption(f"{len(rows) - len(kept)} identical re-run(s) folded into their newest row (column \"runs\").")
    return kept
