"""Counterfactual use cases: the `counterfactual` job, stored results, ratings and export.

METHODS maps a method name to the generator kind it needs (None: none), read from
core.registries.COUNTERFACTUAL_METHODS, where each method is written once (docs/architecture.md, Registries).

A job runs one image, one target and one or more methods for one or more classifiers (model versions). Each
(model, method) gives a `counterfactuals` row; its arrays (original, counterfactual, affirmative, trajectory,
probability curve, masks) go to $EXEMPLAR_HOME/counterfactuals/<uuid>.npz, written atomically.
Every example is scored the same way: validity (target probability, flip), closeness (mean |Δ| in [0, 1]),
fidelity (bits/dim under the dataset's DDPM, same estimator as its ε) and the taxonomy category.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from core.registries import COUNTERFACTUAL_METHODS
from db.models import Annotation, Counterfactual, Image, Model
from services.platform.database import read_session, session
from services.team import audit
from services.team.access import check_use_case, require
from services.platform.settings import from_stored, get_settings, resolve_device, to_stored  # i17: relative paths
from db.models import User
from services.counterfactuals.gan import method_options as gan_options, result_extras
from services.counterfactuals.generators import PURIFY, bpd_settings, ensure_bpd_threshold, ensure_purify_threshold
from services.counterfactuals.generators import get_generator, load_ddpm_generator, load_generator
from services.data.datasets import load_arrays, resolve_image
from services.models.independent import find_independent
from services.models.registry import get_model, load_classifier

METHODS: dict[str, str | None] = {s.name: s.generator for s in COUNTERFACTUAL_METHODS}
METHOD_LABELS = COUNTERFACTUAL_METHODS.labels()
PRESETS = ("fast", "xaidiff")
# "xaidiff" follows Vaeth et al.; "fast" is Exemplar's own variant and carries its own name.
PRESET_LABELS = {"xaidiff": "XAIDIFF (paper defaults)",
                 "fast": "Exemplar fast (noised start, early-stopped guidance, DDIM finish to t = 0)"}


def method_label(method: str, preset: str | None = None) -> str:
    """The display name of a result's method, with the diffusion preset's own name."""
    if method == "diffusion" and preset in PRESET_LABELS:
        return f"Diffusion · {PRESET_LABELS[preset]}"
    return METHOD_LABELS.get(method, method)
RATING_PLAUSIBLE = ("yes", "no", "unsure")
MARKER_PAD = 2  # the marker box is the marker mask's bounding box grown by this many pixels


def results_root() -> Path:
    return get_settings().path("counterfactuals")


# ------------------------------------------------------------------------------------------- scoring helpers


def marker_box(marker: np.ndarray, pad: int = MARKER_PAD) -> np.ndarray | None:
    """The marker mask's bounding box (grown by pad) as a {0,1} mask, or None without a marker."""
    ys, xs = np.nonzero(marker)
    if len(ys) == 0:
        return None
    box = np.zeros_like(marker, dtype=np.uint8)
    h, w = marker.shape
    box[max(0, ys.min() - pad): min(h, ys.max() + pad + 1), max(0, xs.min() - pad): min(w, xs.max() + pad + 1)] = 1
    return box


def delta_shares(original: np.ndarray, generated: np.ndarray, lung: np.ndarray | None,
                 marker: np.ndarray | None) -> dict[str, float]:
    """Share of Σ|Δ| inside the marker box and inside the lungs (NaN when the mask is missing or Δ = 0)."""
    d = np.abs(generated.astype(float) - original.astype(float))
    tot = d.sum()
    out = {}
    box = marker_box(marker) if marker is not None else None
    for key, m in (("marker_share", box), ("lung_share", lung if lung is not None and lung.any() else None)):
        out[key] = float((d * m).sum() / tot) if (m is not None and tot > 0) else float("nan")
    return out


def _nan_none(x):
    if x is None:
        return None
    x = float(x)
    return None if np.isnan(x) else x


def _atomic_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------------------------------------- the job


