"""A throwaway redis-server (Debian's package) on a loopback port, no persistence."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from contextlib import contextmanager

import pytest


@pytest.fixture(scope="session")
def redis_url():
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is missing: `make test` installs it (apt-get install redis-server)")
    with redis_server() as url:
        yield url


@contextmanager
def redis_server():
    """A throwaway redis-server (tests and benches): yields its redis:// URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is missing (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        r = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
