"""Explanation runs: the `explain` job (maps + localisation metrics for every image of the chosen splits),
run lookups and the gallery's SQL query.

A run stores its maps compactly as ONE float16 array `$EXEMPLAR_HOME/runs/<run_id>/maps.npy` of shape
(N, h, w) at the method's own map resolution (GradCAM: the model's last block), each map divided by its max
(row i = `explanations.index` i), written batch by batch; `run.json` beside it gives the image size. Reads are
memory-mapped: `load_maps` / `open_maps` hand out a MapStore whose rows come back bilinearly upsampled to the
image's size (exactly E of docs/architecture.md, Definitions, as the metrics saw it). One `explanations` row per image
holds target, prediction, probability and every metric, computed at the mask's resolution (NULL where undefined). The
stored maps_path is relative to EXEMPLAR_HOME. Nothing here imports torch at module level: the pages import this module.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from sqlalchemy import and_, delete, exists, func, insert, select

from core.registries import EXPLANATION_METHODS, METRICS as METRIC_SPECS
from db.models import Annotation, Dataset, Explanation, ExplanationRun, Image, Model
from services.platform.batching import adaptive_batches
from services.platform.database import read_session, session
from services.platform.settings import from_stored, get_settings, to_stored
from services.data.datasets import load_arrays
from services.explanations.ltx import LTX_METHODS, method_kwargs
from services.models.registry import get_model, load_classifier
from services.platform.settings import resolve_device
from services.team.access import check_use_case

METRICS = tuple(METRIC_SPECS.names(kind="localisation"))  # every map is scored against its image's masks
SORTABLE = METRICS + ("prob",)
TARGETS = ("predicted", "true")
MAPS_FILE = "maps.npy"
REMAP_EVERY = 512  # images between releases of the dataset cache's mapped pages (keeps resident memory flat)
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
                device: str | None = None, limit: int | None = None, *, user_id: int | None,
                job_id: int | None = None, progress: Progress | None = None) -> dict:
    """Explain every image of `splits` (all when empty) of the model's dataset; store maps and metric rows.

    Images go to the model at their native size (the model resizes to its input size itself); metrics are
    computed at the mask's resolution (the dataset's image size) on the device in the same pass; maps are stored
    at the method's own resolution (GradCAM: the last block's) and written batch by batch, so memory stays flat.
    Returns {run_id, model_id, dataset_id, method, target, splits, tau, maps_path, map_size, image_size,
    summary}; summary holds n, accuracy, <metric>_mean for every metric (None where undefined for all images),
    seconds, images_per_s.
    """
    check_use_case(user_id, "explain")  # a direct call is checked here; a job was checked when submitted
    say = progress or (lambda *a, **k: None)
    if method not in EXPLANATION_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {EXPLANATION_METHODS.choices(', ')}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    tau = float(tau)
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    t0 = time.monotonic()
    say(0.0, "loading model and dataset")
    job = _prepare(int(model_id), method, splits, dataset_id, device, limit, say)
    tmp = runs_root() / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        res = _compute(job, method, target, tau, batch_size, tmp / MAPS_FILE, say)
        say(0.94, "saving maps and metric rows", force=True)  # the last point where a cancel is honoured
        res["summary"]["seconds"] = round(time.monotonic() - t0, 3)
        return _store(job, res, method, target, tau, tmp, job_id, user_id, say)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class _Job:
    model_id: int
    model: object
    ds_id: int
    arrays: object
    idx: np.ndarray
    reg_method: str
    method_kw: dict
    dev: object
    splits: list


def _prepare(model_id, method, splits, dataset_id, device, limit, say) -> _Job:
    row = get_model(model_id)
    if row is None:
        raise ValueError(f"no model {model_id}")
    ds_id = int(dataset_id or row["dataset_id"] or 0)
    if not ds_id:
        raise ValueError(f"model {model_id} has no dataset; pass a dataset")
    dev = resolve_device(device)
    model, _ = load_classifier(int(model_id), dev)
    say(0.005, "model loaded; loading the dataset", force=True)  # each loading step is a point where cancel lands
    reg_method, method_kw = method_kwargs(int(model_id), method, str(dev))  # LTX: the model's trained explainer
    arrays = load_arrays(ds_id, mmap=True)
    say(0.01, "dataset loaded", force=True)
    splits = [s for s in (splits or []) if s]
    idx = arrays.split_index(*splits)
    if limit:
        idx = idx[: int(limit)]
    if len(idx) == 0:
        raise ValueError(f"no images in split(s) {', '.join(splits) or 'any'} of dataset {ds_id}")
    n_classes = len(row["config"].get("classes") or arrays.classes)
    if int(np.max(arrays.labels[idx])) >= n_classes:
        raise ValueError(f"dataset {ds_id} has labels outside the model's {n_classes} classes")
    return _Job(model_id, model, ds_id, arrays, idx, reg_method, method_kw, dev, splits)


def _explain_batch(job: _Job, x, tgt):
    """(raw relevance at the method's resolution, logits) for one batch (the methods' shared call shape)."""
    from core.explain import explaining, get_explainer, keeps_inplace

    with explaining(job.model, keep_inplace=keeps_inplace(job.reg_method, **job.method_kw)):
        att = get_explainer(job.reg_method)(job.model, x, tgt, **job.method_kw)
    return att.raw.detach(), att.logits.detach()


def _heldout_ar(ar: np.ndarray, splits: np.ndarray) -> dict:
    """The parent AR a report compares with: the mean over held-out images (core.data.roles.HELDOUT), labelled,
    with each split's own mean; ar_mean above covers every explained image, train included."""
    from core.data.roles import HELDOUT

    held = np.isin(splits, HELDOUT)
    return {"ar_mean_heldout": _nanmean(ar[held]) if held.any() else None,
            "ar_by_split": {str(sp): _nanmean(ar[splits == sp]) for sp in dict.fromkeys(splits.tolist())}}


