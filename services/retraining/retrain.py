"""eXBL retraining use case: a parent classifier + two exemplars → K seeds of a child, a plain control and a
random-pair control, the held-out evidence (cells and effects with one kind of interval, a verdict) and the first
child's new ranking (docs/architecture.md, "Retraining and its evidence").

retrain() resolves the pair (services.retraining.retrain_pairs: the user's pinned picks, explicit image refs, or the eXBL
paper's max-AR / min-AR train image of the parent's latest GradCAM run; an exemplar from any split but train is
refused, core.data.roles). For each seed s of K (default 3) it fine-tunes three copies of the parent with the same
epochs, lr, seed, batch order and frozen blocks: the child (the method, the user's pair), the plain control
(cross-entropy, unless control=False) and the random-pair control (the method, a pair drawn from train by seed s,
unless random_control=False). The seed seeds everything random in the method (counterexamples included). Every
model is measured on val / test / test_shifted only (services.retraining.evidence); the group's evidence is summarised over
seeds, each child's over its own seed. All models are saved and registered last, grouped by one retrain id
(services.models.retrain_models), then the first child is ranked with GradCAM. A cancel or failure at any point leaves no
new registry row.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from services.platform.settings import resolve_device
from services.data.datasets import load_arrays
from services.explanations import explaining
from services.models.registry import classifier_with_dataset, load_classifier, prune_partial
from services.models.retrain_models import register_group, undo_group
from services.models.training import evaluate_splits
from services.retraining.evidence import heldout_sets, measure
from services.retraining.results import RetrainResult
from services.retraining.retrain_pairs import random_pair, record_picks, resolve_pair
from services.team.access import check_use_case

Progress = Callable[..., None]
# Fine-tune defaults (the bench/exbl_effect.py runs use them); the method list, the default method and every
# method's settings (λ, margin, …) come from core.xbl's one registry, chosen on val by that bench.
DEFAULT_EPOCHS = 5
DEFAULT_LR = 1e-3
DEFAULT_SEEDS = 3  # the page's and the CLI's default: one seed gives no seed-to-seed interval
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


def _validate(model_id: int, method: str, epochs: int | None, seeds: int) -> dict:
    if method not in methods():
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(methods())}")
    if int(epochs or DEFAULT_EPOCHS) < 1:
        raise ValueError("--epochs must be at least 1")
    if not 1 <= int(seeds) <= MAX_SEEDS:
        raise ValueError(f"--seeds must be 1 to {MAX_SEEDS}")
    return classifier_with_dataset(model_id)


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


def _whos(control: bool, random_control: bool) -> tuple[str, ...]:
    return ("child",) + (("control",) if control else ()) + (("random_control",) if random_control else ())


def _runs(parent_model, method: str, knobs: dict, cfg, seeds: int, whos: tuple[str, ...], data: dict,
          progress: Progress | None) -> dict:
    """Fine-tune K × len(whos) copies of the parent (paired by seed); measure each on the held-out splits.

    Returns {'models', 'runs', 'digests', 'histories': {who: [per seed]}, 'epoch_seconds', 'seconds', 'settings'}
    (runs = per-image held-out measures; models on the CPU)."""
    import copy
    from dataclasses import replace

    from core.xbl import CONTROL_METHOD, get_method
    from core.xbl.finetune import finetune

    jobs = [(i, who) for i in range(seeds) for who in whos]
    out: dict = {k: {w: [] for w in whos} for k in ("models", "runs", "digests", "histories")}
    out.update(epoch_seconds=[], seconds=0.0, settings={})
    for j, (i, who) in enumerate(jobs):
        lo, hi = 0.1 + 0.7 * j / len(jobs), 0.1 + 0.7 * (j + 1) / len(jobs)
        say = _tagged(_sub(progress, lo, hi), who, cfg.seed + i, i == 0)
        model = copy.deepcopy(parent_model)
        xbl = get_method(CONTROL_METHOD) if who == "control" else get_method(method, **knobs)
        good, bad = data["random"][i]["exemplars"] if who == "random_control" else (data["good"], data["bad"])
        # per-epoch val diagnostics for the first seed's runs (the page's charts); later seeds are measured once,
        # after training, like every model (their history rows hold the training terms, val as NaN)
        res = finetune(model, xbl, data["train"], good, bad, replace(cfg, seed=cfg.seed + i),
                       val=data["val"] if i == 0 else None, progress=say)
        out["runs"][who].append(measure(model, data["heldout"]))
        out["models"][who].append(model.cpu())
        out["digests"][who].append(res.order_digest)
        out["histories"][who].append(res.history)
        if who == "child":
            out["seconds"] += res.seconds
            if i == 0:
                out.update(epoch_seconds=res.epoch_seconds, settings=xbl.settings)
    return out


def _exemplar(arrays, ex: dict, model, dev, t):
    from core.xbl import Exemplar

    img = arrays.images[int(ex["index"])]
    if ex.get("target") is None:
        ex["target"] = _pred(model, img, dev)
    return Exemplar(t(img).float().div(255.0)[None], int(ex["target"]), int(ex["label"]), int(ex["image_id"]))


def _prepare(parent: dict, pair: dict, dev, needs_masks: bool, seeds: list[int], random_control: bool) -> dict:
    """Tensors on the device: the parent module, both exemplars (and each seed's random pair), the train set, val
    and the held-out sets."""
    import numpy as np
    import torch

    from core.data.roles import EXEMPLAR_SPLITS
    from core.xbl import TrainSet
    from core.xbl.finetune import EvalSet
    arrays = load_arrays(parent["dataset_id"])
    tr = arrays.split_index(*EXEMPLAR_SPLITS)
    if len(tr) == 0:
        raise ValueError("the dataset has no train split")
    if needs_masks and not bool(arrays.has_lung[tr].all()):
        raise ValueError(f"this method needs a lung mask for every training image; "
                         f"{int((~arrays.has_lung[tr].astype(bool)).sum())} have none")
    model, _ = load_classifier(int(parent["id"]), dev)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
    data: dict = {"arrays": arrays, "model": model, "n_train": len(tr), "random": []}
    for kind in ("good", "bad"):
        data[kind] = _exemplar(arrays, pair[kind], model, dev, t)
    for s in seeds if random_control else ():
        rp = random_pair(arrays, pair, s)
        rp["exemplars"] = tuple(_exemplar(arrays, rp[k], model, dev, t) for k in ("good", "bad"))
        data["random"].append(rp)
    data["train"] = TrainSet(t(arrays.images[tr])[:, None], t(arrays.labels[tr]).long(),
                             t(arrays.lung[tr]) if needs_masks else None)
    data["heldout"] = heldout_sets(arrays, dev)
    v = data["heldout"].get("val")
    data["val"] = EvalSet(v.x, v.y, v.lung, v.marker) if v is not None else None
    return data


def _evidence(parent_runs: dict, out: dict, seeds: list[int], method: str, seed: int) -> tuple[dict, list[dict]]:
    """(the group's evidence over every seed, each child's evidence on its own seed) as dicts."""
    from core.xbl.evidence import summarise

    runs = out["runs"]
    pick = lambda who, sl: runs[who][sl] if who in runs else None  # noqa: E731
    group = summarise(parent_runs, runs["child"], pick("control", slice(None)), pick("random_control", slice(None)),
                      seed=seed, method=method,
                      describes=f"the retrain's {len(seeds)} seed(s): means over every seed's models").to_dict()
    alone = [summarise(parent_runs, runs["child"][i:i + 1], pick("control", slice(i, i + 1)),
                       pick("random_control", slice(i, i + 1)), seed=seed, method=method,
                       describes=f"this child alone (seed {s}) against the controls of its seed").to_dict()
             for i, s in enumerate(seeds)]
    return group, alone


def _pair_info(p: dict) -> dict:
    return {k: {kk: p[k].get(kk) for kk in ("image_id", "path", "label", "target", "split")} for k in ("good", "bad")}


def _save(parent: dict, method: str, out: dict, cfg, pair: dict, data: dict, ev: tuple, dev, name, user_id,
          job_id) -> dict:
    """Measure each model's split accuracies and register the whole group (services.models.retrain_models)."""
    seeds = [cfg.seed + i for i in range(len(out["runs"]["child"]))]
    run = pair.get("run")
    xbl_cfg = {"method": method, "settings": out["settings"], "finetune": cfg.to_dict(),
               "epoch_seconds": out["epoch_seconds"], "seeds": len(seeds), "pair": _pair_info(pair),
               "pair_source": pair["source"], "parent_run_id": run["id"] if run else None}
    base = {k: v for k, v in dict(parent["config"] or {}).items()
            if k not in ("control_of", "lineage", "control_id", "random_control_id", "retrain_id", "role")}
    base.update(parent_id=int(parent["id"]), device=str(dev), freeze_blocks=int(cfg.freeze_blocks),
                train_last=int(cfg.train_last))
    per_seed = []
    for i, s in enumerate(seeds):
        sd: dict = {"seed": s, "models": {}, "configs": {}, "metrics": {}, "evidence": ev[1][i]}
        for who, models in out["models"].items():
            x = {**xbl_cfg, "order_digest": out["digests"][who][i]}
            if who == "control":
                x.update(method="ce", settings={})
            if who == "random_control":
                x.update(pair=_pair_info(data["random"][i]), pair_source="random")
            sd["models"][who] = models[i]
            sd["configs"][who] = {"xbl": x, "history": out["histories"][who][i],
                                  "train_seconds": out["seconds"] if who == "child" else None}
            sd["metrics"][who] = evaluate_splits(models[i].to(dev), data["arrays"], device=dev)
        per_seed.append(sd)
    feedback_ids = record_picks(pair, int(parent["id"]), user_id)
    group = {"method": method, "evidence": ev[0], "config": {"xbl": xbl_cfg, "feedback_ids": feedback_ids}}
    reg = register_group(parent, per_seed, group, base, name or f"{parent['name']}-{method}", feedback_ids,
                         job_id, user_id)
    reg.update(feedback_ids=feedback_ids, name=name or f"{parent['name']}-{method}",
               metrics={w: [sd["metrics"][w] for sd in per_seed] for w in out["models"]})
    return reg


def _rank(reg: dict, run: dict | None, device, user_id, job_id, progress) -> dict:
    """The first child's GradCAM ranking (the parent run's splits, target and τ); the group is undone on failure."""
    try:
        r = explaining.run_explain(reg["seed_models"][0]["child_id"], "gradcam",
                                   splits=(run or {}).get("splits") or None,
                                   target=(run or {}).get("target") or "predicted",
                                   tau=float((run or {}).get("tau") or 0.5), device=device, user_id=user_id,
                                   job_id=job_id, progress=_sub(progress, 0.84, 0.99))
    except BaseException:
        undo_group(reg)
        raise
    return {"run_id": r["run_id"], "summary": r["summary"]}


def _model_ref(reg: dict, who: str) -> dict | None:
    mid = reg["seed_models"][0].get(f"{who}_id")
    return {"model_id": mid, "metrics": reg["metrics"][who][0]} if mid is not None else None


def retrain(model_id: int, method: str | None = None, *, good: int | str | None = None,
            bad: int | str | None = None, auto: bool = False, epochs: int | None = None, lr: float | None = None,
            lam: float | None = None, margin: float | None = None, freeze_blocks: int = 0, train_last: int = 0,
            batch_size: int = 64, seed: int = 0, seeds: int = DEFAULT_SEEDS, control: bool = True,
            random_control: bool = True, settings: dict | None = None, explain: bool = True,
            name: str | None = None, device: str | None = None, threads: int | None = None,
            user_id: int | None, expect_feedback: list | None = None, job_id: int | None = None,
            progress: Progress | None = None) -> RetrainResult:
    """Fine-tune model `model_id` from two exemplars: K seeds of a child, a plain control and a random-pair control;
    register them all under one retrain id; rank the first child. The figures of the result (RetrainResult) are the
    group's, over every seed."""
    check_use_case(user_id, "exbl")  # a direct call is checked here; a job was checked when submitted
    from core.train.classifier import cpu_threads
    from core.xbl import get_method
    from core.xbl.finetune import FinetuneConfig
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
    cfg = FinetuneConfig(epochs=int(epochs or DEFAULT_EPOCHS), lr=float(lr or DEFAULT_LR),
                         batch_size=int(batch_size), freeze_blocks=int(freeze_blocks or 0),
                         train_last=int(train_last or 0), seed=int(seed))
    whos = _whos(bool(control), bool(random_control))
    seed_list = [cfg.seed + i for i in range(int(seeds))]
    with cpu_threads(threads if str(dev) == "cpu" else None):
        data = _prepare(parent, pair, dev, xbl.needs_masks, seed_list, "random_control" in whos)
        say(0.1, f"{method}: fine-tuning #{model_id} for {cfg.epochs} epochs on {data['n_train']} images, "
                 f"{seeds} seed(s) × {' + '.join(whos)} ({dev})", force=True)
        out = _runs(data["model"], method, knobs, cfg, int(seeds), whos, data, progress)
        say(0.8, "measuring parent and every seed's models on val, test and test_shifted", force=True)
        ev = _evidence(measure(data["model"], data["heldout"]), out, seed_list, method, int(seed))
        say(0.82, "saving checkpoints", force=True)  # the last point where a cancel is honoured before saving
        reg = _save(parent, method, out, cfg, pair, data, ev, dev, name, user_id, job_id)
    ranking = _rank(reg, pair.get("run"), device, user_id, job_id, progress) if explain else None
    child_id = reg["seed_models"][0]["child_id"]
    g = ev[0]
    say(1.0, f"model #{child_id} (child of #{model_id}, retrain #{reg['retrain_id']}): {g['verdict']}", force=True)
    return RetrainResult(
        model_id=child_id, retrain_id=reg["retrain_id"], seed_models=reg["seed_models"], parent_id=int(model_id),
        name=reg["name"], method=method, settings=out["settings"], pair={k: pair[k] for k in ("good", "bad")},
        pair_source=pair["source"], random_pairs=[_pair_info(r) for r in data["random"]],
        feedback_ids=reg["feedback_ids"], metrics=reg["metrics"]["child"][0], parent_metrics=parent["metrics"],
        control=_model_ref(reg, "control"), random_control=_model_ref(reg, "random_control"),
        order_digests=out["digests"], **{k: g[k] for k in (
            "effect", "effect_recipe", "effect_choice", "effect_parent", "effect_vs", "splits", "roles",
            "verdict", "seeds", "interval", "describes")},
        history=out["histories"]["child"][0], control_history=(out["histories"].get("control") or [None])[0],
        epoch_seconds=out["epoch_seconds"], explain=ranking, seconds=round(time.monotonic() - t0, 2), device=str(dev))


def exbl_job(ctx) -> dict:
    """`exbl` job. params: model_id, method, good, bad, auto, epochs, lr, lam, margin, freeze_blocks, train_last,
    batch_size, seed, seeds, control, random_control, settings, explain, name, device, threads, feedback_ids (the
    pinned picks expected, from the UI)."""
    p: dict[str, Any] = dict(ctx.params)
    if "model_id" not in p:
        raise ValueError("exbl needs model_id")
    return retrain(
        int(p["model_id"]), p.get("method") or None, good=p.get("good"), bad=p.get("bad"),
        auto=bool(p.get("auto")), epochs=p.get("epochs"), lr=p.get("lr"), lam=p.get("lam"), margin=p.get("margin"),
        freeze_blocks=int(p.get("freeze_blocks") or 0), train_last=int(p.get("train_last") or 0),
        batch_size=int(p.get("batch_size") or 64), seed=int(p.get("seed") or 0),
        seeds=int(p.get("seeds") or DEFAULT_SEEDS), control=bool(p.get("control", True)),
        random_control=bool(p.get("random_control", True)), settings=p.get("settings"),
        explain=bool(p.get("explain", True)), name=p.get("name"), device=p.get("device"), threads=p.get("threads"),
        user_id=ctx.user_id, expect_feedback=p.get("feedback_ids"), job_id=ctx.job_id, progress=ctx.progress).to_dict()
