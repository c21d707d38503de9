"""Errors worded for people: a refusal shows its message alone (no exception class names, no object reprs)."""
from __future__ import annotations

import re

REFUSALS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError)
_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def plain_error(exc: BaseException) -> str:
    """One line: a refusal's own message (it names the file or field and what to do); anything else is an internal
    error, shown with its class name so a developer can find it (the traceback is stored beside it)."""
    msg = _REPR.sub("the file", " ".join(str(exc).split()))
    if isinstance(exc, KeyError):
        msg = msg.strip("'\"")
    if isinstance(exc, REFUSALS) and msg:
        return msg
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
