"""eXBL retraining use case: a parent classifier + two exemplars → a child model, its matched control, the
held-out evidence (effect child − control with 95 % intervals, a verdict) and the child's new ranking.

retrain() resolves the pair (the user's pinned picks, explicit image refs, or the eXBL paper's suggestion =
max-AR / min-AR image of the parent's latest GradCAM run, within train, else val); exemplars from test or
test_shifted are refused (DESIGN.md §4b). For each of K seeds it fine-tunes a copy of the parent with one method
of core.xbl and, unless control=False, a plain-CE copy with the same epochs, lr, seed, batch order and frozen
blocks (per-epoch train / val diagnostics of the first seed go to the job as metrics). It measures every model on
val / test / test_shifted only (services.evidence), saves the first seed's child and control atomically and
registers them last (the child: parent_id = the parent, feedback_ids = the picks; the control: parent_id = the
parent, lineage "control of #child"), then runs the GradCAM ranking for the child. Further seeds' models are
measured, not registered. A cancel or failure at any point leaves no new registry row.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from services.settings import resolve_device

Progress = Callable[..., None]
# Fine-tune defaults (the bench/exbl_effect.py runs use them); the method list, the default method and every
# method's settings (λ, margin, …) come from core.xbl's one registry, chosen on val by that bench.
DEFAULT_EPOCHS = 5
DEFAULT_LR = 1e-3
PICK_SPLITS = ("train", "val")  # where exemplars may come from: never the held-out test splits
MAX_SEEDS = 10


def _sub(progress: Progress | None, lo: float, hi: float) -> Progress:
    if progress is None:
        return lambda *a, **k: None
    return lambda f, msg="", **kw: progress(lo + (hi - lo) * float(f), msg, **kw)


def _pred(model, image, device) -> int:
    import torch

    with torch.no_grad():
        x = torch.from_numpy(image).to(device).float().div(255.0)[None, None]
        return int(model.eval()(x).argmax(1)[0])


def methods() -> list[str]:
    """Every retraining method (core.xbl's registry)."""
    from core.xbl import list_methods

    return list_methods()


def default_method() -> str:
    from core.xbl import DEFAULT_METHOD

    return DEFAULT_METHOD


def method_info() -> dict[str, dict]:
    """{method: {'label', 'defaults', 'triplet'}} for the methods a user can start (settings forms, CLI help)."""
    from core.xbl import LABELS, is_triplet, method_defaults

    return {m: {"label": LABELS.get(m, m), "defaults": method_defaults(m), "triplet": is_triplet(m)}
            for m in methods()}


def split_refusal(kind: str, ex: dict) -> str | None:
    """The one-line reason an exemplar may not be used (from a held-out split), or None when it may."""
    sp = ex.get("split")
    if sp in PICK_SPLITS:
        return None
    return (f"the {kind} exemplar {ex.get('path') or ex.get('image_id')} is from the {sp} split: pick exemplars "
            f"from train or val (held-out images must stay unseen)")


def check_refs(dataset_id: int, good: int | str | None, bad: int | str | None) -> None:
    """Refuse explicit exemplar refs from a held-out split before any work (ValueError, one line)."""
    from services.datasets import resolve_image

    for kind, ref in (("good", good), ("bad", bad)):
        if ref is not None:
            why = split_refusal(kind, resolve_image(dataset_id, ref))
            if why:
                raise ValueError(why)


def _auto_pair(run: dict) -> dict:
    """The eXBL paper's max-AR / min-AR suggestion within train, else val: never a held-out image."""
    from services import feedback

    for split in PICK_SPLITS:
        sug = feedback.suggest_pair(run["id"], split)
        if all(sug[k] is not None and sug[k].get("split") == split for k in ("good", "bad")):
            return sug
    raise ValueError(f"run {run['id']} has no train or val image with a defined AR (no lung masks?): cannot "
                     "suggest a pair; pass --good and --bad")


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
                         "split": im["split"], "target": None, "run_id": None, "feedback_id": None}
    elif auto:
        run = explaining.latest_run(model_id, "gradcam")
        if run is None:
            run = explaining.run_explain(model_id, "gradcam", progress=progress)
            run = explaining.load_run(run["run_id"])
        sug = _auto_pair(run)
        if sug["good"]["image_id"] == sug["bad"]["image_id"]:
            raise ValueError(f"run {run['id']} suggests the same image as good and bad (every map has AR "
                             f"{sug['good']['ar']:.2f}): pick a pair in the gallery or pass --good and --bad")
        out = {"source": "auto", "run": run}
        for kind in ("good", "bad"):
            r = sug[kind]
            out[kind] = {"image_id": r["image_id"], "index": r.get("image_index"),
                         "label": r.get("label"), "path": r.get("path"), "split": r.get("split"),
                         "target": r.get("target"), "run_id": run["id"], "feedback_id": None}
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
                         "path": p["path"], "split": p.get("split"), "target": target, "run_id": p.get("run_id"),
                         "feedback_id": p["id"]}
        out["run"] = run
    for kind in ("good", "bad"):
        ex = out[kind]
        if ex["index"] is None or ex["label"] is None or ex.get("split") is None:
            im = resolve_image(dataset_id, int(ex["image_id"]))
            ex.update(index=im["index"], label=im["label"], path=im["path"], split=im["split"])
    for kind in ("good", "bad"):
        why = split_refusal(kind, out[kind])
        if why:
            raise ValueError(why)
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