def _compute(job: _Job, method, target, tau, batch_size, maps_file: Path, say) -> dict:
    import torch

    from core.explain import upsample_normalise
    from core.metrics.localisation import localisation_metrics

    arrays, idx, dev = job.arrays, job.idx, job.dev
    n, size = len(idx), arrays.size
    cols = {k: np.full(n, np.nan, np.float32) for k in METRICS}
    preds, probs, targets = np.zeros(n, np.int64), np.zeros(n, np.float32), np.zeros(n, np.int64)
    has_conf = bool(arrays.has_marker[idx].any())
    say(0.02, f"{method} on {n} images of {size} px ({dev})")
    writer, map_size = None, None
    t_compute, since_remap = time.monotonic(), 0
    try:
        for s, e_ in adaptive_batches(n, batch_size):  # issue 16: small batches for slow methods, quick cancel
            b = idx[s: e_]
            x = torch.from_numpy(np.ascontiguousarray(arrays.images[b])).to(dev, non_blocking=True).float()
            x = x.div_(255.0)[:, None]
            tgt = None if target == "predicted" else torch.from_numpy(np.asarray(arrays.labels[b])).to(dev)
            raw, logits = _explain_batch(job, x, tgt)
            if map_size is None:
                map_size = tuple(int(v) for v in raw.shape[-2:])
                map_size = map_size if map_size[0] <= size and map_size[1] <= size else (size, size)
                writer = _MapWriter(maps_file, (n, *map_size))
            e = upsample_normalise(raw, size)  # E at the mask's resolution (docs/architecture.md, Definitions)
            lung = torch.from_numpy(np.ascontiguousarray(arrays.lung[b])).to(dev)
            conf = torch.from_numpy(np.ascontiguousarray(arrays.marker[b])).to(dev) if has_conf else None
            m = localisation_metrics(e, lung, conf, tau)
            p = logits.float().softmax(1)
            pred = p.argmax(1)
            tg = pred if tgt is None else tgt
            sl = slice(s, s + len(b))
            writer.write(upsample_normalise(raw, map_size).half().cpu().numpy())
            for k in METRICS:
                cols[k][sl] = m[k].cpu().numpy()
            preds[sl], targets[sl] = pred.cpu().numpy(), tg.cpu().numpy()
            probs[sl] = p.gather(1, pred[:, None])[:, 0].cpu().numpy()
            since_remap += len(b)
            if since_remap >= REMAP_EVERY:  # let the pages read so far leave this process's resident memory
                arrays.release_pages()
                since_remap = 0
            say(0.02 + 0.9 * (s + len(b)) / n, f"{method}: {s + len(b)}/{n} images")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    compute_s = time.monotonic() - t_compute
    labels = np.asarray(arrays.labels[idx])
    summary = {"n": n, "accuracy": float((preds == labels).mean()), "tau": tau, "method": method,
               "target": target, "splits": job.splits, "has_lung_mask": int(arrays.has_lung[idx].sum()),
               "has_confounder_mask": int(arrays.has_marker[idx].sum()), "image_size": size,
               "map_size": list(map_size), "input_size": getattr(job.model, "input_size", None)}
    for k in METRICS:
        summary[f"{k}_mean"] = _nanmean(cols[k])
        summary[f"{k}_undefined"] = int(np.isnan(cols[k]).sum())
    if not has_conf:
        summary["wr_mean"] = None
    summary.update(_heldout_ar(cols["ar"], np.asarray(arrays.splits[idx])) if "ar" in cols else {})
    summary["compute_seconds"] = round(compute_s, 3)
    summary["images_per_s"] = round(n / max(compute_s, 1e-9), 1)
    return {"cols": cols, "preds": preds, "probs": probs, "targets": targets, "summary": summary,
            "image_ids": np.asarray(arrays.image_ids[idx]), "map_size": map_size, "image_size": size}


