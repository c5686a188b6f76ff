"""Errors a user can cause and fix: each carries one line that names the culprit."""

from __future__ import annotations


class EdgesightError(Exception):
    """Base class for errors reported to the user as one line, without a traceback."""


class ConfigError(EdgesightError):
    """A config or key file is missing, unreadable or invalid."""
