"""The names of where a classifier comes from and what it exports to, read from core.registries (CLASSIFIER_SOURCES,
EXPORT_FORMATS), torch-free so the CLI's help can list them without importing torch (docs/architecture.md, "Your own
classifier"): the builders and writers that use them live in core.models.imported and core.models.export, keyed by
these names (outside core.models, whose package imports torch)."""
from __future__ import annotations

from core.registries import CLASSIFIER_SOURCES, EXPORT_FORMATS

SOURCE_NAMES = tuple(CLASSIFIER_SOURCES.names())
FORMATS = tuple(EXPORT_FORMATS.names())
