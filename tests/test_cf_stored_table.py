"""Issue 16: the studio's "Stored results" table folds identical re-runs into one row (counted in "runs") and shows
"n/a" (never None / nan) for values a result does not have, with a tooltip per such column."""
from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest


def shown(element):
    """What the grid shows: the Styler's display values of an st.dataframe element."""
    from streamlit import dataframe_util

    return dataframe_util.convert_arrow_bytes_to_pandas_df(element.proto.arrow_data.styler.display_values)


def _row(cid: int, method: str = "gan", bpd=None, seconds: float = 1.0) -> dict:
    return {"id": cid, "model_id": 3, "model_name": "cnn", "image_id": 9, "image_path": "img/a.png", "job_id": cid,
            "method": method, "preset": None, "target": 0, "flipped": True, "target_prob": 0.91234, "l1": 0.012345,
            "bpd": bpd, "category": "unclassified", "unet_passes": 0, "seconds": seconds,
            "created_at": f"2026-01-0{cid}", "metrics": {"classes": ["Normal", "COVID"], "guided_passes": None,
                                                         "t_final": float("nan"), "cross_model": {}}}


def test_stored_table_folds_identical_reruns_and_shows_na():
    rows = [_row(3, seconds=1.2), _row(2, seconds=0.9), _row(1, method="diffusion", bpd=3.21)]
    script = f"""
import json
import streamlit as st
from pages.parts.cf_table import render_stored_table
kept = render_stored_table(json.loads({json.dumps(rows)!r}))  # json carries NaN through
st.text(",".join(str(r["id"]) for r in kept))
"""
    at = AppTest.from_string(script, default_timeout=30).run()
    assert not at.exception, at.exception
    df = shown(at.dataframe[0])
    assert list(df["id"]) == ["3", "1"]  # the two GAN re-runs are one row (the newest), counted
    assert list(df["runs"]) == ["2", "1"]
    assert list(df["target"]) == ["Normal", "Normal"] and list(df["flipped"]) == ["yes", "yes"]
    assert list(df["bpd"]) == ["n/a", "3.21"]
    assert str(at.dataframe[0].value["bpd"].dtype) == "float64"  # a number column with gaps sorts by value
    for col in ("preset", "guided", "t final", "B flipped"):
        assert list(df[col]) == ["n/a", "n/a"], col
    cells = df.astype(str).to_numpy().ravel()
    assert not any(c in ("None", "nan", "NaN") for c in cells)
    assert at.text[0].value == "3,1"
    assert any("folded" in c.value for c in at.caption)
    cfg = at.dataframe[0].proto.columns  # every n/a column says why in its tooltip (JSON column config)
    assert "no DDPM" in cfg and "independent classifier" in cfg
