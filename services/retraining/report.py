"""Before / after report of a parent model and its retrained child, on held-out splits only (val, test,
test_shifted; docs/architecture.md, Split roles): the data and the self-contained HTML export (one file that opens
offline); how it looks (tables' text, plotly figures, overlays, the HTML) is services.presentation.report_view.

evidence_report() is the figures' source: parent | control | child per split with 95 % intervals, the effect
child − control and the verdict (services.retraining.evidence). compare() adds the two models' newest GradCAM runs joined
on image id (AR / AP / WR per held-out image, the images whose AR changed most) and the confusion matrices.
Train images never enter a reported figure.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from core.data.roles import HELDOUT as SPLITS  # the held-out splits: the only ones a report shows
from core.data.roles import heading, roles_of
from core.registries import METRICS
from services.team import audit
from services.team.access import require
from services.data.datasets import load_arrays
from services.explanations.explaining import dataset_classes, latest_run, load_maps, run_rows
from services.models.registry import get_model
from services.platform.settings import get_settings
from services.presentation.report_view import figures, overlay_png, render_html
from services.retraining.evidence import control_of, for_pair, for_retrain

METRIC_KEYS = tuple(METRICS.names(groups="evidence"))  # AR, AP, WR on the held-out splits


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _mean(a) -> float | None:
    a = np.asarray(a, np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else None


def _run_for(model_id: int, method: str = "gradcam") -> dict | None:
    return latest_run(model_id, method)


EVIDENCE_KEYS = ("effect", "effect_recipe", "effect_choice", "effect_parent", "effect_vs", "verdict", "seeds",
                 "interval", "describes")


def _shape(ev: dict) -> dict:
    out = {"splits": {s: ev["splits"][s] for s in SPLITS if s in ev["splits"]},
           **{k: ev.get(k) for k in EVIDENCE_KEYS}}
    for row in out["splits"].values():
        row.setdefault("random_control", None)
    out["roles"] = roles_of(out["splits"])
    out["headings"] = {s: heading(s) for s in out["splits"]}
    return out


def evidence_report(parent_id: int, child_id: int, device: str | None = None) -> dict:
    """`exemplar report --parent P --child C --json`: child C alone (its own seed and controls): {report: 'child',
    parent, child, control, random_control, splits: {split: {parent, control, random_control, child, effect, …}},
    effect, effect_recipe, effect_choice, effect_parent, effect_vs, roles, headings, verdict, seeds, interval,
    describes, source}; held-out splits only, None where undefined."""
    ev = for_pair(parent_id, child_id, device=device)
    return {"report": "child", "parent": int(parent_id), "child": int(child_id), "control": ev.get("control_id"),
            "random_control": ev.get("random_control_id"), **_shape(ev), "source": ev["source"]}


def retrain_report(retrain_id: int) -> dict:
    """`exemplar report --retrain R --json`: the group over every seed (means and intervals over seeds and images):
    {report: 'retrain', retrain, parent, child (seed 0's), seed_models, method, …the evidence keys…}."""
    ev = for_retrain(retrain_id)
    sm = ev["seed_models"]
    return {"report": "retrain", "retrain": int(retrain_id), "parent": ev["parent_id"], "method": ev["method"],
            "child": sm[0]["child_id"] if sm else None, "control": sm[0].get("control_id") if sm else None,
            "random_control": sm[0].get("random_control_id") if sm else None, "seed_models": sm, **_shape(ev),
            "source": ev["source"]}


def run_histories(child: dict) -> list[dict]:
    """The child's per-epoch fine-tune history and its matched control's (each row tagged run 'child' / 'control'),
    so the page and the HTML export draw both curves."""
    rows = [{**h, "run": h.get("run", "child")} for h in (child["config"] or {}).get("history") or []]
    cid = control_of(child)
    control = get_model(int(cid)) if cid is not None else None
    if control is not None and not any(h["run"] == "control" for h in rows):
        rows += [{**h, "run": "control"} for h in (control["config"] or {}).get("history") or []]
    return rows


def compare(parent_id: int, child_id: int, top: int = 8, split: str | None = None,
            evidence: dict | None = None) -> dict:
    """Everything the report shows, as plain data (lists and numbers; NaN where undefined); held-out only.
    evidence: evidence_report(parent_id, child_id) when the caller has it already (a cache)."""
    parent, child = get_model(int(parent_id)), get_model(int(child_id))
    if parent is None or child is None:
        raise ValueError(f"no model {parent_id if parent is None else child_id}")
    if parent["dataset_id"] != child["dataset_id"]:
        raise ValueError("parent and child were trained on different datasets: nothing to compare image by image")
    if split is not None and split not in SPLITS:
        raise ValueError(f"the report shows held-out splits only ({', '.join(SPLITS)}), not {split!r}")

    classes = list((child["config"] or {}).get("classes") or dataset_classes(child["dataset_id"]))
    out: dict = {"parent": _model_info(parent), "child": _model_info(child), "classes": classes,
                 "related": child["parent_id"] == parent["id"], "split": split, "control_id": control_of(child),
                 "evidence": evidence or evidence_report(parent_id, child_id),
                 "accuracy": {}, "confusion": {}, "runs": {}, "per_image": None, "changed": [], "summary": {},
                 "xbl": (child["config"] or {}).get("xbl"), "history": run_histories(child)}
    for s in SPLITS:
        pm, cm = (parent["metrics"] or {}).get(s), (child["metrics"] or {}).get(s)
        if pm or cm:
            out["accuracy"][s] = {"parent": (pm or {}).get("accuracy"), "child": (cm or {}).get("accuracy")}
            out["confusion"][s] = {"parent": (pm or {}).get("confusion"), "child": (cm or {}).get("confusion")}
    rp, rc = _run_for(parent["id"]), _run_for(child["id"])
    out["runs"] = {"parent": rp["id"] if rp else None, "child": rc["id"] if rc else None}
    if rp is None or rc is None:
        return out
    pr = {r["image_id"]: r for r in run_rows(rp["id"])}
    cr = {r["image_id"]: r for r in run_rows(rc["id"])}
    keep = (split,) if split else SPLITS
    ids = [i for i in pr if i in cr and pr[i]["split"] in keep]
    per = {"image_id": ids, "split": [pr[i]["split"] for i in ids], "label": [pr[i]["label"] for i in ids],
           "path": [pr[i]["path"] for i in ids], "image_index": [pr[i]["image_index"] for i in ids]}
    for who, rows in (("parent", pr), ("child", cr)):
        for k in METRIC_KEYS:
            per[f"{k}_{who}"] = [_num(rows[i][k]) for i in ids]
        per[f"pred_{who}"] = [rows[i]["pred"] for i in ids]
        per[f"map_{who}"] = [rows[i]["index"] for i in ids]
    out["per_image"] = per
    for who in ("parent", "child"):
        out["summary"][who] = {f"{k}_mean": _mean(per[f"{k}_{who}"]) for k in METRIC_KEYS}
        out["summary"][who]["n"] = len(ids)
    d = np.asarray(per["ar_child"], np.float64) - np.asarray(per["ar_parent"], np.float64)
    order = [int(j) for j in np.argsort(-np.nan_to_num(np.abs(d), nan=-1.0), kind="stable") if np.isfinite(d[j])]
    keys = ("image_id", "split", "label", "path", "image_index", "ar_parent", "ar_child", "ap_parent", "ap_child",
            "wr_parent", "wr_child", "pred_parent", "pred_child", "map_parent", "map_child")
    out["changed"] = [{**{k: per[k][j] for k in keys}, "delta_ar": float(d[j])} for j in order[: int(top)]]
    return out


def _model_info(m: dict) -> dict:
    return {"id": m["id"], "name": m["name"], "arch": m["arch"], "parent_id": m["parent_id"],
            "created_at": m["created_at"], "feedback_ids": m["feedback_ids"]}


def changed_images(data: dict, side: int = 160) -> list[dict]:
    """For each of data['changed']: PNG bytes of the image with the parent's and the child's map."""
    if not data["changed"]:
        return []
    arrays = load_arrays(get_model(data["child"]["id"])["dataset_id"])
    mp, mc = load_maps(data["runs"]["parent"]), load_maps(data["runs"]["child"])
    out = []
    for r in data["changed"]:
        gray = arrays.images[int(r["image_index"])]
        out.append({**r, "png_parent": overlay_png(gray, mp[int(r["map_parent"])], side),
                    "png_child": overlay_png(gray, mc[int(r["map_child"])], side)})
    return out


def report_html(parent_id: int, child_id: int, top: int = 8, split: str | None = None,
                probe: list[dict] | str | None = None) -> str:
    """The whole report as one self-contained HTML string (plotly.js inline once, images as data URIs). probe: the
    shortcut probe's rows for [parent, child] (services.counterfactuals.probe.probe_rows, a room this one does not
    import: the caller computes them) or the reason there are none."""
    data = compare(parent_id, child_id, top=top, split=split)
    imgs = changed_images(data) if data["per_image"] is not None else []
    return render_html(data, figures(data), imgs, probe)


def export_report(parent_id: int, child_id: int, out: str | Path | None = None, *, user_id: int | None,
                  **kw) -> Path:
    """Write the HTML report atomically (default $EXEMPLAR_HOME/exports/report_<parent>_<child>.html); a
    researcher or an admin (role action `export`), audited like every export."""
    actor = require(user_id, "export")  # team: refused before anything is written
    path = Path(out) if out else get_settings().path("exports") / f"report_{int(parent_id)}_{int(child_id)}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = report_html(parent_id, child_id, **kw)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    audit.record(actor, "export", f"report:{int(parent_id)}:{int(child_id)}", after={"out": str(path)})
    return path
