"""Method comparison: the `evaluate` job scores explanation methods on a classifier's test split.

For each method and each explained class (the prediction, and the true label), on every image of the split:
AR and AP against the lung mask (core.metrics.localisation, τ = 0.5) and POS, NEG, DEL, INS
(core.metrics.faithfulness: AUC × 100, max 90; POS / NEG accuracy against the true label), plus the seconds per
image the method needs to produce its maps (predicted class; metrics not included). Results go to the job result
and are merged into the classifier row's metrics["methods"][name].

Method names: the explanation registry's (gradcam, integrated_gradients, saliency, occlusion, guided_gradcam),
`ig` for integrated_gradients, `ltx` (the paper's soft masking, finetuned per instance), `ltx_pretrained` (that
explainer alone) and `ltx_sampled` (explainer trained and finetuned on sampled binary masks; services.explanations.ltx).
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np

from core.registries import EXPLANATION_METHODS, METRICS as METRIC_SPECS
from services.platform.batching import adaptive_batches
from db.models import Model
from services.data.datasets import load_arrays
from services.explanations.eval_progress import HI, EvalProgress, prior_cost
from services.explanations.ltx import method_kwargs
from services.models.registry import classifier_with_dataset, load_classifier
from services.platform.database import session
from services.platform.settings import resolve_device

Progress = Callable[..., None]
ALIASES = {a: s.name for s in EXPLANATION_METHODS for a in s.aliases}
LABELS = EXPLANATION_METHODS.labels()  # display names (core.registries)
METRICS = tuple(METRIC_SPECS.names(groups="evaluation"))  # localisation first, then faithfulness
TARGETS = ("predicted", "true")
# ltx_sampled beside the paper's ltx: it won the val sweep (bench/methods.py); when the methods are not named, an
# LTX variant whose explainer is not trained yet is skipped (named in the result's "skipped"), never an error
DEFAULT_METHODS = tuple(EXPLANATION_METHODS.names(evaluated_by_default=True))


def canonical(method: str) -> str:
    m = method.strip().lower().replace("-", "_")
    return ALIASES.get(m, m)


def known_methods() -> list[str]:
    return EXPLANATION_METHODS.names()


def parse_methods(methods: str | Sequence[str] | None) -> list[str]:
    """'gradcam,ig,ltx' or a list → canonical names (unknown names refused, duplicates dropped, order kept)."""
    if methods is None or methods == "" or methods == []:
        return list(DEFAULT_METHODS)
    items = methods.split(",") if isinstance(methods, str) else list(methods)
    out = [canonical(m) for m in items if m and m.strip()]
    known = known_methods()
    bad = [m for m in out if m not in known]
    if bad:
        raise ValueError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(known)} (or ig)")
    return list(dict.fromkeys(out))


def _mean(a) -> float | None:
    a = np.asarray(a, np.float64)
    ok = ~np.isnan(a)
    return round(float(a[ok].mean()), 4) if ok.any() else None


def evaluate_methods(model_id: int, methods: str | Sequence[str] | None = None, split: str = "test",
                     limit: int | None = None, targets: Sequence[str] = TARGETS, tau: float = 0.5,
                     batch_size: int = 32, finetune_steps: int | None = None, device: str | None = None,
                     store: bool = True, threads: int | None = None, job_id: int | None = None,
                     progress: Progress | None = None, started: float | None = None) -> dict:
    """Score each method on `split` of the classifier's dataset; returns {model_id, dataset_id, split, n, tau,
    targets, methods: {name: {label, ar, ap, pos, neg, del, ins, seconds_per_image, n, true: {…}, curves: {…}}}}.

    The top-level ar … ins of a method are for the predicted class; `true` holds the same for the true class.
    `started` (time.monotonic() when the job's attempt began): the seconds before the scoring count as work done in
    the progress (services/explanations/eval_progress.py).
    """
    from core.train.classifier import cpu_threads
    say = progress or (lambda *a, **k: None)
    names = parse_methods(methods)
    targets = _targets(targets)
    if not 0 < float(tau) <= 1:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    row = classifier_with_dataset(model_id)
    t0 = time.monotonic()
    dev = resolve_device(device)
    say(0.0, "loading model and dataset")
    model, _ = load_classifier(int(model_id), dev)
    arrays = load_arrays(int(row["dataset_id"]))
    idx = arrays.split_index(split)
    if limit:
        idx = idx[: int(limit)]
    n = len(idx)
    if n == 0:
        raise ValueError(f"split {split!r} of dataset {row['dataset_id']} has no images")
    defaulted = methods is None or methods == "" or methods == []
    plan, skipped = _plan_methods(int(model_id), names, dev, model, defaulted, finetune_steps, say)
    ticker = EvalProgress(say, [prior_cost(name, kw, _default_steps()) for name, _, kw in plan], len(targets) * n,
                          pre_seconds=time.monotonic() - (t0 if started is None else started))
    out: dict[str, dict] = {}
    with cpu_threads(threads if str(dev) == "cpu" else None):
        for i, (name, reg, kw) in enumerate(plan):
            ticker.begin(i)
            out[name] = _score_method(model, arrays, idx, (name, reg, kw), targets, split, float(tau), batch_size,
                                      dev, ticker)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for r in out.values():
        r["evaluated_at"], r["job_id"] = stamp, job_id
    if store:
        say(max(ticker.p, HI), "storing results", force=True)
        store_results(int(model_id), out)
    result = {"model_id": int(model_id), "dataset_id": int(row["dataset_id"]), "split": split, "n": n,
              "tau": float(tau), "targets": targets, "methods": out, "skipped": skipped,
              "seconds": round(time.monotonic() - t0, 2),
              "device": str(dev)}
    say(1.0, f"evaluated {len(out)} method(s) on {n} {split} images", force=True)
    return result


def _targets(targets: Sequence[str] | None) -> list[str]:
    """The explained classes in TARGETS order; the predicted class is always one of them (and first)."""
    out = [t for t in TARGETS if t in (targets or TARGETS)]
    if not out or "predicted" not in out:
        out = ["predicted", *[t for t in out if t != "predicted"]]
    return out


def _plan_methods(model_id: int, names: list[str], dev, model, defaulted: bool, finetune_steps: int | None,
                  say) -> tuple[list[tuple[str, str, dict]], dict[str, str]]:
    """Resolve every method first, so a missing explainer fails before any work is done: [(name, registry name,
    kwargs)] and {skipped name: reason}."""
    plan, skipped = [], {}
    for name in names:
        try:
            reg, kw = method_kwargs(model_id, name, str(dev))
        except LookupError as exc:
            if not defaulted:
                raise
            skipped[name] = str(exc)  # the default list names every LTX variant; one not trained yet is left out
            say(0.0, f"skipping {name}: {exc}", force=True)
            continue
        if _skip_inapplicable(name, reg, model, skipped, say):
            continue
        if reg == "ltx" and finetune_steps is not None and "finetune_steps" not in kw:
            kw["finetune_steps"] = int(finetune_steps)
        plan.append((name, reg, kw))
    return plan, skipped


def _score_method(model, arrays, idx, method: tuple[str, str, dict], targets: list[str], split: str, tau: float,
                  batch_size: int, dev, ticker: EvalProgress) -> dict:
    """One method's record: the predicted class's metrics at the top level, the true class's under `true`."""
    from core.metrics.faithfulness import FRACTIONS

    name, reg, kw = method
    n = len(idx)
    per_t: dict[str, dict] = {}
    seconds = 0.0
    for tk in targets:
        per_t[tk], secs = _score_target(model, arrays, idx, method, tk, tau, batch_size, dev, ticker)
        if tk == "predicted":
            seconds += secs
    main = per_t["predicted"]
    res = {"label": LABELS.get(name, name), **{k: main[k] for k in METRICS},
           "seconds_per_image": round(seconds / n, 5), "n": n, "split": split, "tau": tau,
           "fractions": [float(p) for p in FRACTIONS], "curves": {"predicted": main["curves"]}}
    if "true" in per_t:
        res["true"] = {k: per_t["true"][k] for k in METRICS}
        res["curves"]["true"] = per_t["true"]["curves"]
    if reg == "ltx":
        res["finetune_steps"] = int(kw.get("finetune_steps", _default_steps()))
    ticker(0, f"{res['label']}: AR {_fmt(res['ar'])} AP {_fmt(res['ap'])} POS "
              f"{_fmt(res['pos'], 1)} NEG {_fmt(res['neg'], 1)} DEL {_fmt(res['del'], 1)}"
              f" INS {_fmt(res['ins'], 1)}", force=True)
    return res


def _score_target(model, arrays, idx, method: tuple[str, str, dict], tk: str, tau: float, batch_size: int, dev,
                  ticker: EvalProgress) -> tuple[dict, float]:
    """Mean AR, AP, POS, NEG, DEL, INS and the mean curves of one method for one explained class ("predicted" or
    "true") over the split, and the seconds its maps took."""
    import torch

    from core.explain import explain
    from core.metrics.faithfulness import faithfulness
    from core.metrics.localisation import localisation_metrics

    name, reg, kw = method
    n = len(idx)
    cols: dict[str, list] = {k: [] for k in METRICS}
    curves: dict[str, list] = {k: [] for k in METRICS[2:]}
    seconds = 0.0
    for s, e_ in adaptive_batches(n, batch_size):  # issue 16: cancel honoured within ~2 s
        b = idx[s: e_]
        x = torch.from_numpy(arrays.images[b]).to(dev).float().div_(255.0)[:, None]
        y = torch.from_numpy(arrays.labels[b]).to(dev).long()
        t1 = time.perf_counter()
        maps, logits = explain(model, x, None if tk == "predicted" else y, reg, return_logits=True, **kw)
        if str(dev).startswith("cuda"):
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t1
        tgt = logits.argmax(1) if tk == "predicted" else y
        loc = localisation_metrics(maps, torch.from_numpy(arrays.lung[b]).to(dev), None, tau)
        f = faithfulness(model, x, maps, tgt, labels=y)
        for k in METRIC_SPECS.names(groups="evaluation", kind="localisation"):
            cols[k].append(loc[k].cpu().numpy())
        for k in METRICS[2:]:
            cols[k].append(f[k].cpu().numpy())
            curves[k].append(f[f"curve_{k}"].cpu().numpy())
        ticker(len(b), f"{LABELS.get(name, name)} · {tk} class: {min(s + len(b), n)}/{n} images")
    rec = {k: _mean(np.concatenate(v)) for k, v in cols.items()}
    rec["curves"] = {k: [round(float(c), 4) for c in np.concatenate(v).mean(0)] for k, v in curves.items()}
    return rec, seconds


def _default_steps() -> int:
    from core.ltx.train import FINETUNE_STEPS

    return FINETUNE_STEPS


def _fmt(v, nd: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def _skip_inapplicable(name: str, reg: str, model, skipped: dict, say) -> bool:
    """A method that does not apply to this network (guided GradCAM on a ViT's token layer) is left out of the
    comparison, with its reason in `skipped`."""
    from core.explain import not_applicable

    reason = not_applicable(reg, model)
    if reason:
        skipped[name] = reason
        say(0.0, f"skipping {name}: {reason}", force=True)
    return bool(reason)


def store_results(model_id: int, methods: dict[str, dict]) -> None:
    """Merge per-method results into the classifier row's metrics["methods"] (other methods are kept)."""
    from sqlalchemy import select

    with session() as s:
        m = s.scalars(select(Model).where(Model.id == int(model_id)).with_for_update()).first()
        if m is None:
            raise KeyError(f"no model {model_id}")
        metrics = dict(m.metrics or {})
        metrics["methods"] = {**(metrics.get("methods") or {}), **methods}
        m.metrics = metrics


def evaluate_job(ctx) -> dict:
    """`evaluate` job. params: model_id, methods (list or 'a,b'), split, limit, targets, tau, batch_size,
    finetune_steps, device, threads, store."""
    p = dict(ctx.params)
    targets = p.get("targets") or TARGETS
    if isinstance(targets, str):
        targets = [t for t in targets.split(",") if t]
    return evaluate_methods(
        int(p["model_id"]), p.get("methods"), p.get("split") or "test", int(p["limit"]) if p.get("limit") else None,
        targets, float(p.get("tau", 0.5)), int(p.get("batch_size") or 32),
        int(p["finetune_steps"]) if p.get("finetune_steps") is not None else None, p.get("device"),
        bool(p.get("store", True)), int(p["threads"]) if p.get("threads") else None, ctx.job_id, ctx.progress,
        ctx.started)
