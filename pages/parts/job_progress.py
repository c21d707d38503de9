"""A live job panel any page can embed: progress bar with an ETA from the measured rate (grey, filled as far as it got,
when cancelled), message, per-step metric chart and cancel, polled from `jobs`."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import plotly.express as px
import streamlit as st

from services.presentation.palette import CANCELLED
from pages.common import current_user
from pages.parts.plain import md_escape
from services.jobs.eta import seconds_left
from services.jobs.lifecycle import FINAL, get_job, reference_timeline, request_cancel
from services.platform.job_kinds import JOB_KINDS
from services.team.access import may_cancel

STATUS_ICON = {"queued": "⏳", "running": "🏃", "succeeded": "✅", "failed": "❌", "cancelled": "🛑", "lost": "👻"}


def metrics_frame(job: dict) -> pd.DataFrame:
    rows = [m for m in (job.get("metrics") or []) if isinstance(m, dict)]
    return pd.DataFrame(rows)


def _seconds(a: str | None, b: str | None = None) -> float | None:
    """Seconds from ISO time a to b (default now, UTC); None when a is missing."""
    if not a:
        return None
    t0 = datetime.fromisoformat(a)
    t1 = datetime.fromisoformat(b) if b else datetime.now(t0.tzinfo or timezone.utc).replace(tzinfo=t0.tzinfo)
    return max(0.0, (t1 - t0).total_seconds())


def duration(s: float | None) -> str:
    if s is None or s != s:
        return "n/a"
    s = int(round(s))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s")


@st.cache_data(ttl=60, show_spinner=False)
def _reference(kind: str, params_json: str) -> list | None:
    """The last finished job of this kind's progress curve (one query a minute per kind and params, not per poll)."""
    return reference_timeline(kind, json.loads(params_json))


def timing(job: dict) -> str:
    """'12s elapsed · about 1m 05s left' for a running job, 'took 3m 02s' for a finished one. The time left is
    measured (services/jobs/eta.py: seconds_left): the job's own estimate when it gives one (the evaluate job's
    measured seconds per image), else each phase weighted by its cost in the last finished job of this kind, else
    the job's own rate so far; the panel polls every second or two, so it is never older than 5 s."""
    if job["status"] == "queued":
        return "waiting for a worker"
    elapsed = _seconds(job.get("started_at"), job.get("finished_at"))
    if job["status"] != "running":
        return f"took {duration(elapsed)}" if elapsed is not None else ""
    ref = _reference(job["kind"], json.dumps(job.get("params") or {}, sort_keys=True, default=str))
    p = float(job.get("progress") or 0.0)
    tl = job.get("timeline") or ([[elapsed, p]] if elapsed and p > 0 else [])  # a row written before timelines
    left = seconds_left(tl, elapsed, ref)
    return f"{duration(elapsed)} elapsed · " + (f"about {duration(left)} left" if left is not None else "estimating…")


def grey_bar(fraction: float, text: str) -> None:
    """A stopped job's bar in grey, filled as far as it got (numbers only in the HTML; the text is escaped)."""
    pct = max(0.0, min(100.0, 100.0 * float(fraction or 0.0)))
    st.markdown(f'<div style="background:#E0E0E0;border-radius:4px;height:8px;margin:6px 0 2px 0">'
                f'<div style="background:{CANCELLED};width:{pct:.1f}%;height:8px;border-radius:4px"></div></div>',
                unsafe_allow_html=True)
    st.caption(text)


def _cancel(job_id: int, key: str) -> None:
    """Cancel's callback (runs before the redraw, so the press is never lost to a poll); a refusal is kept."""
    u = current_user()
    if u is None:
        st.session_state[f"{key}_cancel_said_{job_id}"] = "Pick or sign in a user first: a cancel records who asked."
        return
    try:  # team: own jobs for everyone, anyone's (and ownerless ones) for admins, checked in the service
        request_cancel(job_id, u["id"])
        st.session_state.pop(f"{key}_cancel_said_{job_id}", None)
    except (PermissionError, ValueError) as exc:
        st.session_state[f"{key}_cancel_said_{job_id}"] = str(exc)


