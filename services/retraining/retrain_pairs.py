"""The exemplar pair of a retrain: the user's pinned picks, explicit image refs or the --auto suggestion (train only,
core.data.roles), refusals of images from other splits, and the random-pair control's seeded draw.

resolve_pair() → {'good', 'bad', 'source', 'run'}; random_pair(arrays, pair, seed) → the pair a random-pair
control uses for that seed: one train image of the good exemplar's class and one of the bad exemplar's class,
drawn by numpy's generator seeded with the seed (the user's two images excluded), targets = the parent's
prediction as for explicit refs.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from core.data.roles import EXEMPLAR_SPLITS, exemplar_refusal
from services.data.datasets import resolve_image
from services.explanations import explaining, feedback

Progress = Callable[..., None]
RANDOM_STREAM = 0x52414E44  # "RAND": the random pair's own stream, apart from the fine-tune's batch order


def split_refusal(kind: str, ex: dict) -> str | None:
    """The one-line reason an exemplar may not be used (it is not from train: core.data.roles), or None."""
    return exemplar_refusal(kind, ex.get("split"), ex.get("path") or ex.get("image_id"))


def check_refs(dataset_id: int, good: int | str | None, bad: int | str | None) -> None:
    """Refuse explicit exemplar refs from a held-out split before any work (ValueError, one line)."""
    for kind, ref in (("good", good), ("bad", bad)):
        if ref is not None:
            why = split_refusal(kind, resolve_image(dataset_id, ref))
            if why:
                raise ValueError(why)


def _auto_pair(run: dict) -> dict:
    """The eXBL paper's max-AR / min-AR suggestion within train (core.data.roles.EXEMPLAR_SPLITS) only."""
    for split in EXEMPLAR_SPLITS:
        sug = feedback.suggest_pair(run["id"], split)
        if all(sug[k] is not None and sug[k].get("split") == split for k in ("good", "bad")):
            return sug
    raise ValueError(f"run {run['id']} has no train image with a defined AR (no lung masks, or the run did not "
                     "cover train?): cannot suggest a pair; pass --good and --bad")


def resolve_pair(model_id: int, dataset_id: int, *, good: int | str | None = None, bad: int | str | None = None,
                 auto: bool = False, user_id: int | None, expect_feedback: list | None = None,
                 progress: Progress | None = None) -> dict:
    """{'good': ex, 'bad': ex, 'source': 'refs'|'auto'|'pinned', 'run': run | None}; ex has image_id, index, label,
    path, target (class whose map was judged: None = the parent's prediction), run_id, feedback_id."""
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
            run = explaining.run_explain(model_id, "gradcam", user_id=user_id, progress=progress)
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


def record_picks(pair: dict, model_id: int, user_id: int | None) -> list[int]:
    """Feedback ids used: the pinned picks' ids, or picks stored now for a suggested / explicit pair."""
    ids = []
    for kind in ("good", "bad"):
        ex = pair[kind]
        if ex.get("feedback_id") is None and user_id is not None:
            ex["feedback_id"] = feedback.pick(user_id, model_id, int(ex["image_id"]), kind, ex.get("run_id"))["id"]
        if ex.get("feedback_id") is not None:
            ids.append(int(ex["feedback_id"]))
    return ids


def random_pair(arrays, pair: dict, seed: int) -> dict:
    """{'good': ex, 'bad': ex} drawn from train for seed `seed` (see the module docstring); ex as resolve_pair's,
    with target None (the caller fills the parent's prediction) and source 'random'."""
    rng = np.random.default_rng([int(seed), RANDOM_STREAM])
    tr = arrays.split_index(EXEMPLAR_SPLITS[0])
    taken = {int(pair["good"]["index"]), int(pair["bad"]["index"])}
    out: dict = {"source": "random", "seed": int(seed)}
    for kind in ("good", "bad"):
        label = int(pair[kind]["label"])
        pool = np.array([i for i in tr if int(arrays.labels[i]) == label and int(i) not in taken], dtype=np.int64)
        if pool.size == 0:
            raise ValueError(f"no other train image of class {label} to draw a random {kind} exemplar from: "
                             "turn the random-pair control off")
        i = int(rng.choice(pool))
        taken.add(i)
        path = str(arrays.paths[i]) if len(arrays.paths) > i else None
        out[kind] = {"image_id": int(arrays.image_ids[i]), "index": i, "label": label, "path": path,
                     "split": EXEMPLAR_SPLITS[0], "target": None}
    return out
