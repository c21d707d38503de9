"""Jobs page: every job with a live progress bar (polled from the jobs table), its metrics, error and a cancel button."""
import json

import streamlit as st

from pages.parts.job_progress import render_job
from services.jobs import list_jobs

st.title("Jobs")
status = st.segmented_control("Status", ["all", "queued", "running", "succeeded", "failed", "cancelled", "lost"],
                              default="all", key="jobs_status")


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
            with st.expander("details", expanded=False):
                st.code(json.dumps({k: job[k] for k in ("params", "result", "created_at", "started_at",
                                                          "finished_at", "worker")}, indent=2, default=str),
                        language="json")
                if job.get("metrics"):
                    st.dataframe(job["metrics"], key=f"jobs_metrics_{job['id']}")


job_list()