def _discard(model_id: int | None, ckpt: Path) -> None:
    from db.models import Model
    from services.database import session

    if model_id is not None:
        with session() as s:
            m = s.get(Model, int(model_id))
            if m is not None:
                s.delete(m)
    shutil.rmtree(Path(ckpt).parent, ignore_errors=True)


def _validate(model_id: int, method: str, epochs: int | None, seeds: int) -> dict:
    from services.models import get_model

    if method not in methods():
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(methods())}")
    if int(epochs or DEFAULT_EPOCHS) < 1:
        raise ValueError("--epochs must be at least 1")
    if not 1 <= int(seeds) <= MAX_SEEDS:
        raise ValueError(f"--seeds must be 1 to {MAX_SEEDS}")
    parent = get_model(int(model_id))
    if parent is None:
        raise ValueError(f"no model {model_id}")
    if parent["kind"] != "classifier":
        raise ValueError(f"model {model_id} is a {parent['kind']}, not a classifier")
    if not parent["dataset_id"]:
        raise ValueError(f"model {model_id} has no dataset")
    return parent


def _knobs(method: str, settings: dict | None, lam: float | None, margin: float | None) -> dict:
    from core.xbl import method_defaults

    knobs = {k: v for k, v in {**(settings or {}), "lam": lam, "margin": margin}.items() if v is not None}
    if "margin" in knobs and "margin" not in method_defaults(method):
        knobs.pop("margin")  # margin is a triplet setting; the other methods have none
    return knobs


def _tagged(sub: Progress, who: str, seed: int, rows: bool) -> Progress:
    """Progress for one run: messages prefixed 'child seed 0: …'; per-epoch rows (tagged run=who) only if rows."""
    def say(f, msg="", metrics=None, **kw):
        sub(f, f"{who} seed {seed}: {msg}", metrics={**metrics, "run": who} if metrics and rows else None, **kw)
    return say


