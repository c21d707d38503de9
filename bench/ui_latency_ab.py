"""Gallery and navigation latency, A/B in one run: the app as Exemplar serves it (.streamlit/config.toml) against
the same app with Streamlit options changed, each served in turn on the same EXEMPLAR_HOME, rounds alternating.

Default B: `--runner.postScriptGC true`, Streamlit's own default, which the project turns off (a full
`gc.collect()` after every run, ~0.2 s on a server that has imported torch: docs/architecture.md, Pages). Prints
the median seconds per action side by side with their ratio B / A, and each server's resident memory when it is up
and after the actions (what leaving the collection to Python's own thresholds costs). Nothing is asserted.

Usage: EXEMPLAR_HOME=… python bench/ui_latency_ab.py [--b "--runner.postScriptGC true"] [--rounds 2] [--repeats 6]
       [--actions sort,filter,...] [--json OUT]   (the demo must exist in EXEMPLAR_HOME: `exemplar demo`)
"""
from __future__ import annotations

import argparse
import json
import shlex
import signal
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.ui_latency import add_measure_args, check_args, measure  # noqa: E402  (one set of timed actions)
from services.platform.streamlit_launch import streamlit_command  # noqa: E402  (served as exemplar serve)
from tests.browser.harness import free_port, wait_http  # noqa: E402

GALLERY = "sort,filter,next_page,opacity,open_detail,G,B,U,page_nav"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--b", default="--runner.postScriptGC true", help="Streamlit options of variant B")
    ap.add_argument("--rounds", type=int, default=2, help="A then B, this many times (alternating)")
    add_measure_args(ap, repeats=6, actions=GALLERY)  # --repeats a round, --actions, --user, … and --json
    return ap.parse_args(argv)


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve_and_measure(extra: list[str], args: argparse.Namespace, wanted: set[str]) -> tuple[dict, tuple]:
    """Serve app.py with the extra options, time the actions, stop it: (samples, (RSS up, RSS after) in MiB)."""
    port = free_port()
    cmd = streamlit_command(port, "127.0.0.1", True, "--server.fileWatcherType", "none", *extra)
    app = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", app)
        up = rss_mib(app.pid)
        samples = measure(f"http://127.0.0.1:{port}", args, wanted)
        return samples, (up, rss_mib(app.pid))
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=30)


def report(samples: dict[str, dict[str, list[float]]], rss: dict[str, list[tuple]], b_opts: str) -> str:
    lines = [f"A = the project's config; B = A with {b_opts}", f"{'action':<14}{'n':>4}{'A median':>10}"
             f"{'B median':>10}{'B / A':>8}"]
    for name in samples["A"]:
        a, b = samples["A"][name], samples["B"].get(name, [])
        if a and b:
            ma, mb = statistics.median(a), statistics.median(b)
            lines.append(f"{name:<14}{len(a):>4}{ma:>10.3f}{mb:>10.3f}{mb / ma:>8.2f}")
    for v in ("A", "B"):
        lines.append(f"RSS {v}: " + ", ".join(f"{up:.0f} MiB up → {after:.0f} MiB after" for up, after in rss[v]))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    wanted = check_args(args)
    if wanted is None:
        return 2
    variants = {"A": [], "B": shlex.split(args.b)}
    samples: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    rss: dict[str, list[tuple]] = {"A": [], "B": []}
    for _ in range(args.rounds):
        for v, extra in variants.items():
            got, mem = serve_and_measure(extra, args, wanted)
            rss[v].append(mem)
            for name, xs in got.items():
                samples[v].setdefault(name, []).extend(xs)
    print(report(samples, rss, args.b))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"b": args.b, "samples": samples, "rss_mib": rss}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
