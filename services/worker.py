"""The worker: marks stale jobs lost, beats its heartbeat in `workers`, and runs the Huey consumer (process workers)."""
from __future__ import annotations

import os
import socket
import sys
import threading
from datetime import timedelta

from sqlalchemy import select

from db.models import Worker, utcnow
from services.database import session
from services.jobs import HEARTBEAT_S, mark_lost

ALIVE_WITHIN_S = 15.0


def _beat(name: str, device: str) -> None:
    with session() as s:
        w = s.scalars(select(Worker).where(Worker.name == name)).first()
        if w is None:
            s.add(Worker(name=name, device=device, started_at=utcnow(), heartbeat_at=utcnow()))
        else:
            w.heartbeat_at, w.device = utcnow(), device


def alive_workers(within_s: float = ALIVE_WITHIN_S) -> list[dict]:
    """Workers whose heartbeat is recent."""
    cutoff = utcnow() - timedelta(seconds=within_s)
    with session() as s:
        rows = s.scalars(select(Worker).where(Worker.heartbeat_at >= cutoff)).all()
        return [{"name": w.name, "device": w.device, "heartbeat_at": w.heartbeat_at.isoformat()} for w in rows]


def _device_label() -> str:
    # Never initialise CUDA in the parent: ask the driver through the environment only.
    dev = os.environ.get("EXEMPLAR_DEVICE", "auto")
    return dev


def run_worker(workers: int = 1) -> None:
    """Blocking: start the consumer with `workers` child processes; Ctrl-C stops it."""
    import logging

    from huey.consumer import Consumer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from services.queue import get_huey

    lost = mark_lost()
    if lost:
        print(f"marked {lost} stale running job(s) as lost", file=sys.stderr)
    name = f"{socket.gethostname()}:{os.getpid()}"
    _beat(name, _device_label())
    # Children are forked by the consumer: drop pooled connections first, never share them.
    from db.engine import get_engine
    from services.settings import get_settings

    get_engine(get_settings().db_url).dispose()
    consumer = Consumer(get_huey(), workers=workers, worker_type="process", periodic=False, check_worker_health=True)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                _beat(name, _device_label())
            except Exception as exc:  # a missed beat is logged; the next one retries
                print(f"worker heartbeat failed: {exc}", file=sys.stderr)

    print(f"exemplar worker {name} on queue {get_settings().queue}", file=sys.stderr, flush=True)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        consumer.run()
    finally:
        stop.set()
