"""A live job panel any page can embed: progress bar, message, per-step metric chart and cancel, polled from `jobs`."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from pages.common import current_user
from services.jobs import FINAL, get_job, request_cancel

STATUS_ICON = {"queued": "⏳", "running": "🏃", "succeeded": "✅", "failed": "❌", "cancelled": "🛑", "lost": "👻"}


def metrics_frame(job: dict) -> pd.DataFrame:
    rows = [m for m in (job.get("metrics") or []) if isinstance(m, dict)]
    return pd.DataFrame(rows)


def render_job(job: dict, key: str, chart: bool = True) -> None:
    """One job: status, progress bar, message; a metrics chart when it logged per-step metrics; cancel."""
    icon = STATUS_ICON.get(job["status"], "")
    st.progress(float(job["progress"] or 0.0),
                text=f"{icon} job {job['id']} · {job['kind']} · {job['status']}"
                     + (f" · {job['message']}" if job["message"] and job["message"] != job["status"] else ""))
    cols = st.columns([1, 5])
    if job["status"] in ("queued", "running") and not job.get("cancel_requested"):
        if cols[0].button("Cancel", key=f"{key}_cancel_{job['id']}"):
            try:  # team: own jobs for everyone, anyone's for admins (checked in the service)
                request_cancel(job["id"], (current_user() or {}).get("id"))
                st.rerun()
            except PermissionError as exc:
                st.error(str(exc))
    elif job.get("cancel_requested") and job["status"] == "running":
        cols[0].caption("cancelling…")
    if job["status"] in ("failed", "lost") and job.get("error"):
        st.error(job["error"])
    if chart:
        df = metrics_frame(job)
        num = [c for c in df.columns if c not in ("epoch", "step") and pd.api.types.is_numeric_dtype(df[c])]
        xcol = "epoch" if "epoch" in df.columns else ("step" if "step" in df.columns else None)
        if len(df) and num:
            fig = px.line(df, x=xcol, y=num, markers=True) if xcol else px.line(df[num], markers=True)
            fig.update_layout(height=260, margin=dict(l=0, r=0, t=10, b=0), legend_title_text="")
            st.plotly_chart(fig, key=f"{key}_chart_{job['id']}_{len(df)}", use_container_width=True)


def live_job(job_id: int, key: str, every: float = 1.5, chart: bool = True, extra=None) -> None:
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
        _draw(now)
        if now is not None and now["status"] in FINAL:
            st.rerun(scope="app")  # once: the page redraws the final state without the timer

    _poll()
