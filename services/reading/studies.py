"""Blinded reading studies: create (maps of a run, or counterfactual pairs), assign readers, answer (versions,
never overwritten), the reader's worklist, adjudication into a consensus, and the consensus retrain pair.

What a reader gets (worklist, pictures) never holds model ids, method names, metric values or others' answers.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import numpy as np
from sqlalchemy import func, select

from db.models import Explanation, ExplanationRun, Image, Study, StudyAnswer, StudyItem, StudyQuestion, StudyReader, User
from services.team import audit
from services.platform.database import read_session, session
from services.team.roles import PermissionRefused
from services.team.access import require
from services.counterfactuals.runs import get_counterfactual, list_counterfactuals, load_arrays_of
from services.data.datasets import load_arrays
from services.explanations.explaining import load_maps, run_rows

STRATA = ("ar", "class", "split", "random")
MAX_ITEMS = 2000


@dataclass
class Scale:
    """A question's scale: nominal (unordered labels) or ordinal (ordered levels)."""
    kind: str
    levels: list[str]

    @property
    def ordinal(self) -> bool:
        return self.kind == "ordinal"


def parse_scale(spec: str) -> Scale:
    """'nominal:good,bad' or 'ordinal:1-5' (or 'ordinal:low,mid,high'); ValueError naming the problem."""
    kind, _, rest = (spec or "").partition(":")
    kind = kind.strip().lower()
    if kind not in ("nominal", "ordinal") or not rest.strip():
        raise ValueError(f"--scale {spec!r}: write nominal:a,b,… or ordinal:1-5")
    rest = rest.strip()
    if kind == "ordinal" and "," not in rest and "-" in rest:
        lo, _, hi = rest.partition("-")
        if not (lo.strip().isdigit() and hi.strip().isdigit()) or int(hi) <= int(lo) or int(hi) - int(lo) > 20:
            raise ValueError(f"--scale {spec!r}: an ordinal range is two whole numbers, like 1-5")
        levels = [str(v) for v in range(int(lo), int(hi) + 1)]
    else:
        levels = [v.strip() for v in rest.split(",") if v.strip()]
    if len(levels) < 2 or len(set(levels)) != len(levels) or any(len(v) > 100 for v in levels):
        raise ValueError(f"--scale {spec!r}: give at least two different answers (at most 100 characters each)")
    return Scale(kind, levels)


@dataclass
class ReaderItem:
    """One row of a reader's worklist: no model, method or metric, only what the reader needs to answer."""
    item_id: int
    number: int
    sides: list[str]  # [''] for a map; ['a', 'b'] in this reader's left/right order for a pair
    answers: dict = field(default_factory=dict)  # "question_id:side" → this reader's current value (None = skipped)

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ creation

def _sample(rows: list[dict], n: int, by: str, seed: int) -> list[dict]:
    """n rows of a run, stratified by AR quantile, by class or by split (round robin), or at random."""
    rng = random.Random(seed)
    if n >= len(rows):
        return list(rows)
    if by == "ar":
        ok = sorted((r for r in rows if r["ar"] is not None), key=lambda r: (r["ar"], r["index"]))
        if len(ok) >= n:
            bins = np.array_split(np.arange(len(ok)), n)
            return [ok[int(rng.choice(list(b)))] for b in bins]
        return ok + rng.sample([r for r in rows if r["ar"] is None], n - len(ok))
    if by in ("class", "split"):
        key = "label" if by == "class" else "split"
        groups: dict = {}
        for r in rows:
            groups.setdefault(r[key], []).append(r)
        for g in groups.values():
            rng.shuffle(g)
        out, names = [], sorted(groups, key=str)
        while len(out) < n:
            for k in names:
                if groups[k] and len(out) < n:
                    out.append(groups[k].pop())
        return out
    return rng.sample(rows, n)


