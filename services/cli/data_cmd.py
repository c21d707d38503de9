"""`exemplar data synth|import|list|show`: SynthCXR generation, import of real data, listings."""
from __future__ import annotations

from pathlib import Path

import typer

from services.cli.common import emit, fail, run_job
from services.data.datasets import check_import_source, get_dataset, list_datasets
from services.data.importing import import_job_params
from services.jobs.lifecycle import active_duplicate
from services.platform.uploads import discard_import as discard_import_params

LAYOUTS = ("covid-radiography", "imagefolder", "dicom")


def _counts_line(counts: dict) -> str:
    return ", ".join(f"{c}: {sum(v.values())}" for c, v in (counts or {}).items())


def _run_import(path: Path, layout: str, name: str, labels: Path | None, pseudonym_map: Path | None, options: dict,
                json_: bool, queue: bool) -> dict:
    """Run (or queue) a `data.import` job whose params name the source by upload ids, never by path
    (docs/architecture.md, Data import). The uploads go again unless a job row names them: an inline job removes
    them itself when it ends, a queued one when it has run."""
    params = import_job_params(path, layout, name, labels=labels, pseudonym_map=pseudonym_map, **options)
    try:
        return run_job("data.import", params, json_, enqueue=queue)
    except typer.Exit as exc:
        if not (queue and exc.exit_code == 0) and active_duplicate("data.import", params) is None:
            discard_import_params(params)
        raise
    except BaseException:
        if active_duplicate("data.import", params) is None:
            discard_import_params(params)
        raise


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Datasets: synthesise SynthCXR, import real data, list.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("synth")
    def synth(name: str = typer.Option("demo", help="dataset name (letters, digits, . _ -)"),
              n: int = typer.Option(2400, help="number of images"),
              size: int = typer.Option(64, help="image side in pixels (32-512)"),
              confounder: float = typer.Option(0.9, help="probability that the marker sits in its class corner"),
              seed: int = typer.Option(0),
              queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
              json_: bool = typer.Option(False, "--json")):
        """Generate a SynthCXR dataset under $EXEMPLAR_HOME/datasets/NAME and register it."""
        res = run_job("data.synth", {"name": name, "n": n, "size": size, "confounder": confounder, "seed": seed},
                      json_, enqueue=queue)
        emit(res, json_, f"dataset {res['name']} (id {res['dataset_id']}) at {res['root']}: "
                         f"{_counts_line(res['counts'])}" + ("" if res.get("created", True) else " (existing)"))

    @data_app.command("import")
    def import_(path: Path = typer.Argument(..., help="dataset folder, or a .zip of one"),
                layout: str = typer.Option("covid-radiography", help="covid-radiography | imagefolder | dicom"),
                name: str = typer.Option(..., help="dataset name"),
                skip_bad: bool = typer.Option(False, "--skip-bad", help="import the good files, report the bad"),
                labels: Path = typer.Option(None, help="CSV path,label[,split] (needed for dicom)"),
                allow_burned_in: bool = typer.Option(False, "--allow-burned-in",
                                                     help="dicom: import images flagged BurnedInAnnotation=YES"),
                pseudonym_map: Path = typer.Option(None, help="dicom: write pseudonym → original CSV here "
                                                              "(outside EXEMPLAR_HOME)"),
                size: int = typer.Option(None, help="side of the array cache (default: the images' native size)"),
                seed: int = typer.Option(0, help="seed of the stratified split when there is no splits.csv"),
                queue: bool = typer.Option(False, "--queue", help="put the job on the queue instead of running it"),
                json_: bool = typer.Option(False, "--json")):
        """Import a dataset tree (images stay where they are) after decoding and checking every file."""
        if layout not in LAYOUTS:
            fail(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")

        try:  # a wrong path is refused before any job row is made (this line is printed, never stored)
            check_import_source(path, layout, labels)
        except ValueError as exc:
            fail(str(exc))
        options = {"skip_bad": skip_bad, "size": size, "seed": seed}
        if layout == "dicom":
            options["allow_burned_in"] = allow_burned_in
        res = _run_import(path.expanduser().resolve(), layout, name, labels.expanduser().resolve() if labels else None,
                          pseudonym_map.expanduser().resolve() if pseudonym_map and layout == "dicom" else None,
                          options, json_, queue)
        rep = res.get("report", {})
        emit(res, json_, f"dataset {res['name']} (id {res['dataset_id']}): {rep.get('imported', 0)} imported, "
                         f"{rep.get('unchanged', 0)} unchanged, {rep.get('bad_count', 0)} bad; "
                         f"{_counts_line(res['counts'])}")

    @data_app.command("list")
    def list_(json_: bool = typer.Option(False, "--json")):
        """List datasets with their counts per class and split."""
        rows = [{k: v for k, v in d.items() if k != "report"} for d in list_datasets()]
        human = "\n".join(f"{d['id']:>4} {d['name']:<24} {d['layout']:<18} {d['n_images']:>6} images  "
                          f"{_counts_line(d['counts'])}" for d in rows) or "no datasets"
        emit({"datasets": rows, "count": len(rows)}, json_, human)

    @data_app.command("show")
    def show(ref: str = typer.Argument(..., help="dataset id or name"), json_: bool = typer.Option(False, "--json")):
        """One dataset with its last import report."""
        try:
            emit(get_dataset(ref), json_)
        except ValueError as exc:
            fail(str(exc))
