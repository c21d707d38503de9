"""Reliability under load, on SQLite (default queue) and PostgreSQL + Redis (throwaway servers on loopback).

Prints per engine:
  writes  — N users (processes) × M feedback picks each while a worker trains a classifier: lost writes,
            errors, p50 / p99 / max seconds per write;
  read    — seconds a jobs-list read takes while another connection holds a write transaction open;
  lost    — a running job's child killed with SIGKILL: seconds until the job is `lost`, and until its retry
            (attempt 2) is running;
  twice   — K small jobs on two workers: how many ran more than once (must be 0), and how many each worker ran;
  enqueue — seconds for one `exemplar … --queue` CLI call while the workers are busy (process start included).

Usage: python bench/reliability.py [--users 8] [--writes 500] [--jobs 20] [--engines sqlite,postgres]
Run small with e.g. --writes 50 --jobs 6. Every EXEMPLAR_HOME is a temporary folder, removed afterwards.

Also the fault suite (bench/reliability_faults.py): a worker parent that took messages and died, a crash after
results and before finish, the queue down at submit and restarted, the queue restarted mid-run, two workers in
separate PID namespaces on one host. Skip it with --no-faults, or run it alone with --faults-only.

Findings (defaults; 2-core CPU VM, nothing else running; bench/results/reliability_cpu.txt):
  engine     lost errors   p50 s   p99 s   max s | read p50 read max | →lost s →retry s | twice  ok per worker
  sqlite        0      0   0.063   0.128   0.166 |    0.002    0.005 |     0.2      0.2 |     0  20    [9, 11]
  postgres      0      0   0.119   0.216   0.316 |    0.002    0.014 |     0.2      0.2 |     0  20    [9, 11]
- 0 lost writes, 0 errors. A read behind a 5 s write: 2 ms (goal ≤ 100 ms: met).
- 8-writer p99 on SQLite 0.128 s: goal ≤ 0.100 s missed on this machine. It is CPU, not the lock: one writer alone
  takes p50 6.8 ms / p99 9.5 ms, 6.6 ms of CPU a pick (SQLAlchemy ORM work); 8 writer processes and the training
  job share 2 cores, so a pick waits for CPU about 8 × 6.6 / 2 ms. Moving the pick's checks and its answer out of
  the write transaction (lock held only for the insert) did not change p99 (0.136 → 0.159 s in 8 × 200 runs, noise),
  so it was not kept. (The previous table, 1.254 s, was measured at load average 9–18: not comparable.)
- Fault suite: 0 stranded, 0 run twice, 0 duplicated results; every job final within 26 s of a worker and the
  queue being available (goal 60 s: met), on SQLite and on PostgreSQL + Redis.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXE = str(Path(sys.executable).with_name("exemplar"))


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def _writer(env: dict, user: str, model_id: int, image_ids: list[int], n: int, q) -> None:
    os.environ.update(env)
    from services.explanations.feedback import pick
    from services.team.users import get_or_create_user

    uid = get_or_create_user(user)
    lat, errors = [], 0
    for i in range(n):
        t0 = time.perf_counter()
        try:
            pick(uid, model_id, image_ids[i % len(image_ids)], "good" if i % 2 else "bad")
        except Exception as exc:  # counted, and shown once
            errors += 1
            if errors == 1:
                print(f"  write error: {type(exc).__name__}: {exc}", file=sys.stderr)
        lat.append(time.perf_counter() - t0)
    q.put((lat, errors))


def _setup(env: dict) -> tuple[int, list[int]]:
    """A tiny SynthCXR dataset and a registry row to pick against."""
    os.environ.update(env)
    from db.models import Model
    from services.platform.database import session
    from services.data.datasets import list_images, synth_dataset

    ds = synth_dataset("bench", n=200, size=32, seed=0, user_id=None)
    with session() as s:
        m = Model(name="bench", arch="simple_cnn", dataset_id=ds["dataset_id"], checkpoint="none")
        s.add(m)
        s.flush()
        mid = m.id
    return mid, [im["id"] for im in list_images(ds["dataset_id"])][:100]


def _worker(env: dict, home: Path, tag: str) -> subprocess.Popen:
    return subprocess.Popen([EXE, "worker"], env=env, cwd=ROOT, stdout=open(home / f"{tag}.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(p: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGCONT, 0), (signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        if p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)
            p.wait(wait) if wait else None
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def _wait(job_id: int, pred, timeout: float = 600.0) -> tuple[dict, float]:
    from services.jobs.lifecycle import get_job

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        row = get_job(job_id)
        if row and pred(row):
            return row, time.monotonic() - t0
        time.sleep(0.1)
    raise RuntimeError(f"job {job_id} did not get there in {timeout:.0f} s: {get_job(job_id)}")


def bench_writes(env: dict, users: int, writes: int, model_id: int, images: list[int]) -> dict:
    from sqlalchemy import func, select

    from db.models import Feedback
    from services.jobs import lifecycle as jobs
    from services.platform.database import read_session

    train = jobs.submit("train", {"dataset": "bench", "arch": "simple_cnn", "epochs": 200, "patience": 200,
                                  "batch_size": 32, "seed": 0, "threads": 1}, user_id=None)
    _wait(train, lambda r: r["status"] == "running")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(env, f"user{u}", model_id, images, writes, q)) for u in range(users)]
    for p in procs:
        p.start()
    results = [q.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join(60)
    still = jobs.get_job(train)["status"]
    jobs.request_cancel(train, user_id=None)
    lat = [x for r in results for x in r[0]]
    with read_session() as s:
        stored = int(s.scalar(select(func.count()).select_from(Feedback)))
    return {"lost": users * writes - stored, "errors": sum(r[1] for r in results), "p50": _pct(lat, 0.5),
            "p99": _pct(lat, 0.99), "max": max(lat), "training": still}


def bench_read_behind_write(hold_s: float = 5.0, reads: int = 20) -> dict:
    from sqlalchemy import update

    from db.models import Job
    from services.jobs import lifecycle as jobs
    from services.platform.database import session

    jid = jobs.create_job("data.synth", {"name": "held"}, user_id=None)
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with session() as s:
            s.execute(update(Job).where(Job.id == jid).values(message="held"))
            held.set()
            done.wait(hold_s)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(30)
    lat = []
    for _ in range(reads):
        t0 = time.perf_counter()
        jobs.list_jobs(limit=50)
        lat.append(time.perf_counter() - t0)
    done.set()
    t.join()
    jobs.request_cancel(jid, user_id=None)
    return {"p50": _pct(lat, 0.5), "max": max(lat)}


def bench_kill() -> dict:
    from services.jobs import lifecycle as jobs

    jid = jobs.submit("data.synth", {"name": f"big{uuid.uuid4().hex[:6]}", "n": 30000, "size": 128, "seed": 3}, user_id=None)
    row, _ = _wait(jid, lambda r: r["status"] == "running" and r["pid"])
    os.kill(row["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    _wait(jid, lambda r: r["status"] != "running" or r["attempts"] >= 2, timeout=120)
    to_lost = time.monotonic() - t0
    _wait(jid, lambda r: r["attempts"] >= 2 and r["status"] == "running", timeout=120)
    to_retry = time.monotonic() - t0
    jobs.request_cancel(jid, user_id=None)
    _wait(jid, lambda r: r["status"] in jobs.FINAL, timeout=300)
    return {"to_lost": to_lost, "to_retry": to_retry}


def bench_twice(env: dict, n: int) -> dict:
    from services.jobs import lifecycle as jobs

    ids = [jobs.submit("data.synth", {"name": f"s{i}", "n": 40, "size": 32, "seed": i}, user_id=None) for i in range(n)]
    t0 = time.perf_counter()
    subprocess.run([EXE, "data", "synth", "--name", "q", "--n", "40", "--size", "32", "--queue", "--json"], env=env,
                   cwd=ROOT, capture_output=True, check=True)
    enqueue_s = time.perf_counter() - t0
    rows = [_wait(j, lambda r: r["status"] in jobs.FINAL)[0] for j in ids]
    twice = sum(1 for r in rows if r["attempts"] > 1 or sum(h["status"] == "succeeded" for h in r["history"]) > 1)
    per = {}
    for r in rows:
        per[r["worker"]] = per.get(r["worker"], 0) + 1
    return {"twice": twice, "ok": sum(r["status"] == "succeeded" for r in rows), "per_worker": sorted(per.values()),
            "enqueue_s": enqueue_s}


def _start_services(engine: str, env: dict, stack: ExitStack):
    """PostgreSQL and a restartable Redis for the postgres engine; None (SQLite file queue) otherwise."""
    if engine != "postgres":
        return None
    from tests.helpers_pg import pg_server
    from tests.helpers_redis import RedisProc

    env["EXEMPLAR_DATABASE_URL"] = stack.enter_context(pg_server())
    redis = RedisProc()
    redis.start()
    stack.callback(redis.stop)
    env["EXEMPLAR_QUEUE_URL"] = redis.url
    return redis


def run_faults(engine: str, full: dict, home: Path, redis) -> list[dict]:
    """The fault suite with two workers running (bench/reliability_faults.py)."""
    from bench import reliability_faults as f

    def ns_worker() -> subprocess.Popen:
        return subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", EXE, "worker"],
                                env=full, cwd=ROOT, stdout=open(home / "w-ns.log", "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)

    rows = [f.parent_died_after_dequeue(), f.crash_after_results()]
    if redis is not None:
        rows += [f.queue_down_at_submit(redis), f.queue_restarted_mid_run(redis)]
    ns = f.pid_namespaces(ns_worker)
    rows += [ns] if ns else []
    return [{"engine": engine, **r} for r in rows]


def run_engine(engine: str, args, stack: ExitStack) -> dict:
    home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"exemplar-rel-{engine}-")))
    env = {"EXEMPLAR_HOME": str(home), "EXEMPLAR_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    for k in ("EXEMPLAR_DATABASE_URL", "EXEMPLAR_QUEUE_URL", "EXEMPLAR_TOKEN"):
        os.environ.pop(k, None)
    redis = _start_services(engine, env, stack)
    os.environ.update(env)
    full = {**os.environ, **env}
    subprocess.run([EXE, "db", "upgrade"], env=full, cwd=ROOT, check=True, capture_output=True)
    model_id, images = _setup(env)
    w1 = _worker(full, home, "w1")
    stack.callback(_stop, w1)
    out = {}
    if not args.faults_only:
        out["writes"] = bench_writes(env, args.users, args.writes, model_id, images)
        out["read"] = bench_read_behind_write()
        out["lost"] = bench_kill()
    w2 = _worker(full, home, "w2")
    stack.callback(_stop, w2)
    if not args.faults_only:
        out["twice"] = bench_twice(full, args.jobs)
    if not args.no_faults:
        out["faults"] = run_faults(engine, full, home, redis)
    return out


def print_main(rows: dict, args) -> None:
    print(f"\n{args.users} users × {args.writes} feedback writes with a training job; {args.jobs} jobs on 2 workers")
    print(f"{'engine':<9} {'lost':>5} {'errors':>6} {'p50 s':>7} {'p99 s':>7} {'max s':>7} | {'read p50':>8} "
          f"{'read max':>8} | {'→lost s':>7} {'→retry s':>8} | {'twice':>5} {'ok':>3} {'per worker':>10} | enqueue s")
    for e, r in rows.items():
        if "writes" not in r:
            continue
        w, rd, lo, tw = r["writes"], r["read"], r["lost"], r["twice"]
        print(f"{e:<9} {w['lost']:>5} {w['errors']:>6} {w['p50']:>7.3f} {w['p99']:>7.3f} {w['max']:>7.3f} | "
              f"{rd['p50']:>8.3f} {rd['max']:>8.3f} | {lo['to_lost']:>7.1f} {lo['to_retry']:>8.1f} | "
              f"{tw['twice']:>5} {tw['ok']:>3} {str(tw['per_worker']):>10} | {tw['enqueue_s']:.2f}")
        if w["training"] != "running":
            print(f"  note: the training job was {w['training']} by the end of the writes on {e}")
    print("goals: 0 lost, p99 ≤ 0.100 s (8 × 500 on SQLite, quiet machine), a read behind a 5 s write ≤ 0.100 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--writes", type=int, default=500)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--engines", default="sqlite,postgres")
    ap.add_argument("--faults-only", action="store_true", help="run the fault suite alone")
    ap.add_argument("--no-faults", action="store_true", help="skip the fault suite")
    args = ap.parse_args()
    rows = {}
    for engine in args.engines.split(","):
        with ExitStack() as stack:
            rows[engine] = run_engine(engine, args, stack)
    print_main(rows, args)
    faults = [f for r in rows.values() for f in r.get("faults", [])]
    if faults:
        from bench.reliability_faults import print_table

        print_table(faults)


if __name__ == "__main__":
    main()