def _readers(s, names: list[str]) -> list[User]:
    users = []
    for name in names:
        u = s.scalars(select(User).where(User.name == name)).first()
        if u is None:
            raise ValueError(f"--readers: no user {name!r} (add it with `exemplar users add {name} --role reader`)")
        users.append(u)
    if len({u.id for u in users}) != len(users):
        raise ValueError("--readers: a reader is named twice")
    return users


def create_study(user_id: int | None, questions: list[tuple[str, str]], readers: list[str], *,
                 run_id: int | None = None, n: int = 20, stratify: str = "ar", image_ids: list[int] | None = None,
                 pairs: list[tuple[int, int]] | None = None, name: str | None = None, seed: int = 0) -> dict:
    """A study over maps of `run_id` (n sampled by `stratify`, or the hand-picked `image_ids`) or over
    counterfactual `pairs` (ids a, b of the same image). questions: [(text, scale spec)]. Returns
    {'study_id', 'items': [item ids in order], 'questions': [question ids]}."""
    actor = require(user_id, "study.create")
    scales = [(str(t).strip(), parse_scale(sc)) for t, sc in questions]
    if not scales or any(not t or len(t) > 2000 for t, _ in scales):
        raise ValueError("a study needs at least one question (1–2000 characters)")
    if (run_id is None) == (pairs is None):
        raise ValueError("a study is built from a run (--run) or from counterfactual pairs, one of the two")
    if stratify not in STRATA:
        raise ValueError(f"--stratify must be one of {', '.join(STRATA)}, not {stratify!r}")
    if not 1 <= n <= MAX_ITEMS:
        raise ValueError(f"--n must be 1 to {MAX_ITEMS}")
    specs = _map_items(run_id, n, stratify, image_ids, seed) if run_id is not None else _pair_items(pairs)
    with session() as s:
        users = _readers(s, readers)
        if not users:
            raise ValueError("--readers: assign at least one reader")
        st_ = Study(name=(name or "").strip()[:200] or "reading study",  # readers see the name: nothing about models
                    kind="map" if run_id is not None else "cf_pair", run_id=run_id, created_by=actor["id"],
                    config={"n": n, "stratify": stratify, "seed": seed, "hand_picked": image_ids is not None})
        s.add(st_)
        s.flush()
        qs = [StudyQuestion(study_id=st_.id, position=i, text=t, scale=sc.kind, levels=sc.levels)
              for i, (t, sc) in enumerate(scales)]
        items = [StudyItem(study_id=st_.id, position=i, **spec) for i, spec in enumerate(specs)]
        rng = random.Random(f"{seed}:{st_.id}")
        rd = [StudyReader(study_id=st_.id, user_id=u.id, seed=rng.randrange(2**31)) for u in users]
        s.add_all(qs + items + rd)
        s.flush()
        out = {"study_id": st_.id, "items": [it.id for it in items], "questions": [q.id for q in qs]}
        audit.add(s, actor, "study.create", f"study:{st_.id}",
                  after={**out, "readers": [u.name for u in users], "run_id": run_id})
        return out


def _map_items(run_id: int, n: int, stratify: str, image_ids: list[int] | None, seed: int) -> list[dict]:
    rows = run_rows(run_id)
    if image_ids is not None:
        by_image = {r["image_id"]: r for r in rows}
        missing = [i for i in image_ids if int(i) not in by_image]
        if missing:
            raise ValueError(f"images {missing[:5]} are not in explanation run {run_id}")
        chosen = [by_image[int(i)] for i in dict.fromkeys(image_ids)]
    else:
        if not rows:
            raise ValueError(f"explanation run {run_id} has no maps")
        chosen = _sample(rows, n, stratify, seed)
    return [{"image_id": r["image_id"], "explanation_id": r["id"], "meta": {"run_id": run_id}} for r in chosen]


