"""How the before / after report looks (docs/architecture.md, Rooms: presentation): its tables' cell text, its plotly
figures, the map overlays and the self-contained HTML, drawn from services.retraining.report's data. The pages, the
CLI, the HTML export and the benches read them here; nothing here reads the database or runs a model."""
from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime, timezone

import numpy as np

from core.data.roles import heading
from core.registries import METRICS
from services.presentation.palette import HEATMAP_SCALE, version_colours

WHO = ("parent", "control", "random_control", "child")
WHO_NAMES = {"parent": "parent", "control": "plain control", "random_control": "random-pair control",
             "child": "child"}
EFFECTS = {"effect": "child − plain control", "effect_recipe": "the recipe (random pair − plain)",
           "effect_choice": "your choice (child − random pair)"}
MEASURE_NAMES = {"accuracy": "accuracy",
                 **{f"{m.name}_mean": f"mean {m.label}" for m in METRICS.specs(groups="evidence")}}


def effect_rows(ev: dict) -> list[dict]:
    """One row per split × measure: each group's cell (mean [low, high]) and each effect (columns named by
    WHO_NAMES and EFFECTS) — for tables; show a split under core.data.roles.heading(split)."""
    rows = []
    for s, row in ev["splits"].items():
        for m, name in MEASURE_NAMES.items():
            r = {"split": s, "measure": name}
            for who in WHO:
                c = row.get(who)
                r[WHO_NAMES[who]] = _cell_text(c.get(m), (c.get("ci") or {}).get(m)) if c else "—"
            for key, label in EFFECTS.items():
                e = (row.get(key) or {}).get(m) or {}
                r[label] = _cell_text(e.get("mean"), [e.get("low"), e.get("high")], signed=True)
            rows.append(r)
    return rows