def _target_index(target: Any, classes: list[str]) -> int:
    if isinstance(target, (int, np.integer)) or (isinstance(target, str) and target.strip().isdigit()):
        t = int(target)
        if not 0 <= t < len(classes):
            raise ValueError(f"target class index {t} is outside 0..{len(classes) - 1}")
        return t
    names = {c.lower(): i for i, c in enumerate(classes)}
    key = str(target).strip().lower()
    if key not in names:
        raise ValueError(f"unknown target class {target!r}; classes: {', '.join(classes)}")
    return names[key]


class _Scorer:
    """Bits/dim and ε of a dataset's DDPM (None when the dataset has none)."""

    def __init__(self, dataset_id: int, generator_id: int | None, device: str, progress):
        self.row = get_generator(dataset_id, "ddpm", generator_id)
        self.ddpm = None
        self.eps = None
        self.info: dict = {}
        if self.row is not None:
            self.ddpm = load_ddpm_generator(self.row, device)
            self.info = ensure_bpd_threshold(self.row, dataset_id, device, progress)
            self.eps = float(self.info["eps"])
            self.settings = bpd_settings({"metrics": {"bpd": self.info}})
        self.device = device
        self.dataset_id = dataset_id
        self._drop_info: dict[int, dict] = {}

    def drop(self, model_id: int, classifier, images_uint8: np.ndarray) -> tuple[np.ndarray | None, float | None]:
        """The purification drop of each image under the classifier and its threshold ε_drop (None without a DDPM)."""
        import torch

        from core.counterfactual.purify import purification_drop

        if self.ddpm is None:
            return None, None
        if model_id not in self._drop_info:
            self._drop_info[model_id] = ensure_purify_threshold(self.row, self.dataset_id, model_id, classifier,
                                                                self.device)
        info = self._drop_info[model_id]
        x = torch.from_numpy(np.asarray(images_uint8)).float().div(255.0)[:, None]
        d = purification_drop(self.ddpm[0], self.ddpm[1], classifier, x, PURIFY["t_p"], PURIFY["steps"],
                              PURIFY["seed"], device=self.device)
        return d, float(info["eps"])

    def bpd(self, images_uint8: np.ndarray) -> np.ndarray | None:
        from core.generative.bpd import bits_per_dim

        if self.ddpm is None:
            return None
        unet, sch = self.ddpm
        return bits_per_dim(unet, sch, images_uint8, terms=self.settings["terms"], seed=self.settings["seed"],
                            device=self.device).bpd


def run_counterfactuals(model_ids: list[int], image: int | str, target: Any, methods: list[str], *,
                        preset: str = "fast", affirmative: bool = False, generator_id: int | None = None,
                        gan_id: int | None = None, seed: int = 0, n_seeds: int = 1, options: dict | None = None,
                        device: str | None = None, user_id: int | None, job_id: int | None = None,
                        progress=None) -> dict:
    """Generate, score and store counterfactuals; returns {results: [row dicts], …first result's keys}."""
    check_use_case(user_id, "counterfactual")  # a direct call is checked here; a job was checked when submitted
    import torch

    say = progress or (lambda *a, **k: None)
    _check_request(model_ids, methods, preset, n_seeds)
    options = dict(options or {})
    dev = resolve_device(device)
    dataset_id = _common_dataset(model_ids, [get_model(int(m)) for m in model_ids])
    src = _load_source(dataset_id, image, target)
    say(0.02, "fidelity model and threshold")
    scorer = _Scorer(dataset_id, generator_id, dev, lambda f, m="": say(0.02 + 0.08 * f, m))
    gens = _load_generators(methods, scorer, dataset_id, gan_id, dev)
    run = _Run(src, scorer, gens, find_independent(dataset_id), preset, affirmative, seed, n_seeds, options, dev,
               say, job_id, user_id)
    results = []
    n_tasks = len(model_ids) * len(methods)
    for mi, mid in enumerate(model_ids):
        clf, _ = load_classifier(int(mid), dev)
        with torch.no_grad():
            p0 = torch.softmax(clf(src.x.to(dev)), 1)[0].cpu().numpy()
        for j, method in enumerate(methods):
            task = mi * len(methods) + j
            lo, hi = 0.1 + 0.9 * task / n_tasks, 0.1 + 0.9 * (task + 1) / n_tasks
            results.append(_run_method(run, _Task(int(mid), clf, method, p0, lo, hi)))
    return {**results[0], "results": results, "image_id": int(src.img["id"]), "dataset_id": dataset_id}


