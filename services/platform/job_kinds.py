"""The job kinds, each written once (docs/architecture.md, Jobs and Registries): name (also the role action checked
when a job is submitted), label (the Jobs panel), handler ("module:function", imported only when a job of the kind
runs, so the worker parent never imports torch), the least role it needs, how many times it is re-run after its
process died (`lost`), and whether its handler is idempotent by itself (it keeps what an earlier attempt built; every
other kind's retry first removes the rows an earlier attempt wrote under its job id, services.jobs.outputs).

Torch-free and import-free (core.registry only): the worker, services.team.roles, the CLI and the pages read it.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.registry import Registry, Spec

DEFAULT_MAX_RETRIES = 1  # a re-run after a lost attempt starts clean (services.jobs.outputs)


@dataclass(frozen=True)
class JobKind(Spec):
    handler: str                  # "module:function", fn(ctx: JobContext) -> dict
    what: str                     # words for a refusal: "not allowed … to <what> needs a researcher"
    role: str = "researcher"      # the least role allowed to submit it (services.team.roles)
    max_retries: int = DEFAULT_MAX_RETRIES
    idempotent: bool = False
    shows_method: bool = False    # its params' "method" is shown beside its label ("eXBL retraining · exbl_cf")
    writes_dataset: bool = False  # its output is a dataset (keyed by name and creation time, not by job id)


JOB_KINDS: Registry[JobKind] = Registry("job kind", [
    JobKind("data.synth", "SynthCXR synthesis", "services.data.datasets:synth_job", "build a dataset",
            writes_dataset=True),
    JobKind("data.import", "import", "services.data.importing:import_job", "import data",
            writes_dataset=True),
    JobKind("train", "training", "services.models.training:train_job", "start a training job"),
    JobKind("explain", "explain", "services.explanations.explaining:explain_job", "run explanations",
            shows_method=True),
    JobKind("exbl", "eXBL retraining", "services.retraining.retrain:exbl_job", "start a retrain", shows_method=True),
    JobKind("gen.train", "generator training", "services.counterfactuals.generators:gen_train_job",
            "train a generator"),
    JobKind("counterfactual", "counterfactual", "services.counterfactuals.runs:counterfactual_job",
            "generate counterfactuals", shows_method=True),
    JobKind("ltx.train", "LTX pretraining", "services.explanations.ltx:ltx_train_job", "train an LTX explainer"),
    JobKind("evaluate", "method evaluation", "services.explanations.evaluation:evaluate_job", "run an evaluation"),
    JobKind("demo", "demo build", "services.demo.build:demo_job", "build the demo", idempotent=True),
    JobKind("model.import", "classifier import", "services.models.model_import:import_job", "import a classifier"),
    JobKind("model.export", "classifier export", "services.models.model_export:export_job", "export a classifier"),
    JobKind("study.metrics", "study metrics", "services.reading.metrics:study_metrics_job",
            "compute a study's faithfulness metrics"),
])
