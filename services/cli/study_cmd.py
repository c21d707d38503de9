"""`exemplar study create | answer | adjudicate | agreement | export | list | worklist`: blinded reading studies."""
from __future__ import annotations

from pathlib import Path

import typer

from services.cli.common import emit, fail
from services.jobs import lifecycle as jobs
from services.reading.results import agreement as _agreement, export as _export
from services.reading.studies import adjudicate as _adj, answer as _answer, auto_pairs, consensus_pair as _pair, create_study, list_studies, my_studies, worklist as _wl
from services.team.users import cli_user_id, process_user


def _ids(text: str | None, what: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"{what}: give comma-separated ids, not {text!r}")


def _pairs(text: str) -> list[tuple[int, int]]:
    out = []
    for p in text.split(";"):
        a, _, b = p.partition(",")
        if not (a.strip().isdigit() and b.strip().isdigit()):
            fail(f"--pairs: write a,b;c,d (counterfactual ids), not {text!r}")
        out.append((int(a), int(b)))
    return out


def register(app: typer.Typer) -> None:
    study_app = typer.Typer(help="Blinded reading studies and agreement.", no_args_is_help=True)
    app.add_typer(study_app, name="study")
    _add_create(study_app)
    _add_answering(study_app)
    _add_results(study_app)
    _add_listing(study_app)


def _add_create(study_app: typer.Typer) -> None:
    """The `create` command: a study of an explanation run's maps, hand-picked images or counterfactual pairs."""

    @study_app.command("create")
    def create(run: int = typer.Option(None, "--run", help="explanation run whose maps are read"),
               n: int = typer.Option(20, "--n", help="items sampled from the run"),
               stratify: str = typer.Option("ar", help="ar | class | split | random"),
               images: str = typer.Option(None, help="hand-picked image ids (comma-separated) instead of a sample"),
               pairs: str = typer.Option(None, help="counterfactual pairs a,b;c,d (two methods, same image)"),
               model: int = typer.Option(None, help="with --methods: pair this model's counterfactuals"),
               methods: str = typer.Option(None, help="two methods m1,m2 to pair (with --model)"),
               question: list[str] = typer.Option(..., help="question text (repeat for several)"),
               scale: list[str] = typer.Option(..., help="nominal:a,b,… or ordinal:1-5 (one per question, or one for all)"),
               readers: str = typer.Option(..., help="reader names, comma-separated"),
               name: str = typer.Option(None), seed: int = typer.Option(0),
               json_: bool = typer.Option(False, "--json")):
        """Create a study (as EXEMPLAR_USER, a researcher or admin); prints study_id and item ids."""
        if len(scale) not in (1, len(question)):
            fail("--scale: give one scale, or one per --question")
        qs = list(zip(question, scale if len(scale) == len(question) else scale * len(question)))
        try:
            pr = None
            if pairs:
                pr = _pairs(pairs)
            elif model is not None:
                ms = [m.strip() for m in (methods or "").split(",") if m.strip()]
                if len(ms) != 2:
                    fail("--methods: name two counterfactual methods, m1,m2")
                pr = auto_pairs(model, ms[0], ms[1], n)
            res = create_study(cli_user_id(), qs, [r.strip() for r in readers.split(",") if r.strip()], run_id=run,
                               n=n, stratify=stratify, image_ids=_ids(images, "--images"), pairs=pr, name=name,
                               seed=seed)
        except ValueError as exc:
            fail(str(exc))
        if run is not None:  # per-item POS/NEG/DEL/INS for readers-vs-metrics (a job, run here)

            row = jobs.run_inline("study.metrics", {"study_id": res["study_id"]}, cli_user_id(), echo=not json_)
            if row["status"] != "succeeded":
                typer.echo(f"warning: POS/NEG/DEL/INS not computed: {row['error']}", err=True)
        emit(res, json_, f"study #{res['study_id']}: {len(res['items'])} items")


