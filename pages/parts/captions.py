"""Sentences computed from the numbers they interpret (issue 16): a caption never claims what its table does not show."""
from __future__ import annotations

import math

import pandas as pd


def _num(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _mean(xs) -> float | None:
    xs = [x for x in (_num(v) for v in xs) if x is not None]
    return sum(xs) / len(xs) if xs else None


def edits_sentence(rows: list[dict]) -> str:
    """Where two model versions' counterfactuals edit, from the rows' marker_share / lung_share (share of Σ|Δ|).
    The older version is the lower model id (a retrain is registered after its parent)."""
    by_model: dict[int, list[dict]] = {}
    for r in rows:
        by_model.setdefault(int(r["model_id"]), []).append(r)
    if len(by_model) < 2:
        return "Run the comparison for two model versions to see where each one's counterfactuals edit."
    old, new = sorted(by_model)[:2]
    m_old = _mean(r["metrics"].get("marker_share") for r in by_model[old])
    m_new = _mean(r["metrics"].get("marker_share") for r in by_model[new])
    l_old = _mean(r["metrics"].get("lung_share") for r in by_model[old])
    l_new = _mean(r["metrics"].get("lung_share") for r in by_model[new])
    if m_old is None or m_new is None:
        return "n/a: the marker share is missing for one model (the image has no marker mask), so where the edits go " \
               "cannot be compared."
    parts = [_compare("marker box", m_new, m_old, old, new)]
    if l_old is not None and l_new is not None:
        parts.append(_compare("lungs", l_new, l_old, old, new))
    story = ("as expected when retraining removed the shortcut" if m_new < m_old and (l_new or 0) >= (l_old or 0)
             else "so these counterfactuals do not show the shortcut going away")
    return "; ".join(parts) + f": {story}."


def _compare(region: str, v_new: float, v_old: float, old: int, new: int) -> str:
    if abs(v_new - v_old) < 0.005:
        return f"the new model's (#{new}) counterfactuals edit the {region} about as much as the old one's (#{old}) " \
               f"({v_new:.3f} vs {v_old:.3f} of Σ|Δ|)"
    more = "more" if v_new > v_old else "less"
    return (f"the new model's (#{new}) counterfactuals edit the {region} {more} than the old one's (#{old}) "
            f"({v_new:.3f} vs {v_old:.3f} of Σ|Δ|)")


def compare_sentence(df: pd.DataFrame, a: dict, b: dict) -> str:
    """One sentence computed from the comparison table: which model is more accurate on each split, by how much."""
    parts = []
    for _, r in df[df["metric"] == "accuracy"].iterrows():
        d = r["B − A"]
        if d is None or d != d:
            parts.append(f"{r['split']}: n/a (one model has no figure)")
        elif abs(d) < 0.0005:
            parts.append(f"{r['split']}: the same accuracy")
        else:
            who = f"B (#{b['id']})" if d > 0 else f"A (#{a['id']})"
            parts.append(f"{r['split']}: {who} is more accurate by {abs(d):.3f}")
    return "Accuracy, " + "; ".join(parts) + "." if parts else "No accuracy is recorded for these models."
