"""The verdict of a retrain: one sentence that says what the evidence-split intervals support, never more.

It reads accuracy on test_shifted (the shortcut; test when there is none) and test (iid) from the rows of
core.xbl.evidence: child − plain control, the recipe (random-pair control − plain control), the choice
(child − random-pair control), child − parent and plain control − parent. The lead follows the intervals that
exclude 0, in this order: the child worse than its parent on the shortcut split; child − control up or down;
the iid change; the choice; the recipe; both fine-tunes against the parent. "No evidence …" leads only when every
interval holds 0. The clause on the choice ends "no evidence that your choice mattered" exactly when its interval
holds 0. A zero-width interval where the models agree on every image is written as that.
"""
from __future__ import annotations


def direction(e: dict | None) -> str:
    """'up' / 'down' when the interval excludes 0, 'flat' when it holds 0, 'unknown' without an interval."""
    if not e or e.get("low") is None or e.get("high") is None:
        return "unknown"
    return "up" if e["low"] > 0 else "down" if e["high"] < 0 else "flat"


def sgn(v: float | None, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:+.{nd}f}".replace("-", "−")


def ci(e: dict) -> str:
    if e.get("agree"):
        return f"the models agree on all {e.get('n', '')} images".replace("all  ", "all ")
    if e.get("low") is None or e.get("high") is None:
        return "no interval"
    if e["low"] == e["high"]:
        return f"every resample gives {sgn(e['low'])}"
    return f"95 % CI {sgn(e['low'])} to {sgn(e['high'])}"


def _acc(rows: dict, split: str, name: str) -> dict | None:
    e = ((rows.get(split) or {}).get(name) or {}).get("accuracy")
    return e if e and e.get("mean") is not None else None


def _parent_only(rows: dict, key: str, what: str) -> str:
    par = _acc(rows, key, "effect_parent") or _acc(rows, key, "effect")
    lead = {"up": "Better than the parent, but without a control this may be further training alone",
            "down": "Worse than the parent", "flat": "No evidence of a change from the parent",
            "unknown": "Too few images for an interval"}[direction(par)]
    iid = _acc(rows, "test", "effect") if key == "test_shifted" else None
    tail = f"; iid test accuracy {sgn(iid['mean'])} ({ci(iid)})" if iid else ""
    return f"{lead}: {what} {sgn(par['mean'])} against the parent ({ci(par)}){tail}."


def _lead(d: dict, shortcut: str, method: str | None) -> str:
    """The sentence's lead from the directions d of every interval (see the module docstring for the order)."""
    who = f"The retrain ({method})" if method else "The retrain"
    if d["parent"] == "down":
        both = ", and so is plain fine-tuning" if d["control_parent"] == "down" else ""
        return f"The retrained model is worse than its parent on {shortcut}{both}"
    if d["effect"] == "up":
        return f"{who} reduced the shortcut" if shortcut == "test_shifted" else f"{who} improved the model"
    if d["effect"] == "down":
        return f"{who} made the model worse than plain fine-tuning on {shortcut}"
    if d["iid"] in ("up", "down"):
        return f"{who} {'raised' if d['iid'] == 'up' else 'lowered'} iid test accuracy against plain fine-tuning"
    if d["choice"] in ("up", "down"):
        return ("Your choice of exemplars did better than a random pair" if d["choice"] == "up"
                else "A random pair did better than your choice of exemplars")
    if d["recipe"] in ("up", "down"):
        return f"The method with a random pair did {'better' if d['recipe'] == 'up' else 'worse'} than plain " \
               "fine-tuning"
    if d["parent"] == "up":
        return "Fine-tuning improved on the parent, with or without the feedback"
    if d["effect"] == "unknown":
        return "Too few held-out images or seeds for an interval"
    return "No evidence that the feedback changed the model beyond fine-tuning"


def _clauses(e: dict, d: dict, what: str) -> list[str]:
    out = [f"{what} {sgn(e['effect']['mean'])} over plain fine-tuning ({ci(e['effect'])})"]
    if e["recipe"] is not None and e["choice"] is not None:
        flat = ": no evidence that your choice mattered" if d["choice"] == "flat" else ""
        out.append(f"a random pair gave {sgn(e['recipe']['mean'])} ({ci(e['recipe'])}), so your choice added "
                   f"{sgn(e['choice']['mean'])} ({ci(e['choice'])}{flat})")
    if e["iid"] is not None:
        word = {"up": "higher", "down": "lower", "flat": "unchanged", "unknown": "changed by"}[d["iid"]]
        out.append(f"iid test accuracy {word} ({sgn(e['iid']['mean'])}, {ci(e['iid'])})")
    if e["parent"] is not None and d["parent"] in ("up", "down"):
        out.append(f"{what} {sgn(e['parent']['mean'])} against the parent ({ci(e['parent'])})")
    return out


def _conclusion(d: dict) -> str:
    if d["effect"] == "up" and d["recipe"] == "up" and d["choice"] == "flat":
        return " — the gain comes from the recipe, not from which exemplars you chose"
    if d["choice"] == "up":
        return " — your choice of exemplars mattered"
    if d["choice"] == "down":
        return " — a random pair of train images did better than your pair"
    return ""


def _map_part(rows: dict) -> str:
    """'; the maps moved on test: WR −0.040 (95 % CI …)' when a map measure's interval excludes 0 on test."""
    e = (rows.get("test") or {}).get("effect") or {}
    moved = [(n, e[m]) for m, n in (("wr_mean", "WR"), ("ap_mean", "AP"), ("ar_mean", "AR"))
             if direction(e.get(m)) in ("up", "down")]
    if not moved:
        return ""
    return "; the maps moved on test: " + ", ".join(f"{n} {sgn(v['mean'])} ({ci(v)})" for n, v in moved)


def verdict(rows: dict, vs: str = "control", method: str | None = None) -> str:
    """One sentence from the evidence splits' rows ({split: {effect name: {measure: interval}}})."""
    key = "test_shifted" if _acc(rows, "test_shifted", "effect") else "test"
    what = f"{key} accuracy"
    if _acc(rows, key, "effect") is None:
        return "No held-out split to judge the retrain on."
    if vs == "parent":
        return _parent_only(rows, key, what)
    e = {"effect": _acc(rows, key, "effect"), "recipe": _acc(rows, key, "effect_recipe"),
         "choice": _acc(rows, key, "effect_choice"), "parent": _acc(rows, key, "effect_parent"),
         "control_parent": _acc(rows, key, "control_parent"),
         "iid": _acc(rows, "test", "effect") if key == "test_shifted" else None}
    d = {k: direction(v) for k, v in e.items()}
    lead = _lead(d, key, method)
    maps = _map_part(rows) if lead.startswith("No evidence") else ""
    return f"{lead}: {'; '.join(_clauses(e, d, what))}{maps}{_conclusion(d)}."
