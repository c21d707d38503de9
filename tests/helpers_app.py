"""AppTest helpers: app_test() builds the app (through tests/apptest_entry.py), open_page(at, name) switches to a page."""
from __future__ import annotations

import html
import json
from pathlib import Path

from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Widget

from pages.parts.card_grid import GRID_KEY

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


def _grid(at: AppTest):
    """The gallery's card grid (one st.components.v2 element, key g_cards: pages/parts/card_grid.py), or None."""
    found = [e for e in at.get("bidi_component") if getattr(e, "key", None) == GRID_KEY]
    assert len(found) <= 1, f"{len(found)} card grids"
    return found[0] if found else None


def grid_data(at: AppTest) -> dict:
    """What the server sent the card grid: its cards (id, body HTML, shown) and the last click it applied."""
    el = _grid(at)
    return json.loads(el.proto.json) if el is not None else {"cards": [], "handled": 0}


def card_ids(at: AppTest) -> list[int]:
    """The image ids of the gallery's cards, in screen order."""
    return [c["id"] for c in grid_data(at)["cards"]]


def card_shown(at: AppTest, image_id: int) -> str | None:
    """The option the card of `image_id` shows selected (Good / Bad, or Detail while its detail view is open)."""
    found = [c for c in grid_data(at)["cards"] if c["id"] == image_id]
    assert len(found) == 1, f"{len(found)} cards for image {image_id}"
    return found[0]["shown"]


class _GridClicks(Widget):
    """Stands in for the card grid in the tree for one run: it sends the component state the browser sends after
    clicks (a log of {seq, image_id, action, shown}), through Streamlit's widget states, so the page's own
    callback applies them (AppTest cannot run the component's JavaScript)."""

    def __init__(self, el, clicks: list[dict]) -> None:
        self.proto, self.root, self.type = el.proto, el.root, "bidi_component"
        self.id, self.key, self.disabled, self._value = el.proto.id, GRID_KEY, False, None
        self._clicks = clicks

    @property
    def value(self) -> dict:
        return {"clicks": self._clicks}

    @property
    def _widget_state(self) -> WidgetState:
        ws = WidgetState(id=self.id)
        ws.json_value = json.dumps({"clicks": self._clicks})
        return ws


def _replace(block, old, new) -> bool:
    for i, child in getattr(block, "children", {}).items():
        if child is old:
            block.children[i] = new
            return True
        if _replace(child, old, new):
            return True
    return False


def send_clicks(at: AppTest, log: list[dict]) -> AppTest:
    """Send the card grid's state as the browser does after clicks (`log`: {seq, image_id, action, shown}), then
    rerun."""
    el = _grid(at)
    assert el is not None, "no card grid on the page"
    assert _replace(at._tree, el, _GridClicks(el, log))
    return at.run()


def card_clicks(at: AppTest, clicks: list[tuple[int, str]]) -> AppTest:
    """Click, in this order, (image id, Good / Bad / Detail) on the gallery's cards before the server answers (as
    fast clicks reach it in one run), then rerun."""
    data = grid_data(at)
    shown = {c["id"]: c["shown"] for c in data["cards"]}
    return send_clicks(at, [{"seq": data["handled"] + k + 1, "image_id": iid, "action": action,
                             "shown": shown.get(iid)} for k, (iid, action) in enumerate(clicks)])


def card_action(at: AppTest, image_id: int, action: str) -> AppTest:
    """Click Good, Bad or Detail on a gallery card and rerun."""
    return card_clicks(at, [(image_id, action)])


def train_only(image_ids: list[int]) -> list[int]:
    """The ids (kept in order) of images from the train split: the only ones a pick accepts (core.data.roles)."""
    from db.models import Image
    from services.platform.database import session

    with session() as s:
        split = {i: s.get(Image, i).split for i in image_ids}
    return [i for i in image_ids if split[i] == "train"]


def card_texts(at: AppTest) -> str:
    """The lines of every gallery card as the user reads them (each card's body is HTML built by
    pages/parts/html_blocks.py: card_body; its text is HTML-escaped)."""
    return " ".join(html.unescape(c["body"].split('class="card-text"', 1)[-1]) for c in grid_data(at)["cards"])


def open_filters(at: AppTest) -> AppTest:
    """Open the gallery's "Filter and display" panel (its widgets are drawn only while it is open) and rerun."""
    at.session_state["g_more"] = True
    return at.run()

