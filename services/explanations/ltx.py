"""LTX explainers: the `ltx.train` job (pretrain on the classifier's training split) and lookup for explaining.

An explainer is a registry row of kind "ltx" whose target_model_id is the classifier it explains; its checkpoint
(safetensors + JSON config, written to a temp folder and renamed) holds the explainer's constructor arguments,
the α it was trained with and the per-epoch history. The row is inserted last: a cancelled or failed run leaves
no row and no checkpoint.

For the explanation registry: `method_kwargs(classifier_id, method)` turns an evaluation method name
("ltx", "ltx_pretrained", "ltx_sampled") into the registry method and the keyword arguments it needs (the trained
explainer), so any service that explains (evaluation, the gallery's runs, the detail view) can offer LTX like
GradCAM.

Names (docs/architecture.md, Definitions): `ltx` is the paper's method, an explainer pretrained with soft masking (x ⊙
m) and then finetuned per image; `ltx_pretrained` is that explainer alone; `ltx_sampled` is our variant whose explainer
was pretrained and finetuned on binary masks sampled from m (`exemplar ltx train --masking sample`). Each name finds the
classifier's newest explainer trained with its masking.
"""
from __future__ import annotations

import shutil
import time
from functools import lru_cache
from typing import Callable

from core.registries import EXPLANATION_METHODS
from services.platform.settings import resolve_device
from db.models import Model
from services.data.datasets import load_arrays
from services.models.registry import (classifier_with_dataset, get_model, load_classifier, model_to_dict, prune_partial,
                                      register_model, save_checkpoint_dir)
from services.platform.database import read_session
from services.team.access import check_use_case

Progress = Callable[..., None]
DEFAULTS = {"epochs": 5, "batch_size": 32, "lr": 1e-3, "width": 8, "depth": 3, "out_stride": 4, "seed": 0}
# evaluation / explanation names → (registry method, extra keyword arguments, the masking its explainer was trained with)
LTX_METHODS = {s.name: (s.variant_of or s.name, dict(s.kwargs), s.masking)
               for s in EXPLANATION_METHODS if "ltx_explainer" in s.needs}


def masking_of(method: str) -> str:
    """The masking an LTX method's explainer must have been trained with."""
    return LTX_METHODS[method][2]


def _sub(progress: Progress | None, lo: float, hi: float) -> Progress:
    if progress is None:
        return lambda *a, **k: None
    return lambda f, msg="", **kw: progress(lo + (hi - lo) * float(f), msg, **kw)


def train_explainer(model_id: int, *, epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"],
                    lr: float = DEFAULTS["lr"], alpha: float | None = None, width: int = DEFAULTS["width"],
                    depth: int = DEFAULTS["depth"], out_stride: int = DEFAULTS["out_stride"],
                    seed: int = DEFAULTS["seed"], masking: str | None = None, limit: int | None = None,
                    name: str | None = None,
                    device: str | None = None, threads: int | None = None, user_id: int | None,
                    job_id: int | None = None, progress: Progress | None = None) -> dict:
    """Pretrain an LTX explainer for classifier `model_id` on its dataset's train split (val split for the
    val_* columns of the history) and register it. Returns {explainer_id, model_id, checkpoint, history,
    alpha, seconds, device}."""
    check_use_case(user_id, "ltx.train")  # a direct call is checked here; a job was checked when submitted
    import torch

    from core.ltx import MASKING, LTXExplainer, pretrain
    from core.ltx.loss import ALPHAS, MASKINGS
    from core.train.classifier import cpu_threads
    t0 = time.monotonic()
    say = progress or (lambda *a, **k: None)
    if epochs < 1:
        raise ValueError("--epochs must be at least 1")
    row = classifier_with_dataset(model_id, ": LTX pretrains its explainer on a classifier's dataset")
    masking = masking or MASKING
    if masking not in MASKINGS:
        raise ValueError(f"--masking must be one of {', '.join(MASKINGS)}, got {masking!r}")
    alpha = float(ALPHAS[masking] if alpha is None else alpha)
    prune_partial()
    dev = resolve_device(device)
    say(0.0, "loading classifier and dataset")
    classifier, _ = load_classifier(int(model_id), dev)
    arrays = load_arrays(int(row["dataset_id"]))
    tr, va = arrays.split_index("train"), arrays.split_index("val")
    if limit:
        tr = tr[: int(limit)]
    if len(tr) == 0:
        raise ValueError(f"dataset {row['dataset_id']} has no train split")
    torch.manual_seed(seed)
    in_chans = int((row["config"] or {}).get("in_chans", 1))
    explainer = LTXExplainer(in_chans=in_chans, width=width, depth=depth, out_stride=out_stride)
    say(0.02, f"pretraining the LTX explainer on {len(tr)} images ({dev}), α {alpha}, {masking} masks")
    with cpu_threads(threads if str(dev) == "cpu" else None):
        history = pretrain(explainer, classifier, arrays.images[tr], epochs=epochs, batch_size=batch_size, lr=lr,
                           alpha=alpha, masking=masking, val_images=arrays.images[va[:512]] if len(va) else None,
                           seed=seed, device=dev, progress=_sub(progress, 0.02, 0.95))
    config = {"kind": "ltx", "explainer": dict(explainer.config), "alpha": alpha, "masking": masking,
              "classifier_id": int(model_id),
              "dataset_id": int(row["dataset_id"]), "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                                                               "seed": seed, "images": int(len(tr))},
              "history": history, "device": str(dev)}
    say(0.97, "saving explainer", force=True)  # the last point where a cancel is honoured
    ckpt = save_checkpoint_dir(explainer.cpu(), config)
    last = history[-1]
    metrics = {"train": {k: last[k] for k in ("loss", "ce", "mask_mean", "keep")},
               "val": {k.removeprefix("val_"): v for k, v in last.items() if k.startswith("val_")}}
    try:
        eid = register_model(name=name or f"ltx-{row['name']}", arch="ltx_explainer", checkpoint=ckpt, kind="ltx",
                             dataset_id=row["dataset_id"], target_model_id=int(model_id), config=config,
                             metrics=metrics, job_id=job_id, created_by=user_id)
    except BaseException:
        shutil.rmtree(ckpt.parent, ignore_errors=True)
        raise
    say(1.0, f"LTX explainer #{eid} for model #{model_id}: loss {last['loss']:.3f}, mask mean "
             f"{last['mask_mean']:.3f}", force=True)
    return {"explainer_id": eid, "model_id": int(model_id), "checkpoint": str(ckpt), "alpha": alpha, "masking": masking,
            "history": history, "metrics": metrics, "seconds": round(time.monotonic() - t0, 2), "device": str(dev)}


