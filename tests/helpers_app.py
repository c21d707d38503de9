"""AppTest helpers: app_test() builds the app (through tests/apptest_entry.py), open_page(at, name) switches to a page."""
from __future__ import annotations

import html
from pathlib import Path

from streamlit.testing.v1 import AppTest

ENTRY = Path(__file__).resolve().parent / "apptest_entry.py"


def app_test(user: dict | None = None, timeout: float = 120, **state) -> AppTest:
    """An AppTest of the whole app; `user` ({'id','name'}) and other session_state entries preset."""
    at = AppTest.from_file(str(ENTRY), default_timeout=timeout)
    if user is not None:
        at.session_state["user"] = user
    for k, v in state.items():
        at.session_state[k] = v
    return at


def open_page(at: AppTest, name: str) -> AppTest:
    """Run the app on pages/<name>.py (e.g. 'gallery', 'data_models')."""
    at.run()
    return at.switch_page(f"../pages/{name}.py").run()


def card_ids(at: AppTest) -> list[int]:
    """The image ids of the gallery's cards, in screen order (one Good / Bad / Detail control a card; its key is
    g_card_<image id>_<state>_<n>, pages/parts/gallery_actions.py: card_key)."""
    return [int(g.key.split("_")[2]) for g in at.button_group if g.key and g.key.startswith("g_card_")]


def card_control(at: AppTest, image_id: int):
    """The Good / Bad / Detail control of the card of `image_id`."""
    found = [g for g in at.button_group if g.key and g.key.startswith(f"g_card_{image_id}_")]
    assert len(found) == 1, f"{len(found)} controls for image {image_id}"
    return found[0]


def train_only(image_ids: list[int]) -> list[int]:
    """The ids (kept in order) of images from the train split: the only ones a pick accepts (core.data.roles)."""
    from db.models import Image
    from services.platform.database import session

    with session() as s:
        split = {i: s.get(Image, i).split for i in image_ids}
    return [i for i in image_ids if split[i] == "train"]


def card_texts(at: AppTest) -> str:
    """The lines of every gallery card as the user reads them (each card's map and lines are one st.html element,
    pages/parts/html_blocks.py; its text is HTML-escaped)."""
    return " ".join(html.unescape(h.value.split('class="card-text"', 1)[-1]) for h in at.html if "card-text" in h.value)


def open_filters(at: AppTest) -> AppTest:
    """Open the gallery's "Filter and display" panel (its widgets are drawn only while it is open) and rerun."""
    at.session_state["g_more"] = True
    return at.run()


def card_action(at: AppTest, image_id: int, action: str) -> AppTest:
    """Click Good, Bad or Detail on a gallery card and rerun."""
    return card_control(at, image_id).set_value(action).run()
