"""Blocks drawn as one st.html element (pages/parts/html_blocks.py): a gallery card (user text escaped, lines kept,
the map is the PNG given, the n/a explanation on hover) and a row of metrics, a row of figures."""
from __future__ import annotations

import base64
import re

from pages.parts.html_blocks import card_body, figure_row, metric_row


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


def test_a_metric_row_shows_every_label_value_and_help_escaped():
    out = metric_row([("images", 2400, None), ("mean AR", "n/a", 'undefined "n/a" <never 0>')])
    assert out.count('class="metric"') == 2 and ">images<" in out and ">2400<" in out and ">n/a<" in out
    assert 'title="undefined &quot;n/a&quot; &lt;never 0&gt;"' in out and "<never" not in out
    assert out.count("cursor:help") == 1  # a help mark only where there is help


def test_a_figure_row_has_one_column_per_entry_and_notes_without_image():
    out = figure_row([[(b"a", "original")], [(b"b", "map"), (b"c", "map value 0 -> 1")], [(None, "no <lung> mask")]])
    assert "repeat(3," in out and out.count("<img ") == 3 and out.count('class="caption"') == 4
    assert ">no &lt;lung&gt; mask<" in out and 'alt="original"' in out
