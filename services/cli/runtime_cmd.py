"""`exemplar worker`, `exemplar serve`, `exemplar db upgrade`: processes and schema."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import typer

from services.cli.common import emit, fail
from db.migrate import current
from services.jobs.worker import STOP_GRACE_S, run_worker
from services.platform.database import ensure_schema
from services.platform.streamlit_launch import streamlit_command
from services.team.serving import INSECURE_ENV
from services.team.users import serve_refusal

ROOT = Path(__file__).resolve().parents[2]


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(workers: int = typer.Option(1, help="jobs run at once, each in its own process (one per GPU)"),
               name: str = typer.Option(None, help="stable worker name (default EXEMPLAR_WORKER_NAME or host:pid)")):
        """Run a job worker until Ctrl-C / SIGTERM (running jobs are given back to the queue)."""
        ensure_schema()
        run_worker(workers, name)

    @app.command()
    def serve(port: int = typer.Option(8501), address: str = typer.Option("localhost"),
              workers: int = typer.Option(1), headless: bool = typer.Option(True),
              insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth",
                                                    help="allow a non-loopback address without sign-in")):
        """Start a worker and the Streamlit app together; Ctrl-C stops both."""
        if (why := serve_refusal(address, insecure_no_auth)):
            fail(why)

        ensure_schema()
        exe = Path(sys.executable).with_name("exemplar")
        wcmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "services.cli"]),
                "worker", "--workers", str(workers)]
        scmd = streamlit_command(port, address, headless)
        def _interrupt(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        senv = {**os.environ, **({INSECURE_ENV: "1"} if insecure_no_auth else {})}  # app.py checks the bind too
        procs = [subprocess.Popen(wcmd), subprocess.Popen(scmd, cwd=ROOT, env=senv)]
        typer.echo(f"Exemplar at http://{address}:{port} (worker pid {procs[0].pid}); Ctrl-C stops both", err=True)
        try:
            while all(p.poll() is None for p in procs):
                try:
                    procs[0].wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
        except KeyboardInterrupt:
            pass
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p, grace in zip(procs, (STOP_GRACE_S + 10, 15)):  # the worker gives its jobs STOP_GRACE_S to stop
                try:
                    p.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    p.kill()

    db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
    app.add_typer(db_app, name="db")

    @db_app.command("upgrade")
    def db_upgrade(json_: bool = typer.Option(False, "--json")):
        """Apply Alembic migrations to head."""
        url = ensure_schema()
        emit({"revision": current(url)}, json_, f"database at revision {current(url)}")
