"""A gallery card's map and lines as one st.html element (pages/parts/card_body.py): user text is escaped, lines are
kept, the map is the PNG given, and the n/a explanation shows on hover."""
from __future__ import annotations

import base64
import re

from pages.parts.card_body import card_body


def test_user_text_is_escaped_and_the_map_is_the_png_given():
    png = b"\x89PNG\r\n\x1a\nfake"
    out = card_body(png, 'map of <img src=x onerror="alert(1)">', "<b>marker</b>.png\nval split · selection",
                    tooltip='n/a: "undefined"')
    assert "<b>" not in out and "&lt;b&gt;marker&lt;/b&gt;.png\nval split · selection" in out  # a newline is kept
    assert "onerror=\"" not in out and 'alt="map of &lt;img src=x onerror=&quot;alert(1)&quot;&gt;"' in out
    src = re.search(r'src="data:image/png;base64,([^"]+)"', out).group(1)
    assert base64.b64decode(src) == png
    assert 'title="n/a: &quot;undefined&quot;"' in out


def test_no_tooltip_without_one():
    assert "title=" not in card_body(b"png", "map", "line")
