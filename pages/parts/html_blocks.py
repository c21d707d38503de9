"""Blocks a page draws as one st.html element: a gallery card's map and lines, a row of metrics. The browser draws
one such element several times faster than the Streamlit elements it replaces (an st.image costs a resize observer
and a full-screen frame, an st.metric a Markdown label and a tooltip), and the gallery draws them on every
navigation (docs/architecture.md, Pages). Every string is HTML-escaped: a file name such as `<b>x</b>` shows as
those characters."""
from __future__ import annotations

import base64
import html

# the look of st.text (Streamlit's code font, its size), st.image (rounded corners, full width) and st.metric
IMG_STYLE = "display:block;width:100%;border-radius:0.5rem"
TEXT_STYLE = ("font-family:'Source Code Pro',monospace;font-size:0.875rem;line-height:1.5;white-space:pre-wrap;"
              "overflow-wrap:anywhere;margin-top:0.5rem")
METRIC_LABEL = "font-size:0.875rem;line-height:1.6"
METRIC_VALUE = "font-size:2.25rem;line-height:1.4"
HELP_MARK = ("cursor:help;opacity:0.6;margin-left:0.35rem;display:inline-block;width:1.1em;height:1.1em;"
             "border:1px solid;border-radius:50%;font-size:0.7rem;line-height:1.05em;text-align:center")


def image_tag(png: bytes, alt: str, style: str = "") -> str:
    """An <img> of the PNG inline (a data URI), rounded and as wide as its box; `style` adds to IMG_STYLE."""
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<img src="{src}" alt="{html.escape(alt)}" style="{IMG_STYLE}{style}">'


def card_body(png: bytes | None, alt: str, text: str, tooltip: str | None = None, img_px: int | None = None) -> str:
    """HTML of one card's body: the PNG inline (a data URI: the page's thumbnails are ~10 kB each; none: text
    alone) above `text`, whose lines are kept; `tooltip` shows on hover over the text (the browser's own title);
    `img_px` caps the image's width (else the card's full width)."""
    title = f' title="{html.escape(tooltip)}"' if tooltip else ""
    img = image_tag(png, alt, f";max-width:{int(img_px)}px" if img_px else "") if png is not None else ""
    return (f'{img}'
            f'<div class="card-text" style="{TEXT_STYLE}"{title}>{html.escape(text)}</div>')


def metric_row(items: list[tuple[str, object, str | None]]) -> str:
    """HTML of a row of (label, value, help) metrics side by side, as st.metric draws them; a help text shows on
    hover over the ? after its label (a circled mark drawn in CSS: no font needed)."""
    cells = []
    for label, value, helptext in items:
        mark = (f'<span style="{HELP_MARK}" title="{html.escape(helptext)}" aria-label="{html.escape(helptext)}">?'
                "</span>" if helptext else "")
        cells.append(f'<div class="metric" style="flex:1;min-width:6rem"><div style="{METRIC_LABEL}">'
                     f'{html.escape(label)}{mark}</div><div style="{METRIC_VALUE}">{html.escape(str(value))}</div></div>')
    return f'<div style="display:flex;flex-wrap:wrap;gap:1rem">{"".join(cells)}</div>'


CAPTION_STYLE = "font-size:0.875rem;opacity:0.6;text-align:center;margin-top:0.25rem;overflow-wrap:anywhere"


def figure_row(columns: list[list[tuple[bytes | None, str]]]) -> str:
    """HTML of equal columns of figures, as st.columns of st.image with captions draw them: in each column, a
    (png, caption) is an image over its caption, a (None, text) a line of text alone (e.g. "no lung mask")."""
    cells = []
    for figures in columns:
        parts = []
        for png, caption in figures:
            if png is not None:
                parts.append(image_tag(png, caption))
            parts.append(f'<div class="caption" style="{CAPTION_STYLE}">{html.escape(caption)}</div>')
        cells.append(f'<div style="display:flex;flex-direction:column;gap:0.5rem">{"".join(parts)}</div>')
    return (f'<div style="display:grid;grid-template-columns:repeat({max(1, len(columns))},minmax(0,1fr));gap:1rem">'
            f'{"".join(cells)}</div>')
