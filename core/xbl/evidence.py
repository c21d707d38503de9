"""Evidence for a retrain (DESIGN.md §4b): held-out measures per image, 95 % intervals, effect vs a control, verdict.

- per_image(model, ev): per held-out image, 1/0 correct and the AR / AP / WR of the predicted-class GradCAM (§4).
- summarise(parent, children, controls): cells (mean with a 95 % interval) for parent | control | child per
  held-out split and the effect child − control (child − parent when there is no control).
  Intervals: one seed (or two) → paired percentile bootstrap over held-out images (the same resampled images for
  both models); K ≥ 3 seeds → Student-t interval across the seeds' means (seed-to-seed variation dominates).
- verdict(effect): one sentence that says what the intervals support, never more.
Train images never enter: only the splits of HELDOUT are read.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

HELDOUT = ("val", "test", "test_shifted")
MEASURES = ("accuracy", "ar_mean", "ap_mean", "wr_mean")
_COLS = {"accuracy": "correct", "ar_mean": "ar", "ap_mean": "ap", "wr_mean": "wr"}
N_BOOT = 1000
# Student t 0.975 quantiles for 1..30 degrees of freedom (normal beyond)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


@dataclass
class Evidence:
    """splits: {split: {'parent'|'control'|'child': {measure: mean|None, 'ci': {measure: [low, high]}, 'n'} | None,
    'effect': {measure: {mean, low, high}}}}; effect: {split: {measure: {mean, low, high}}}; effect_vs: 'control'
    or 'parent'; interval: how the intervals were made; verdict: one sentence."""

    splits: dict = field(default_factory=dict)
    effect: dict = field(default_factory=dict)
    effect_vs: str = "control"
    seeds: int = 1
    interval: str = ""
    verdict: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def per_image(model, ev, tau: float = 0.5, batch_size: int = 256) -> dict[str, np.ndarray]:
    """{'correct', 'ar', 'ap', 'wr'}: float arrays (N,) for an EvalSet (NaN where a map measure is undefined)."""
    from core.metrics.localisation import localisation_metrics
    from core.xbl import as_float, cam as _cam

    n = int(ev.x.shape[0])
    out = {k: np.full(n, np.nan) for k in ("correct", "ar", "ap", "wr")}
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
            for k in ("ar", "ap", "wr"):
                out[k][j] = m[k].double().cpu().numpy()
    return out


def _nanmean(a: np.ndarray, axis=None):
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.nansum(a, axis=axis)
        c = np.sum(np.isfinite(a), axis=axis)
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def boot_interval(a: np.ndarray, b: np.ndarray | None = None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """{mean, low, high} of mean(a) − mean(b) (or mean(a)) with a paired percentile bootstrap over the rows."""
    a = np.asarray(a, np.float64)
    mean = _nanmean(a) - (0.0 if b is None else _nanmean(np.asarray(b, np.float64)))
    if not np.isfinite(mean) or a.size == 0:
        return {"mean": None, "low": None, "high": None}
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    stats = _nanmean(a[idx], axis=1)
    if b is not None:
        stats = stats - _nanmean(np.asarray(b, np.float64)[idx], axis=1)
    stats = stats[np.isfinite(stats)]
    lo, hi = (np.percentile(stats, [2.5, 97.5]) if stats.size else (np.nan, np.nan))
    return {"mean": _num(mean), "low": _num(lo), "high": _num(hi)}


def seed_interval(values) -> dict:
    """{mean, low, high}: Student-t 95 % interval of the mean of per-seed values (NaN / None seeds dropped)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if v.size == 0:
        return {"mean": None, "low": None, "high": None}
    m = float(v.mean())
    if v.size == 1:
        return {"mean": m, "low": None, "high": None}
    h = t975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return {"mean": m, "low": m - h, "high": m + h}


def _seed_mean(runs: list[dict], col: str) -> np.ndarray:
    """Per-image mean over seeds (images × seeds → images)."""
    return _nanmean(np.stack([r[col] for r in runs]), axis=0)


def _cell(runs: list[dict], across_seeds: bool, seed: int) -> dict:
    out: dict = {"ci": {}, "n": int(runs[0]["correct"].size)}
    for m, col in _COLS.items():
        iv = (seed_interval([_num(_nanmean(r[col])) for r in runs]) if across_seeds
              else boot_interval(_seed_mean(runs, col), seed=seed))
        out[m] = iv["mean"]
        out["ci"][m] = [iv["low"], iv["high"]]
    return out


