"""A study's results for researchers and admins: the current answers, agreement per question (Cohen's κ per
pair, Fleiss' κ, Krippendorff's α with bootstrap 95 % intervals), readers against metrics (Spearman ρ), the
items with most disagreement, and CSV / JSON exports (CSV cells escaped against formula injection)."""
from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
from sqlalchemy import select

from core.stats import Estimate, bootstrap, cohen_kappa, disagreement, fleiss_kappa, krippendorff_alpha, spearman
from core.registries import METRICS
from db.models import Counterfactual, Explanation, StudyItem, StudyReader, User
from services.team.audit import to_csv
from services.platform.database import read_session
from services.team.access import require
from services.reading.studies import current_answers, study_questions, study_row
from db.models import StudyAnswer
from services.reading.studies import questions
from services.team import audit

MAP_METRICS = tuple(METRICS.names(kind="localisation", needs="mask"))  # a study item's map against its lung mask
CF_METRICS = ("bpd", "l1")
ANSWER_COLUMNS = ["study_id", "item_id", "item", "side", "question_id", "question", "reader", "consensus", "value",
                  "version", "note", "at"]
STATISTIC_WORDS = {"krippendorff_alpha": "Krippendorff's α", "fleiss_kappa": "Fleiss' κ", "cohen_kappa": "Cohen's κ",
                   "cohen_kappa_quadratic": "Cohen's κ (quadratic weights)"}  # the screen's words; exports keep ids


def statistic_words(name: str) -> str:
    """'spearman_pos' → "Spearman's ρ with pos"; a known id → its words; else the id itself."""
    if name.startswith("spearman_"):
        return f"Spearman's ρ with {name.removeprefix('spearman_').upper()}"
    return STATISTIC_WORDS.get(name, name)


AGREEMENT_COLUMNS = ["question_id", "statistic", "readers", "value", "low", "high", "n"]


def _units(s, st_) -> list[tuple[StudyItem, str]]:
    items = list(s.scalars(select(StudyItem).where(StudyItem.study_id == st_.id).order_by(StudyItem.position)))
    return [(it, sd) for it in items for sd in (["a", "b"] if it.cf_a_id is not None else [""])]


def _readers(s, study_id: int) -> list[User]:
    return list(s.scalars(select(User).join(StudyReader, StudyReader.user_id == User.id)
                          .where(StudyReader.study_id == int(study_id)).order_by(User.name)))


def _question(s, st_, question_id):
    qs = study_questions(s, st_.id)
    q = qs[0] if question_id is None else next((x for x in qs if x.id == int(question_id)), None)
    if q is None:
        raise ValueError(f"--question: study {st_.id} has no question {question_id}")
    return q


def answer_rows(user_id: int | None, study_id: int, history: bool = False) -> list[dict]:
    """Every reader's current answer (all versions with history=True) and the consensus, one row each."""
    require(user_id, "study.read_results")
    with read_session() as s:
        st_ = study_row(s, study_id)
        names = {u.id: u.name for u in s.scalars(select(User))}
        qtext = {q.id: q.text for q in study_questions(s, st_.id)}
        pos = {it.id: it.position for it in s.scalars(select(StudyItem).where(StudyItem.study_id == st_.id))}
        if history:
            rows = list(s.scalars(select(StudyAnswer).where(StudyAnswer.study_id == st_.id).order_by(StudyAnswer.id)))
        else:
            rows = list(current_answers(s, st_.id).values()) + list(current_answers(s, st_.id, consensus=True).values())
        return [{"study_id": st_.id, "item_id": a.item_id, "item": pos.get(a.item_id, 0) + 1, "side": a.side,
                 "question_id": a.question_id, "question": qtext.get(a.question_id, ""),
                 "reader": names.get(a.user_id, ""), "consensus": a.consensus, "value": a.value,
                 "version": a.version, "note": a.note, "at": a.created_at.isoformat() if a.created_at else None}
                for a in sorted(rows, key=lambda a: a.id)]


def _matrix(s, st_, q, units, readers) -> np.ndarray:
    cur = current_answers(s, st_.id)
    code = {v: i for i, v in enumerate(q.levels)}
    m = np.full((len(units), len(readers)), np.nan)
    for i, (it, sd) in enumerate(units):
        for j, u in enumerate(readers):
            a = cur.get((it.id, q.id, sd, u.id))
            if a is not None and a.value in code:
                m[i, j] = code[a.value]
    return m


def _scores(m: np.ndarray, q) -> np.ndarray | None:
    """Per unit: the mean rating (ordinal; numeric levels by value) or the share answering the first level
    (a two-level nominal scale, e.g. good / bad); None for other nominal scales."""
    if q.scale == "ordinal":
        try:
            vals = np.array([float(v) for v in q.levels])
        except ValueError:
            vals = np.arange(1, len(q.levels) + 1, dtype=float)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mapped = np.where(np.isfinite(m), vals[np.nan_to_num(m, nan=0).astype(int)], np.nan)
            return np.nanmean(mapped, axis=1) if m.size else np.array([])
    if len(q.levels) == 2:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(np.where(np.isfinite(m), (m == 0).astype(float), np.nan), axis=1)
    return None