def _store(job: _Job, res: dict, method, target, tau, tmp: Path, job_id, user_id, say) -> dict:
    """Insert the run and its rows, move the maps folder to runs/<run_id>/ (all or nothing)."""
    n, summary, cols = len(job.idx), res["summary"], res["cols"]
    with session() as s:
        run = ExplanationRun(model_id=job.model_id, method=method, target=target, splits=job.splits, tau=tau,
                             maps_path="", summary={}, job_id=job_id, created_by=user_id)
        s.add(run)
        s.flush()
        run_id = run.id
        d = run_dir(run_id)
        if d.exists():  # a leftover from a rolled-back run with the same id
            shutil.rmtree(d, ignore_errors=True)
        try:
            meta = {"run_id": run_id, "model_id": job.model_id, "dataset_id": job.ds_id, "method": method,
                    "target": target, "splits": job.splits, "tau": tau, "shape": [n, *res["map_size"]],
                    "dtype": "float16", "image_size": res["image_size"], "map_size": list(res["map_size"])}
            (tmp / "run.json").write_text(json.dumps(meta, indent=2))
            os.replace(tmp, d)
            run.maps_path = to_stored(d / MAPS_FILE)
            run.summary = {**summary, "dataset_id": job.ds_id}
            recs = [{"run_id": run_id, "image_id": int(res["image_ids"][i]), "index": i,
                     "target": int(res["targets"][i]), "pred": int(res["preds"][i]), "prob": float(res["probs"][i]),
                     **{k: _f(cols[k][i]) for k in METRICS}} for i in range(n)]
            for c in range(0, n, 5000):
                s.execute(insert(Explanation), recs[c: c + 5000])
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
    say(1.0, f"run #{run_id}: {n} images, AR {_fmt(summary['ar_mean'])}, AP {_fmt(summary['ap_mean'])}",
        force=True)
    return {"run_id": run_id, "model_id": job.model_id, "dataset_id": job.ds_id, "method": method,
            "target": target, "splits": job.splits, "tau": tau, "maps_path": str(run_dir(run_id) / MAPS_FILE),
            "map_size": list(res["map_size"]), "image_size": res["image_size"], "summary": summary}


class _MapWriter:
    """Writes an (N, h, w) float16 .npy row block by row block (header first), never holding all maps."""

    def __init__(self, path: Path, shape: tuple[int, int, int]):
        self.path, self.shape, self.rows = path, shape, 0
        self.fh = open(path, "wb")
        np.lib.format.write_array_header_2_0(self.fh, {"descr": np.dtype(np.float16).str, "fortran_order": False,
                                                       "shape": tuple(int(v) for v in shape)})

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=np.float16)
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(f"map block {block.shape[1:]} does not match the run's map size {self.shape[1:]}")
        self.fh.write(block.tobytes())
        self.rows += block.shape[0]

    def close(self) -> None:
        self.fh.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"wrote {self.rows} maps, expected {self.shape[0]}")

    def abort(self) -> None:
        self.fh.close()
        self.path.unlink(missing_ok=True)


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
            "splits": list(r.splits or []), "tau": r.tau, "maps_path": from_stored(r.maps_path),
            "summary": r.summary or {},
            "dataset_id": (r.summary or {}).get("dataset_id", model.dataset_id if model else None),
            "model_name": model.name if model else None, "job_id": r.job_id, "created_by": r.created_by,
            "created_at": r.created_at.isoformat() if r.created_at else None}


