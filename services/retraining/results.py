"""What a retrain returns (docs/architecture.md, Retraining and its evidence): one typed result that the CLI prints
(--json, through the job's stored result), the job stores and a bench reads, instead of a 30-key dict."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RetrainResult:
    """Seed 0's child with its controls, the group's evidence over every seed, and how the run went.

    effect … describes are core.xbl.evidence.Evidence's fields for the group (means over seeds, two-level
    intervals); metrics / parent_metrics are split accuracies; control / random_control: {model_id, metrics} of
    seed 0's, or None when not trained; explain: the child's GradCAM ranking, or None when not asked."""
    model_id: int
    retrain_id: int
    seed_models: list[dict]
    parent_id: int
    name: str
    method: str
    settings: dict
    pair: dict
    pair_source: str
    random_pairs: list[dict]
    feedback_ids: list[int]
    metrics: dict
    parent_metrics: dict
    control: dict | None
    random_control: dict | None
    order_digests: dict
    effect: dict
    effect_recipe: dict
    effect_choice: dict
    effect_parent: dict
    effect_vs: str
    splits: dict
    roles: dict
    verdict: str
    seeds: int
    interval: str
    describes: str
    history: list[dict]
    control_history: list[dict] | None
    epoch_seconds: Any
    explain: dict | None
    seconds: float
    device: str

    def to_dict(self) -> dict:
        return asdict(self)
