"""Secrets stay in the process: the userinfo of every URL is hidden in whatever edgesight writes or publishes.

Camera URLs carry passwords (``rtsp://admin:secret@10.0.0.5/live``). :func:`redact`
hides ``user:password@`` in any text, wherever a URL sits in it (a log line, an
error from FFmpeg or PyAV, a config echoed back); the edges where text leaves the
process (log handlers, the command's error line, status messages on the bus, the
health file and endpoints, control replies, the preview page) pass it through
:func:`redact` or :func:`redact_json`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

HIDDEN = "***"
"""What stands for the userinfo of a URL."""

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#'\"<>]*)@")
"""A scheme, then everything up to the last ``@`` before the path (a password may hold a raw ``@``)."""


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URL in it replaced by ``***@``."""
    if "@" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m['scheme']}{HIDDEN}@", text)


def redact_json(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings, numbers) with every string passed through :func:`redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_json(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """A handler filter that redacts each record's message (arguments merged in) and its exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