def _runs(parent_model, method: str, knobs: dict, cfg, seeds: int, control: bool, data: dict,
          progress: Progress | None) -> dict:
    """Fine-tune K children (and K matched controls) from copies of the parent; measure each on held-out splits.

    Returns {'child': model of the first seed, 'control': its control | None, 'history', 'control_history',
    'digests', 'child_runs', 'control_runs', 'epoch_seconds', 'seconds'} (runs = per-image held-out measures)."""
    import copy
    from dataclasses import replace

    from core.xbl import CONTROL_METHOD, get_method
    from core.xbl.finetune import finetune
    from services.evidence import measure

    jobs = [(i, who) for i in range(seeds) for who in (("child", "control") if control else ("child",))]
    out: dict = {"child_runs": [], "control_runs": [], "digests": {}, "control": None, "history": [],
                 "control_history": [], "epoch_seconds": [], "seconds": 0.0}
    for j, (i, who) in enumerate(jobs):
        lo, hi = 0.1 + 0.7 * j / len(jobs), 0.1 + 0.7 * (j + 1) / len(jobs)
        say = _tagged(_sub(progress, lo, hi), who, cfg.seed + i, i == 0)
        model = copy.deepcopy(parent_model)
        xbl = get_method(method, **knobs) if who == "child" else get_method(CONTROL_METHOD)
        res = finetune(model, xbl, data["train"], data["good"], data["bad"], replace(cfg, seed=cfg.seed + i),
                       val=data["val"], progress=say)
        out[f"{who}_runs"].append(measure(model, data["heldout"]))
        out["digests"].setdefault(who, []).append(res.order_digest)
        if i == 0:
            out[who] = model
            if who == "child":
                out.update(history=res.history, epoch_seconds=res.epoch_seconds, seconds=res.seconds,
                           settings=xbl.settings)
            else:
                out["control_history"] = res.history
    return out


def _prepare(parent: dict, pair: dict, dev, needs_masks: bool) -> dict:
    """Tensors on the device: the parent module, both exemplars, the train set, val and the held-out sets."""
    import numpy as np
    import torch

    from core.xbl import Exemplar, TrainSet
    from core.xbl.finetune import EvalSet
    from services.datasets import load_arrays
    from services.evidence import heldout_sets
    from services.models import load_classifier

    arrays = load_arrays(parent["dataset_id"])
    tr = arrays.split_index("train")
    if len(tr) == 0:
        raise ValueError("the dataset has no train split")
    if needs_masks and not bool(arrays.has_lung[tr].all()):
        raise ValueError(f"this method needs a lung mask for every training image; "
                         f"{int((~arrays.has_lung[tr].astype(bool)).sum())} have none")
    model, _ = load_classifier(int(parent["id"]), dev)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
    data: dict = {"arrays": arrays, "model": model, "n_train": len(tr)}
    for kind in ("good", "bad"):
        ex = pair[kind]
        img = arrays.images[int(ex["index"])]
        if ex.get("target") is None:
            ex["target"] = _pred(model, img, dev)
        data[kind] = Exemplar(t(img).float().div(255.0)[None], int(ex["target"]), int(ex["label"]),
                              int(ex["image_id"]))
    data["train"] = TrainSet(t(arrays.images[tr])[:, None], t(arrays.labels[tr]).long(),
                             t(arrays.lung[tr]) if needs_masks else None)
    data["heldout"] = heldout_sets(arrays, dev)
    v = data["heldout"].get("val")
    data["val"] = EvalSet(v.x, v.y, v.lung, v.marker) if v is not None else None
    return data