def _add_answering(study_app: typer.Typer) -> None:
    """`answer` (an assigned reader) and `adjudicate` (the consensus answer)."""

    @study_app.command("answer")
    def answer(study: int = typer.Option(..., "--study"), item: int = typer.Option(..., "--item"),
               value: str = typer.Option(None, "--value", help="the answer; omit with --skip"),
               skip: bool = typer.Option(False, "--skip"), question: int = typer.Option(None, "--question"),
               side: str = typer.Option("", "--side", help="a | b for a counterfactual pair"),
               json_: bool = typer.Option(False, "--json")):
        """Answer an item as EXEMPLAR_USER (an assigned reader); a change is a new version."""
        if (value is None) != skip:
            fail("give --value V, or --skip")
        try:
            res = _answer(cli_user_id(), study, item, None if skip else value, question, side)
        except ValueError as exc:
            fail(str(exc))
        emit(res, json_, f"answer v{res['version']}: {res['value']}")

    @study_app.command("adjudicate")
    def adjudicate(study: int = typer.Option(..., "--study"), item: int = typer.Option(..., "--item"),
                   value: str = typer.Option(..., "--value"), question: int = typer.Option(None, "--question"),
                   side: str = typer.Option("", "--side"), note: str = typer.Option("", "--note"),
                   json_: bool = typer.Option(False, "--json")):
        """Record the consensus answer for an item (researcher or admin)."""
        try:
            res = _adj(cli_user_id(), study, item, value, question, side, note)
        except ValueError as exc:
            fail(str(exc))
        emit(res, json_, f"consensus v{res['version']}: {res['value']}")


def _add_results(study_app: typer.Typer) -> None:
    """`agreement`, `export` and `consensus-pair`: what a study's answers say."""

    @study_app.command("agreement")
    def agreement(study: int = typer.Option(..., "--study"), question: int = typer.Option(None, "--question"),
                  reps: int = typer.Option(1000, help="bootstrap resamples"), seed: int = typer.Option(0),
                  json_: bool = typer.Option(False, "--json")):
        """Krippendorff's α, Fleiss' κ, Cohen's κ per pair and Spearman ρ against metrics, with 95 % intervals."""
        try:
            res = _agreement(cli_user_id(), study, question, reps=reps, seed=seed)
        except ValueError as exc:
            fail(str(exc))
        a = res["krippendorff_alpha"]
        emit(res, json_, f"study #{study}: α {a['value']} [{a['low']}, {a['high']}] over {res['n_units']} units")

    @study_app.command("export")
    def export(study: int = typer.Option(..., "--study"), what: str = typer.Option("answers", help="answers | agreement"),
               out: Path = typer.Option(..., "--out", help=".csv or .json"), json_: bool = typer.Option(False, "--json")):
        """Write the answers (every version) or the agreement table as CSV (cells escaped) or JSON."""
        fmt = "json" if out.suffix.lower() == ".json" else "csv"
        try:
            text = _export(cli_user_id(), study, what, fmt)
        except ValueError as exc:
            fail(str(exc))
        out.write_text(text, encoding="utf-8")
        emit({"study_id": study, "out": str(out.resolve()), "format": fmt}, json_, f"wrote {out}")

    @study_app.command("consensus-pair")
    def consensus_pair(study: int = typer.Option(..., "--study"), question: int = typer.Option(None, "--question"),
                       json_: bool = typer.Option(False, "--json")):
        """The consensus good / bad images of a map study: the pair for a retrain."""
        try:
            res = _pair(cli_user_id(), study, question)
        except ValueError as exc:
            fail(str(exc))
        emit(res, json_)


def _add_listing(study_app: typer.Typer) -> None:
    """`list` (studies, or a reader's own) and `worklist` (a reader's blinded items)."""

    @study_app.command("list")
    def list_(json_: bool = typer.Option(False, "--json")):
        """Studies (researchers and admins) or, for a reader, their own studies with progress."""
        me = process_user()  # set-up mode has no user row: it lists every study, as an admin would
        rows = my_studies(me["id"]) if me["role"] == "reader" else list_studies(me["id"])
        emit({"studies": rows}, json_)

    @study_app.command("worklist")
    def worklist(study: int = typer.Option(..., "--study"), json_: bool = typer.Option(False, "--json")):
        """The reader's blinded worklist (own order, own answers)."""
        try:
            rows = _wl(cli_user_id(), study)
        except ValueError as exc:
            fail(str(exc))
        emit({"study_id": study, "items": rows}, json_)
