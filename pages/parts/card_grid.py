"""The gallery's page of cards as ONE browser element: a custom component (st.components.v2) that draws every card
(its map and lines, its Good / Bad / Detail buttons) and reports clicks as a numbered log.

Why one element: the browser redraws the whole page of cards on every navigation to the gallery, and on a slower
reader's machine 12 cards of three Streamlit elements each cost it more than the 0.5 s navigation goal leaves
(docs/architecture.md, Pages; bench/ui_latency.py --cpu-slowdown).

Why a log: every click gets the next number (`seq`) and the component's state holds every click the server has not
confirmed yet, so a later click never replaces an earlier one on its way to the server (Streamlit keeps only the
newest value of a widget when two reach it during one run). The server applies, in order, the clicks numbered above
the last one it applied (`new_clicks`) and sends that number back with the cards (`handled`); a late or repeated log
is therefore applied at most once. The card bodies are HTML built by html_blocks.card_body (every string escaped)."""
from __future__ import annotations

from collections.abc import Callable, Mapping

import streamlit as st

GRID_KEY = "g_cards"
HANDLED_KEY = "g_cards_handled"  # the number of the last click the server applied
ACTIONS = ("Good", "Bad", "Detail")

CSS = """
.grid { display: flex; flex-wrap: wrap; gap: 1rem; font-family: "Source Sans", sans-serif; }
.card { box-sizing: border-box; border: 1px solid rgba(128, 128, 128, 0.3); border-radius: 0.5rem;
        padding: 1rem; display: flex; flex-direction: column; gap: 1rem; }
.acts { display: flex; margin-top: auto; }
.acts button { flex: 1; font: inherit; font-size: 0.875rem; line-height: 1.6; padding: 0.25rem 0.5rem;
               cursor: pointer; color: inherit; background: transparent; border: 1px solid rgba(128, 128, 128, 0.3);
               margin-left: -1px; }
.acts button:first-child { border-radius: 0.5rem 0 0 0.5rem; margin-left: 0; }
.acts button:last-child { border-radius: 0 0.5rem 0.5rem 0; }
.acts button:hover { color: var(--st-primary-color, #ff4b4b); border-color: var(--st-primary-color, #ff4b4b);
                     position: relative; }
.acts button[aria-pressed="true"] { color: var(--st-primary-color, #ff4b4b); position: relative;
                     border-color: var(--st-primary-color, #ff4b4b); background: rgba(255, 75, 75, 0.08); }
.acts button:focus-visible { outline: 2px solid var(--st-primary-color, #ff4b4b); outline-offset: -2px; }
"""

JS = """
export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let grid = parentElement.querySelector(".grid");
  if (!grid) {
    grid = document.createElement("div");
    grid.className = "grid";
    grid.log = [];
    grid.seq = 0;
    parentElement.appendChild(grid);
  }
  const handled = data.handled || 0;
  grid.seq = Math.max(grid.seq, handled);
  grid.log = grid.log.filter((c) => c.seq > handled);  // the server has applied the rest
  grid.replaceChildren(...data.cards.map((c) => {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.imageId = c.id;
    card.style.width = data.card_px + "px";
    const body = document.createElement("div");
    body.innerHTML = c.body;  // built and escaped on the server (html_blocks.card_body)
    const acts = document.createElement("div");
    acts.className = "acts";
    acts.setAttribute("role", "group");
    acts.setAttribute("aria-label", "Good, bad or detail");
    for (const a of data.actions) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = a;
      b.dataset.action = a;
      b.setAttribute("aria-pressed", String(c.shown === a));
      acts.appendChild(b);
    }
    card.append(body, acts);
    return card;
  }));
  grid.onclick = (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (!b) return;
    const card = b.closest(".card");
    const shown = card.querySelector("button[aria-pressed='true']");
    grid.seq += 1;
    grid.log.push({ seq: grid.seq, image_id: Number(card.dataset.imageId), action: b.dataset.action,
                    shown: shown ? shown.dataset.action : null });
    setStateValue("clicks", grid.log.slice());
    for (const o of card.querySelectorAll("button[data-action]")) {  // shown at once; the server's redraw rules
      o.setAttribute("aria-pressed", String(o === b));
    }
  };
}
"""

_GRID = st.components.v2.component("exemplar.card_grid", css=CSS, js=JS)


def new_clicks(value: object, handled: int) -> list[dict]:
    """The clicks of a component state (a mapping `{"clicks": [...]}`) numbered above `handled`, in order;
    malformed entries are dropped (the state comes from the browser)."""
    clicks = value.get("clicks") if isinstance(value, Mapping) else None
    out = []
    for c in clicks if isinstance(clicks, list) else []:
        if (isinstance(c, dict) and type(c.get("seq")) is int and c["seq"] > handled  # not bool: JSON true
                and type(c.get("image_id")) is int and c.get("action") in ACTIONS
                and c.get("shown") in (*ACTIONS, None)):
            out.append(c)
    return sorted(out, key=lambda c: c["seq"])


def card_grid(cards: list[dict], card_px: int, on_click: Callable[[int, str, str | None], None]) -> None:
    """Draw the page of cards (`cards`: id, body HTML, shown: the option drawn selected) and call
    on_click(image_id, action, shown) once per new click, in the order they were made."""

    def apply() -> None:
        ss = st.session_state
        handled = int(ss.get(HANDLED_KEY, 0))
        for c in new_clicks(ss.get(GRID_KEY), handled):
            ss[HANDLED_KEY] = c["seq"]
            on_click(c["image_id"], c["action"], c["shown"])

    _GRID(key=GRID_KEY, data={"cards": cards, "actions": list(ACTIONS), "card_px": card_px,
                              "handled": int(st.session_state.get(HANDLED_KEY, 0))},
          on_clicks_change=apply)
