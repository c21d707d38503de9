"""Shared pytest set-up: every test gets its own EXEMPLAR_HOME (and so its own SQLite database and queue)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("EXEMPLAR_DEVICE", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def exemplar_home(tmp_path, monkeypatch):
    """A fresh EXEMPLAR_HOME per test; returns its path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("EXEMPLAR_HOME", str(home))
    monkeypatch.delenv("EXEMPLAR_DATABASE_URL", raising=False)
    monkeypatch.delenv("EXEMPLAR_QUEUE_URL", raising=False)
    monkeypatch.setenv("EXEMPLAR_USER", "tester")
    return home
