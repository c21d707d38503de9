"""The message queue (Huey storage): SQLite under EXEMPLAR_HOME by default, Redis when EXEMPLAR_QUEUE_URL is
redis:// or rediss://. A message is just a job id; the `jobs` table is the truth, so Huey keeps no results.

Huey messages are pickles: whoever can write to the queue can run code in the workers. Keep Redis private
(bind to a private address, `requirepass`, TLS with rediss://) — see the README's scale-out section.
"""
from __future__ import annotations

from functools import lru_cache

from huey import RedisHuey, SqliteHuey

from services.platform.settings import get_settings

TASK_NAME = "exemplar.run_job"


def _never_called(job_id: int) -> None:
    """The task body Huey would run; Exemplar's worker runs the job itself (services.jobs.worker)."""
    raise RuntimeError("exemplar jobs are run by `exemplar worker`, not by a Huey consumer")


@lru_cache(maxsize=8)
def _huey_for(url: str):
    if url.startswith("redis://") or url.startswith("rediss://"):
        h = RedisHuey("exemplar", url=url, results=False, blocking=True, read_timeout=1)
    elif url.startswith("sqlite:///"):
        h = SqliteHuey("exemplar", filename=url[len("sqlite:///"):], results=False, timeout=30)
    else:
        raise ValueError(f"EXEMPLAR_QUEUE_URL must be sqlite:///FILE, redis://HOST or rediss://HOST, got {url!r}")
    h._exemplar_task = h.task(name=TASK_NAME)(_never_called)
    return h


def get_huey():
    return _huey_for(get_settings().queue)


def enqueue(job_id: int) -> None:
    """Put a job id on the queue (a duplicate message is harmless: a job is claimed once)."""
    get_huey()._exemplar_task(int(job_id))


def dequeue() -> int | None:
    """The next job id, or None (Redis blocks up to a second; SQLite returns at once)."""
    h = get_huey()
    task = h.dequeue()
    if task is None:
        return None
    try:
        return int(task.args[0])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None  # not one of ours: dropped


def pending() -> int:
    return int(get_huey().pending_count())


def pending_ids(limit: int = 100_000) -> set[int]:
    """The job ids whose messages wait on the queue now (read without taking them)."""
    out = set()
    for task in get_huey().pending(limit):
        try:
            out.add(int(task.args[0]))
        except (AttributeError, IndexError, TypeError, ValueError):
            continue
    return out
