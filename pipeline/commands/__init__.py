"""The ``edgesight`` command's parts: its parser (:mod:`.parser`), running a pipeline (:mod:`.run`) and the
smaller tools (:mod:`.tools`); :mod:`pipeline.cli` dispatches to them."""

from __future__ import annotations

import sys

from pipeline.secrecy import redact


def error(text: str) -> None:
    """The command's one error line, on stderr, without any URL's password."""
    print(f"edgesight: error: {redact(text)}", file=sys.stderr)
