"""The app's navigation for one user: every page with the action its role must allow, and for a page the role
cannot open a hidden stand-in at the same link that says why (a deep link no longer lands on the gallery unexplained).
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages.parts.plain import md_escape

from services.team.roles import WHAT, allowed, needed

def _page(file: str, title: str, icon: str, url: str | None = None, action: str | None = None) -> tuple:
    """One row of the page table: the file under pages/, title, icon, url path (default: the file's name) and the
    action the user's role must allow to open it (None: everyone; a job kind's name is its action)."""
    return file, title, icon, url or file, action


PAGE_TABLE = {
    "Explain": [_page("gallery", "Gallery", "🖼️"), _page("retrain", "Retrain", "🔁", action="exbl"),
                _page("report", "Before / after", "📈"), _page("counterfactuals", "Counterfactuals", "🧪"),
                _page("evaluate", "Evaluate", "📊", action="evaluate"), _page("annotations", "Annotations", "📝")],
    "Manage": [_page("data_models", "Data & models", "🗂️", url="data", action="train"), _page("jobs", "Jobs", "⚙️")],
    "Team": [_page("reading", "Reading", "👁️"), _page("studies", "Studies", "🧑‍⚕️", action="study.create"),
             _page("audit", "Audit log", "🧾", action="audit.read")],
}


def refusal_text(title: str, action: str, me: dict) -> str:
    return (f"{title} needs the {needed(action)} role (to {WHAT.get(action, action)}); you are {me['name']} with the "
            f"{me['role']} role. An admin can change your role on the Audit log page (or with "
            "`exemplar users add NAME --role ROLE`).")


def refusal_page(title: str, action: str, me: dict, gallery: Path):
    """The stand-in for a page `me` cannot open: its title and one line on why, and a link back to the gallery."""
    def refused() -> None:
        st.title(title)
        st.warning(refusal_text(title, action, {**me, "name": md_escape(me["name"])}), icon="🔒")  # name: plain
        st.page_link(gallery, label="Open the gallery", icon="🖼️")
    refused.__name__ = f"refused_{action.replace('.', '_')}"
    return refused


def build_pages(root: Path, me: dict | None) -> dict:
    """{section: [st.Page]} for this user, built at every run (a user switched in the sidebar sees their own menu
    at once: the switch is a callback, so it lands before this runs). The services refuse these writes anyway."""
    pages = {}
    for section, rows in PAGE_TABLE.items():
        pages[section] = []
        for file, title, icon, url, action in rows:
            if action is None or me is None or allowed(me["role"], action):
                pages[section].append(st.Page(root / f"pages/{file}.py", title=title, icon=icon, url_path=url,
                                              default=url == "gallery"))
            else:
                stand_in = refusal_page(title, action, me, root / "pages/gallery.py")
                pages[section].append(st.Page(stand_in, title=title, icon=icon, url_path=url, visibility="hidden"))
    return pages
