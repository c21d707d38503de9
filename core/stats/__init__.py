"""Statistics for reading studies: agreement between readers (κ, α), rank correlation with metrics, bootstrap intervals."""
from core.stats.agreement import (  # noqa: F401
    cohen_kappa, disagreement, fleiss_kappa, krippendorff_alpha, spearman,
)
from core.stats.intervals import Estimate, bootstrap  # noqa: F401
