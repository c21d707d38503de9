"""A throwaway PostgreSQL server from Debian's binaries, run as the `postgres` user in a temp dir on a loopback port."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

from contextlib import contextmanager

import pytest


def _bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{c}'" for c in cmd)]
    return cmd


@pytest.fixture(scope="session")
def postgres_url():
    """Start initdb + postgres on a free port; yield a SQLAlchemy URL; stop and remove afterwards."""
    if _bin() is None:
        pytest.fail("PostgreSQL server binaries are missing: `make test` installs them (apt-get install postgresql)")
    with pg_server() as url:
        yield url


@contextmanager
def pg_server():
    """A throwaway server (tests and benches): yields a SQLAlchemy URL of its `postgres` database."""
    bindir = _bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries are missing (apt-get install postgresql)")
    base = tempfile.mkdtemp(prefix="exemplar-pg-")
    os.chmod(base, 0o755)
    data = os.path.join(base, "data")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(_as_postgres([f"{bindir}/initdb", "-D", data, "-U", "exemplar", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    log = os.path.join(base, "log")
    subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-l", log, "-w", "-o",
                                 f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True)
    try:
        url = f"postgresql+psycopg://exemplar@127.0.0.1:{port}/postgres"
        from sqlalchemy import create_engine, text

        deadline = time.monotonic() + 30
        while True:
            try:
                with create_engine(url).connect() as c:
                    c.execute(text("select 1"))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield url
    finally:
        subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new empty database on the throwaway server; returns its URL."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"t{uuid.uuid4().hex[:10]}"
    eng = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    eng.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
