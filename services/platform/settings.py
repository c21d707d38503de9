"""Runtime settings from EXEMPLAR_* environment variables (docs/architecture.md, Settings), with their defaults."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """EXEMPLAR_HOME, EXEMPLAR_DATABASE_URL, EXEMPLAR_QUEUE_URL, EXEMPLAR_DEVICE."""

    model_config = SettingsConfigDict(env_prefix="EXEMPLAR_", extra="ignore")

    home: Path = Path("var")
    database_url: str | None = None
    queue_url: str | None = None
    device: str = "auto"

    @property
    def home_dir(self) -> Path:
        p = self.home.expanduser().resolve()
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'exemplar.db'}"

    @property
    def queue(self) -> str:
        return self.queue_url or f"sqlite:///{self.home_dir / 'queue.db'}"

    def path(self, *parts: str) -> Path:
        """A folder under EXEMPLAR_HOME, created on demand."""
        p = self.home_dir.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p


def to_stored(path: str | Path | None) -> str | None:
    """A path as the database stores it: relative (POSIX) when inside EXEMPLAR_HOME, else absolute.

    Several hosts may mount EXEMPLAR_HOME at different places (docs/architecture.md, Paths), and a moved home keeps
    working.
    """
    if path is None or str(path) == "":
        return path if path is None else ""
    p = Path(path).expanduser()
    p = p if p.is_absolute() else (Path.cwd() / p)
    home = get_settings().home_dir
    for base in (home, home.resolve()):
        try:
            return Path(os.path.normpath(p)).relative_to(base).as_posix()
        except ValueError:
            pass
    try:
        return p.resolve().relative_to(home.resolve()).as_posix()
    except ValueError:
        return str(p)


def from_stored(value: str | None) -> str | None:
    """A stored path made absolute: relative values are under the current EXEMPLAR_HOME."""
    if value is None or value == "":
        return value
    p = Path(value)
    return str(p if p.is_absolute() else get_settings().home_dir / p)


@lru_cache(maxsize=8)
def _cached(env_key: tuple) -> Settings:
    return Settings()


def get_settings() -> Settings:
    """Settings for the current environment (re-read when EXEMPLAR_* variables change, as in tests)."""
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("EXEMPLAR_")))
    return _cached(key)


def resolve_device(name: str | None = None) -> str:
    """'auto' → cuda when available, else cpu. Imports torch lazily (the worker parent never does)."""
    name = name or get_settings().device
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
