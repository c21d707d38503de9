"""Start and stop a real `exemplar worker` process for tests; wait for a job to reach a state."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.jobs.lifecycle import get_job

ROOT = Path(__file__).resolve().parents[1]


def start_worker(home: Path, log_name: str = "worker.log") -> subprocess.Popen:
    env = {**os.environ, "EXEMPLAR_HOME": str(home), "EXEMPLAR_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    exe = Path(sys.executable).with_name("exemplar")
    return subprocess.Popen([str(exe), "worker"], env=env, cwd=ROOT, stdout=open(home / log_name, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 20.0) -> None:
    """Signal the worker's process group; SIGKILL it if it has not exited after `grace` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(job_id: int, pred, timeout: float = 180.0, poll: float = 0.2) -> dict:
    """Poll the jobs row until pred(row) holds (a generous bound so a slow CI machine never flakes)."""
    deadline = time.monotonic() + timeout
    row = get_job(job_id)
    while time.monotonic() < deadline:
        row = get_job(job_id)
        if row and pred(row):
            return row
        time.sleep(poll)
    raise AssertionError(f"job {job_id} never reached the expected state: {row}")
