"""The ``edgesight`` command line: run, check, subscribe, demo, synth, build-engine.

Errors a user can cause print one line naming the culprit and exit non-zero
(2 for bad input at start-up, 1 for a failure while running); ``--debug``
adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from pipeline.commands import error
from pipeline.commands.parser import (
    DEVICES,
    ENGINES,
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_RUNTIME,
    PRECISIONS,
    build_parser,
    edgesight_version,
)
from pipeline.commands.run import cmd_check, cmd_demo, cmd_run, parse_region, run_pipeline
from pipeline.commands.tools import (
    cmd_aggregate,
    cmd_build_engine,
    cmd_health,
    cmd_keys,
    cmd_streams,
    cmd_subscribe,
    cmd_synth,
    describe_message,
)
from pipeline.errors import EdgesightError
from pipeline.faces.cli import cmd_faces
from pipeline.secrecy import RedactingFilter, redact

__all__ = [
    "DEVICES",
    "ENGINES",
    "PRECISIONS",
    "build_parser",
    "configure_threads",
    "describe_message",
    "edgesight_version",
    "entry",
    "main",
    "parse_region",
    "run_pipeline",
]


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    json_logs = getattr(args, "log_format", "text") == "json"
    from pipeline.console import JsonFormatter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
        if json_logs:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("ultralytics").setLevel(logging.DEBUG if args.debug else logging.WARNING)
    if not args.debug:
        # OpenCV and FFmpeg print their own warnings for every bad file; our one-line errors say it better.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


COMMANDS = {
    "run": cmd_run,
    "check": cmd_check,
    "subscribe": cmd_subscribe,
    "demo": cmd_demo,
    "synth": cmd_synth,
    "build-engine": cmd_build_engine,
    "faces": cmd_faces,
    "keys": cmd_keys,
    "health": cmd_health,
    "aggregate": cmd_aggregate,
    "streams": cmd_streams,
}


def configure_threads() -> None:
    """Give OpenMP every core before torch loads.

    Ultralytics sets ``OMP_NUM_THREADS=1`` when it is imported (a training
    default); for inference on an edge box that halves the speed. An explicit
    ``OMP_NUM_THREADS`` from the user is respected.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgesight`` command."""
    configure_threads()
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    try:
        return COMMANDS[args.command](args)
    except EdgesightError as exc:
        if args.debug:
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
        _error(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("edgesight: interrupted", file=sys.stderr)
        return EXIT_OK
    except Exception as exc:
        if args.debug:
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
        _error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return EXIT_RUNTIME


def _error(text: str) -> None:
    error(text)


def entry() -> NoReturn:
    """The ``edgesight`` command: :func:`main`, then leave at once.

    Everything a run must write (results on the bus, the last status message,
    recordings, the health file) is written before ``main`` returns; what is
    left is the interpreter tearing down torch, ONNX Runtime, Ultralytics and
    OpenCV, which takes seconds on a small box. A service manager waits for the
    process, not for the log line, so the process ends here after flushing its
    own output and logs.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away: nothing left to tell it
            stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    entry()
