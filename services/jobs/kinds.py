"""Job kinds → 'module:function' of their handler (lazy, so the worker parent never imports torch), and how many
times a kind is re-run after its process died (`lost`)."""

HANDLERS: dict[str, str] = {
    "data.synth": "services.data.datasets:synth_job",
    "data.import": "services.data.datasets:import_job",
    "train": "services.models.training:train_job",
    "explain": "services.explanations.explaining:explain_job",
    "exbl": "services.retraining.retrain:exbl_job",
    "gen.train": "services.counterfactuals.generators:gen_train_job",
    "counterfactual": "services.counterfactuals.runs:counterfactual_job",
    "ltx.train": "services.explanations.ltx:ltx_train_job",
    "evaluate": "services.explanations.evaluation:evaluate_job",
    "demo": "services.demo.build:demo_job",
    "model.import": "services.models.model_import:import_job",
    "model.export": "services.models.model_export:export_job",
    "study.metrics": "services.reading.metrics:study_metrics_job",  # team: per-item POS/NEG/DEL/INS of a study
}

# Kinds whose handler is idempotent by itself (it keeps what an earlier attempt built); every other kind's retry
# first removes the rows an earlier attempt wrote under its job id (services.jobs.outputs).
IDEMPOTENT: dict[str, bool] = {"demo": True}

DEFAULT_MAX_RETRIES = 1
# Kinds whose re-run is not worth it or not safe are listed here (none so far: a re-run after a lost attempt
# starts clean, services.jobs.outputs).
MAX_RETRIES: dict[str, int] = {}


def max_retries_for(kind: str) -> int:
    return MAX_RETRIES.get(kind, DEFAULT_MAX_RETRIES)