def _register(parent: dict, method: str, out: dict, cfg, pair: dict, run: dict | None, evidence: dict,
              metrics: dict, control_metrics: dict | None, dev, name: str | None, user_id, job_id) -> dict:
    """Save and register the child, then its control (lineage 'control of #child'); nothing left on failure."""
    from services.database import session
    from db.models import Model
    from services.models import register_model, save_checkpoint_dir

    xbl_cfg = {"method": method, "settings": out["settings"], "finetune": cfg.to_dict(),
               "epoch_seconds": out["epoch_seconds"], "order_digest": out["digests"]["child"][0],
               "seeds": len(out["child_runs"]),
               "pair": {k: {kk: pair[k].get(kk) for kk in ("image_id", "path", "label", "target", "split")}
                        for k in ("good", "bad")}, "pair_source": pair["source"],
               "parent_run_id": run["id"] if run else None}
    config = {**dict(parent["config"] or {}), "parent_id": int(parent["id"]), "history": out["history"],
              "train_seconds": out["seconds"], "device": str(dev), "xbl": xbl_cfg, "evidence": evidence,
              "freeze_blocks": int(cfg.freeze_blocks), "train_last": int(cfg.train_last)}
    for k in ("control_of", "lineage", "control_id"):  # a child of a control is no control
        config.pop(k, None)
    child_name = name or f"{parent['name']}-{method}"
    made: list = []
    try:
        ckpt = save_checkpoint_dir(out["child"].cpu(), config)
        made.append((None, ckpt))
        feedback_ids = _record_picks(pair, int(parent["id"]), user_id)
        child_id = register_model(name=child_name, arch=parent["arch"], checkpoint=ckpt,
                                  dataset_id=parent["dataset_id"], parent_id=int(parent["id"]), config=config,
                                  metrics=metrics, feedback_ids=feedback_ids, job_id=job_id, created_by=user_id)
        made[-1] = (child_id, ckpt)
        control_id = None
        if out["control"] is not None:
            ccfg = {**config, "history": out["control_history"], "evidence": None, "control_of": child_id,
                    "lineage": f"control of #{child_id}",
                    "xbl": {**xbl_cfg, "method": "ce", "settings": {}, "order_digest": out["digests"]["control"][0],
                            "control_of": child_id}}
            cck = save_checkpoint_dir(out["control"].cpu(), ccfg)
            made.append((None, cck))
            control_id = register_model(name=f"{child_name}-control", arch=parent["arch"], checkpoint=cck,
                                        dataset_id=parent["dataset_id"], parent_id=int(parent["id"]), config=ccfg,
                                        metrics=control_metrics, job_id=job_id, created_by=user_id)
            made[-1] = (control_id, cck)
            with session() as s:
                row = s.get(Model, child_id)
                row.config = {**(row.config or {}), "control_id": control_id}
    except BaseException:
        for mid, ck in made:
            _discard(mid, ck)
        raise
    return {"child_id": child_id, "control_id": control_id, "name": child_name, "feedback_ids": feedback_ids,
            "made": made}