@dataclass
class _Source:
    """The image a run changes: its row, the dataset's classes, the target class and the image's arrays."""
    img: dict
    classes: list[str]
    tgt: int
    x_u8: np.ndarray
    lung: np.ndarray | None
    marker: np.ndarray | None
    x: Any  # (1, 1, H, W) float tensor in [0, 1]


@dataclass
class _Run:
    """What every classifier × method of one request shares."""
    src: _Source
    scorer: _Scorer
    gens: dict[str, Any]  # generator kind → (loaded generator, its registry row)
    b_row: dict | None  # the independent classifier of the cross-model check
    preset: str
    affirmative: bool
    seed: int
    n_seeds: int
    options: dict
    dev: Any
    say: Any
    job_id: int | None
    user_id: int | None


@dataclass
class _Task:
    """One classifier × one method of a run, with its share [lo, hi] of the job's progress."""
    mid: int
    clf: Any
    method: str
    p0: np.ndarray  # the classifier's probabilities on the original image
    lo: float
    hi: float

    @property
    def orig(self) -> int:
        return int(self.p0.argmax())

    @property
    def label(self) -> str:
        return f"model #{self.mid} · {self.method}"


def _check_request(model_ids: list[int], methods: list[str], preset: str, n_seeds: int) -> None:
    if not model_ids:
        raise ValueError("no classifier given")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown method(s) {bad or methods}; choose from {', '.join(METHODS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if n_seeds < 1:
        raise ValueError("n_seeds must be at least 1")


def _common_dataset(model_ids: list[int], rows0: list[dict | None]) -> int:
    """The one dataset of the classifiers to compare (their registry rows; each must be a classifier)."""
    for mid, r in zip(model_ids, rows0):
        if r is None or r["kind"] != "classifier":
            raise ValueError(f"no classifier {mid}")
    dataset_id = rows0[0]["dataset_id"]
    if any(r["dataset_id"] != dataset_id for r in rows0):
        raise ValueError("the model versions to compare must belong to the same dataset")
    return dataset_id


def _load_source(dataset_id: int, image: int | str, target: Any) -> _Source:
    import torch

    img = resolve_image(dataset_id, image)
    arr = load_arrays(dataset_id)
    k = int(img["index"])
    classes = list(arr.classes)
    x_u8 = arr.images[k]
    return _Source(img, classes, _target_index(target, classes), x_u8, arr.lung[k] if arr.has_lung[k] else None,
                   arr.marker[k] if arr.has_marker[k] else None, torch.from_numpy(x_u8).float().div(255.0)[None, None])


def _load_generators(methods: list[str], scorer: _Scorer, dataset_id: int, gan_id: int | None, dev) -> dict:
    """generator kind → (loaded generator, row) for the methods that need one; a missing one is refused."""
    gens: dict[str, Any] = {}
    for m in methods:
        kind = METHODS[m]
        if kind is None or kind in gens:
            continue
        if kind == "ddpm":
            if scorer.ddpm is None:
                raise ValueError(f"method {m!r} needs a DDPM for dataset {dataset_id}: train one with "
                                 f"`exemplar gen train --dataset {dataset_id} --kind ddpm` or run `exemplar demo`")
            gens[kind] = (scorer.ddpm, scorer.row)
        else:
            row = get_generator(dataset_id, kind, gan_id if kind == "gan" else None)
            if row is None:
                raise ValueError(f"method {m!r} needs a {kind} generator for dataset {dataset_id}; train one with "
                                 f"`exemplar gen train --dataset {dataset_id} --kind {kind}`")
            gens[kind] = (load_generator(row, dev), row)
    return gens


def _run_method(run: _Run, task: _Task) -> dict:
    """Generate, score and store one classifier × method; returns its row of the result's `results`."""
    from core.counterfactual.taxonomy import categorize
    from core.generative.ddpm import to_uint8

    src, scorer, method, tgt, orig = run.src, run.scorer, task.method, run.src.tgt, task.orig
    t0 = time.monotonic()
    gen_obj, gen_row = run.gens.get(METHODS[method], (None, None))
    out, opts, seeds = _generate(run, task, gen_obj)
    imgs = to_uint8(out.images)
    l1s = np.abs(imgs.astype(float) - src.x_u8.astype(float)).reshape(run.n_seeds, -1).mean(1) / 255.0
    preds = out.probs.argmax(1)
    flips = preds == tgt
    # best seed: flipped first, then the closest
    best = int(np.lexsort((l1s, ~flips))[0])
    cf = imgs[best]
    aff = aff_out = None
    if method == "diffusion" and run.affirmative:
        aff_out = _affirmative(run, task, gen_obj, out.images[best:best + 1], opts)
        aff = to_uint8(aff_out.images)[0]
    run.say(task.lo + (task.hi - task.lo) * 0.92, f"{task.label}: bits/dim")
    stack = [src.x_u8, cf] + ([aff] if aff is not None else [])
    bpds = scorer.bpd(np.stack(stack))
    bpd_cf = None if bpds is None else float(bpds[1])
    pred = int(preds[best])
    drops, drop_eps = scorer.drop(task.mid, task.clf, np.stack(stack[1:]))
    category = categorize(pred, orig, tgt, bpd_cf, scorer.eps, None if drops is None else float(drops[0]), drop_eps)
    cross = cross_model_verdict(run.b_row, task.mid, src.x_u8, cf, tgt, run.dev)
    diffusion_counts = _pass_counts(out, best, flips)
    extras = {}
    if method == "gan":  # attributes_changed, and the category by flip alone without a DDPM

        extras = result_extras(out, best, bool(flips[best]), category)
        category = extras.pop("category")
    seconds = time.monotonic() - t0
    metrics = {
        "classes": src.classes, "original_class": orig, "original_label": int(src.img["label"]),
        "pred": pred, "probs_before": task.p0.round(6).tolist(), "probs_after": out.probs[best].round(6).tolist(),
        "bpd_original": None if bpds is None else float(bpds[0]), "bpd_eps": scorer.eps,
        "bpd_estimator": scorer.info.get("estimator"),
        **delta_shares(src.x_u8, cf, src.lung, src.marker), "config": out.config, "seed": seeds[best],
        "n_seeds": run.n_seeds, "seeds_flipped": int(flips.sum()),
        "candidate_l1": l1s.round(6).tolist(), "method_seconds": round(out.seconds, 3), **extras,
        "cross_model": cross, **diffusion_counts, "purification_drop": None if drops is None else float(drops[0]),
        "drop_eps": drop_eps,
    }
    if aff is not None:
        metrics["affirmative"] = _affirmative_metrics(run, task, aff_out, aff, cf,
                                                      None if bpds is None else float(bpds[2]),
                                                      None if drops is None else float(drops[1]), drop_eps)
    path = results_root() / f"{uuid.uuid4().hex}.npz"
    _atomic_npz(path, **_result_arrays(src, task.p0, out, best, imgs, aff_out))
    fields = dict(
        model_id=task.mid, generator_id=(gen_row or {}).get("id") or (scorer.row or {}).get("id"),
        image_id=int(src.img["id"]), method=method, preset=opts.get("preset") if method == "diffusion" else None,
        target=tgt, flipped=bool(flips[best]), target_prob=float(out.probs[best][tgt]), l1=float(l1s[best]),
        bpd=bpd_cf, category=category, unet_passes=diffusion_counts["unet_passes"], seconds=round(seconds, 3),
        result_path=to_stored(path), metrics=_json_safe(metrics), job_id=run.job_id, created_by=run.user_id)
    row = _result_row(_store_counterfactual(fields), fields, src, scorer.eps, diffusion_counts, cross, metrics,
                      extras, pred, orig)
    run.say(task.hi, f"{task.label}: {'flipped' if flips[best] else 'not flipped'} ({category})", force=True)
    return row


def _generate(run: _Run, task: _Task, gen_obj) -> tuple[Any, dict, list[int]]:
    """The method on n_seeds copies of the image: (its output, the method's options, the seeds)."""
    import torch

    from core.counterfactual import generate

    method, lo, hi, label, say, n_seeds = task.method, task.lo, task.hi, task.label, run.say, run.n_seeds
    xb = run.src.x.repeat(n_seeds, 1, 1, 1)
    tb = torch.full((n_seeds,), run.src.tgt, dtype=torch.long)
    opts = dict(run.options.get(method) or {}) if isinstance(run.options.get(method), dict) else {}
    if method == "diffusion":
        opts.setdefault("preset", run.preset)
    seeds = [run.seed + s for s in range(n_seeds)]
    if method == "gan":  # the image's known attributes (services/counterfactuals/gan.py)

        opts = gan_options(gen_obj, run.src.img, run.src.classes, n_seeds, opts)
    span = 0.75 if (method == "diffusion" and run.affirmative) else 0.9

    def prog(i, n):
        if i == n or i % max(1, n // 10) == 0:  # about ten messages per method
            say(lo + (hi - lo) * span * i / max(1, n), f"{label}: step {i}/{n}")

    out = generate(method, task.clf, xb, tb, generator=gen_obj, device=run.dev, progress=prog,
                   **({"seeds": seeds} if method == "diffusion" else {}), **opts)
    return out, opts, seeds


def _affirmative(run: _Run, task: _Task, unet_sch, cf_images, opts: dict):
    """The affirmative example (diffusion): the chosen counterfactual guided back to the original class."""
    import torch

    from core.counterfactual.xaidiff import affirmative as affirm, preset as gpreset

    lo, hi, label, say = task.lo, task.hi, task.label, run.say
    say(lo + (hi - lo) * 0.75, f"{label}: affirmative example")
    cfg = gpreset(opts.get("preset", run.preset), **{k2: v for k2, v in opts.items() if k2 != "preset"})
    return affirm(unet_sch[0], unet_sch[1], task.clf, cf_images, torch.tensor([task.orig]), cfg,
                  seeds=[run.seed + 1000], device=run.dev,
                  progress=lambda i, n: (i == n or i % max(1, n // 5) == 0) and say(
                      lo + (hi - lo) * (0.75 + 0.15 * i / max(1, n)), f"{label}: affirmative {i}/{n}"))


def _affirmative_metrics(run: _Run, task: _Task, aff_out, aff: np.ndarray, cf: np.ndarray, bpd_aff: float | None,
                         drop_aff: float | None, drop_eps: float | None) -> dict:
    from core.counterfactual.taxonomy import categorize

    x_u8, orig, aff_probs = run.src.x_u8, task.orig, aff_out.probs[0]
    return {
        "pred": int(aff_probs.argmax()), "probs": aff_probs.round(6).tolist(),
        "orig_prob": float(aff_probs[orig]), "bpd": bpd_aff,
        "l1_to_original": float(np.abs(aff.astype(float) - x_u8.astype(float)).mean() / 255.0),
        "l1_to_counterfactual": float(np.abs(aff.astype(float) - cf.astype(float)).mean() / 255.0),
        "category": categorize(int(aff_probs.argmax()), orig, orig, bpd_aff, run.scorer.eps, drop_aff, drop_eps),
        "unet_passes": int(aff_out.unet_passes[0]), **delta_shares(x_u8, aff, run.src.lung, run.src.marker)}


def _result_arrays(src: _Source, p0: np.ndarray, out, best: int, imgs: np.ndarray, aff_out) -> dict:
    """The arrays of the result file (.npz) the pages draw."""
    from core.generative.ddpm import to_uint8

    arrays = {"original": src.x_u8, "counterfactual": imgs[best], "candidates": imgs,
              "prob_curve": out.prob_curve[best].astype(np.float32),
              "curve_t": np.asarray(out.curve_t if out.curve_t is not None else np.arange(out.prob_curve.shape[1])),
              "probs_before": p0.astype(np.float32), "probs_after": out.probs[best].astype(np.float32)}
    if out.trajectory is not None:
        arrays["trajectory"] = out.trajectory[best]
        arrays["trajectory_t"] = np.asarray(out.trajectory_t)
    if aff_out is not None:
        arrays["affirmative"] = to_uint8(aff_out.images)[0]
        arrays["affirmative_probs"] = aff_out.probs[0].astype(np.float32)
    if src.lung is not None:
        arrays["lung"] = src.lung
    if src.marker is not None:
        arrays["marker"] = src.marker
    return arrays


def _store_counterfactual(fields: dict) -> int:
    with session() as s:
        row = Counterfactual(**fields)
        s.add(row)
        s.flush()
        return row.id


def _result_row(cid: int, f: dict, src: _Source, bpd_eps: float | None, diffusion_counts: dict, cross: dict,
                metrics: dict, extras: dict, pred: int, orig: int) -> dict:
    return {"counterfactual_id": cid, "model_id": f["model_id"], "method": f["method"], "flipped": f["flipped"],
            "target": src.classes[f["target"]], "target_prob": f["target_prob"], "l1": f["l1"], "bpd": f["bpd"],
            "bpd_eps": bpd_eps, "category": f["category"], **diffusion_counts,
            "cross_model_flipped": cross.get("flipped"), "cross_model_id": cross.get("model_id"),
            "seconds": f["seconds"], "original_class": src.classes[orig], "pred": src.classes[pred],
            "marker_share": _nan_none(metrics["marker_share"]), "lung_share": _nan_none(metrics["lung_share"]),
            **extras, **({"affirmative_category": metrics["affirmative"]["category"]} if "affirmative" in metrics
                         else {})}


def _pass_counts(out, best: int, flips: np.ndarray) -> dict:
    """The kept result's t_final (the last timestep its UNet ran at; None: no diffusion), guided and total UNet
    passes; and the whole cost of the image over every try (seed): unet_passes_total, tries, flip_rate_per_try
    (the share of tries that flipped; `flipped` is best-of-k)."""
    total = int(out.unet_passes[best])
    guided = int(out.guided_passes[best]) if out.guided_passes is not None else total
    t_final = int(out.t_final[best]) if out.t_final is not None else None
    stop = int(out.stopped_t[best]) if out.stopped_t is not None else None
    return {"t_final": t_final, "guided_passes": guided, "unet_passes": total, "guidance_stopped_t": stop,
            "unet_passes_total": int(np.sum(out.unet_passes)), "tries": int(len(flips)),
            "flip_rate_per_try": float(np.mean(flips))}


def cross_model_verdict(b_row: dict | None, model_id: int, original: np.ndarray, cf: np.ndarray, target: int,
                        device: str) -> dict:
    """The independent classifier B's verdict on a counterfactual made against model A: {model_id, name, flipped,
    target_prob, original_pred, pred}; flipped None when the dataset has no B (or B is the explained model)."""
    import torch

    if b_row is None or int(b_row["id"]) == int(model_id):
        return {"model_id": None, "flipped": None}
    clf, _ = load_classifier(int(b_row["id"]), device)
    x = torch.from_numpy(np.stack([original, cf])).float().div(255.0)[:, None].to(device)
    with torch.no_grad():
        p = torch.softmax(clf(x), 1).cpu().numpy()
    return {"model_id": int(b_row["id"]), "name": b_row["name"], "flipped": bool(p[1].argmax() == target),
            "target_prob": float(p[1][target]), "original_pred": int(p[0].argmax()), "pred": int(p[1].argmax())}


def _json_safe(o):
    if isinstance(o, dict):
        return {str(k): _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return None if (np.isnan(f) or np.isinf(f)) else f
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.ndarray):
        return _json_safe(o.tolist())
    return o


def counterfactual_job(ctx) -> dict:
    """`counterfactual` job. params: model_id or model_ids, image (id or dataset-relative path), target (name or
    index), method or methods, preset, affirmative, generator_id, gan_id, seed, n_seeds, options
    ({method: {field: value}} overrides, e.g. steps for tests), device."""
    p = dict(ctx.params)
    model_ids = p.get("model_ids") or [p["model_id"]]
    methods = p.get("methods") or [p.get("method", "diffusion")]
    return run_counterfactuals(
        [int(m) for m in model_ids], p["image"], p["target"], list(methods), preset=p.get("preset") or "fast",
        affirmative=bool(p.get("affirmative", False)), generator_id=p.get("generator_id"), gan_id=p.get("gan_id"),
        seed=int(p.get("seed") or 0), n_seeds=int(p.get("n_seeds") or 1), options=p.get("options"),
        device=p.get("device"), user_id=ctx.user_id, job_id=ctx.job_id, progress=ctx.progress)


# ------------------------------------------------------------------------------------------- stored results


def _row_dict(c: Counterfactual) -> dict:
    return {"id": c.id, "model_id": c.model_id, "generator_id": c.generator_id, "image_id": c.image_id,
            "method": c.method, "preset": c.preset, "target": c.target, "flipped": c.flipped,
            "target_prob": c.target_prob, "l1": c.l1, "bpd": c.bpd, "category": c.category,
            "unet_passes": c.unet_passes, "seconds": c.seconds, "result_path": from_stored(c.result_path),
            "metrics": c.metrics or {}, "job_id": c.job_id, "created_by": c.created_by,
            "created_at": c.created_at.isoformat() if c.created_at else None}


def get_counterfactual(cid: int) -> dict | None:
    with read_session() as s:
        c = s.get(Counterfactual, int(cid))
        return _row_dict(c) if c else None


def list_counterfactuals(model_id: int | None = None, image_id: int | None = None, method: str | None = None,
                         job_id: int | None = None, dataset_id: int | None = None, limit: int = 200) -> list[dict]:
    """Stored counterfactual rows, newest first, with the image's path and the model's name."""
    with read_session() as s:
        q = (select(Counterfactual, Image.path, Model.name).join(Image, Image.id == Counterfactual.image_id)
             .join(Model, Model.id == Counterfactual.model_id).order_by(Counterfactual.id.desc()).limit(limit))
        if model_id is not None:
            q = q.where(Counterfactual.model_id == int(model_id))
        if image_id is not None:
            q = q.where(Counterfactual.image_id == int(image_id))
        if method:
            q = q.where(Counterfactual.method == method)
        if job_id is not None:
            q = q.where(Counterfactual.job_id == int(job_id))
        if dataset_id is not None:
            q = q.where(Image.dataset_id == int(dataset_id))
        return [{**_row_dict(c), "image_path": path, "model_name": name} for c, path, name in s.execute(q)]


def load_arrays_of(cid_or_row: int | dict) -> dict[str, np.ndarray]:
    row = get_counterfactual(cid_or_row) if not isinstance(cid_or_row, dict) else cid_or_row
    if row is None:
        raise ValueError(f"no counterfactual {cid_or_row}")
    p = Path(row["result_path"])
    if not p.is_file():
        raise FileNotFoundError(f"the arrays of counterfactual {row['id']} are missing ({p})")
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ------------------------------------------------------------------------------------------- ratings


def annotate(cid: int, user_id: int, rating: int | None = None, plausible: str | None = None,
             comment: str = "") -> int:
    """Store a rating of a counterfactual (realism 1–5, clinically plausible yes/no/unsure, plain-text comment)."""
    if rating is not None and not (1 <= int(rating) <= 5):
        raise ValueError("realism rating must be 1–5")
    if plausible is not None and plausible not in RATING_PLAUSIBLE:
        raise ValueError(f"plausible must be one of {', '.join(RATING_PLAUSIBLE)}")
    if rating is None and plausible is None and not (comment or "").strip():
        raise ValueError("give a rating, a plausibility answer or a comment")
    actor = require(user_id, "rate")  # team
    with session() as s:
        c = s.get(Counterfactual, int(cid))
        if c is None:
            raise ValueError(f"no counterfactual {cid}")
        a = Annotation(user_id=int(user_id), subject="counterfactual", model_id=c.model_id, image_id=c.image_id,
                       counterfactual_id=c.id, rating=None if rating is None else int(rating), plausible=plausible,
                       comment=str(comment or "")[:5000])
        s.add(a)
        s.flush()
        audit.add(s, actor, "rate", f"counterfactual:{cid}", after={"annotation_id": a.id, "rating": rating,
                                                                      "plausible": plausible, "comment": a.comment})
        return a.id


def list_annotations(cid: int | None = None) -> list[dict]:
    with read_session() as s:
        q = (select(Annotation, User.name).join(User, User.id == Annotation.user_id)
             .where(Annotation.subject == "counterfactual").order_by(Annotation.id))
        if cid is not None:
            q = q.where(Annotation.counterfactual_id == int(cid))
        return [{"id": a.id, "counterfactual_id": a.counterfactual_id, "user_id": a.user_id, "user": name,
                 "model_id": a.model_id, "image_id": a.image_id, "rating": a.rating, "plausible": a.plausible,
                 "comment": a.comment, "created_at": a.created_at.isoformat() if a.created_at else None}
                for a, name in s.execute(q)]


# ------------------------------------------------------------------------------------------- export


def _png(a: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(a.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


EXPORT_FIELDS = ["id", "model_id", "model_name", "generator_id", "image_id", "image_path", "method", "preset",
                 "target", "flipped", "target_prob", "l1", "bpd", "category", "unet_passes", "seconds",
                 "marker_share", "lung_share", "bpd_eps", "t_final", "guided_passes", "cross_model_flipped",
                 "purification_drop", "created_at"]


def export_zip(ids: list[int] | None = None, dataset_id: int | None = None, *, user_id: int | None) -> bytes:
    """A zip of counterfactuals.csv, annotations.csv, metrics.json and per result its arrays (.npz) and PNGs
    (original, counterfactual, affirmative, |Δ|)."""
    audit.record(require(user_id, "export"), "export", "counterfactuals", after={"ids": ids, "dataset_id": dataset_id})
    rows = list_counterfactuals(dataset_id=dataset_id, limit=100000)
    if ids is not None:
        want = {int(i) for i in ids}
        rows = [r for r in rows if r["id"] in want]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            m = r["metrics"]
            classes = m.get("classes") or []
            w.writerow({**r, "target": classes[r["target"]] if r["target"] < len(classes) else r["target"],
                        "marker_share": m.get("marker_share"), "lung_share": m.get("lung_share"),
                        "bpd_eps": m.get("bpd_eps"), "t_final": m.get("t_final"),
                        "guided_passes": m.get("guided_passes"), "purification_drop": m.get("purification_drop"),
                        "cross_model_flipped": (m.get("cross_model") or {}).get("flipped")})
        z.writestr("counterfactuals.csv", out.getvalue())
        anns = [a for a in list_annotations() if a["counterfactual_id"] in {r["id"] for r in rows}]
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=["id", "counterfactual_id", "user", "model_id", "image_id", "rating",
                                            "plausible", "comment", "created_at"], extrasaction="ignore")
        w.writeheader()
        w.writerows(anns)
        z.writestr("annotations.csv", out.getvalue())
        z.writestr("metrics.json", json.dumps(_json_safe(rows), indent=2, default=str))
        for r in rows:
            try:
                arrs = load_arrays_of(r)
            except FileNotFoundError:
                continue
            base = f"cf_{r['id']}"
            z.write(r["result_path"], f"{base}/arrays.npz")
            for key in ("original", "counterfactual", "affirmative"):
                if key in arrs:
                    z.writestr(f"{base}/{key}.png", _png(arrs[key]))
            d = np.abs(arrs["counterfactual"].astype(int) - arrs["original"].astype(int))
            z.writestr(f"{base}/abs_delta.png", _png(np.clip(d * (255.0 / max(1, d.max())), 0, 255)))
    return buf.getvalue()
