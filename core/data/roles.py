"""The role of each split, said once (docs/architecture.md, "Split roles"): every retrain, report, bench and page
reads it from here.

- train fits the model and gives the exemplars (a user's picks and the --auto pair, the random-pair control's
  draw);
- val selects: early stopping, method defaults, thresholds. It is measured and shown, headed "selection (not
  evidence)", and never enters a verdict;
- test and test_shifted are the evidence: read once, after a run, by the report; a figure that claims an effect
  comes from them.
"""
from __future__ import annotations

ROLES: dict[str, str] = {"train": "fit", "val": "selection", "test": "evidence", "test_shifted": "evidence"}
ROLE_HEADINGS: dict[str, str] = {"fit": "fit (train)", "selection": "selection (not evidence)",
                                 "evidence": "evidence"}
EXEMPLAR_SPLITS: tuple[str, ...] = tuple(s for s, r in ROLES.items() if r == "fit")
SELECTION_SPLITS: tuple[str, ...] = tuple(s for s, r in ROLES.items() if r == "selection")
EVIDENCE_SPLITS: tuple[str, ...] = tuple(s for s, r in ROLES.items() if r == "evidence")
HELDOUT: tuple[str, ...] = SELECTION_SPLITS + EVIDENCE_SPLITS  # measured after a run; never fitted


def role(split: str | None) -> str:
    """'fit' | 'selection' | 'evidence' ('unknown' for a split name this product does not use)."""
    return ROLES.get(str(split), "unknown")


def roles_of(splits) -> dict[str, str]:
    """{split: role} for the splits a report shows."""
    return {s: role(s) for s in splits}


def heading(split: str) -> str:
    """A report column's heading: 'test_shifted · evidence', 'val · selection (not evidence)'."""
    return f"{split} · {ROLE_HEADINGS.get(role(split), role(split))}"


def exemplar_refusal(kind: str, split: str | None, name) -> str | None:
    """The one-line reason an image may not be an exemplar (it is not from train), or None when it may."""
    if split in EXEMPLAR_SPLITS:
        return None
    why = ("val selects the model's epochs and defaults" if role(split) == "selection"
           else "held-out images must stay unseen")
    return f"the {kind} exemplar {name} is from the {split} split: pick exemplars from train ({why})"
