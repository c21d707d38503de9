"""Where the app may listen (docs/architecture.md, "Jobs"): loopback, unless sign-in is configured or the operator
passed `exemplar serve --insecure-no-auth` (carried to the Streamlit process in EXEMPLAR_INSECURE_NO_AUTH)."""
from __future__ import annotations

import os

from services.team.users import serve_refusal

INSECURE_ENV = "EXEMPLAR_INSECURE_NO_AUTH"


def bind_refusal(address: str | None) -> str | None:
    """Why the running app must not serve on `address` (Streamlit's server.address; empty = every interface)."""
    return serve_refusal(address or "0.0.0.0", os.environ.get(INSECURE_ENV) == "1")
