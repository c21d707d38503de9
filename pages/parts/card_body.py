"""A gallery card's map and text lines as one st.html element: the browser draws it several times faster than an
st.image and an st.text (no resize observer, no full-screen frame, one React element where there were two), and a
page of cards is drawn on every navigation to the gallery (docs/architecture.md, Pages). Every user string is
HTML-escaped: a file name such as `<b>x</b>` shows as those characters."""
from __future__ import annotations

import base64
import html

# the look of st.text (Streamlit's code font, its size) and of st.image (rounded corners, the card's full width)
IMG_STYLE = "display:block;width:100%;border-radius:0.5rem"
TEXT_STYLE = ("font-family:'Source Code Pro',monospace;font-size:0.875rem;line-height:1.5;white-space:pre-wrap;"
              "overflow-wrap:anywhere;margin-top:0.5rem")


def card_body(png: bytes, alt: str, text: str, tooltip: str | None = None) -> str:
    """HTML of one card's body: the PNG inline (a data URI: the page's thumbnails are ~10 kB each) above `text`,
    whose lines are kept; `tooltip` shows on hover over the text (the browser's own title)."""
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    title = f' title="{html.escape(tooltip)}"' if tooltip else ""
    return (f'<img src="{src}" alt="{html.escape(alt)}" style="{IMG_STYLE}">'
            f'<div class="card-text" style="{TEXT_STYLE}"{title}>{html.escape(text)}</div>')