def _pair_items(pairs: list[tuple[int, int]]) -> list[dict]:
    out = []
    for a, b in pairs:
        ca, cb = get_counterfactual(int(a)), get_counterfactual(int(b))
        if ca is None or cb is None:
            raise ValueError(f"pair {a},{b}: no counterfactual {a if ca is None else b}")
        if ca["image_id"] != cb["image_id"] or a == b:
            raise ValueError(f"pair {a},{b}: a pair is two different counterfactuals of the same image")
        out.append({"image_id": ca["image_id"], "cf_a_id": ca["id"], "cf_b_id": cb["id"],
                    "meta": {"methods": [ca["method"], cb["method"]]}})
    if not out:
        raise ValueError("give at least one counterfactual pair")
    return out


def auto_pairs(model_id: int, method_a: str, method_b: str, n: int = 20) -> list[tuple[int, int]]:
    """Pairs (a, b): the newest counterfactual of each method for the images that have both, up to n."""
    rows = list_counterfactuals(model_id=model_id, limit=100000)
    first: dict[tuple[int, str], int] = {}
    for r in rows:  # newest first
        first.setdefault((r["image_id"], r["method"]), r["id"])
    imgs = sorted({i for i, _ in first if (i, method_a) in first and (i, method_b) in first})
    return [(first[(i, method_a)], first[(i, method_b)]) for i in imgs[:n]]


# ------------------------------------------------------------------------------------------------ reading

def study_row(s, study_id: int) -> Study:
    """The study's row in session s; a one-line ValueError for an unknown id."""
    st_ = s.get(Study, int(study_id))
    if st_ is None:
        raise ValueError(f"no study {study_id}")
    return st_


def _reader_row(s, study_id: int, user: dict) -> StudyReader:
    r = s.scalars(select(StudyReader).where(StudyReader.study_id == int(study_id),
                                            StudyReader.user_id == user["id"])).first()
    if r is None:
        raise PermissionRefused(f"not allowed: user {user['name']} (role {user['role']}) is not a reader of study {study_id}")
    return r


def _sides(item: StudyItem, seed: int) -> list[str]:
    if item.cf_a_id is None:
        return [""]
    return ["b", "a"] if random.Random(f"{seed}:{item.id}").random() < 0.5 else ["a", "b"]


def current_answers(s, study_id: int, reader_id: int | None = None, consensus: bool = False) -> dict:
    """(item_id, question_id, side, user_id) → the newest answer row (answers are versions). A read: `reader_id`
    filters whose answers (None: every reader's), it is not who acts."""
    q = select(StudyAnswer).where(StudyAnswer.study_id == int(study_id), StudyAnswer.consensus == consensus)
    if reader_id is not None:
        q = q.where(StudyAnswer.user_id == int(reader_id))
    out: dict = {}
    for a in s.scalars(q.order_by(StudyAnswer.id)):
        out[(a.item_id, a.question_id, a.side, a.user_id)] = a
    return out


def my_studies(user_id: int | None) -> list[dict]:
    """The studies the user reads, with progress (answered units, a skip included / all units; skipped); no study
    internals."""
    user = require(user_id, "study.answer")
    with read_session() as s:
        rows = s.execute(select(Study, StudyReader).join(StudyReader, StudyReader.study_id == Study.id)
                         .where(StudyReader.user_id == user["id"]).order_by(Study.id)).all()
        out = []
        for st_, _ in rows:
            wl = _worklist(s, st_, user)
            total = sum(len(it.sides) for it in wl) * len(study_questions(s, st_.id))
            done = sum(len(it.answers) for it in wl)  # the same count as the Reading page's progress
            skipped = sum(1 for it in wl for v in it.answers.values() if v is None)
            out.append({"study_id": st_.id, "name": st_.name, "items": len(wl), "answered": done, "total": total,
                        "skipped": skipped})
        return out


def study_questions(s, study_id: int) -> list[StudyQuestion]:
    """The study's questions in their order."""
    return list(s.scalars(select(StudyQuestion).where(StudyQuestion.study_id == int(study_id))
                          .order_by(StudyQuestion.position)))


def questions(study_id: int) -> list[dict]:
    """The study's questions: id, text, scale, levels (the same for every reader)."""
    with read_session() as s:
        study_row(s, study_id)
        return [{"id": q.id, "text": q.text, "scale": q.scale, "levels": list(q.levels)}
                for q in study_questions(s, study_id)]


