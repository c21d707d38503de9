"""The Huey queue: SQLite backend under EXEMPLAR_HOME by default, Redis when EXEMPLAR_QUEUE_URL is redis://."""
from __future__ import annotations

from functools import lru_cache

from huey import RedisHuey, SqliteHuey

from services.settings import get_settings

TASK_NAME = "exemplar.run_job"


@lru_cache(maxsize=8)
def _huey_for(url: str):
    if url.startswith("redis://") or url.startswith("rediss://"):
        h = RedisHuey("exemplar", url=url)
    elif url.startswith("sqlite:///"):
        h = SqliteHuey("exemplar", filename=url[len("sqlite:///"):])
    else:
        raise ValueError(f"EXEMPLAR_QUEUE_URL must be sqlite:///FILE or redis://HOST, got {url!r}")

    from services.jobs import execute_job  # the one task: run a jobs row by id

    task = h.task(name=TASK_NAME)(execute_job)

    @h.on_startup()
    def _fresh_connections() -> None:
        # A forked worker process must not reuse the parent's pooled DB connections.
        from db.engine import get_engine

        get_engine(get_settings().db_url).dispose(close=False)

    h._exemplar_task = task
    return h


def get_huey():
    return _huey_for(get_settings().queue)


def enqueue(job_id: int) -> None:
    get_huey()._exemplar_task(job_id)
