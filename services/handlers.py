"""Job kinds → 'module:function' of their handler (lazy, so the worker parent never imports torch)."""

HANDLERS: dict[str, str] = {
    "data.synth": "services.datasets:synth_job",
    "data.import": "services.datasets:import_job",
    "train": "services.training:train_job",
    "explain": "services.explaining:explain_job",
    "exbl": "services.retraining:exbl_job",
    "gen.train": "services.generators:gen_train_job",
    "counterfactual": "services.counterfactuals:counterfactual_job",
    "ltx.train": "services.ltx:ltx_train_job",
    "evaluate": "services.evaluation:evaluate_job",
    "demo": "services.demo:demo_job",
    "study.metrics": "services.study_metrics:study_metrics_job",  # team: per-item POS/NEG/DEL/INS of a study
}