def retrain(model_id: int, method: str | None = None, *, good: int | str | None = None,
            bad: int | str | None = None, auto: bool = False, epochs: int | None = None, lr: float | None = None,
            lam: float | None = None, margin: float | None = None, freeze_blocks: int = 0, train_last: int = 0,
            batch_size: int = 64,
            seed: int = 0, seeds: int = 1, control: bool = True, settings: dict | None = None,
            explain: bool = True, name: str | None = None, device: str | None = None, threads: int | None = None,
            user_id: int | None = None, expect_feedback: list | None = None, job_id: int | None = None,
            progress: Progress | None = None) -> dict:
    """Fine-tune model `model_id` from two exemplars (K seeds, each with a matched plain-CE control); register the
    first seed's child and control, rank the child.

    Returns {model_id, parent_id, name, method, settings, pair (each with its split), feedback_ids, metrics,
    parent_metrics, control: {model_id, metrics} | None, effect, effect_vs, splits, verdict, seeds, interval,
    history, control_history, explain, seconds, device}.
    """
    from core.train.classifier import cpu_threads
    from core.xbl import get_method
    from core.xbl.evidence import summarise
    from core.xbl.finetune import FinetuneConfig
    from services import explaining
    from services.evidence import measure
    from services.models import prune_partial
    from services.training import evaluate_splits

    t0 = time.monotonic()
    say = progress or (lambda *a, **k: None)
    method = method or default_method()
    parent = _validate(model_id, method, epochs, seeds)
    knobs = _knobs(method, settings, lam, margin)
    xbl = get_method(method, **knobs)  # validates settings before any work
    dev = resolve_device(device)
    prune_partial()
    pair = resolve_pair(int(model_id), parent["dataset_id"], good=good, bad=bad, auto=auto, user_id=user_id,
                        expect_feedback=expect_feedback, progress=_sub(progress, 0.0, 0.1))
    run = pair.get("run")
    cfg = FinetuneConfig(epochs=int(epochs or DEFAULT_EPOCHS), lr=float(lr or DEFAULT_LR),
                         batch_size=int(batch_size), freeze_blocks=int(freeze_blocks or 0),
                         train_last=int(train_last or 0), seed=int(seed))
    with cpu_threads(threads if str(dev) == "cpu" else None):
        data = _prepare(parent, pair, dev, xbl.needs_masks)
        say(0.1, f"{method}: fine-tuning #{model_id} for {cfg.epochs} epochs on {data['n_train']} images, "
                 f"{seeds} seed(s){', each with a plain-CE control' if control else ''} ({dev})", force=True)
        out = _runs(data["model"], method, knobs, cfg, int(seeds), bool(control), data, progress)
        say(0.8, "measuring parent, control and child on val, test and test_shifted", force=True)
        ev = summarise(measure(data["model"], data["heldout"]), out["child_runs"],
                       out["control_runs"] or None, seed=int(seed)).to_dict()
        metrics = evaluate_splits(out["child"], data["arrays"], device=dev)
        cmetrics = evaluate_splits(out["control"], data["arrays"], device=dev) if out["control"] else None
    say(0.82, "saving checkpoints", force=True)  # the last point where a cancel is honoured before saving
    reg = _register(parent, method, out, cfg, pair, run, ev, metrics, cmetrics, dev, name, user_id, job_id)
    ranking = None
    if explain:
        try:
            r = explaining.run_explain(reg["child_id"], "gradcam", splits=(run or {}).get("splits") or None,
                                       target=(run or {}).get("target") or "predicted",
                                       tau=float((run or {}).get("tau") or 0.5), device=device, user_id=user_id,
                                       job_id=job_id, progress=_sub(progress, 0.84, 0.99))
            ranking = {"run_id": r["run_id"], "summary": r["summary"]}
        except BaseException:
            for mid, ck in reg["made"]:
                _discard(mid, ck)
            raise
    say(1.0, f"model #{reg['child_id']} (child of #{model_id}): {ev['verdict']}", force=True)
    return {"model_id": reg["child_id"], "parent_id": int(model_id), "name": reg["name"], "method": method,
            "settings": out["settings"], "pair": {k: pair[k] for k in ("good", "bad")},
            "pair_source": pair["source"], "feedback_ids": reg["feedback_ids"], "metrics": metrics,
            "parent_metrics": parent["metrics"],
            "control": ({"model_id": reg["control_id"], "metrics": cmetrics, "history": out["control_history"]}
                        if reg["control_id"] else None),
            "order_digests": out["digests"], "effect": ev["effect"], "effect_vs": ev["effect_vs"],
            "splits": ev["splits"], "verdict": ev["verdict"], "seeds": ev["seeds"], "interval": ev["interval"],
            "history": out["history"], "epoch_seconds": out["epoch_seconds"], "explain": ranking,
            "seconds": round(time.monotonic() - t0, 2), "device": str(dev)}

def exbl_job(ctx) -> dict:
    """`exbl` job. params: model_id, method, good, bad, auto, epochs, lr, lam, margin, freeze_blocks, train_last,
    batch_size,
    seed, seeds, control, settings, explain, name, device, threads, feedback_ids (the pinned picks expected, from the UI)."""
    p: dict[str, Any] = dict(ctx.params)
    if "model_id" not in p:
        raise ValueError("exbl needs model_id")
    return retrain(
        int(p["model_id"]), p.get("method") or None, good=p.get("good"), bad=p.get("bad"),
        auto=bool(p.get("auto")), epochs=p.get("epochs"), lr=p.get("lr"), lam=p.get("lam"), margin=p.get("margin"),
        freeze_blocks=int(p.get("freeze_blocks") or 0), train_last=int(p.get("train_last") or 0), batch_size=int(p.get("batch_size") or 64),
        seed=int(p.get("seed") or 0), seeds=int(p.get("seeds") or 1), control=bool(p.get("control", True)),
        settings=p.get("settings"), explain=bool(p.get("explain", True)),
        name=p.get("name"), device=p.get("device"), threads=p.get("threads"), user_id=ctx.user_id,
        expect_feedback=p.get("feedback_ids"), job_id=ctx.job_id, progress=ctx.progress)