def _worklist(s, st_: Study, user: dict) -> list[ReaderItem]:
    rd = _reader_row(s, st_.id, user)
    items = list(s.scalars(select(StudyItem).where(StudyItem.study_id == st_.id).order_by(StudyItem.position)))
    order = list(range(len(items)))
    random.Random(rd.seed).shuffle(order)  # each reader reads in their own order
    mine = current_answers(s, st_.id, user["id"])
    qids = [q.id for q in study_questions(s, st_.id)]
    out = []
    for num, i in enumerate(order, 1):
        it = items[i]
        sides = _sides(it, rd.seed)
        ans = {f"{q}:{sd}": mine[(it.id, q, sd, user["id"])].value for q in qids for sd in sides
               if (it.id, q, sd, user["id"]) in mine}
        out.append(ReaderItem(it.id, num, sides, ans))
    return out


def worklist(user_id: int | None, study_id: int) -> list[dict]:
    """The reader's items in their own order, with their own current answers (blinded)."""
    user = require(user_id, "study.answer")
    with read_session() as s:
        return [it.as_dict() for it in _worklist(s, study_row(s, study_id), user)]


def item_pictures(user_id: int | None, study_id: int, item_id: int) -> dict:
    """Pixels for one item as the reader sees it: {'image'} and {'map'} for a map study, {'image', 'left',
    'right'} for a pair (in this reader's order). Arrays only: nothing names a model or a method."""
    user = require(user_id, "study.answer")
    with read_session() as s:
        st_ = study_row(s, study_id)
        rd = s.scalars(select(StudyReader).where(StudyReader.study_id == st_.id,
                                                 StudyReader.user_id == user["id"])).first()
        if rd is None and user["role"] == "reader":
            _reader_row(s, st_.id, user)  # refuses: readers see only their own studies
        it = s.get(StudyItem, int(item_id))
        if it is None or it.study_id != st_.id:
            raise ValueError(f"no item {item_id} in study {study_id}")
        im = s.get(Image, it.image_id)
        e = s.get(Explanation, it.explanation_id) if it.explanation_id else None
        sides = _sides(it, rd.seed if rd else 0)
        ds_id, index = im.dataset_id, im.index
        cf_ids = {"a": it.cf_a_id, "b": it.cf_b_id}
    arrays = load_arrays(ds_id)
    out = {"image": np.asarray(arrays.images[index])}
    if e is not None:
        out["map"] = np.asarray(load_maps(e.run_id)[e.index], np.float32)
    if sides != [""]:
        for pos, sd in zip(("left", "right"), sides):
            z = load_arrays_of(cf_ids[sd])
            out[pos] = z.get("counterfactual", next(iter(z.values())))
    return out


def answer(user_id: int | None, study_id: int, item_id: int, value: str | None, question_id: int | None = None,
           side: str = "") -> dict:
    """Record the reader's answer (None = skip) as a new version; the old one stays. Returns {'answer_id', 'version'}."""
    user = require(user_id, "study.answer")
    with session() as s:
        st_ = study_row(s, study_id)
        _reader_row(s, st_.id, user)
        return _store(s, st_, user, item_id, value, question_id, side, consensus=False, note="")


