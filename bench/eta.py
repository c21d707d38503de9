"""ETA honesty on the demo's retrain and evaluate jobs (issue 25): how far the shown "about … left" is from the real
remaining time, after 20 % of the job.

In a fresh EXEMPLAR_HOME (or --home) it builds the demo (`exemplar demo`), then runs each job kind twice with the same
parameters, by the product's own path (`exemplar exbl --model BASELINE --auto`, `exemplar evaluate --model
BASELINE`: run inline, as jobs, recording their progress curves in `jobs.timeline`). The first run of a kind has no
reference job; the second has the first. For every recorded point after 20 % it replays what the job panel showed
(services/jobs/eta.py, the function the panel calls) and compares it with the real remaining time:

  estimator     the job's overall rate (elapsed × (1 − p) / p: the old estimate, and what the panel shows until a
                job of the kind has finished), the current phase's rate (the alternative, not shown), the
                reference job's phase costs scaled by this job's speed (shown once a job of the kind has
                finished), the job's own estimate (the evaluate job's measured seconds per image: shown whenever
                the job gives one), and "panel": what services/jobs/eta.py: seconds_left chose at that point

It prints, per job and estimator, the median and the 90th percentile of |shown − real| / real, the share of points
within 25 %, and the goal (within 25 % after 20 %). Nothing is asserted: this is a bench.

With --ltx an LTX explainer is pretrained first (`exemplar ltx train`), so the evaluate job has its slow per-image
LTX phase (the case where the old estimate said "about 7m" with that phase barely begun). The kind `ltx_evaluate`
trains it just before its own runs instead: `--kinds evaluate,ltx_evaluate` times a plain evaluate job and then the
first one with LTX (whose reference, as on the panel, is the plain one: the same parameters).

It also prints when each job's first metrics point (the first point of the panel's live chart) could be seen: the
bench polls the job row every 0.5 s as the panel does (goal: within 30 s of the start).

Usage: python bench/eta.py [--home DIR] [--kinds exbl,evaluate,ltx_evaluate] [--ltx] [--runs 2] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOAL = 0.25
AFTER = 0.20
CHART_GOAL_S = 30.0
ESTIMATORS = ("overall rate", "current phase rate", "reference phases", "job's own", "panel")


class FirstChart(threading.Thread):
    """Polls the newest job of `kind` every 0.5 s (as the job panel does) and notes the seconds from its start to the
    first poll that found a metrics point."""

    def __init__(self, kind: str, after_id: int):
        super().__init__(daemon=True)
        self.kind, self.after_id, self.seconds, self.stop = kind, after_id, None, threading.Event()

    def run(self) -> None:
        from services.jobs import lifecycle as jobs

        while not self.stop.wait(0.5):
            job = next((j for j in jobs.list_jobs(limit=1) if j["id"] > self.after_id and j["kind"] == self.kind), None)
            if job and job["metrics"] and job["started_at"]:
                start = datetime.fromisoformat(job["started_at"])
                start = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
                self.seconds = (datetime.now(timezone.utc) - start).total_seconds()
                return


def cli(home: Path, *args: str) -> dict:
    env = {**os.environ, "EXEMPLAR_HOME": str(home), "EXEMPLAR_USER": "bench"}
    out = subprocess.run([str(ROOT / ".venv/bin/exemplar"), *args, "--json"], env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"exemplar {' '.join(args)} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}


def replay(timeline: list, reference: list | None) -> dict[str, list[float]]:
    """Relative errors |shown − real| / real at every point after AFTER, per estimator."""
    from services.jobs import eta

    total = float(timeline[-1][0])
    errs: dict[str, list[float]] = {name: [] for name in ESTIMATORS}
    for k, point in enumerate(timeline):
        t, p = point[0], point[1]
        real = total - float(t)
        if p < AFTER or p >= 1.0 or real <= 1.0:
            continue
        prefix = timeline[: k + 1]
        shown = {"overall rate": eta.by_overall_rate(prefix, float(t)),
                 "current phase rate": eta.by_recent_rate(prefix, float(t)),
                 "reference phases": eta.by_reference(prefix, float(t), reference) if reference else None,
                 "job's own": eta.by_job(prefix, float(t)),
                 "panel": eta.seconds_left(prefix, float(t), reference)}
        for name, v in shown.items():
            if v is not None:
                errs[name].append(abs(v - real) / real)
    return errs


def p90(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def table(rows: list[dict]) -> str:
    head = (f"{'job':<28}{'estimator':<22}{'points':>7}{'median err':>12}{'p90 err':>10}{'within 25 %':>13}"
            f"{'goal':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if not r["n"]:
            lines.append(f"{r['job']:<28}{r['estimator']:<22}{0:>7}{'n/a':>12}{'n/a':>10}{'n/a':>13}{'':>7}")
            continue
        lines.append(f"{r['job']:<28}{r['estimator']:<22}{r['n']:>7}{r['median']:>12.1%}{r['p90']:>10.1%}"
                     f"{r['within']:>13.0%}{'met' if r['median'] <= GOAL else 'MISSED':>7}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", help="EXEMPLAR_HOME to use (default: a fresh temporary one)")
    ap.add_argument("--kinds", default="exbl,evaluate")
    ap.add_argument("--ltx", action="store_true", help="pretrain an LTX explainer before the evaluate runs")
    ap.add_argument("--runs", type=int, default=2, help="runs of each kind (1: only a first job of its kind)")
    ap.add_argument("--json", help="write the rows as JSON here")
    a = ap.parse_args(argv)
    home = Path(a.home or tempfile.mkdtemp(prefix="exemplar-eta-"))
    os.environ["EXEMPLAR_HOME"] = str(home)
    subprocess.run([str(ROOT / ".venv/bin/exemplar"), "db", "upgrade"], env={**os.environ}, check=True,
                   capture_output=True)
    demo = cli(home, "demo")
    from services.jobs import lifecycle as jobs
    from services.models.catalog import list_models

    base = demo.get("baseline_id") or next(m["id"] for m in list_models("classifier") if m["name"].endswith("baseline"))
    commands = {"exbl": ["exbl", "--model", str(base), "--auto"], "evaluate": ["evaluate", "--model", str(base)]}
    if a.ltx:
        cli(home, "ltx", "train", "--model", str(base))
    commands["ltx_evaluate"] = commands["evaluate"]  # the same command once the explainer exists
    rows, charts = [], []
    for kind in a.kinds.split(","):
        if kind == "ltx_evaluate" and not a.ltx:
            cli(home, "ltx", "train", "--model", str(base))
        for run in range(1, a.runs + 1):
            newest = jobs.list_jobs(limit=1)
            chart = FirstChart(commands[kind][0], newest[0]["id"] if newest else 0)
            chart.start()
            cli(home, *commands[kind])
            chart.stop.set()
            job = jobs.list_jobs(limit=1, status="succeeded")[0]
            earlier = [j for j in jobs.list_jobs(limit=50, status="succeeded")
                       if j["kind"] == job["kind"] and j["id"] < job["id"] and j["timeline"]]
            ref = earlier[0]["timeline"] if earlier else None
            errs = replay(job["timeline"], ref)
            name = f"{kind} run {run} ({job['timeline'][-1][0]:.0f} s)"
            for est, xs in errs.items():
                rows.append({"job": name, "estimator": est, "n": len(xs),
                             "median": statistics.median(xs) if xs else None, "p90": p90(xs) if xs else None,
                             "within": sum(x <= GOAL for x in xs) / len(xs) if xs else None})
            print(table(rows[-len(ESTIMATORS):]), flush=True)
            charts.append(f"{name}: first metrics point seen {chart.seconds:.1f} s after the start (goal ≤ "
                          f"{CHART_GOAL_S:.0f} s: {'met' if chart.seconds <= CHART_GOAL_S else 'MISSED'})"
                          if chart.seconds is not None else f"{name}: no metrics points (no live chart)")
            print(charts[-1], flush=True)
    print(f"\nETA error after {AFTER:.0%} of the job, on this machine ({os.cpu_count()} cores); goal: within "
          f"{GOAL:.0%} (median). The panel shows the job's own estimate when it gives one, else 'reference phases' "
          "once a job of the kind has finished, else "
          "'overall rate'.")
    print(table(rows))
    print("\n".join(charts))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
