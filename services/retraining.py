"""eXBL retraining use case: a parent classifier + two exemplars → a child model version and its new ranking.

retrain() resolves the pair (the user's pinned picks, explicit image refs, or the eXBL paper's suggestion =
max-AR / min-AR image of the parent's latest GradCAM run), fine-tunes a copy of the parent with one method of
core.xbl (per-epoch diagnostics go to the job as metrics), evaluates val / test / test_shifted, saves the child
atomically and registers it last (parent_id = the parent, feedback_ids = the pick rows used), then runs the
GradCAM ranking for the child. A cancel or failure at any point leaves no new registry row: before saving the
checkpoint nothing is written, and if the ranking fails or is cancelled after registration the child's row and
checkpoint are removed again.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from services.settings import resolve_device

Progress = Callable[..., None]
METHODS = ("exbl", "exbl_cf", "penalty_mask", "counterexamples", "rrr", "ce")
# Fine-tune defaults (the bench/exbl_effect.py runs use them); method settings (λ, margin, …) default to each
# core.xbl method's own `defaults`, chosen on the val split by that bench (see its docstring).
DEFAULT_EPOCHS = 5
DEFAULT_LR = 1e-3


def _sub(progress: Progress | None, lo: float, hi: float) -> Progress:
    if progress is None:
        return lambda *a, **k: None
    return lambda f, msg="", **kw: progress(lo + (hi - lo) * float(f), msg, **kw)


def _pred(model, image, device) -> int:
    import torch

    with torch.no_grad():
        x = torch.from_numpy(image).to(device).float().div(255.0)[None, None]
        return int(model.eval()(x).argmax(1)[0])


def method_info() -> dict[str, dict]:
    """{method: {'label', 'defaults'}} for the methods a user can start (settings forms, CLI help)."""
    from core.xbl import LABELS, method_defaults

    return {m: {"label": LABELS.get(m, m), "defaults": method_defaults(m)} for m in METHODS}


def resolve_pair(model_id: int, dataset_id: int, *, good: int | str | None = None, bad: int | str | None = None,
                 auto: bool = False, user_id: int | None = None, expect_feedback: list | None = None,
                 progress: Progress | None = None) -> dict:
    """{'good': ex, 'bad': ex, 'source': 'refs'|'auto'|'pinned', 'run': run | None}; ex has image_id, index, label,
    path, target (class whose map was judged: None = the parent's prediction), run_id, feedback_id."""
    from services import explaining, feedback
    from services.datasets import resolve_image

    if (good is None) != (bad is None):
        raise ValueError("give both --good and --bad (or --auto, or pin a pair in the gallery)")
    if good is not None and auto:
        raise ValueError("--auto and --good/--bad exclude each other")
    if good is not None:
        out = {"source": "refs", "run": explaining.latest_run(model_id, "gradcam")}
        for kind, ref in (("good", good), ("bad", bad)):
            im = resolve_image(dataset_id, ref)
            out[kind] = {"image_id": im["id"], "index": im["index"], "label": im["label"], "path": im["path"],
                         "target": None, "run_id": None, "feedback_id": None}
    elif auto:
        run = explaining.latest_run(model_id, "gradcam")
        if run is None:
            run = explaining.run_explain(model_id, "gradcam", progress=progress)
            run = explaining.load_run(run["run_id"])
        sug = feedback.suggest_pair(run["id"])
        if sug["good"] is None or sug["bad"] is None:
            raise ValueError(f"run {run['id']} has no image with a defined AR (no lung masks?): "
                             "cannot suggest a pair; pass --good and --bad")
        if sug["good"]["image_id"] == sug["bad"]["image_id"]:
            raise ValueError(f"run {run['id']} suggests the same image as good and bad (every map has AR "
                             f"{sug['good']['ar']:.2f}): pick a pair in the gallery or pass --good and --bad")
        out = {"source": "auto", "run": run}
        for kind in ("good", "bad"):
            r = sug[kind]
            out[kind] = {"image_id": r["image_id"], "index": r.get("image_index"),
                         "label": r.get("label"), "path": r.get("path"), "target": r.get("target"),
                         "run_id": run["id"], "feedback_id": None}
    else:
        pair = feedback.current_pair(model_id, user_id)
        if pair["good"] is None or pair["bad"] is None:
            raise ValueError(f"no pinned good and bad exemplar for model {model_id}: pick them in the gallery, "
                             "or pass --good IMG --bad IMG, or --auto")
        if expect_feedback and [pair["good"]["id"], pair["bad"]["id"]] != [int(i) for i in expect_feedback]:
            raise ValueError("the pinned pair changed after this retraining was started; start it again")
        run = None
        out = {"source": "pinned"}
        for kind in ("good", "bad"):
            p = pair[kind]
            target = None
            if p.get("run_id") is not None:
                run = run or explaining.load_run(p["run_id"])
                target = p.get("label") if run.get("target") == "true" else p.get("pred")
            out[kind] = {"image_id": p["image_id"], "index": p["image_index"], "label": p["label"],
                         "path": p["path"], "target": target, "run_id": p.get("run_id"), "feedback_id": p["id"]}
        out["run"] = run
    for kind in ("good", "bad"):
        ex = out[kind]
        if ex["index"] is None or ex["label"] is None:
            im = resolve_image(dataset_id, int(ex["image_id"]))
            ex.update(index=im["index"], label=im["label"], path=im["path"])
    if out["good"]["image_id"] == out["bad"]["image_id"]:
        raise ValueError("the good and the bad exemplar are the same image")
    return out


def _record_picks(pair: dict, model_id: int, user_id: int | None) -> list[int]:
    """Feedback ids used: the pinned picks' ids, or picks stored now for a suggested / explicit pair."""
    from services import feedback

    ids = []
    for kind in ("good", "bad"):
        ex = pair[kind]
        if ex.get("feedback_id") is None and user_id is not None:
            ex["feedback_id"] = feedback.pick(user_id, model_id, int(ex["image_id"]), kind, ex.get("run_id"))["id"]
        if ex.get("feedback_id") is not None:
            ids.append(int(ex["feedback_id"]))
    return ids


def _discard(model_id: int, ckpt: Path) -> None:
    from db.models import Model
    from services.database import session

    with session() as s:
        m = s.get(Model, int(model_id))
        if m is not None:
            s.delete(m)
    shutil.rmtree(ckpt.parent, ignore_errors=True)


def retrain(model_id: int, method: str = "exbl", *, good: int | str | None = None, bad: int | str | None = None,
            auto: bool = False, epochs: int | None = None, lr: float | None = None, lam: float | None = None,
            margin: float | None = None, freeze_blocks: int = 0, batch_size: int = 64, seed: int = 0,
            settings: dict | None = None, explain: bool = True, name: str | None = None,
            device: str | None = None, threads: int | None = None, user_id: int | None = None,
            expect_feedback: list | None = None, job_id: int | None = None,
            progress: Progress | None = None) -> dict:
    """Fine-tune model `model_id` from two exemplars with an XBL method; register the child and rank it.

    Returns {model_id, parent_id, name, method, settings, pair, feedback_ids, metrics: {val, test, test_shifted},
    parent_metrics, history, explain: {run_id, summary} | None, seconds, device}.
    """
    import numpy as np
    import torch

    from core.train.classifier import cpu_threads
    from core.xbl import Exemplar, TrainSet, get_method, method_defaults
    from core.xbl.finetune import EvalSet, FinetuneConfig, finetune
    from services import explaining
    from services.datasets import load_arrays
    from services.models import get_model, load_classifier, prune_partial, register_model, save_checkpoint_dir
    from services.training import evaluate_splits

    t0 = time.monotonic()
    say = progress or (lambda *a, **k: None)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    epochs = int(epochs or DEFAULT_EPOCHS)
    if epochs < 1:
        raise ValueError("--epochs must be at least 1")
    parent = get_model(int(model_id))
    if parent is None:
        raise ValueError(f"no model {model_id}")
    if parent["kind"] != "classifier":
        raise ValueError(f"model {model_id} is a {parent['kind']}, not a classifier")
    ds_id = parent["dataset_id"]
    if not ds_id:
        raise ValueError(f"model {model_id} has no dataset")
    knobs = {k: v for k, v in {**(settings or {}), "lam": lam, "margin": margin}.items() if v is not None}
    if "margin" in knobs and "margin" not in method_defaults(method):
        knobs.pop("margin")  # margin is a triplet setting; the other methods have none
    xbl = get_method(method, **knobs)  # validates settings before any work
    dev = resolve_device(device)
    prune_partial()
    say(0.0, f"resolving the exemplar pair for model #{model_id}")
    pair = resolve_pair(int(model_id), ds_id, good=good, bad=bad, auto=auto, user_id=user_id,
                        expect_feedback=expect_feedback, progress=_sub(progress, 0.0, 0.1))
    run = pair.get("run")
    arrays = load_arrays(ds_id)
    tr = arrays.split_index("train")
    if len(tr) == 0:
        raise ValueError("the dataset has no train split")
    if xbl.needs_masks and not bool(arrays.has_lung[tr].all()):
        raise ValueError(f"{method} needs a lung mask for every training image; "
                         f"{int((~arrays.has_lung[tr].astype(bool)).sum())} have none")
    with cpu_threads(threads if str(dev) == "cpu" else None):
        model, _ = load_classifier(int(model_id), dev)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
        exemplars = {}
        for kind in ("good", "bad"):
            ex = pair[kind]
            img = arrays.images[int(ex["index"])]
            if ex.get("target") is None:
                ex["target"] = _pred(model, img, dev)
            exemplars[kind] = Exemplar(t(img).float().div(255.0)[None], int(ex["target"]), int(ex["label"]),
                                       int(ex["image_id"]))
        train = TrainSet(t(arrays.images[tr])[:, None], t(arrays.labels[tr]).long(),
                         t(arrays.lung[tr]) if xbl.needs_masks else None)

        def evalset(split: str, masks: bool) -> EvalSet | None:
            i = arrays.split_index(split)
            if len(i) == 0:
                return None
            return EvalSet(t(arrays.images[i])[:, None], t(arrays.labels[i]).long(),
                           t(arrays.lung[i]) if masks and arrays.has_lung[i].all() else None,
                           t(arrays.marker[i]) if masks and arrays.has_marker[i].all() else None)

        cfg = FinetuneConfig(epochs=epochs, lr=float(lr or DEFAULT_LR), batch_size=int(batch_size),
                             freeze_blocks=int(freeze_blocks or 0), seed=int(seed))
        say(0.1, f"{method}: fine-tuning #{model_id} for {epochs} epochs on {len(tr)} images ({dev})", force=True)
        res = finetune(model, xbl, train, exemplars["good"], exemplars["bad"], cfg, val=evalset("val", True),
                       shifted=evalset("test_shifted", False), progress=_sub(progress, 0.1, 0.8))
        say(0.8, "evaluating val, test and test_shifted", force=True)
        metrics = evaluate_splits(model, arrays, device=dev)
    config = dict(parent["config"] or {})
    config.update({
        "parent_id": int(model_id), "history": res.history, "train_seconds": res.seconds, "device": str(dev),
        "xbl": {"method": method, "settings": xbl.settings, "finetune": cfg.to_dict(), "epoch_seconds":
                res.epoch_seconds, "pair": {k: {kk: pair[k][kk] for kk in ("image_id", "path", "label", "target")}
                                            for k in ("good", "bad")}, "pair_source": pair["source"],
                "parent_run_id": run["id"] if run else None},
    })
    config["freeze_blocks"] = int(freeze_blocks or 0)
    say(0.82, "saving checkpoint", force=True)  # the last point where a cancel is honoured before saving
    child_name = name or f"{parent['name']}-{method}"
    ckpt = save_checkpoint_dir(model.cpu(), config)
    try:
        feedback_ids = _record_picks(pair, int(model_id), user_id)
        child_id = register_model(name=child_name, arch=parent["arch"], checkpoint=ckpt, dataset_id=ds_id,
                                  parent_id=int(model_id), config=config, metrics=metrics,
                                  feedback_ids=feedback_ids, job_id=job_id, created_by=user_id)
    except BaseException:
        shutil.rmtree(ckpt.parent, ignore_errors=True)
        raise
    ranking = None
    if explain:
        try:
            r = explaining.run_explain(child_id, "gradcam", splits=(run or {}).get("splits") or None,
                                       target=(run or {}).get("target") or "predicted",
                                       tau=float((run or {}).get("tau") or 0.5), device=device, user_id=user_id,
                                       job_id=job_id, progress=_sub(progress, 0.84, 0.99))
            ranking = {"run_id": r["run_id"], "summary": r["summary"]}
        except BaseException:
            _discard(child_id, ckpt)
            raise
    acc = ", ".join(f"{s} {m['accuracy']:.3f}" for s, m in metrics.items())
    say(1.0, f"model #{child_id} (child of #{model_id}): accuracy {acc}", force=True)
    return {"model_id": child_id, "parent_id": int(model_id), "name": child_name, "method": method,
            "settings": xbl.settings, "pair": {k: pair[k] for k in ("good", "bad")}, "pair_source": pair["source"],
            "feedback_ids": feedback_ids, "metrics": metrics, "parent_metrics": parent["metrics"],
            "history": res.history, "epoch_seconds": res.epoch_seconds, "explain": ranking,
            "seconds": round(time.monotonic() - t0, 2), "device": str(dev)}


def exbl_job(ctx) -> dict:
    """`exbl` job. params: model_id, method, good, bad, auto, epochs, lr, lam, margin, freeze_blocks, batch_size,
    seed, settings, explain, name, device, threads, feedback_ids (the pinned picks expected, from the UI)."""
    p: dict[str, Any] = dict(ctx.params)
    if "model_id" not in p:
        raise ValueError("exbl needs model_id")
    return retrain(
        int(p["model_id"]), p.get("method") or "exbl", good=p.get("good"), bad=p.get("bad"),
        auto=bool(p.get("auto")), epochs=p.get("epochs"), lr=p.get("lr"), lam=p.get("lam"), margin=p.get("margin"),
        freeze_blocks=int(p.get("freeze_blocks") or 0), batch_size=int(p.get("batch_size") or 64),
        seed=int(p.get("seed") or 0), settings=p.get("settings"), explain=bool(p.get("explain", True)),
        name=p.get("name"), device=p.get("device"), threads=p.get("threads"), user_id=ctx.user_id,
        expect_feedback=p.get("feedback_ids"), job_id=ctx.job_id, progress=ctx.progress)