def _store(s, st_: Study, user: dict, item_id: int, value, question_id, side: str, consensus: bool, note: str) -> dict:
    qs = study_questions(s, st_.id)
    q = qs[0] if question_id is None else next((x for x in qs if x.id == int(question_id)), None)
    if q is None:
        raise ValueError(f"--question: study {st_.id} has no question {question_id}")
    it = s.get(StudyItem, int(item_id))
    if it is None or it.study_id != st_.id:
        raise ValueError(f"--item: study {st_.id} has no item {item_id}")
    side = side or ""
    if side not in (["a", "b"] if it.cf_a_id is not None else [""]):
        raise ValueError(f"--side: item {item_id} {'is a pair: give a or b' if it.cf_a_id else 'has no sides'}")
    if value is not None and str(value) not in q.levels:
        raise ValueError(f"--value {value!r}: the answers to this question are {', '.join(q.levels)}")
    prev = s.scalar(select(func.max(StudyAnswer.version)).where(
        StudyAnswer.item_id == it.id, StudyAnswer.question_id == q.id, StudyAnswer.side == side,
        StudyAnswer.user_id == user["id"], StudyAnswer.consensus == consensus)) or 0
    a = StudyAnswer(study_id=st_.id, item_id=it.id, question_id=q.id, side=side, user_id=user["id"],
                    value=None if value is None else str(value), version=prev + 1, consensus=consensus,
                    note=(note or "")[:5000])
    s.add(a)
    s.flush()
    audit.add(s, user, "study.consensus" if consensus else "study.answer", f"study:{st_.id}/item:{it.id}",
              after={"question_id": q.id, "side": side, "value": a.value, "version": a.version})
    return {"answer_id": a.id, "version": a.version, "value": a.value, "question_id": q.id}


# ------------------------------------------------------------------------------------------------ adjudication

def adjudicate(user_id: int | None, study_id: int, item_id: int, value: str, question_id: int | None = None,
               side: str = "", note: str = "") -> dict:
    """A researcher's or admin's consensus answer for an item (also a version: re-adjudication keeps the old)."""
    user = require(user_id, "study.adjudicate")
    with session() as s:
        return _store(s, study_row(s, study_id), user, item_id, value, question_id, side, consensus=True, note=note)


def consensus_pair(user_id: int | None, study_id: int, question_id: int | None = None) -> dict:
    """The retrain pair from consensus answers of a map study whose question has levels good and bad:
    {'model_id', 'run_id', 'good': image_id | None, 'bad': image_id | None} (first consensus of each, in order)."""
    require(user_id, "study.read_results")
    with read_session() as s:
        st_ = study_row(s, study_id)
        if st_.kind != "map":
            raise ValueError(f"study {study_id} is not over maps: no retrain pair")
        qs = study_questions(s, st_.id)
        q = qs[0] if question_id is None else next((x for x in qs if x.id == int(question_id)), None)
        if q is None or not {"good", "bad"} <= set(q.levels):
            raise ValueError("the retrain pair needs a question answered good / bad")
        cons = current_answers(s, st_.id, consensus=True)
        items = {it.id: it for it in s.scalars(select(StudyItem).where(StudyItem.study_id == st_.id))}
        found: dict = {"good": None, "bad": None}
        for (iid, qid, _, _), a in sorted(cons.items(), key=lambda kv: items[kv[0][0]].position):
            if qid == q.id and a.value in found and found[a.value] is None:
                found[a.value] = items[iid].image_id
        run = s.get(ExplanationRun, st_.run_id) if st_.run_id else None
        return {"model_id": run.model_id if run else None, "run_id": st_.run_id, **found}


def list_studies(user_id: int | None) -> list[dict]:
    """Every study with its questions, readers and item count (researchers and admins)."""
    require(user_id, "study.read_results")
    with read_session() as s:
        out = []
        for st_ in s.scalars(select(Study).order_by(Study.id.desc())):
            readers = [u.name for u in s.scalars(select(User).join(StudyReader, StudyReader.user_id == User.id)
                                                 .where(StudyReader.study_id == st_.id).order_by(User.name))]
            n = s.scalar(select(func.count(StudyItem.id)).where(StudyItem.study_id == st_.id)) or 0
            qs = [{"id": q.id, "text": q.text, "scale": q.scale, "levels": list(q.levels)}
                  for q in study_questions(s, st_.id)]
            out.append({"study_id": st_.id, "name": st_.name, "kind": st_.kind, "run_id": st_.run_id,
                        "readers": readers, "items": n, "questions": qs,
                        "created_at": st_.created_at.isoformat() if st_.created_at else None})
        return out