def load_run(run_id: int) -> dict:
    """A run's row (with summary and dataset id); ValueError when there is none."""
    with read_session() as s:
        r = s.get(ExplanationRun, int(run_id))
        if r is None:
            raise ValueError(f"no explanation run {run_id}")
        return _run_dict(r, s.get(Model, r.model_id))


def latest_run(model_id: int, method: str | None = None) -> dict | None:
    """The newest run of a model (and method), or None."""
    with read_session() as s:
        q = select(ExplanationRun).where(ExplanationRun.model_id == int(model_id)).order_by(ExplanationRun.id.desc())
        if method:
            q = q.where(ExplanationRun.method == method)
        r = s.scalars(q.limit(1)).first()
        return _run_dict(r, s.get(Model, r.model_id)) if r else None


def list_runs(model_id: int | None = None, limit: int = 100) -> list[dict]:
    with read_session() as s:
        q = select(ExplanationRun).order_by(ExplanationRun.id.desc()).limit(limit)
        if model_id is not None:
            q = q.where(ExplanationRun.model_id == int(model_id))
        return [_run_dict(r, s.get(Model, r.model_id)) for r in s.scalars(q)]


def load_maps(run_id: int, mmap: bool = True, raw: bool = False):
    """The run's maps: a MapStore (rows upsampled to the image's size on read) or, with raw=True, the stored
    (N, h, w) float16 array at the map resolution; memory-mapped by default (only the rows read are loaded)."""
    p = Path(load_run(run_id)["maps_path"])
    if not p.exists():
        raise FileNotFoundError(f"maps of run {run_id} are missing ({p})")
    return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False) if raw else open_maps(p, mmap)


class MapStore:
    """A run's maps as the reader sees them: `store[i]` / `store[rows]` → float32 maps at the image's size
    (bilinear from the stored map resolution, divided by their max); `.raw` is the stored array."""

    def __init__(self, raw: np.ndarray, image_size: tuple[int, int]):
        self.raw, self.image_size = raw, (int(image_size[0]), int(image_size[1]))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self.raw.shape[0]), *self.image_size)

    @property
    def map_size(self) -> tuple[int, int]:
        return int(self.raw.shape[1]), int(self.raw.shape[2])

    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return int(self.raw.shape[0])

    def __getitem__(self, key) -> np.ndarray:
        return self.at(key, self.image_size)

    def at(self, key, size: tuple[int, int]) -> np.ndarray:
        """Rows `key` upsampled straight from the stored resolution to `size` (a thumbnail's side, say), never
        through the image's size first."""
        from core.maps import upsample_normalise

        rows = np.asarray(self.raw[key], np.float32)
        if rows.shape[-2:] == tuple(size):
            return rows
        return upsample_normalise(rows, tuple(size))


def open_maps(path: str | Path, mmap: bool = True) -> MapStore:
    """The MapStore of a maps.npy file; the image size comes from run.json beside it (older runs: the map's)."""
    path = Path(path)
    raw = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    meta_file = path.parent / "run.json"
    size = tuple(raw.shape[1:3])
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if meta.get("image_size"):
            size = (int(meta["image_size"]), int(meta["image_size"]))
    return MapStore(raw, size)


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
    with read_session() as s:
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
    with read_session() as s:
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
    with read_session() as s:
        q = (select(Image.split).join(Explanation, Explanation.image_id == Image.id)
             .where(Explanation.run_id == int(run_id)).distinct())
        return sorted(s.scalars(q))


def dataset_classes(dataset_id: int) -> list[str]:
    with read_session() as s:
        d = s.get(Dataset, int(dataset_id))
        return list(d.classes or []) if d else []