def _unit_metrics(s, units) -> dict[str, np.ndarray]:
    """Per unit: the map's metrics (AR, AP, soft AR, …, and POS/NEG/DEL/INS once the study.metrics job ran) or the
    counterfactual's bpd and L1; NaN where a unit lacks one."""
    per: list[dict] = []
    for it, sd in units:
        d: dict = {}
        if sd == "":
            e = s.get(Explanation, it.explanation_id) if it.explanation_id else None
            d = {k: getattr(e, k, None) if e is not None else None for k in MAP_METRICS}
            d.update((it.meta or {}).get("faithfulness") or {})
        else:
            c = s.get(Counterfactual, it.cf_a_id if sd == "a" else it.cf_b_id)
            d = {k: getattr(c, k, None) if c is not None else None for k in CF_METRICS}
        per.append(d)
    keys = list(dict.fromkeys(k for d in per for k in d))
    return {k: np.array([np.nan if d.get(k) is None else float(d[k]) for d in per], float) for k in keys}


def agreement(user_id: int | None, study_id: int, question_id: int | None = None, reps: int = 1000,
              seed: int = 0, top: int = 10) -> dict:
    """Agreement for one question (default the first): krippendorff_alpha, fleiss_kappa, cohen_kappa per pair,
    spearman per metric (each {value|rho, low, high}), and the items with most disagreement."""
    require(user_id, "study.read_results")
    with read_session() as s:
        st_ = study_row(s, study_id)
        q = _question(s, st_, question_id)
        units, readers = _units(s, st_), _readers(s, st_.id)
        m = _matrix(s, st_, q, units, readers)
        metrics = _unit_metrics(s, units)
    k, ordinal, n = len(q.levels), q.scale == "ordinal", len(units)

    def est(fn) -> dict:
        return bootstrap(fn, n, reps=reps, seed=seed).as_dict()

    out = {"study_id": st_.id, "question_id": q.id, "question": q.text, "scale": q.scale, "levels": list(q.levels),
           "readers": [u.name for u in readers], "n_units": n,
           "n_answers": int(np.isfinite(m).sum()),
           "krippendorff_alpha": est(lambda i: krippendorff_alpha(m[i], k, ordinal)),
           "fleiss_kappa": est(lambda i: fleiss_kappa(m[i], k)),
           "cohen_kappa": [{"readers": [readers[a].name, readers[b].name],
                            "weights": "quadratic" if ordinal else None,
                            **est(lambda i, a=a, b=b: cohen_kappa(m[i, a], m[i, b], k, ordinal))}
                           for a, b in itertools.combinations(range(len(readers)), 2)],
           "spearman": {}}
    scores = _scores(m, q)
    if scores is not None:
        for name, vals in metrics.items():
            e = bootstrap(lambda i, v=vals: spearman(scores[i], v[i]), n, reps=reps, seed=seed)
            d = e.as_dict()
            out["spearman"][name] = {"rho": d["value"], "low": d["low"], "high": d["high"], "n": d["n"]}
    dis = disagreement(m, ordinal)
    order = [i for i in np.argsort(-np.nan_to_num(dis, nan=-1)) if np.isfinite(dis[i]) and dis[i] > 0][:top]
    out["most_disagreement"] = [{"item_id": units[i][0].id, "item": units[i][0].position + 1, "side": units[i][1],
                                 "disagreement": float(dis[i]),
                                 "answers": {readers[j].name: (None if not np.isfinite(m[i, j]) else q.levels[int(m[i, j])])
                                             for j in range(len(readers))}} for i in order]
    return out


def agreement_rows(result: dict) -> list[dict]:
    """The agreement result as a flat table (statistic, readers, value, low, high) for CSV."""
    rows = [{"statistic": "krippendorff_alpha", "readers": "all", **_vlh(result["krippendorff_alpha"])},
            {"statistic": "fleiss_kappa", "readers": "all", **_vlh(result["fleiss_kappa"])}]
    rows += [{"statistic": "cohen_kappa" + ("_quadratic" if c.get("weights") else ""), "readers": " / ".join(c["readers"]),
              **_vlh(c)} for c in result["cohen_kappa"]]
    rows += [{"statistic": f"spearman_{k}", "readers": "mean rating", "value": v["rho"], "low": v["low"],
              "high": v["high"], "n": v["n"]} for k, v in result["spearman"].items()]
    return rows


def _vlh(d: dict) -> dict:
    return {"value": d.get("value"), "low": d.get("low"), "high": d.get("high"), "n": d.get("n")}


def export(user_id: int | None, study_id: int, what: str = "answers", fmt: str = "csv") -> str:
    """Study answers (with history) or the agreement table, as CSV (escaped) or JSON text; audited."""
    actor = require(user_id, "export")
    if what == "answers":
        rows = answer_rows(user_id, study_id, history=True)
    elif what == "agreement":
        rows = [dict(r, question_id=q["id"]) for q in _qs(study_id)
                for r in agreement_rows(agreement(user_id, study_id, q["id"], reps=500))]
    else:
        raise ValueError(f"export what: answers or agreement, not {what!r}")
    audit.record(actor, "export", f"study:{study_id}", after={"what": what, "format": fmt, "rows": len(rows)})
    if fmt == "json":
        return json.dumps({"rows": rows}, default=str, indent=1)
    if fmt != "csv":
        raise ValueError(f"format: csv or json, not {fmt!r}")
    return to_csv(rows, ANSWER_COLUMNS if what == "answers" else AGREEMENT_COLUMNS)


def _qs(study_id: int) -> list[dict]:
    return questions(study_id)


__all__ = ["agreement", "answer_rows", "agreement_rows", "export", "Estimate"]
