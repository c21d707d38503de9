"""`exemplar jobs list|show|cancel`: read and steer the jobs table."""
from __future__ import annotations

import typer

from services.cli.common import emit, fail
from services.jobs.lifecycle import get_job, list_jobs, reap_for_readers, request_cancel
from services.team.users import cli_user_id


def register(app: typer.Typer) -> None:
    jobs_app = typer.Typer(help="List, inspect and cancel jobs.", no_args_is_help=True)
    app.add_typer(jobs_app, name="jobs")

    @jobs_app.command("list")
    def list_(status: str = typer.Option(None, help="only jobs in this status"),
              limit: int = typer.Option(100), json_: bool = typer.Option(False, "--json")):
        """List the most recent jobs."""
        reap_for_readers()
        rows = list_jobs(limit=limit, status=status)
        human = "\n".join(f"{r['id']:>5} {r['kind']:<14} {r['status']:<10} {r['progress']:>5.0%} {r['message']}"
                          for r in rows) or "no jobs"
        emit({"jobs": rows, "count": len(rows)}, json_, human)

    @jobs_app.command("show")
    def show(job_id: int, json_: bool = typer.Option(False, "--json")):
        """Show one job with its metrics, result and error."""
        reap_for_readers()
        row = get_job(job_id)
        if row is None:
            fail(f"no job {job_id}")
        emit(row, json_)

    @jobs_app.command("cancel")
    def cancel(job_id: int, json_: bool = typer.Option(False, "--json")):
        """Ask a job to stop (it stops at its next step)."""
        ok = request_cancel(job_id, cli_user_id())
        if not ok:
            fail(f"job {job_id} is not queued or running")
        emit({"job_id": job_id, "cancel_requested": True}, json_, f"cancel requested for job {job_id}")