def _effect(child: list[dict], ref: list[dict], across_seeds: bool, seed: int, paired_seeds: bool) -> dict:
    out = {}
    for m, col in _COLS.items():
        if across_seeds:
            if paired_seeds:
                diffs = [_num(_nanmean(c[col]) - _nanmean(r[col])) for c, r in zip(child, ref)]
            else:
                rm = _nanmean(ref[0][col])
                diffs = [_num(_nanmean(c[col]) - rm) for c in child]
            out[m] = seed_interval(diffs)
        else:
            out[m] = boot_interval(_seed_mean(child, col), _seed_mean(ref, col), seed=seed)
    return out


def summarise(parent: dict, children: list[dict], controls: list[dict] | None, seed: int = 0) -> Evidence:
    """parent: {split: per_image dict}; children / controls: one such dict per seed (controls paired by seed)."""
    k = len(children)
    across = k >= 3
    ev = Evidence(effect_vs="control" if controls else "parent", seeds=k,
                  interval=(f"Student t across {k} seeds" if across else
                            f"paired bootstrap over held-out images ({N_BOOT} resamples)"))
    for s in HELDOUT:
        if s not in parent or any(s not in c for c in children):
            continue
        ch = [c[s] for c in children]
        co = [c[s] for c in controls] if controls else None
        row = {"parent": _cell([parent[s]], False, seed), "control": _cell(co, across, seed) if co else None,
               "child": _cell(ch, across, seed)}
        row["effect"] = _effect(ch, co if co else [parent[s]], across, seed, paired_seeds=bool(co))
        ev.splits[s] = row
        ev.effect[s] = row["effect"]
    ev.verdict = verdict(ev.effect, ev.effect_vs)
    return ev


# ----------------------------------------------------------------------------------------------- the sentence

def _sgn(v: float | None, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:+.{nd}f}".replace("-", "−")


def _ci(e: dict) -> str:
    if e.get("low") is None or e.get("high") is None:
        return "no interval"
    return f"95 % CI {_sgn(e['low'])} to {_sgn(e['high'])}"


def direction(e: dict | None) -> str:
    """'up' / 'down' when the interval excludes 0, 'flat' when it holds 0, 'unknown' without an interval."""
    if not e or e.get("low") is None or e.get("high") is None:
        return "unknown"
    return "up" if e["low"] > 0 else "down" if e["high"] < 0 else "flat"


def verdict(effect: dict, vs: str = "control") -> str:
    """One sentence from the intervals of test_shifted (shortcut) and test (iid) accuracy, then map measures."""
    ref = "the control" if vs == "control" else "the parent"
    shifted = (effect.get("test_shifted") or {}).get("accuracy")
    iid = (effect.get("test") or {}).get("accuracy")
    key, name = (shifted, "test_shifted accuracy") if shifted and shifted.get("mean") is not None else \
        (iid, "test accuracy")
    if not key or key.get("mean") is None:
        return "No held-out split to judge the retrain on."
    d = direction(key)
    iid_part = ""
    if key is shifted and iid and iid.get("mean") is not None:
        word = {"up": "higher", "down": "lower", "flat": "unchanged", "unknown": "changed by"}[direction(iid)]
        iid_part = f"; iid test accuracy {word} ({_sgn(iid['mean'])}, {_ci(iid)})"
    amount = f"{name} {_sgn(key['mean'])} over {ref} ({_ci(key)})"
    if vs == "parent":
        lead = {"up": "Better than the parent, but without a control this may be further training alone",
                "down": "Worse than the parent", "flat": "No evidence of a change from the parent",
                "unknown": "Too few images for an interval"}[d]
        return f"{lead}: {amount}{iid_part}."
    if d == "up":
        lead = "The feedback reduced the shortcut" if key is shifted else "The feedback improved the model"
        return f"{lead}: {amount}{iid_part}."
    if d == "down":
        return f"The feedback made the model worse than plain fine-tuning: {amount}{iid_part}."
    maps = _map_part(effect)
    if d == "unknown":
        return f"Too few held-out images or seeds for an interval: {amount}{iid_part}."
    return f"No evidence that the feedback changed the model beyond fine-tuning: {amount}{iid_part}{maps}."


def _map_part(effect: dict) -> str:
    """', though the maps moved: WR −0.040 (95 % CI …)' when a map measure's interval excludes 0 on test."""
    e = effect.get("test") or {}
    moved = [(n, e[m]) for m, n in (("wr_mean", "WR"), ("ap_mean", "AP"), ("ar_mean", "AR"))
             if direction(e.get(m)) in ("up", "down")]
    if not moved:
        return ""
    return "; the maps moved on test: " + ", ".join(f"{n} {_sgn(v['mean'])} ({_ci(v)})" for n, v in moved)
