"""Registering a retrain's models: one `retrains` row and, per seed, the child, its plain control and its
random-pair control, each a model a user can open (docs/architecture.md, "Retraining and its evidence").

Every model's config holds retrain_id, seed and role ('child' | 'control' | 'random_control'); a control's
lineage reads "control of #C", a random-pair control's "random-pair control of #C"; a child's config holds
control_id, random_control_id and its own one-seed evidence. Nothing is left behind on a failure: the rows and
checkpoints made so far are removed and the exception goes on.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from db.models import Model, Retrain
from services.models.config_schema import ROLES, check_config
from services.models.registry import register_model, save_checkpoint_dir
from services.platform.database import read_session, session
from services.team import audit

LINEAGE = {"control": "control of #{child}", "random_control": "random-pair control of #{child}"}
SUFFIX = {"child": "", "control": "-control", "random_control": "-random-pair"}


def discard(model_id: int | None, ckpt: Path | None) -> None:
    """Remove one registry row and its checkpoint folder (either may be absent)."""
    if model_id is not None:
        with session() as s:
            m = s.get(Model, int(model_id))
            if m is not None:
                s.delete(m)
    if ckpt is not None:
        shutil.rmtree(Path(ckpt).parent, ignore_errors=True)


def _new_retrain(parent: dict, method: str, seeds: int, config: dict, job_id, user_id) -> int:
    with session() as s:
        row = Retrain(parent_id=int(parent["id"]), method=method, seeds=int(seeds), config=config, evidence={},
                      job_id=job_id, created_by=user_id)
        s.add(row)
        s.flush()
        audit.add(s, user_id, "retrain.register", f"retrain:{row.id}",
                  after={"parent_id": int(parent["id"]), "method": method, "seeds": int(seeds), "job_id": job_id})
        return int(row.id)


def _drop_retrain(retrain_id: int | None) -> None:
    if retrain_id is not None:
        with session() as s:
            r = s.get(Retrain, int(retrain_id))
            if r is not None:
                s.delete(r)


def _save_one(parent: dict, who: str, seed: int, model, config: dict, metrics: dict, name: str,
              feedback_ids: list, job_id, user_id, made: list) -> int:
    ckpt = save_checkpoint_dir(model.cpu(), config)
    made.append((None, ckpt))
    mid = register_model(name=name, arch=parent["arch"], checkpoint=ckpt, dataset_id=parent["dataset_id"],
                         parent_id=int(parent["id"]), config=config, metrics=metrics,
                         feedback_ids=feedback_ids if who == "child" else [], job_id=job_id, created_by=user_id)
    made[-1] = (mid, ckpt)
    return mid


def _set_config(model_id: int, **extra) -> None:
    with session() as s:
        row = s.get(Model, int(model_id))
        config = {**(row.config or {}), **extra}
        check_config(row.kind, config)
        row.config = config


def register_group(parent: dict, seeds: list[dict], group: dict, base_config: dict, name: str,
                   feedback_ids: list, job_id, user_id) -> dict:
    """seeds: per seed {'seed', 'models': {role: module}, 'configs': {role: extra config}, 'metrics': {role: dict},
    'evidence': the child's one-seed evidence}; group: {'method', 'config', 'evidence'} of the retrain row.
    Returns {'retrain_id', 'seed_models': [{seed, child_id, control_id, random_control_id}], 'made'}."""
    made: list = []
    rid = None
    try:
        rid = _new_retrain(parent, group["method"], len(seeds), group["config"], job_id, user_id)
        seed_models = []
        for sd in seeds:
            ids: dict = {"seed": sd["seed"]}
            for who in ROLES:
                if who not in sd["models"]:
                    ids[f"{who}_id"] = None
                    continue
                cfg = {**base_config, **sd["configs"][who], "retrain_id": rid, "seed": sd["seed"], "role": who}
                if who != "child":
                    cfg.update(evidence=None, lineage=LINEAGE[who].format(child=ids["child_id"]),
                               control_of=ids["child_id"])
                else:
                    cfg["evidence"] = sd["evidence"]
                label = f"{name}{SUFFIX[who]}" + (f"-s{sd['seed']}" if len(seeds) > 1 else "")
                ids[f"{who}_id"] = _save_one(parent, who, sd["seed"], sd["models"][who], cfg, sd["metrics"][who],
                                             label, feedback_ids, job_id, user_id, made)
            _set_config(ids["child_id"], control_id=ids.get("control_id"),
                        random_control_id=ids.get("random_control_id"))
            seed_models.append(ids)
        with session() as s:
            r = s.get(Retrain, rid)
            r.evidence = group["evidence"]
            r.config = {**(r.config or {}), "seed_models": seed_models}
    except BaseException:
        for mid, ck in reversed(made):
            discard(mid, ck)
        _drop_retrain(rid)
        raise
    return {"retrain_id": rid, "seed_models": seed_models, "made": made}


def undo_group(reg: dict) -> None:
    """Remove a registered group again (the child's ranking failed or was cancelled)."""
    for mid, ck in reversed(reg["made"]):
        discard(mid, ck)
    _drop_retrain(reg["retrain_id"])


def get_retrain(retrain_id: int) -> dict | None:
    """{'id', 'parent_id', 'method', 'seeds', 'config', 'evidence', 'created_at'} or None."""
    with read_session() as s:
        r = s.get(Retrain, int(retrain_id))
        if r is None:
            return None
        return {"id": r.id, "parent_id": r.parent_id, "method": r.method, "seeds": r.seeds, "config": r.config or {},
                "evidence": r.evidence or {}, "job_id": r.job_id,
                "created_at": r.created_at.isoformat() if r.created_at else None}
