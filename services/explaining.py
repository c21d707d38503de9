"""Explanation runs: the `explain` job (maps + localisation metrics for every image of the chosen splits),
run lookups and the gallery's SQL query.

A run stores its maps compactly as ONE float16 array `$EXEMPLAR_HOME/runs/<run_id>/maps.npy` of shape
(N, H, W) at the dataset's working resolution (row i = `explanations.index` i; memory-mapped when read), and
one `explanations` row per image with target, prediction, probability and every metric of DESIGN.md §4
(NULL where undefined). Nothing here imports torch at module level: the pages import this module.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from sqlalchemy import and_, delete, exists, func, insert, select

from db.models import Annotation, Dataset, Explanation, ExplanationRun, Image, Model
from services.batching import adaptive_batches
from services.database import session
from services.settings import get_settings

METRICS = ("ar", "ap", "f1", "soft_ar", "relevance_mass", "rra", "pointing", "wr")
SORTABLE = METRICS + ("prob",)
TARGETS = ("predicted", "true")
MAPS_FILE = "maps.npy"
Progress = Callable[..., None]


def runs_root() -> Path:
    return get_settings().path("runs")


def run_dir(run_id: int) -> Path:
    return runs_root() / str(int(run_id))


def _f(v) -> float | None:
    """NaN / None → None (SQL NULL); else a float."""
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _nanmean(a: np.ndarray) -> float | None:
    a = np.asarray(a, np.float64)
    ok = ~np.isnan(a)
    return float(a[ok].mean()) if ok.any() else None


# ----------------------------------------------------------------------------------------------- computing

def run_explain(model_id: int, method: str = "gradcam", splits: Sequence[str] | None = None,
                target: str = "predicted", tau: float = 0.5, batch_size: int = 128, dataset_id: int | None = None,
                device: str | None = None, limit: int | None = None, user_id: int | None = None,
                job_id: int | None = None, progress: Progress | None = None) -> dict:
    """Explain every image of `splits` (all when empty) of the model's dataset; store maps and metric rows.

    One batched forward + backward per batch (GradCAM), metrics on the device in the same pass.
    Returns {run_id, model_id, dataset_id, method, target, splits, tau, maps_path, summary}; summary holds n,
    accuracy, <metric>_mean for every metric (None where undefined for all images), seconds, images_per_s.
    """
    import torch

    from core.explain import EXPLAINERS, explain
    from core.metrics.localisation import localisation_metrics
    from services.datasets import load_arrays
    from services.models import get_model, load_classifier
    from services.settings import resolve_device

    from services.ltx import LTX_METHODS, method_kwargs

    say = progress or (lambda *a, **k: None)
    if method not in EXPLAINERS and method not in LTX_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join([*EXPLAINERS, *LTX_METHODS])}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    tau = float(tau)
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    row = get_model(int(model_id))
    if row is None:
        raise ValueError(f"no model {model_id}")
    ds_id = int(dataset_id or row["dataset_id"] or 0)
    if not ds_id:
        raise ValueError(f"model {model_id} has no dataset; pass a dataset")
    t0 = time.monotonic()
    say(0.0, "loading model and dataset")
    dev = resolve_device(device)
    model, _ = load_classifier(int(model_id), dev)
    say(0.005, "model loaded; loading the dataset", force=True)  # each loading step is a point where cancel lands
    reg_method, method_kw = method_kwargs(int(model_id), method, str(dev))  # LTX: the model's trained explainer
    arrays = load_arrays(ds_id)
    say(0.01, "dataset loaded", force=True)
    splits = [s for s in (splits or []) if s]
    idx = arrays.split_index(*splits)
    if limit:
        idx = idx[: int(limit)]
    n = len(idx)
    if n == 0:
        raise ValueError(f"no images in split(s) {', '.join(splits) or 'any'} of dataset {ds_id}")
    n_classes = len(row["config"].get("classes") or arrays.classes)
    if arrays.labels[idx].max() >= n_classes:
        raise ValueError(f"dataset {ds_id} has labels outside the model's {n_classes} classes")
    size = arrays.size
    maps = np.zeros((n, size, size), np.float16)
    cols = {k: np.full(n, np.nan, np.float32) for k in METRICS}
    preds, probs, targets = np.zeros(n, np.int64), np.zeros(n, np.float32), np.zeros(n, np.int64)
    has_conf = bool(arrays.has_marker[idx].any())
    say(0.02, f"{method} on {n} images ({dev})")
    t_compute = time.monotonic()
    for s, e_ in adaptive_batches(n, batch_size):  # issue 16: small batches for slow methods, so cancel is quick
        b = idx[s: e_]
        x = torch.from_numpy(arrays.images[b]).to(dev, non_blocking=True).float().div_(255.0)[:, None]
        tgt = None if target == "predicted" else torch.from_numpy(arrays.labels[b]).to(dev)
        e, logits = explain(model, x, tgt, reg_method, size=size, return_logits=True, **method_kw)
        lung = torch.from_numpy(arrays.lung[b]).to(dev)
        conf = torch.from_numpy(arrays.marker[b]).to(dev) if has_conf else None
        m = localisation_metrics(e, lung, conf, tau)
        p = logits.float().softmax(1)
        pred = p.argmax(1)
        tg = pred if tgt is None else tgt
        sl = slice(s, s + len(b))
        maps[sl] = e.half().cpu().numpy()
        for k in METRICS:
            cols[k][sl] = m[k].cpu().numpy()
        preds[sl], targets[sl] = pred.cpu().numpy(), tg.cpu().numpy()
        probs[sl] = p.gather(1, pred[:, None])[:, 0].cpu().numpy()
        say(0.02 + 0.9 * (s + len(b)) / n, f"{method}: {s + len(b)}/{n} images")
    compute_s = time.monotonic() - t_compute
    labels = arrays.labels[idx]
    summary = {"n": n, "accuracy": float((preds == labels).mean()), "tau": tau, "method": method,
               "target": target, "splits": splits, "has_lung_mask": int(arrays.has_lung[idx].sum()),
               "has_confounder_mask": int(arrays.has_marker[idx].sum())}
    for k in METRICS:
        summary[f"{k}_mean"] = _nanmean(cols[k])
        summary[f"{k}_undefined"] = int(np.isnan(cols[k]).sum())
    if not has_conf:
        summary["wr_mean"] = None
    summary["compute_seconds"] = round(compute_s, 3)
    summary["images_per_s"] = round(n / max(compute_s, 1e-9), 1)
    say(0.94, "saving maps and metric rows", force=True)  # the last point where a cancel is honoured
    image_ids = arrays.image_ids[idx]
    with session() as s:
        run = ExplanationRun(model_id=int(model_id), method=method, target=target, splits=splits, tau=tau,
                             maps_path="", summary={}, job_id=job_id, created_by=user_id)
        s.add(run)
        s.flush()
        run_id = run.id
        d = run_dir(run_id)
        if d.exists():  # a leftover from a rolled-back run with the same id
            shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        try:
            tmp = d / f".{MAPS_FILE}.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, maps)
            os.replace(tmp, d / MAPS_FILE)
            summary["seconds"] = round(time.monotonic() - t0, 3)
            meta = {"run_id": run_id, "model_id": int(model_id), "dataset_id": ds_id, "method": method,
                    "target": target, "splits": splits, "tau": tau, "shape": list(maps.shape), "dtype": "float16"}
            (d / "run.json").write_text(json.dumps(meta, indent=2))
            run.maps_path = str(d / MAPS_FILE)
            run.summary = {**summary, "dataset_id": ds_id}
            recs = [{"run_id": run_id, "image_id": int(image_ids[i]), "index": i, "target": int(targets[i]),
                     "pred": int(preds[i]), "prob": float(probs[i]), **{k: _f(cols[k][i]) for k in METRICS}}
                    for i in range(n)]
            for c in range(0, n, 5000):
                s.execute(insert(Explanation), recs[c: c + 5000])
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
    say(1.0, f"run #{run_id}: {n} images, AR {_fmt(summary['ar_mean'])}, AP {_fmt(summary['ap_mean'])}",
        force=True)
    return {"run_id": run_id, "model_id": int(model_id), "dataset_id": ds_id, "method": method, "target": target,
            "splits": splits, "tau": tau, "maps_path": str(run_dir(run_id) / MAPS_FILE), "summary": summary}


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def explain_job(ctx) -> dict:
    """`explain` job: params model_id, method, splits (list or one name), target, tau, batch_size, dataset_id,
    limit."""
    p = dict(ctx.params)
    splits = p.get("splits", p.get("split"))
    if isinstance(splits, str):
        splits = [splits]
    return run_explain(int(p["model_id"]), p.get("method", "gradcam"), splits, p.get("target", "predicted"),
                       float(p.get("tau", 0.5)), int(p.get("batch_size", 128)), p.get("dataset_id"),
                       p.get("device"), p.get("limit"), user_id=ctx.user_id, job_id=ctx.job_id,
                       progress=ctx.progress)


def explain_one(model, image: np.ndarray, method: str = "gradcam", target: int | str | None = None,
                device: str | None = None, model_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W) uint8 → (map (H, W) float32 in [0, 1], class probabilities); for the detail view.
    LTX methods need model_id (the classifier whose explainer to use)."""
    import torch

    from core.explain import explain
    from services.ltx import LTX_METHODS, method_kwargs

    dev = next(model.parameters()).device if device is None else torch.device(device)
    kw: dict = {}
    if method in LTX_METHODS:
        if model_id is None:
            raise ValueError(f"{method} needs the classifier's id to find its explainer")
        method, kw = method_kwargs(int(model_id), method, str(dev))
    x = torch.from_numpy(np.ascontiguousarray(image)).to(dev).float().div(255.0)[None, None]
    tgt = None if target in (None, "predicted") else int(target)
    e, logits = explain(model, x, tgt, method, return_logits=True, **kw)
    return e[0].float().cpu().numpy(), logits.float().softmax(1)[0].cpu().numpy()


