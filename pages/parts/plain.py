"""User text inside Markdown strings: every Markdown / Streamlit markup character escaped, so a name such as
`![t](http://host/t)` shows as those characters and never becomes an image, link, colour or formula."""
from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$=&\"'@])")  # @: an e-mail never becomes a mailto link


def md_escape(text: object) -> str:
    """Plain text for st.markdown / st.caption / st.info …: backslash before each special character, newlines
    folded to spaces."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text if text is not None else "").split()))
