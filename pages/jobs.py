"""Jobs page: every job with a live progress bar (polled from the jobs table), attempts and retries, who runs it,
its metrics, error and a cancel button."""
import json

import streamlit as st

from pages.common import refuse_open_bind
from pages.parts.job_progress import render_job
from services.jobs.lifecycle import list_jobs

refuse_open_bind()  # no page on an open address without sign-in (pages/common.py)

st.title("Jobs")
status = st.segmented_control("Status", ["all", "queued", "running", "succeeded", "failed", "cancelled", "lost"],
                              default="all", key="jobs_status")


def attempts_line(job: dict) -> str:
    """'attempt 2 of 2 · worker host:123 · pid 456' (plain text)."""
    parts = [f"attempt {job.get('attempts') or 0} of {1 + int(job.get('max_retries') or 0)}"]
    if job.get("created_by_name"):
        parts.append(f"started by {job['created_by_name']}")
    if job.get("worker"):
        parts.append(f"worker {job['worker']}")
    if job.get("pid"):
        parts.append(f"pid {job['pid']}")
    lost = [h for h in job.get("history") or [] if h.get("status") == "lost"]
    if lost:
        parts.append(f"{len(lost)} lost attempt(s), retried" if job["status"] != "lost" else "lost")
    return " · ".join(parts)


@st.fragment(run_every=2.0)
def job_list() -> None:
    rows = list_jobs(limit=50, status=None if status in (None, "all") else status)
    if not rows:
        st.info("No jobs yet. Jobs appear here when you synthesise or import data, train, explain, retrain "
                "or generate counterfactuals.")
        return
    for job in rows:
        with st.container(border=True):
            render_job(job, key="jobs", chart=job["status"] == "running")
            st.text(attempts_line(job))  # user names are plain text, never Markdown
            with st.expander("details", expanded=False):
                st.code(json.dumps({k: job.get(k) for k in ("params", "result", "created_at", "started_at",
                                                              "finished_at", "worker", "pid", "host", "attempts",
                                                              "max_retries", "history")}, indent=2, default=str),
                        language="json")
                if job.get("metrics"):
                    st.dataframe(job["metrics"], key=f"jobs_metrics_{job['id']}")


job_list()