# ----------------------------------------------------------------------------------------------- lookups

def _run_dict(r: ExplanationRun, model: Model | None = None) -> dict:
    return {"id": r.id, "run_id": r.id, "model_id": r.model_id, "method": r.method, "target": r.target,
            "splits": list(r.splits or []), "tau": r.tau, "maps_path": r.maps_path, "summary": r.summary or {},
            "dataset_id": (r.summary or {}).get("dataset_id", model.dataset_id if model else None),
            "model_name": model.name if model else None, "job_id": r.job_id, "created_by": r.created_by,
            "created_at": r.created_at.isoformat() if r.created_at else None}


def load_run(run_id: int) -> dict:
    """A run's row (with summary and dataset id); ValueError when there is none."""
    with session() as s:
        r = s.get(ExplanationRun, int(run_id))
        if r is None:
            raise ValueError(f"no explanation run {run_id}")
        return _run_dict(r, s.get(Model, r.model_id))


def latest_run(model_id: int, method: str | None = None) -> dict | None:
    """The newest run of a model (and method), or None."""
    with session() as s:
        q = select(ExplanationRun).where(ExplanationRun.model_id == int(model_id)).order_by(ExplanationRun.id.desc())
        if method:
            q = q.where(ExplanationRun.method == method)
        r = s.scalars(q.limit(1)).first()
        return _run_dict(r, s.get(Model, r.model_id)) if r else None