def _cell_text(v, ci, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    f = (lambda x: f"{x:+.3f}") if signed else (lambda x: f"{x:.3f}")
    if ci and ci[0] is not None and ci[1] is not None:
        return f"{f(v)} [{f(ci[0])}, {f(ci[1])}]"
    return f(v)


# ----------------------------------------------------------------------------------------------- figures

def figures(data: dict) -> dict:
    """plotly figures keyed by name: hist_ar, hist_ap, hist_wr, accuracy, confusion_<split>, history."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figs = {}
    pn, cn = f"#{data['parent']['id']} before", f"#{data['child']['id']} after"
    per = data.get("per_image")
    if per:
        for k, title in ((m.name, m.label) for m in METRICS.specs(groups="evidence")):
            f = go.Figure()
            for who, name in (("parent", pn), ("child", cn)):
                v = [x for x in per[f"{k}_{who}"] if math.isfinite(x)]
                f.add_trace(go.Histogram(x=v, name=name, opacity=0.6, xbins=dict(start=0, end=1.0001, size=0.05)))
            f.update_layout(barmode="overlay", title=f"{title} per image", xaxis_title=title,
                            yaxis_title="images", height=300, margin=dict(l=10, r=10, t=40, b=10))
            figs[f"hist_{k}"] = f
    ev = data.get("evidence") or {}
    if ev.get("splits"):
        figs["accuracy"] = accuracy_figure(ev)
    cls = data["classes"]
    for s, cm in data["confusion"].items():
        if not cm.get("parent") or not cm.get("child"):
            continue
        f = make_subplots(1, 2, subplot_titles=(pn, cn), horizontal_spacing=0.15)
        for j, who in enumerate(("parent", "child")):
            z = np.asarray(cm[who])
            f.add_trace(go.Heatmap(z=z, x=cls, y=cls, coloraxis="coloraxis", text=z, texttemplate="%{text}"),
                        1, j + 1)
            f.update_yaxes(autorange="reversed", title_text="true class" if j == 0 else None, row=1, col=j + 1)
            f.update_xaxes(title_text="predicted class", tickangle=0, row=1, col=j + 1)
        # one shared scale (the same count is the same colour in both), with its colour bar titled
        f.update_layout(title=f"confusion matrix · {s}", height=360, margin=dict(l=10, r=10, t=60, b=10),
                        coloraxis=dict(colorscale=HEATMAP_SCALE, cmin=0, colorbar=dict(title=dict(text="images"))))
        figs[f"confusion_{s}"] = f
    hist = data.get("history") or []
    if hist:
        figs["history"] = history_figure(hist)
    return figs


def accuracy_figure(ev: dict):
    """Accuracy per held-out split for parent | control | child, with the 95 % intervals as error bars."""
    import plotly.graph_objects as go

    sp = list(ev["splits"])
    colours = version_colours(["parent", "child", "control", "random_control"])  # as the history panels
    f = go.Figure()
    for who in WHO:
        cells = [ev["splits"][s].get(who) for s in sp]
        if not any(cells):
            continue
        y = [c.get("accuracy") if c else None for c in cells]
        lo = [(c["ci"]["accuracy"][0] if c and c["ci"]["accuracy"][0] is not None else v) for c, v in zip(cells, y)]
        hi = [(c["ci"]["accuracy"][1] if c and c["ci"]["accuracy"][1] is not None else v) for c, v in zip(cells, y)]
        f.add_trace(go.Bar(name=WHO_NAMES[who], x=[heading(s) for s in sp], y=y, marker_color=colours[who], error_y=dict(
            type="data", symmetric=False, array=[(h - v) if v is not None else 0 for h, v in zip(hi, y)],
            arrayminus=[(v - lw) if v is not None else 0 for lw, v in zip(lo, y)])))
    f.update_layout(barmode="group", title="accuracy on held-out splits (95 % intervals)", yaxis_range=[0, 1],
                    height=320, margin=dict(l=10, r=10, t=40, b=10), yaxis_title="accuracy (0–1)",
                    xaxis_title="held-out split")
    return f


# One small panel per per-epoch metric, each with its own y-axis title and unit (issue 16: no shared legend of 9
# series over unlabeled axes). The colour says which run (child or control), from services.presentation.palette.
HISTORY_PANELS = (("ce", "cross-entropy (nats)"), ("expl", "explanation term"), ("active", "active triplets (share)"),
                  ("d_pos", "d+ (to the good map)"), ("d_neg", "d− (to the bad map)"),
                  ("val_acc", "val accuracy (0–1)"), ("val_ar", "val AR (0–1)"), ("val_ap", "val AP (0–1)"))
HISTORY_RUNS = {"child": "retrained child", "control": "matched control (plain CE)"}


def _history_runs(history: list[dict]) -> dict[str, list[dict]]:
    return {"child": [h for h in history if h.get("run", "child") == "child"],
            "control": [h for h in history if h.get("run") == "control"]}


def history_figure(history: list[dict]):
    """Per-epoch fine-tune metrics (train and val only) as small panels, one per metric that was logged, each with
    its own y-axis title; the child solid and the matched control dashed, in their palette version colours;
    integer epoch ticks; the legend (two entries: the runs) below the panels, never on the data."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    runs = _history_runs(history)
    panels = [(k, t) for k, t in HISTORY_PANELS if any(h.get(k) is not None for h in history)]
    ncol = min(4, max(1, len(panels)))
    nrow = max(1, math.ceil(len(panels) / ncol))
    f = make_subplots(nrow, ncol, subplot_titles=[t for _, t in panels], horizontal_spacing=0.08,
                      vertical_spacing=0.28 if nrow > 1 else 0.1)
    colours = version_colours(["parent", "child", "control"])  # the same child / control colours as elsewhere
    shown: set[str] = set()
    for i, (k, title) in enumerate(panels):
        r, c = i // ncol + 1, i % ncol + 1
        for who, rows in runs.items():
            pts = [(h.get("epoch"), h.get(k)) for h in rows if h.get(k) is not None]
            if not pts:
                continue
            f.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                   name=HISTORY_RUNS[who], legendgroup=who, showlegend=who not in shown,
                                   line=dict(color=colours[who], dash="dash" if who == "control" else "solid")), r, c)
            shown.add(who)
        f.update_yaxes(title_text=title.split(" (")[0], row=r, col=c)
    epochs = [h.get("epoch") for h in history if isinstance(h.get("epoch"), (int, float))]
    span = (max(epochs) - min(epochs)) if epochs else 0
    f.update_xaxes(title_text="epoch", tickformat="d", tick0=0, dtick=max(1, math.ceil(span / 8)))
    f.update_layout(height=300 * nrow + 60, margin=dict(l=10, r=10, t=40, b=90),
                    legend=dict(orientation="h", yanchor="top", y=-0.16 if nrow > 1 else -0.3, x=0))
    return f



