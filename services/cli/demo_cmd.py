"""`exemplar demo`: build the built-in demo (SynthCXR → baseline classifier → …); idempotent, progress on stderr."""
from __future__ import annotations

import typer

from core.registries import ARCHITECTURES
from services.cli.common import emit, run_job, fail


def _human(res: dict) -> str:
    lines = [f"{s['title']}: {s['status']}" + (f" in {s['seconds']:.0f}s" if s["status"] == "built" else "")
             for s in res.get("steps", [])]
    sm = res.get("summary") or {}
    if sm.get("test_accuracy") is not None:
        lines.append(f"baseline model #{sm['baseline_model_id']}: test accuracy {sm['test_accuracy']:.3f}, "
                     f"test_shifted accuracy {sm['test_shifted_accuracy']:.3f} (the shortcut)")
    return "\n".join(lines + ["demo ready: start the app with `make run` or `exemplar serve`"])


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(size: int = typer.Option(64, help="image side in px; 64 is the CPU demo, e.g. 224 for a larger one"),
             arch: str = typer.Option("simple_cnn",
                                      help="baseline architecture for a larger demo: " + ARCHITECTURES.choices()),
             queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
             json_: bool = typer.Option(False, "--json")):
        """Build the demo as you (a researcher or admin); what exists is kept, so running it twice is quick."""
        if not 32 <= size <= 512:
            fail(f"--size must be between 32 and 512, got {size}")
        if arch not in ARCHITECTURES:
            fail(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES.choices(', ')}")
        params = {} if (size, arch) == (64, "simple_cnn") else {"size": size, "arch": arch}
        res = run_job("demo", params, json_, enqueue=queue)
        emit(res, json_, _human(res))