def ltx_train_job(ctx) -> dict:
    """`ltx.train` job. params: model_id, epochs, batch_size, lr, alpha, masking, width, depth, out_stride, seed,
    limit, name, device, threads."""
    p = dict(ctx.params)
    kw = {k: p[k] for k in ("epochs", "batch_size", "width", "depth", "out_stride", "seed", "limit", "threads")
          if p.get(k) is not None}
    kw = {k: int(v) for k, v in kw.items()}
    kw.update({k: float(p[k]) for k in ("lr", "alpha") if p.get(k) is not None})
    return train_explainer(int(p["model_id"]), name=p.get("name"), device=p.get("device"), masking=p.get("masking"),
                           user_id=ctx.user_id,
                           job_id=ctx.job_id, progress=ctx.progress, **kw)


def _row_masking(row: dict) -> str:
    return (row.get("config") or {}).get("masking", "soft")  # rows from before the sampled variant were soft


def find_explainer(model_id: int, masking: str | None = None) -> dict | None:
    """The registry row of the newest LTX explainer of classifier `model_id` trained with `masking` (any when
    None), or the explainer row itself when `model_id` is an explainer's id."""
    from sqlalchemy import select

    row = get_model(int(model_id))
    if row is None:
        return None
    if row["kind"] == "ltx":
        return row
    with read_session() as s:
        rows = s.scalars(select(Model).where(Model.kind == "ltx", Model.target_model_id == int(model_id))
                         .order_by(Model.id.desc())).all()
        found = (model_to_dict(m) for m in rows)
        return next((r for r in found if masking is None or _row_masking(r) == masking), None)


@lru_cache(maxsize=8)
def _load(checkpoint: str, device: str):
    from core.ltx import load_explainer

    return load_explainer(checkpoint, device=device)


def get_explainer(model_id: int, device: str | None = None, masking: str | None = None):
    """The trained LTXExplainer (eval mode, on the device) for a classifier id (its newest explainer with that
    masking) or an explainer id.

    Raises LookupError with the command to run when the classifier has none."""
    row = find_explainer(int(model_id), masking)
    if row is None:
        what = f"{masking}-masking " if masking else ""
        flag = " --masking sample" if masking == "sample" else ""
        raise LookupError(f"model {model_id} has no {what}LTX explainer: train one with `exemplar ltx train --model "
                          f"{model_id}{flag}` (or on the Evaluate page)")
    return _load(row["checkpoint"], str(resolve_device(device)))


def method_kwargs(model_id: int, method: str, device: str | None = None) -> tuple[str, dict]:
    """(registry method, keyword arguments) for explaining classifier `model_id` with `method`; LTX methods get
    their trained explainer, every other method passes through unchanged."""
    if method not in LTX_METHODS:
        return method, {}
    reg, extra, masking = LTX_METHODS[method]
    return reg, {"explainer": get_explainer(model_id, device, masking), **extra}