def _hot(gray: np.ndarray, m: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """gray (H, W) uint8 + map (H, W) in [0, 1] → RGB uint8 with the map in a 'jet'-like ramp."""
    m = np.nan_to_num(np.asarray(m, np.float32), nan=0.0).clip(0, 1)
    r = np.clip(1.5 - np.abs(4 * m - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * m - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * m - 1), 0, 1)
    col = np.stack([r, g, b], -1) * 255
    base = np.repeat(np.asarray(gray, np.float32)[..., None], 3, -1)
    return ((1 - opacity) * base + opacity * col).round().clip(0, 255).astype(np.uint8)


def _png(rgb: np.ndarray, side: int = 160) -> bytes:
    from PIL import Image

    im = Image.fromarray(rgb)
    if im.width != side:
        im = im.resize((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def overlay_png(gray: np.ndarray, m, side: int = 160) -> bytes:
    """PNG bytes of a grey image with a map in [0, 1] over it, `side` pixels wide."""
    return _png(_hot(gray, np.asarray(m, np.float32)), side)



def _fmt(v, nd: int = 3) -> str:
    return "NaN" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def go_copy(fig):
    """A copy of a plotly figure (the page keeps its own)."""
    import plotly.graph_objects as go

    return go.Figure(fig)


def _na(v, nd: int = 2) -> str:
    """A probe figure for a table: 'n/a' where it is undefined (no stored counterfactuals, no image of a class)."""
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


PROBE_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def probe_table(rows: list[dict]) -> tuple[list[dict], str]:
    """The shortcut probe's rows for the parent and the child (services.counterfactuals.probe.probe_rows) as table
    rows and the caption that says how to read them: the page and the HTML export show the same."""
    table = []
    for label, r in zip(("before (parent)", "after (child)"), rows):
        row = {"model": f"{label} #{r['model_id']}"}
        for name, p in zip(PROBE_CORNERS, r["positions"]):
            row[f"changed · {name}"] = round(p["changed"], 3)
            row[f"→ {p['toward']} · {name}"] = _na(p.get("changed_other"))
        row["CF change mass · marker box"] = _na(r["marker_ratio"])
        row["CF change mass · lungs"] = _na(r["lung_ratio"])
        row["stored CFs"] = r["cf_n"]
        table.append(row)
    caption = (f"Artefact injection: the dataset's marker glyph pasted at each corner of {rows[0]['n'] if rows else 0} "
               "held-out (test) images; 'changed' = share of predictions that change; '→ class' = share changed "
               "among the images not already predicted as the class the glyph there moves most. Change mass = share "
               "of |Δ| of the model's stored counterfactuals inside the marker box (or the lungs) over that region's "
               "share of the image (1 = spread evenly; n/a without stored counterfactuals).")
    return table, caption


def _html_table(rows: list[dict]) -> str:
    cols = list(rows[0]) if rows else []
    return ("<table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in cols) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c)))}</td>" for c in cols) + "</tr>"
                      for r in rows) + "</table>")


def render_html(data: dict, figs: dict, imgs: list[dict], probe: list[dict] | str | None = None) -> str:
    """The report as one self-contained HTML string (plotly.js inline once, images as data URIs) from
    compare()'s data, its figures, the changed images and the shortcut probe's rows (or why there are none)
    (services.retraining.report.report_html)."""
    p, c = data["parent"], data["child"]
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Exemplar report #{p['id']} → #{c['id']}"
             "</title><style>body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th:first-child,td:first-child{text-align:left}.pair{display:inline-block;margin:6px;"
             "text-align:center;font-size:12px}.pair img{margin:2px}</style></head><body>",
             f"<h1>Before / after: #{p['id']} {e(p['name'])} → #{c['id']} {e(c['name'])}</h1>",
             f"<p>Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}. "
             + ("The second model is a child of the first." if data["related"] else
                "Note: the second model is not a direct child of the first.") + "</p>"]
    x = data.get("xbl") or {}
    if x:
        pair = x.get("pair") or {}
        parts.append(f"<p>Method <b>{e(str(x.get('method')))}</b>, settings {e(str(x.get('settings')))}; "
                     f"good exemplar <code>{e(str((pair.get('good') or {}).get('path')))}</code>, bad exemplar "
                     f"<code>{e(str((pair.get('bad') or {}).get('path')))}</code>.</p>")
    ev = data["evidence"]
    parts.append(f"<p><b>Verdict.</b> {e(ev['verdict'])}</p><p>{e(ev.get('describes') or '')}; effect = child − "
                 f"{e(ev['effect_vs'])}; intervals: {e(ev['interval'])}; {ev['seeds']} seed(s); held-out splits "
                 f"only ({e(', '.join(heading(s) for s in ev['splits']))}); the verdict reads the evidence splits "
                 "only.</p>")
    cols = ("split", "measure", *WHO_NAMES.values(), *EFFECTS.values())
    rows = ["<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>"]
    for r in effect_rows(ev):
        r = {**r, "split": heading(r["split"])}
        rows.append("<tr>" + "".join(f"<td>{e(str(r[c]))}</td>" for c in cols) + "</tr>")
    rows.append("</table>")
    parts.append("".join(rows))
    if data["per_image"] is None:
        parts.append("<p><i>No GradCAM run for one of the models: explanation metrics are missing.</i></p>")
    first = True
    for name in ["accuracy", "hist_ar", "hist_ap", "hist_wr", *[k for k in figs if k.startswith("confusion_")],
                 "history"]:
        if name in figs:
            fig = go_copy(figs[name])
            fig.update_layout(margin=dict(l=80, r=20, t=60, b=(fig.layout.margin.b or 10) + 20))
            fig.update_yaxes(automargin=True)  # the page's tight margins clipped the y ticks in a file
            parts.append(fig.to_html(full_html=False, include_plotlyjs=True if first else False))
            first = False
    parts.append("<h2>Shortcut probe</h2>")
    if isinstance(probe, list) and probe:
        table, caption = probe_table(probe)
        parts.append(_html_table(table) + f"<p><small>{e(caption)}</small></p>")
    else:
        parts.append(f"<p><i>Artefact probe not available: {e(str(probe or 'not computed'))}</i></p>")
    if imgs:
        parts.append("<h2>Images whose AR changed most (before | after)</h2>")
        cls = data["classes"]
        for r in imgs:
            lab = cls[r["label"]] if 0 <= r["label"] < len(cls) else r["label"]
            parts.append(f"<div class='pair'><img src='{_b64(r['png_parent'])}' width='160'>"
                         f"<img src='{_b64(r['png_child'])}' width='160'><br>{e(r['path'])} · {e(str(lab))}<br>"
                         f"AR {_fmt(r['ar_parent'], 2)} → {_fmt(r['ar_child'], 2)} · AP {_fmt(r['ap_parent'], 2)} → "
                         f"{_fmt(r['ap_child'], 2)}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