def list_runs(model_id: int | None = None, limit: int = 100) -> list[dict]:
    with session() as s:
        q = select(ExplanationRun).order_by(ExplanationRun.id.desc()).limit(limit)
        if model_id is not None:
            q = q.where(ExplanationRun.model_id == int(model_id))
        return [_run_dict(r, s.get(Model, r.model_id)) for r in s.scalars(q)]


def load_maps(run_id: int, mmap: bool = True) -> np.ndarray:
    """The run's maps (N, H, W) float16, memory-mapped by default (only the rows read are loaded)."""
    p = Path(load_run(run_id)["maps_path"])
    if not p.exists():
        raise FileNotFoundError(f"maps of run {run_id} are missing ({p})")
    return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)


def delete_run(run_id: int) -> None:
    with session() as s:
        s.execute(delete(Explanation).where(Explanation.run_id == int(run_id)))
        s.execute(delete(ExplanationRun).where(ExplanationRun.id == int(run_id)))
    shutil.rmtree(run_dir(run_id), ignore_errors=True)


def run_rows(run_id: int) -> list[dict]:
    """Every explanation row of a run in map order, with the image's path, label, split and cache row."""
    rows, _ = query_explanations(run_id, sort="index", limit=None)
    return rows


def query_explanations(run_id: int, sort: str = "ar", descending: bool = False,
                       true_class: Sequence[int] | None = None, pred_class: Sequence[int] | None = None,
                       correct: bool | None = None, splits: Sequence[str] | None = None,
                       annotated: bool | None = None, limit: int | None = 24, offset: int = 0) -> tuple[list[dict], int]:
    """One page of a run's rows, sorted (NULLs last, then by map index) and filtered in SQL; returns (rows, total).

    sort: a metric, 'prob' or 'index'. annotated: an explanation annotation exists for the image and the run's
    model (by anyone). Rows: id, image_id, index (map row), image_index (dataset cache row), path, label,
    split, target, pred, prob, correct and every metric (None where undefined).
    """
    if sort not in SORTABLE + ("index",):
        raise ValueError(f"cannot sort by {sort!r}; choose one of {', '.join(SORTABLE)}")
    with session() as s:
        run = s.get(ExplanationRun, int(run_id))
        if run is None:
            raise ValueError(f"no explanation run {run_id}")
        conds = [Explanation.run_id == run.id]
        if true_class:
            conds.append(Image.label.in_([int(c) for c in true_class]))
        if pred_class:
            conds.append(Explanation.pred.in_([int(c) for c in pred_class]))
        if correct is not None:
            conds.append((Explanation.pred == Image.label) if correct else (Explanation.pred != Image.label))
        if splits:
            conds.append(Image.split.in_(list(splits)))
        if annotated is not None:
            ann = exists().where(and_(Annotation.image_id == Explanation.image_id,
                                      Annotation.subject == "explanation", Annotation.model_id == run.model_id))
            conds.append(ann if annotated else ~ann)
        where = and_(*conds)
        total = int(s.scalar(select(func.count()).select_from(Explanation).join(Image, Image.id == Explanation.image_id)
                             .where(where)) or 0)
        col = getattr(Explanation, sort)
        order = [(col.desc() if descending else col.asc()).nulls_last(), Explanation.index.asc()]
        q = (select(Explanation, Image.path, Image.label, Image.split, Image.index)
             .join(Image, Image.id == Explanation.image_id).where(where).order_by(*order).offset(int(offset)))
        if limit is not None:
            q = q.limit(int(limit))
        rows = []
        for e, path, label, split, img_index in s.execute(q):
            d = {"id": e.id, "run_id": e.run_id, "image_id": e.image_id, "index": e.index, "image_index": img_index,
                 "path": path, "label": label, "split": split, "target": e.target, "pred": e.pred, "prob": e.prob,
                 "correct": e.pred == label}
            d.update({k: getattr(e, k) for k in METRICS})
            rows.append(d)
        return rows, total


def explanation_for(run_id: int, image_id: int) -> dict | None:
    """One image's row within a run (as query_explanations gives it), or None."""
    with session() as s:
        e = s.scalars(select(Explanation).where(Explanation.run_id == int(run_id),
                                                Explanation.image_id == int(image_id))).first()
        if e is None:
            return None
        im = s.get(Image, e.image_id)
        d = {"id": e.id, "run_id": e.run_id, "image_id": e.image_id, "index": e.index, "image_index": im.index,
             "path": im.path, "label": im.label, "split": im.split, "target": e.target, "pred": e.pred,
             "prob": e.prob, "correct": e.pred == im.label}
        d.update({k: getattr(e, k) for k in METRICS})
        return d


def run_splits(run_id: int) -> list[str]:
    """The splits present among a run's images."""
    with session() as s:
        q = (select(Image.split).join(Explanation, Explanation.image_id == Image.id)
             .where(Explanation.run_id == int(run_id)).distinct())
        return sorted(s.scalars(q))


def dataset_classes(dataset_id: int) -> list[str]:
    with session() as s:
        d = s.get(Dataset, int(dataset_id))
        return list(d.classes or []) if d else []
