"""Identity fails closed (docs/architecture.md, Identity): walk services/ and find every public function that writes
to the database or to disk. Each one must take its acting user as a required parameter and check the role itself
(`require` / `require_cancel`), or be one of the steps listed below, each with why it needs no check of its own.
A new write use case without a check fails here, not in a review."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRITES = {"session", "atomic_write", "write_bytes", "write_text", "unlink", "rmtree", "save_file", "create_job"}
CHECKS = {"require", "require_cancel", "check_use_case"}
ACTOR = {"user_id", "actor_id"}

PLATFORM = "the job platform's bookkeeping of a job whose submission was checked (create_job)"
STEP = "a step of a checked use case (its caller checked the role and records the row's owner)"
CACHE = "derived data: a cache or a measurement rebuilt from rows a checked use case wrote"
READ = "a read (opens a session to read; writes nothing)"
IDENTITY = "identity itself: who acts is being established, so there is no acting user to check yet"

STEPS: dict[str, str] = {
    "services/jobs/state.py:claim": PLATFORM, "services/jobs/state.py:beat": PLATFORM,
    "services/jobs/state.py:finish": PLATFORM, "services/jobs/state.py:release": PLATFORM,
    "services/jobs/state.py:mark_lost": PLATFORM, "services/jobs/state.py:retry": PLATFORM,
    "services/jobs/state.py:cancelled_by_force": PLATFORM, "services/jobs/state.py:cancel": PLATFORM,
    "services/jobs/state.py:drop_state": PLATFORM, "services/jobs/reaper.py:resend_stranded": PLATFORM,
    "services/jobs/outputs.py:clear_outputs": PLATFORM, "services/platform/uploads.py:discard": PLATFORM,
    "services/jobs/lifecycle.py:submit": "creates the row through create_job, which checks the kind's role",
    "services/jobs/lifecycle.py:run_inline": "creates the row through create_job, which checks the kind's role",
    "services/models/registry.py:register_model": STEP, "services/models/registry.py:save_checkpoint_dir": STEP,
    "services/models/registry.py:prune_partial": STEP, "services/models/retrain_models.py:register_group": STEP,
    "services/models/retrain_models.py:discard": STEP, "services/data/datasets.py:register_rows": STEP,
    "services/data/dicom_import.py:pseudonym_key": STEP,
    "services/counterfactuals/generators.py:register_generator": STEP,
    "services/counterfactuals/generators.py:register_shipped_ddpm": STEP + ": the demo's",
    "services/counterfactuals/gan.py:register_shipped_gan": STEP + ": the demo's",
    "services/explanations/evaluation.py:store_results": STEP + ": the evaluate job's",
    "services/models/registry.py:update_metrics": CACHE,
    "services/data/datasets.py:build_arrays": CACHE, "services/data/datasets.py:load_arrays": CACHE,
    "services/data/datasets.py:write_cache": CACHE, "services/retraining/evidence.py:for_pair": CACHE,
    "services/reading/metrics.py:study_faithfulness": CACHE + " (the study.metrics job)",
    "services/data/datasets.py:get_dataset": READ, "services/data/datasets.py:list_datasets": READ,
    "services/data/datasets.py:resolve_image": READ, "services/data/datasets.py:list_images": READ,
    "services/team/token_store.py:authenticate": IDENTITY + " (stamps last_used_at)",
    "services/team/users.py:get_or_create_user": IDENTITY, "services/team/users.py:bootstrap_admin": IDENTITY,
    "services/team/audit.py:record": "the audit row itself, written for a checked caller",
}


def _calls(fn: ast.FunctionDef) -> set[str]:
    out = set()
    for c in ast.walk(fn):
        if isinstance(c, ast.Call):
            f = c.func
            out.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return out


def _writers() -> dict[str, ast.FunctionDef]:
    found = {}
    for path in sorted((ROOT / "services").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("services/cli/"):  # the CLI calls use cases; it writes nothing itself
            continue
        for fn in ast.parse(path.read_text()).body:
            if isinstance(fn, ast.FunctionDef) and not fn.name.startswith("_") and _calls(fn) & WRITES:
                found[f"{rel}:{fn.name}"] = fn
    return found


def _required_actor(fn: ast.FunctionDef) -> bool:
    """An acting-user parameter with no default (keyword-only or positional)."""
    a = fn.args
    positional = a.posonlyargs + a.args
    no_default = {p.arg for p in positional[:len(positional) - len(a.defaults)]}
    no_default |= {p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is None}
    return bool(no_default & ACTOR)


def _job_body(fn: ast.FunctionDef) -> bool:
    """A job's body, fn(ctx, …): runs as the job's owner (ctx.user_id) after create_job checked the kind's role."""
    return [a.arg for a in fn.args.args][:1] == ["ctx"]


def test_every_write_checks_its_acting_user_or_says_why_not():
    writers = _writers()
    assert len(writers) > 30, "the walk found too few writers: the scan is broken"
    unchecked = [name for name, fn in writers.items()
                 if name not in STEPS and not _job_body(fn) and not (_required_actor(fn) and _calls(fn) & CHECKS)]
    assert not unchecked, ("write use cases that neither take a required acting user and check its role nor are "
                           f"listed with a reason: {unchecked}")


def test_the_list_of_steps_names_only_writers_that_exist():
    writers = _writers()
    stale = [name for name in STEPS if name not in writers]
    assert not stale, f"listed as steps but not (or no longer) writers: {stale}"


def test_the_walk_would_catch_an_unchecked_writer():
    bad = ast.parse("def delete_run(run_id, *, user_id):\n    with session() as s:\n        s.delete(run_id)\n")
    good = ast.parse("def delete_run(run_id, *, user_id):\n    require(user_id, 'explain')\n"
                     "    with session() as s:\n        s.delete(run_id)\n")
    defaulted = ast.parse("def delete_run(run_id, *, user_id=SERVER):\n    require(user_id, 'explain')\n"
                          "    with session() as s:\n        s.delete(run_id)\n")
    assert _calls(bad.body[0]) & WRITES and not _calls(bad.body[0]) & CHECKS
    assert _required_actor(good.body[0]) and _calls(good.body[0]) & CHECKS
    assert not _required_actor(defaulted.body[0])
