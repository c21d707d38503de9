"""AppTest entry point: runs app.py from outside the project root.

Streamlit's AppTest treats a `pages/` folder beside the main script as a legacy multipage app and drops
sidebar widgets on reruns; running app.py through this file (whose folder has no `pages/`) avoids that.
"""
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
runpy.run_path(str(ROOT / "app.py"), run_name="__main__")
