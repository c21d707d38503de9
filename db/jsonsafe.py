"""One JSON encoder for every JSON column on every engine: NaN / ±inf become null, numpy scalars plain numbers."""
from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy.types import JSON as _JSON, TypeDecorator


def clean_json(o: Any) -> Any:
    """A JSON-safe copy: non-finite floats → None, tuples → lists, numpy scalars / arrays → Python values."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, (str, int, bool)) or o is None:
        return o
    if isinstance(o, dict):
        return {str(k): clean_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean_json(v) for v in o]
    if hasattr(o, "tolist"):  # numpy scalar or array (db never imports numpy itself)
        return clean_json(o.tolist())
    return o


def dumps(o: Any) -> str:
    """The engines' json_serializer: strict JSON (allow_nan=False) after clean_json."""
    return json.dumps(clean_json(o), allow_nan=False, default=str)


class SafeJSON(TypeDecorator):
    """sqlalchemy JSON whose bound values pass through clean_json (PostgreSQL refuses the NaN token; SQLite would
    store it and hand back a NaN nobody can tell from a real number)."""

    impl = _JSON
    cache_ok = True

    def process_bind_param(self, value, dialect):  # noqa: ANN001
        return None if value is None else clean_json(value)
