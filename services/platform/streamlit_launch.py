"""`streamlit run app.py` for `exemplar serve` and the browser tests, with the project's pages/ folder never taken
for Streamlit's old (v1) multipage layout.

Streamlit treats an app folder that holds pages/ as a v1 multipage app until the main script has called
st.navigation once. A deep link opened first after a start (/counterfactuals?image=…, a bookmark, the gallery's link
to the studio) then ran pages/counterfactuals.py alone: no sidebar, no dataset, a page list with "common" in it.
pages/ is this project's fixed layout and app.py always navigates, so the launcher says so before the first run.
Usage: python -m services.platform.streamlit_launch run app.py [streamlit options]
"""
from __future__ import annotations

import sys
from pathlib import Path

# app.py sits beside the services package: the checkout's root, or site-packages for an installed wheel (which
# holds app.py, pages/ and .streamlit/config.toml: pyproject.toml, setup.py).
ROOT = Path(__file__).resolve().parents[2]


def app_path() -> Path:
    """Where app.py is, in the checkout or in an installed wheel; a one-line error when neither holds it."""
    app = ROOT / "app.py"
    if not app.is_file():
        raise FileNotFoundError(f"app.py is not beside the services package in {ROOT}: reinstall Exemplar")
    return app


def streamlit_command(port: int, address: str, headless: bool = True, *extra: str) -> list[str]:
    """The command line that serves app.py on address:port (written once: the CLI and the browser tests use it)."""
    return [sys.executable, "-m", "services.platform.streamlit_launch", "run", str(app_path()), "--server.port",
            str(port), "--server.address", address, "--server.headless", str(headless).lower(),
            "--browser.gatherUsageStats", "false", *extra]


def main() -> int:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web.cli import main as streamlit_main

    PagesManager.uses_pages_directory = False  # what app.py's st.navigation sets on its first run, set up front
    return streamlit_main()


if __name__ == "__main__":
    sys.exit(main())
