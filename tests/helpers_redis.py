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


class RedisProc:
    """A redis-server (Debian's package) on a loopback port, no persistence; stop() and start() again on the same
    port simulate a queue restart (its waiting messages are gone)."""

    def __init__(self, port: int | None = None):
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port, self.proc = port, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is missing (apt-get install redis-server)")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        r = redis.Redis(host="127.0.0.1", port=self.port)
        for _ in range(100):
            try:
                r.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(10)


@contextmanager
def redis_server():
    """A throwaway redis-server (tests and benches): yields its redis:// URL."""
    r = RedisProc()
    r.start()
    try:
        yield r.url
    finally:
        r.stop()
