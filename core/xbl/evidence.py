"""Evidence for a retrain (docs/architecture.md, "Retraining and its evidence"): held-out measures per image, one kind of 95 % interval,
the effects that separate the recipe from the user's choice, and the verdict.

- per_image(model, ev): per held-out image, 1/0 correct and the AR / AP / WR of the predicted-class GradCAM.
- summarise(parent, child, control, random_control): cells (mean with a 95 % interval) for parent | plain control |
  random-pair control | child per held-out split, and the effects
    effect          child − plain control (child − parent without a control)
    effect_recipe   random-pair control − plain control (what the method does with any two train images)
    effect_choice   child − random-pair control (what the user's choice of exemplars adds)
    effect_parent   child − parent;  control_parent  plain control − parent
  Every interval, the parent's included, is core.stats.two_level's: resample seeds, then held-out images, with the
  same image draw (and the same seed draw) for the models being compared. Seed s of each group is one fine-tune
  with seed s (same batch order, same counterexample draw), so groups are paired by seed.
- The verdict (core.xbl.verdict) reads the evidence splits only; val is shown as selection.
Train images never enter: only core.data.roles.HELDOUT splits are read.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from core.data.roles import EVIDENCE_SPLITS, HELDOUT, ROLES
from core.stats.two_level import N_BOOT, interval
from core.xbl.verdict import direction, verdict

__all__ = ["HELDOUT", "MEASURES", "GROUPS", "COMPARISONS", "Evidence", "per_image", "summarise", "direction"]
MEASURES = ("accuracy", "ar_mean", "ap_mean", "wr_mean")
_COLS = {"accuracy": "correct", "ar_mean": "ar", "ap_mean": "ap", "wr_mean": "wr"}
GROUPS = ("parent", "control", "random_control", "child")
# effect name → (minuend, subtrahend): the differences a report shows and the verdict reads
COMPARISONS: dict[str, tuple[str, str]] = {
    "effect": ("child", "control"), "effect_recipe": ("random_control", "control"),
    "effect_choice": ("child", "random_control"), "effect_parent": ("child", "parent"),
    "control_parent": ("control", "parent")}


@dataclass
class Evidence:
    """splits: {split: {group: {measure: mean|None, 'ci': {measure: [low, high]}, 'n'} | None, effect name:
    {measure: {mean, low, high, n, seeds, agree}}, 'role'}}; effect / effect_recipe / effect_choice / effect_parent:
    {split: {measure: interval}}; effect_vs: 'control' or 'parent'; roles: {split: role}; interval: how the
    intervals were made; describes: what the figures are of; verdict: one sentence."""

    splits: dict = field(default_factory=dict)
    effect: dict = field(default_factory=dict)
    effect_recipe: dict = field(default_factory=dict)
    effect_choice: dict = field(default_factory=dict)
    effect_parent: dict = field(default_factory=dict)
    effect_vs: str = "control"
    seeds: int = 1
    roles: dict = field(default_factory=dict)
    interval: str = ""
    describes: str = ""
    verdict: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def per_image(model, ev, tau: float = 0.5, batch_size: int = 256) -> dict[str, np.ndarray]:
    """{'correct', 'ar', 'ap', 'wr'}: float arrays (N,) for an EvalSet (NaN where a map measure is undefined)."""
    import torch  # here, not at the top: the CLI and the pages read MEASURES and Evidence without torch

    from core.metrics.localisation import localisation_metrics
    from core.registries import METRICS
    from core.xbl import as_float, cam as _cam

    n = int(ev.x.shape[0])
    keys = METRICS.names(groups="evidence")  # AR, AP, WR (core.registries)
    out = {k: np.full(n, np.nan) for k in ("correct", *keys)}
    model.eval()
    for i in range(0, n, batch_size):
        x = as_float(ev.x[i:i + batch_size])
        feats, logits = _cam.features_logits(model, x, detach=True)
        with torch.enable_grad():
            pred = logits.argmax(1)
            cam = _cam.gradcam(feats, logits, pred, create_graph=False)
        j = slice(i, i + x.shape[0])
        out["correct"][j] = (pred == ev.y[j].to(pred.device)).float().cpu().numpy()
        if ev.lung is not None:
            e = _cam.upsample(cam.detach(), tuple(x.shape[-2:]))
            conf = ev.marker[j] if ev.marker is not None else None
            m = localisation_metrics(e, ev.lung[j], conf, tau, ranked=False)
            for k in keys:
                out[k][j] = m[k].double().cpu().numpy()
    return out


def _stack(runs: list[dict] | None, col: str) -> np.ndarray | None:
    return None if not runs else np.stack([np.asarray(r[col], np.float64) for r in runs])


def _cell(groups: dict, who: str, seed: int) -> dict | None:
    if groups.get(who) is None:
        return None
    out: dict = {"ci": {}, "n": int(groups[who][0]["correct"].size)}
    for m, col in _COLS.items():
        iv = interval(_stack(groups[who], col), seed=seed, bounds=(0.0, 1.0))  # every measure is a share
        out[m] = iv["mean"]
        out["ci"][m] = [iv["low"], iv["high"]]
    return out


def _compare(groups: dict, a: str, b: str, seed: int) -> dict | None:
    if groups.get(a) is None or groups.get(b) is None:
        return None
    return {m: interval(_stack(groups[a], col), _stack(groups[b], col), seed=seed, bounds=(-1.0, 1.0))
            for m, col in _COLS.items()}


def summarise(parent: dict, children: list[dict], controls: list[dict] | None = None,
              random_controls: list[dict] | None = None, seed: int = 0, describes: str = "",
              method: str | None = None) -> Evidence:
    """parent: {split: per_image dict}; children / controls / random_controls: one such dict per seed, paired by
    seed (seed s of every group saw the same batches). Returns the Evidence of the held-out splits."""
    k = len(children)
    ev = Evidence(effect_vs="control" if controls else "parent", seeds=k, describes=describes,
                  interval=(f"two-level bootstrap: {k} seeds, then held-out images ({N_BOOT} resamples)" if k > 1
                            else f"bootstrap over held-out images ({N_BOOT} resamples); one seed, so the interval "
                                 "covers the test images only, not seed-to-seed variation"))
    for s in HELDOUT:
        if s not in parent or any(s not in c for c in children):
            continue
        groups = {"parent": [parent[s]], "child": [c[s] for c in children],
                  "control": [c[s] for c in controls] if controls else None,
                  "random_control": [c[s] for c in random_controls] if random_controls else None}
        row: dict = {w: _cell(groups, w, seed) for w in GROUPS}
        for name, (a, b) in COMPARISONS.items():
            row[name] = _compare(groups, a, b, seed)
        if row["effect"] is None:
            row["effect"] = row["effect_parent"]  # no control: the effect is child − parent
        row["role"] = ROLES[s]
        ev.splits[s] = row
        ev.roles[s] = ROLES[s]
        for name in ("effect", "effect_recipe", "effect_choice", "effect_parent"):
            if row[name] is not None:
                getattr(ev, name)[s] = row[name]
    ev.verdict = verdict(evidence_only(ev.splits), ev.effect_vs, method=method)
    return ev


def evidence_only(splits: dict) -> dict:
    """The rows of the evidence splits (test, test_shifted): all a verdict may read."""
    return {s: r for s, r in splits.items() if s in EVIDENCE_SPLITS}