def render_job(job: dict, key: str, chart: bool = True) -> None:
    """One job: status, progress bar (grey when cancelled or lost), ETA from its measured rate, message; a metrics
    chart when it logged per-step metrics; cancel."""
    icon = STATUS_ICON.get(job["status"], "")
    label = JOB_KINDS.label(job["kind"])
    method = (job.get("params") or {}).get("method")
    if method and job["kind"] in JOB_KINDS and JOB_KINDS.get(job["kind"]).shows_method:  # "eXBL retraining · exbl_cf"
        label = f"{label} · {method}"
    text = (f"{icon} job {job['id']} · {label} · {job['status']}"
            + (f" · {job['message']}" if job["message"] and job["message"] != job["status"] else ""))
    when = timing(job)
    frac = float(job["progress"] or 0.0)
    if job["status"] in ("cancelled", "lost"):
        grey_bar(frac, f"{text} · stopped at {frac:.0%}" + (f" · {when}" if when else ""))
    else:
        st.progress(frac, text=f"{text} · {frac:.0%}" + (f" · {when}" if when else ""))
    cols = st.columns([1, 5])
    u = current_user()  # the signed-in user, never the server process's identity
    if job["status"] in ("queued", "running") and not job.get("cancel_requested"):
        if u is None or may_cancel(u, job):  # a reader sees no Cancel on another user's job
            cols[0].button("Cancel", key=f"{key}_cancel_{job['id']}", on_click=_cancel, args=(job["id"], key))
    elif job.get("cancel_requested") and job["status"] == "running":
        cols[0].caption("cancelling…")
    said = st.session_state.get(f"{key}_cancel_said_{job['id']}")
    if said:  # kept across the panel's redraws (a refusal shown for one poll vanished within 2 s)
        cols[1].warning(md_escape(said))
    if job["status"] in ("failed", "lost") and job.get("error"):
        st.error(job["error"])
    if chart:
        metrics_charts(job, key)


def is_seconds(name: str) -> bool:
    """A metric in seconds (an LTX step's 100–200 s) gets its own axis, never the losses' 0–3."""
    return "second" in name or name.endswith("_s") or name in ("time", "elapsed")


def metrics_charts(job: dict, key: str) -> None:
    """The job's per-step metrics: losses and rates on one axis, any metric in seconds on a second chart."""
    df = metrics_frame(job)
    num = [c for c in df.columns if c not in ("epoch", "step") and pd.api.types.is_numeric_dtype(df[c])]
    xcol = "epoch" if "epoch" in df.columns else ("step" if "step" in df.columns else None)
    groups = [([c for c in num if not is_seconds(c)], "value (per metric; loss, accuracy 0–1)", "chart"),
              ([c for c in num if is_seconds(c)], "seconds", "secs")]
    for cols, ytitle, part in groups:
        if not len(df) or not cols:
            continue
        fig = px.line(df, x=xcol, y=cols, markers=True) if xcol else px.line(df[cols], markers=True)
        fig.update_layout(height=260 if part == "chart" else 200, margin=dict(l=0, r=0, t=10, b=0),
                          legend_title_text="metric")
        fig.update_xaxes(title_text=xcol or "step", tickformat="d", dtick=1 if len(df) <= 20 else None)
        fig.update_yaxes(title_text=ytitle)
        st.plotly_chart(fig, key=f"{key}_{part}_{job['id']}_{len(df)}", use_container_width=True)


def live_job(job_id: int, key: str, every: float = 1.0, chart: bool = True, extra=None) -> None:
    """Poll one job with st.fragment(run_every=…) until it is final, then draw it once without a timer.
    chart=False drops the generic metrics chart; extra(job), when given, renders page-specific content
    (e.g. grouped charts) in the same place.

    A final job gets no fragment: a timer left running keeps asking for reruns, and after a switch to another page
    those requests restart that page's script, which then never finishes when it takes longer than `every`."""

    def _draw(job: dict | None) -> None:
        if job is None:
            st.warning(f"job {job_id} does not exist")
            return
        render_job(job, key, chart=chart)
        if extra is not None:
            extra(job)

    job = get_job(job_id)
    if job is None or job["status"] in FINAL:
        _draw(job)
        return

    @st.fragment(run_every=every)
    def _poll() -> None:
        now = get_job(job_id)
        if now is not None and now["status"] in FINAL:
            # once, before drawing anything final: the page draws the final state (and its buttons, e.g. "Open
            # the report") without the timer. Drawn here first, a button clicked during the page's redraw that
            # replaced it was lost.
            st.rerun(scope="app")
        _draw(now)

    _poll()
